"""``splitwire cloud`` as a child process on a free loopback port, for benchmarks that must not
share this process's interpreter lock (or its cores' time) with the tail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitwire.errors import SplitwireError

SERVING_TIMEOUT_S = 180.0


@contextlib.contextmanager
def tail_process(
    plan_dir: Path, *, threads: int = 1, args: Sequence[str] = ()
) -> Iterator[tuple[str, int]]:
    """Run ``splitwire cloud --plan plan_dir --threads N ARGS...`` until the block ends; yields
    (address, pid) once its health check says SERVING. Stopped with SIGTERM (the graceful
    path), then SIGKILL if it does not exit within 30 s.

    Raises:
        SplitwireError: the server exited or never became ready (its log is in the message).
    """
    address = f"127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "splitwire", "cloud", "--listen", address, "--plan",
        str(plan_dir), "--threads", str(threads), *args,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, stderr=log, stdout=log, env=env)
        try:
            _wait_serving(address, process, log)
            yield address, process.pid
        finally:
            terminate(process, timeout_s=30)


def terminate(process: subprocess.Popen[Any], *, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the process does not exit in time."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_serving(address: str, process: subprocess.Popen[Any], log: Any) -> None:
    deadline = time.monotonic() + SERVING_TIMEOUT_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                raise SplitwireError(
                    f"splitwire cloud exited with {process.returncode}:\n{log.read()[-3000:]}"
                )
            with contextlib.suppress(grpc.RpcError):
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise SplitwireError(f"splitwire cloud on {address} not SERVING after {SERVING_TIMEOUT_S} s")
