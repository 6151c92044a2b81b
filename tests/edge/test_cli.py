"""``splitwire edge`` as a user runs it: its help, its exit codes, its frame lines.

Bad input runs as real processes (the message must reach the real stderr, with no traceback);
the runs go through ``splitwire.cli.main`` in this process, against a real tail that runs on
its own event loop in a thread (``main`` calls ``asyncio.run`` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from splitwire.cli import build_parser, main
from splitwire.cloud import CloudConfig, CloudServer, create_server
from splitwire.edge.agent import EdgeAgent
from splitwire.edge.cli import EXIT_CLOUD_SERVED_NOTHING, edge_config
from splitwire.edge.link_monitor import LinkMonitor
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.runtime import RunnablePlan

from .agent_runs import assert_each_frame_once
from .conftest import _free_port

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


@pytest.fixture(scope="module")
def cloud_choice(plan_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's plan with its choice set to ``c0000 fp32`` (all in the cloud): which option
    the planner picks depends on how busy this machine was while it measured."""
    copy = tmp_path_factory.mktemp("cloud-choice") / plan_dir.name
    shutil.copytree(plan_dir, copy, copy_function=os.link)  # hard links: no 100 MB copied
    text = (copy / "plan.yaml").read_text()
    before, choice, after = text.partition("\nchoice:\n")
    block, rest = after.split("\nlinks:\n", 1)
    picked = {"cut": "c0000", "codec": "fp32", "baseline": "null"}
    lines = [
        f"  {key}: {picked[key]}" if (key := line.strip().partition(":")[0]) in picked else line
        for line in block.splitlines()
    ]
    (copy / "plan.yaml").unlink()  # a hard link: writing through it would change the original
    (copy / "plan.yaml").write_text(before + choice + "\n".join(lines) + "\nlinks:\n" + rest)
    return copy


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
    # Where the results go, and what each exit code means.
    assert "frame lines go to stdout unless --output FILE" in " ".join(text.split())
    assert f"  {EXIT_CLOUD_SERVED_NOTHING}  --cloud was given but it served no frame" in text
    for code in ("0", "2", "3"):
        assert f"\n  {code}  " in text, code


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
            "--json prints the summary on stdout, where the frame lines go",
        ),
        "cloud": (
            ["--plan", plan, "--cut", split_cuts[0], "--codec", "fp32"],
            f"option {split_cuts[0]} fp32 runs its tail in the cloud: give --cloud",
        ),
        "no-port": (["--plan", plan, "--cloud", "localhost"], "expected HOST:PORT"),
        "scheme": (
            ["--plan", plan, "--cloud", "http://127.0.0.1:18599"],
            "expected HOST:PORT, e.g. 127.0.0.1:8500 or tail.example:8500, without a scheme",
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

    assert main([*args, "--json", "--quiet"]) == 0
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


# --- loud failures ----------------------------------------------------------------------------

PREVIOUS = '{"seq": 1, "source": "remote", "note": "the previous run\'s results"}\n'


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("cloud", "says"),
    [
        ("localhost", "'localhost': expected HOST:PORT, e.g. 127.0.0.1:8500 or tail.example:8500; "
                      "the port is missing"),
        ("http://127.0.0.1:18599", "without a scheme"),
        ("127.0.0.1:99999", "'99999' is not a port (1-65535)"),
        ("tail example:8500", "'tail example' is not a host name"),
    ],
)  # fmt: skip
def test_cloud_must_be_host_port_before_anything_starts(
    cloud: str, says: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "frames.jsonl"
    out.write_text(PREVIOUS)
    # The plan is never opened: the address is refused first (else: "cannot read plan").
    args = ["edge", "--plan", str(tmp_path / "never-read"), "--cloud", cloud, "--output", str(out)]
    assert main(args) == 2
    refused = errors(caplog)
    assert any(m.startswith(f"--cloud {cloud!r}: ") and says in m for m in refused), refused
    assert out.read_text() == PREVIOUS


def test_ipv6_and_host_names_are_addresses(plan_dir: Path) -> None:
    parser = build_parser()
    for cloud in ("[::1]:8500", "tail-1.example:443", "127.0.0.1:1"):
        config = edge_config(parser.parse_args(["edge", "--plan", str(plan_dir), "--cloud", cloud]))
        assert config.cloud == cloud


def test_a_plan_choosing_the_cloud_needs_cloud_or_local_only(
    cloud_choice: Path, last_cut: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "frames.jsonl"
    out.write_text(PREVIOUS)
    args = ["edge", "--plan", str(cloud_choice), "--frames", "3", "--output", str(out)]
    assert main(args) == 2
    expected = (
        "the plan's choice c0000 fp32 runs its tail in the cloud: give --cloud HOST:PORT, or "
        "--local-only"
    )
    assert any(expected in m for m in errors(caplog)), errors(caplog)
    assert out.read_text() == PREVIOUS
    # Said so, the same run goes all on the edge.
    assert main([*args, "--local-only"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert_each_frame_once(records, 3)
    assert {(r["source"], r["reason"], r["cut"]) for r in records} == {
        ("local", "all-on-edge", last_cut)
    }
    # --local-only with a cloud contradicts itself.
    caplog.clear()
    assert main([*args, "--local-only", "--cloud", "127.0.0.1:1"]) == 2
    assert any("--local-only and --cloud 127.0.0.1:1: pick one" in m for m in errors(caplog))


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("plan", "cannot read plan"),
        ("source", "does not exist"),
        ("cut", "--cut/--codec"),
        ("quiet", "--quiet and --output"),
    ],
)
def test_a_wrong_input_leaves_the_previous_results_untouched(
    case: str, says: str, plan_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The output file is opened once every input was checked: the plan, the source and the cut
    are checked after the plan loads, which is long after the command line is parsed."""
    out = tmp_path / "frames.jsonl"
    out.write_text(PREVIOUS)
    wrong = {
        "plan": ["--plan", str(tmp_path / "no-such-plan"), "--local-only"],
        "source": ["--plan", str(plan_dir), "--local-only", "--source", f"dir:{tmp_path}/none"],
        "cut": ["--plan", str(plan_dir), "--local-only", "--cut", "c9999", "--codec", "none"],
        "quiet": ["--plan", str(plan_dir), "--local-only", "--quiet"],
    }[case]
    assert main(["edge", *wrong, "--frames", "2", "--output", str(out)]) == 2
    assert any(says in m for m in errors(caplog)), errors(caplog)
    assert out.read_text() == PREVIOUS


def test_frame_lines_go_to_stdout_by_default_and_quiet_writes_none(
    plan_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    args = ["edge", "--plan", str(plan_dir), "--local-only", "--frames", "2"]
    with caplog.at_level(logging.INFO, logger="splitwire"):
        assert main([*args, "--log-every", "0.05"]) == 0
    assert_each_frame_once([json.loads(x) for x in capsys.readouterr().out.splitlines()], 2)
    # Progress lines while it loads and runs, and the summary: no figure reads "None".
    said = [r.getMessage() for r in caplog.records if r.name == "splitwire.edge"]
    assert any(m.startswith("no frame out yet (") for m in said), said
    assert any(m.startswith("2 frames (local 2; all-on-edge 2); latency p50 ") for m in said)
    assert not [m for m in said if "None" in m], said
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main([*args, "--quiet", "--json"]) == 0  # the summary alone
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 2 and summary["failure"] is None


def test_a_cloud_that_serves_no_frame_exits_4_and_says_why(
    plan_dir: Path, split_cuts: tuple[str, str], last_cut: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there
    out = tmp_path / "frames.jsonl"
    args = [
        "edge", "--plan", str(plan_dir), "--cut", split_cuts[0], "--codec", "fp32",
        "--frames", "4", "--fps", "20", "--budget-ms", "300", "--grace-s", "1",
        "--reconnect-max-s", "0.2", "--output", str(out), "--json", "--log-every", "0",
    ]  # fmt: skip
    assert main([*args, "--cloud", dead]) == EXIT_CLOUD_SERVED_NOTHING
    summary = json.loads(capsys.readouterr().out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert_each_frame_once(records, 4)
    assert summary["by_source"]["remote"] == 0
    assert summary["failure"].startswith(f"the cloud at {dead} served none of the 4 frames")
    assert any(m == f"exit 4: {summary['failure']}" for m in errors(caplog)), errors(caplog)
    # The same run against a live tail exits 0, with no failure.
    with tail_in_thread(plan_dir) as server:
        assert main([*args, "--cloud", server.address]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_source"]["remote"] > 0 and summary["failure"] is None
    # A run whose option is all-on-edge by choice never needed the cloud: not a failure.
    local = ["edge", "--plan", str(plan_dir), "--cut", last_cut, "--codec", "none", "--frames",
             "2", "--cloud", dead, "--quiet", "--json", "--log-every", "0"]  # fmt: skip
    assert main(local) == 0
    assert json.loads(capsys.readouterr().out)["failure"] is None


class SteeredMonitor(LinkMonitor):
    """The link the agent believes it measures is whatever the test sets."""

    def __init__(self, link: LinkModel) -> None:
        super().__init__()
        self.steered = link

    def link(self, **_: object) -> LinkModel | None:
        return self.steered


async def test_cut_and_codec_pin_the_option_unless_policy_auto(
    start_server, plan_dir: Path, split_cuts: tuple[str, str]
) -> None:
    """On a link where the edge is far better, the auto policy leaves a named cut only when
    --policy auto was asked for as well."""
    server = await start_server()
    dead = LinkModel("dead", 50e3, 50e3, 0.500)
    parser = build_parser()
    argv = [
        "edge", "--plan", str(plan_dir), "--cloud", server.address, "--cut", split_cuts[0],
        "--codec", "fp32", "--frames", "30", "--fps", "20", "--hold-s", "0.2",
    ]  # fmt: skip

    async def switches(*extra: str) -> tuple[str, list[Any]]:
        config = edge_config(parser.parse_args([*argv, *extra]))
        agent = EdgeAgent(config, output=io.StringIO(), monitor=SteeredMonitor(dead))
        summary = await agent.run()
        return summary["policy"], summary["switches"]

    async with asyncio.timeout(60):
        assert await switches() == ("fixed", [])
        policy, moved = await switches("--policy", "auto")
    assert policy == "auto" and moved, "the auto policy should have left the dead link"
    assert moved[0]["from"] == {"cut": split_cuts[0], "codec": "fp32"}
    assert "dead: 50 kbit/s, rtt 500 ms" in moved[0]["reason"]  # the link, rounded for people


def test_a_bad_file_in_a_directory_source_is_skipped_and_counted(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("a.png", (255, 0, 0)), ("c.png", (0, 0, 255))):
        Image.new("RGB", (40, 30), colour).save(photos / name)
    (photos / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    args = ["edge", "--plan", str(plan_dir), "--local-only", "--source", f"dir:{photos}",
            "--quiet", "--json", "--log-every", "0"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="splitwire"):
        assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 2 and summary["source_skipped"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    about_b = [w for w in warnings if "b.jpg" in w]  # one line, once
    assert len(about_b) == 1, warnings
    assert "cannot decode 'b.jpg'" in about_b[0] and about_b[0].endswith("skipped (1 so far)")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("2 frames"))
    assert "1 unreadable input skipped" in line
