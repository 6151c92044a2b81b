"""``splitwire edge`` as a user runs it: its help, its exit codes, its frame lines.

Bad input runs as real processes (the message must reach the real stderr, with no traceback);
the runs go through ``splitwire.cli.main`` in this process, against a real tail that runs on
its own event loop in a thread (``main`` calls ``asyncio.run`` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from splitwire.cli import main
from splitwire.cloud import CloudConfig, CloudServer, create_server
from splitwire.partitioner.runtime import RunnablePlan

from .agent_runs import assert_each_frame_once

PROCESS_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def _keep_log_levels() -> Iterator[None]:
    """``splitwire edge`` raises the ``splitwire`` logger to INFO; other tests must not see it."""
    logger = logging.getLogger("splitwire")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def last_cut(plan: RunnablePlan) -> str:
    return max(plan.plan.cuts)


@contextlib.contextmanager
def tail_in_thread(plan_dir: Path, **overrides: Any) -> Iterator[CloudServer]:
    """A real tail on 127.0.0.1:0, served by an event loop of its own in a daemon thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-tail", daemon=True)
    thread.start()

    async def start() -> CloudServer:
        fields: dict[str, Any] = {"listen": "127.0.0.1:0", "plans": (plan_dir,), "grace_s": 1.0}
        server = create_server(CloudConfig(**(fields | overrides)))
        await server.start()
        return server

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_help_names_the_pipeline_and_control_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["edge", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--window", "--budget-ms", "--policy", "--mqtt", "--cloud", "--plan"):
        assert flag in text, flag
    assert "SIGTERM" in text  # the help says how the daemon stops


@pytest.mark.slow  # five Python processes, run at once
def test_bad_input_exits_2_with_the_reason_on_stderr(plan_dir: Path, split_cuts) -> None:
    plan = str(plan_dir)
    cases = {  # name: (arguments, what stderr must say)
        "window": (["--plan", plan, "--window", "0"], "--window 0: expected at least 1"),
        "source": (
            ["--plan", plan, "--source", "bogus:x"],
            "--source bogus:x: unknown source scheme 'bogus'",
        ),
        "plan": (["--plan", str(plan_dir.parent / "no-such-plan")], "cannot read plan"),
        "stdout": (
            ["--plan", plan, "--json", "--output", "-"],
            "--json and --output - both write to stdout",
        ),
        "cloud": (
            ["--plan", plan, "--cut", split_cuts[0], "--codec", "fp32"],
            f"option {split_cuts[0]} fp32 runs its tail in the cloud: give --cloud",
        ),
    }
    # All at once: each pays for a Python start and the imports, not for one another.
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "splitwire", "edge", *args, "--frames", "3"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    try:
        results = {name: p.communicate(timeout=PROCESS_TIMEOUT_S) for name, p in processes.items()}
    finally:
        for p in processes.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)
    for name, (stdout, stderr) in results.items():
        expected = cases[name][1]
        assert processes[name].returncode == 2, (name, stderr)
        assert expected in stderr, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        assert stdout == "", (name, stdout)  # no frame line, no summary


def test_all_on_edge_run_without_cloud_prints_one_line_per_frame(
    plan_dir: Path, last_cut: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["edge", "--plan", str(plan_dir), "--cut", last_cut, "--codec", "none", "--frames", "5"]
    assert main([*args, "--output", "-"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 5
    assert_each_frame_once(records, 5)
    assert {(r["source"], r["reason"], r["cut"]) for r in records} == {
        ("local", "all-on-edge", last_cut)
    }
    assert all(r["result"]["kind"] == "classification" for r in records)

    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # the summary alone: no frame lines
    assert summary["frames"] == 5 and summary["by_source"]["local"] == 5
    assert (summary["cut"], summary["codec"]) == (last_cut, "none")


def test_output_file_gets_the_frame_lines(
    plan_dir: Path, last_cut: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frames.jsonl"
    args = ["edge", "--plan", str(plan_dir), "--cut", last_cut, "--codec", "none"]
    assert main([*args, "--frames", "3", "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert_each_frame_once([json.loads(line) for line in out.read_text().splitlines()], 3)
    assert main([*args, "--frames", "3", "--output", str(tmp_path / "no-dir" / "f.jsonl")]) == 2


def test_wrong_token_exits_3(
    plan_dir: Path, split_cuts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("right-token\n")
    tokens.chmod(0o600)
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.write_text("wrong-token\n")
    right.write_text("right-token\n")
    with tail_in_thread(plan_dir, token_file=tokens) as server:
        args = [
            "edge", "--plan", str(plan_dir), "--cloud", server.address, "--cut", split_cuts[0],
            "--codec", "fp32", "--policy", "fixed", "--frames", "2", "--grace-s", "2",
        ]  # fmt: skip
        assert main([*args, "--token-file", str(wrong)]) == 3
        refusals = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("refused the session" in m and "UNAUTHENTICATED" in m for m in refusals)
        # The same run with the right token goes through: the token was the only problem.
        assert main([*args, "--token-file", str(right)]) == 0


@pytest.mark.slow
def test_a_closed_stdout_ends_the_run(plan_dir: Path, last_cut: str) -> None:
    """``splitwire edge --output - | head -n 1``: once the reader goes, the agent stops (it used
    to hang for good, its pipeline task dead on the BrokenPipeError and the rest waiting)."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "splitwire", "edge", "--plan", str(plan_dir), "--cut", last_cut,
            "--codec", "none", "--frames", "1000", "--output", "-",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        first = json.loads(process.stdout.readline())
        assert first["seq"] == 1 and first["source"] == "local"
        process.stdout.close()
        code = process.wait(20)  # well before the 1000 frames (~30 s) are done
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    stderr = process.stderr.read().decode(errors="replace")
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
