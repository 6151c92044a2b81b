"""``splitwire cloud`` as a child process on a loopback port, for benchmarks that must not share
this process's interpreter lock (or its cores' time) with the tail, and for scenarios that kill,
drain and restart tail replicas."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from splitwire.errors import SplitwireError
from splitwire.protocol.health import wait_until_serving

SERVING_TIMEOUT_S = 180.0
# How long a SIGTERM'd tail may drain before it is killed.
STOP_TIMEOUT_S = 30.0


class TailReplica:
    """One ``splitwire cloud`` process on a fixed loopback port that can be started again after
    it stopped or was killed (the port stays the same, as a replica's would).

    Args:
        plan_dirs: plan directories it serves.
        port: its port on 127.0.0.1 (default: a free one).
        threads: torch threads (and OMP_NUM_THREADS).
        args: more ``splitwire cloud`` flags.
        server_id: its ``--server-id`` (default: its address).
    """

    def __init__(
        self,
        plan_dirs: Sequence[Path],
        *,
        port: int | None = None,
        threads: int = 1,
        args: Sequence[str] = (),
        server_id: str | None = None,
    ) -> None:
        self.address = f"127.0.0.1:{port or free_port()}"
        self.server_id = server_id or self.address
        self._command = [
            sys.executable, "-m", "splitwire", "cloud", "--listen", self.address,
            "--threads", str(threads), "--server-id", self.server_id, *args,
        ]  # fmt: skip
        for plan_dir in plan_dirs:
            self._command += ["--plan", str(plan_dir)]
        self._env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.process: subprocess.Popen[Any] | None = None
        self._log: IO[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the replica was never started"
        return self.process.pid

    def start(self, *, timeout_s: float = SERVING_TIMEOUT_S) -> None:
        """Start the process and return once its health check says SERVING.

        Raises:
            SplitwireError: it exited or never became ready (its log is in the message).
        """
        if self._log is None:
            self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives with the replica
        self.process = subprocess.Popen(
            self._command, stderr=self._log, stdout=self._log, env=self._env
        )
        process = self.process
        if not wait_until_serving(
            self.address, timeout_s=timeout_s, still_starting=lambda: process.poll() is None
        ):
            code = process.poll()
            if code is None:
                process.kill()
                process.wait()
            raise SplitwireError(
                f"splitwire cloud on {self.address} not SERVING "
                + (f"(exit code {code})" if code is not None else f"after {timeout_s:.0f} s")
                + f":\n{self.log()[-3000:]}"
            )

    def kill(self) -> None:
        """SIGKILL: the crash of a replica, nothing drained."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the graceful drain), then SIGKILL if it does not exit in time; the exit code."""
        assert self.process is not None
        terminate(self.process, timeout_s=timeout_s)
        return int(self.process.returncode)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the running process, from /proc (NaN once it has exited)."""
        return process_rss_mb(self.pid) if self.running() else float("nan")

    def log(self) -> str:
        """Everything the process (and its earlier runs) wrote so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read()
        self._log.seek(0, os.SEEK_END)
        return text

    def close(self) -> None:
        """Stop it if it runs and forget its log."""
        if self.running():
            self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None


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
    replica = TailReplica([plan_dir], threads=threads, args=args)
    try:
        replica.start()
        yield replica.address, replica.pid
    finally:
        replica.close()


def terminate(process: subprocess.Popen[Any], *, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the process does not exit in time."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def process_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MB, from ``/proc/PID/status`` (NaN if it is gone)."""
    rss = _status_kb(pid, "VmRSS")
    return float("nan") if rss is None else rss / 1024.0


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRss:
    """The peak resident memory of a process over a stretch of time, in MB.

    Linux keeps the peak (``VmHWM``) itself; :meth:`reset` sets it back to the current RSS
    (``/proc/PID/clear_refs`` 5), so :meth:`peak_mb` is the true peak since then, including
    spikes shorter than any sampling period. Where the kernel refuses the reset, a thread samples
    ``VmRSS`` every ``period_s`` instead and reports the largest sample.
    """

    def __init__(self, pid: int, *, period_s: float = 0.02) -> None:
        self._pid = pid
        self._period_s = period_s
        self._sampled = 0.0
        self._exact = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset(self) -> float:
        """Start a new stretch; returns the RSS now (the stretch's baseline), in MB."""
        self.stop()
        try:
            Path(f"/proc/{self._pid}/clear_refs").write_text("5")
            self._exact = True
        except OSError:
            self._exact = False
        now = process_rss_mb(self._pid)
        self._sampled = now
        if not self._exact:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True, name="rss-sampler")
            self._thread.start()
        return now

    def peak_mb(self) -> float:
        """The peak RSS since :meth:`reset`, in MB (NaN once the process is gone)."""
        if self._exact:
            hwm = _status_kb(self._pid, "VmHWM")
            return float("nan") if hwm is None else hwm / 1024.0
        return self._sampled

    def stop(self) -> None:
        """Stop sampling (a no-op where the kernel keeps the peak)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self._period_s):
            rss = process_rss_mb(self._pid)
            if rss == rss:  # not NaN: the process still runs
                self._sampled = max(self._sampled, rss)


def free_port() -> int:
    """A port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AttackerCore:
    """Keeps an attacker's CPU apart from the server it attacks on one machine.

    A remote attacker's own work (its connects, writes and parsing) costs the server nothing;
    on one machine it competes with the server for the same cores, and a benchmark then
    measures the attacker's CPU as much as the server's defence. Inside :meth:`server_side`
    this process runs on every core but the last, so the processes it starts there (the
    server, a bystander) inherit that set; inside :meth:`attacker_side` it runs on the last
    core alone. On a machine with one core there is nothing to separate: both are no-ops and
    :attr:`separated` is False.
    """

    def __init__(self) -> None:
        self._original = os.sched_getaffinity(0)
        cores = sorted(self._original)
        self.separated = len(cores) >= 2
        self.server_cores = set(cores[:-1]) if self.separated else set(cores)
        self.attacker_cores = {cores[-1]} if self.separated else set(cores)

    @contextlib.contextmanager
    def server_side(self) -> Iterator[None]:
        """Processes started inside run on the server's cores."""
        with self._pinned(self.server_cores):
            yield

    @contextlib.contextmanager
    def attacker_side(self) -> Iterator[None]:
        """This process runs on the attacker's core inside."""
        with self._pinned(self.attacker_cores):
            yield

    @contextlib.contextmanager
    def _pinned(self, cores: set[int]) -> Iterator[None]:
        _pin_threads(cores)
        try:
            yield
        finally:
            _pin_threads(self._original)

    def describe(self) -> str:
        """One line for the report."""
        if not self.separated:
            return "one core: the attacker shares it with the server"
        return (
            f"server and bystander on cores {sorted(self.server_cores)}, "
            f"the attacker on core {sorted(self.attacker_cores)}"
        )


def _pin_threads(cores: set[int]) -> None:
    # Linux applies an affinity to one thread: pin each of this process's threads (gRPC's
    # pollers included); children inherit the affinity of the thread that starts them.
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cores)
