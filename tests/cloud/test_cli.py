"""``splitwire cloud`` as an operator runs it: a real process, SIGTERM, exit codes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from splitwire.protocol.health import wait_until_serving

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cloud(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "splitwire", "cloud", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serves_until_sigterm_then_exits_0(plan_dir: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = cloud("--listen", address, "--plan", str(plan_dir), "--grace-s", "2")
    try:
        serving = wait_until_serving(
            address, timeout_s=120, still_starting=lambda: process.poll() is None
        )
        assert serving, (
            process.stderr.read() if process.poll() is not None and process.stderr else ""
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert f"listening on {address}" in stderr
    assert "received SIGTERM" in stderr and "stopped" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "/nonexistent/plan"], "--plan /nonexistent/plan: cannot read plan"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--max-batch", "0"], "--max-batch 0: expected at least 1"),
        (["--listen", "localhost"], "expected HOST:PORT"),
    ],
)
def test_bad_configuration_exits_2_naming_the_flag(
    plan_dir: Path, args: list[str], message: str
) -> None:
    base = {"--listen": "127.0.0.1:0", "--plan": str(plan_dir)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [item for pair in base.items() for item in pair]
    process = cloud(*flat)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr


def test_bench_tail_reports_every_figure(plan_dir: Path, split_cuts: tuple[str, str]) -> None:
    """The load benchmark end to end, briefly: real server processes, JSON out."""
    done = subprocess.run(
        [sys.executable, "-m", "splitwire", "bench", "tail", "--plan", str(plan_dir),
         "--cut", split_cuts[0], "--sessions", "3", "--duration", "3", "--max-batch", "4",
         "--overhead-frames", "20", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    batched, single = report["runs"]
    assert (batched["max_batch"], single["max_batch"]) == (4, 1)
    for run in (batched, single):
        assert run["results"] > 0 and run["lost"] == 0 and not run["session_failures"]
        assert run["sent"] == run["results"] + sum(run["errors"].values())
        assert run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"]
        assert run["rss_warm_mb"] > 0 and run["rss_end_mb"] > 0
    assert set(single["batch_sizes"]) == {"1"}
    assert report["batching_gain"] == pytest.approx(batched["fps"] / single["fps"], rel=0.01)
    assert report["overhead"]["results"] == 20 and report["grpc_echo"]["results"] == 20


def _health(address: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "splitwire", "health", "--json", address],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)["status"]


def test_health_of_a_closed_port_is_unreachable_exit_1() -> None:
    assert _health(f"127.0.0.1:{free_port()}") == (1, "UNREACHABLE")


def test_the_health_probe_does_not_import_torch() -> None:
    """A container health check runs every few seconds: it must not pay torch's import."""
    code = (
        "import sys\n"
        "from splitwire.cli import main\n"
        "assert main(['health', '127.0.0.1:1']) == 1\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "UNREACHABLE"
