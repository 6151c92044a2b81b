"""Load on a real ``splitwire cloud`` process: throughput, latency, losses, memory, batching.

    splitwire bench tail --plan plans/resnet18 --cut c0035 --sessions 32 --duration 60

For each run the benchmark starts ``splitwire cloud`` as a child process on a free loopback
port, waits for its health check, and from this process opens N sessions that send
pre-encoded real activations (the head ran once, before the clock starts) and read the
results, each session keeping ``window`` frames in flight. It then stops sending, waits for
every answer, stops the server and reports:

* frames/s (results only), p50/p95/p99 latency from send to result on this process's clock;
* answers by kind: results, each FrameError code (``STALE``, ``RESOURCE_EXHAUSTED``, ...),
  and frames *lost* (sent, never answered) — the target is 0;
* the server's RSS after warm-up and at the end (from ``/proc/PID/status``);
* the batch sizes the server reported in its results.

The same invocation repeats the run with ``--max-batch 1`` (the reference) and prints the
batching gain, and measures the service's own cost per frame with one session and one frame
in flight: round trip minus the tail's compute, as this process sees it, next to the round trip
of the same client and frames against a bare gRPC server that only spends the same compute
(:mod:`splitwire.benchmarks.grpc_echo`): the floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch

from splitwire.benchmarks.processes import free_port, process_rss_mb, tail_process, terminate
from splitwire.errors import SplitwireError
from splitwire.partitioner.calibration import synthetic_images
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.protocol import PROTOCOL_VERSION, encode, frame_chunks
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import (
    SessionClient,
    SessionError,
    SessionFrameError,
    SessionResult,
    open_channel,
)
from splitwire.stats import percentile

# How long the first part of a run is excluded from RSS "after warm-up" and from latency.
WARMUP_FRACTION = 0.2
# After the last send, how long answers may take before the rest count as lost.
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class TailLoad:
    """One load run: what to send, how hard, for how long."""

    plan_dir: Path
    cut: str
    codec: str
    sessions: int
    duration_s: float
    max_batch: int
    window: int = 2
    queue_budget_ms: int = 0
    threads: int = 1
    server_args: tuple[str, ...] = ()


@dataclass
class TailRun:
    """What one run measured."""

    load: TailLoad
    frame_bytes: int
    sent: int = 0
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    session_failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    overheads_ms: list[float] = field(default_factory=list)
    server_steps_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    measured_s: float = 0.0
    rss_warm_mb: float = 0.0
    rss_end_mb: float = 0.0

    @property
    def lost(self) -> int:
        """Frames sent and never answered."""
        return self.sent - self.results - sum(self.errors.values())

    @property
    def fps(self) -> float:
        """Results per second over the measured part of the run."""
        return len(self.latencies_ms) / self.measured_s if self.measured_s else 0.0

    def percentile(self, q: float, values: Sequence[float] | None = None) -> float:
        """The q-th percentile (0..100) of latencies (or ``values``), in ms; NaN for none."""
        return percentile(self.latencies_ms if values is None else values, q)

    @property
    def rss_growth(self) -> float:
        """Relative RSS growth from warm-up to the end."""
        return self.rss_end_mb / self.rss_warm_mb - 1 if self.rss_warm_mb else float("nan")

    def as_json(self) -> dict[str, Any]:
        """The run as a flat record for ``--json``."""
        load = self.load
        return {
            "cut": load.cut,
            "codec": load.codec,
            "sessions": load.sessions,
            "duration_s": load.duration_s,
            "max_batch": load.max_batch,
            "window": load.window,
            "frame_bytes": self.frame_bytes,
            "sent": self.sent,
            "results": self.results,
            "errors": dict(self.errors),
            "lost": self.lost,
            "session_failures": self.session_failures,
            "fps": round(self.fps, 2),
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "p99_ms": round(self.percentile(99), 3),
            "overhead_p50_ms": round(self.percentile(50, self.overheads_ms), 3),
            "server_steps_p50_ms": round(self.percentile(50, self.server_steps_ms), 3),
            "rss_warm_mb": round(self.rss_warm_mb, 1),
            "rss_end_mb": round(self.rss_end_mb, 1),
            "rss_growth": round(self.rss_growth, 4),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def default_cut(plan: RunnablePlan) -> str:
    """The plan's choice when it is a split, else its first shipped split cut."""
    choice = plan.plan.choice
    if choice.baseline is None:
        return choice.cut
    for cut in sorted(plan.plan.cuts):
        spec = plan.plan.cuts[cut]
        if spec.name not in ("input", "output") and spec.tail is not None:
            return cut
    raise SplitwireError(
        f"plan {plan.directory} ships no split cut; plan again with --ship CUT, or pass --cut"
    )


def frame_templates(
    plan: RunnablePlan, cut: str, codec: str, *, count: int = 4
) -> list[list[pb.FrameChunk]]:
    """``count`` real frames for ``cut``: the head on calibration images, encoded once."""
    images = synthetic_images(count, plan.plan.input_shape[1:], seed=99)
    head = plan.head(cut)
    templates = []
    with torch.inference_mode():
        for image in images:
            out = head(image.unsqueeze(0))
            tensors = tuple(out) if isinstance(out, tuple | list) else (out,)
            frame = [encode(t, codec, name=f"t{i}") for i, t in enumerate(tensors)]
            chunks = frame_chunks(0, 0, frame)
            chunks[0].cut_id = cut
            templates.append(chunks)
    return templates


def run_load(load: TailLoad) -> TailRun:
    """Start a server for ``load``, drive it, stop it, and report (see the module docstring).

    Raises:
        SplitwireError: the plan, the cut or the server does not work.
    """
    plan = open_plan(load.plan_dir)
    templates = frame_templates(plan, load.cut, load.codec)
    frame_bytes = sum(len(c.payload) for c in templates[0])
    with _server(load) as (address, pid):
        run = TailRun(load=load, frame_bytes=frame_bytes)
        asyncio.run(_drive(load, address, pid, plan, templates, run))
    return run


def service_overhead(load: TailLoad, *, frames: int = 300) -> tuple[TailRun, TailRun]:
    """One session, one frame in flight, no batching: what the service adds to the tail.

    Returns:
        The run against the tail service (``overheads_ms``: round trip minus the tail's
        compute) and, right after, the same client and frames against a bare gRPC server that
        only spends the tail's median compute (:mod:`splitwire.benchmarks.grpc_echo`): the
        floor.
    """
    single = dataclasses.replace(load, sessions=1, window=1, max_batch=1, duration_s=3600)
    plan = open_plan(load.plan_dir)
    templates = frame_templates(plan, load.cut, load.codec)
    frame_bytes = sum(len(c.payload) for c in templates[0])
    with _server(single) as (address, pid):
        run = TailRun(load=single, frame_bytes=frame_bytes)
        asyncio.run(_drive(single, address, pid, plan, templates, run, max_frames=frames))
    with _echo_server(percentile(run.compute_ms, 50)) as (address, pid):
        echo = TailRun(load=single, frame_bytes=frame_bytes)
        asyncio.run(_drive(single, address, pid, plan, templates, echo, max_frames=frames))
    return run, echo


@contextlib.contextmanager
def _echo_server(compute_ms: float) -> Any:
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "splitwire.benchmarks.grpc_echo", address,
               "--compute-ms", f"{compute_ms:.3f}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "serving":
            raise SplitwireError(f"the gRPC echo on {address} did not start")
        yield address, process.pid
    finally:
        terminate(process, timeout_s=10)


async def _drive(
    load: TailLoad,
    address: str,
    pid: int,
    plan: RunnablePlan,
    templates: list[list[pb.FrameChunk]],
    run: TailRun,
    *,
    max_frames: int | None = None,
) -> None:
    channel = open_channel(address)
    start = time.perf_counter()
    warm = start + load.duration_s * WARMUP_FRACTION if max_frames is None else start
    stop = start + load.duration_s
    try:
        async with asyncio.TaskGroup() as tasks:
            for i in range(load.sessions):
                tasks.create_task(
                    _session(i, load, channel, plan, templates, run, warm=warm, stop=stop,
                             budget=max_frames)
                )  # fmt: skip
            tasks.create_task(_watch_rss(pid, run, warm=warm))
    finally:
        await channel.close()
    run.measured_s = max(1e-9, min(time.perf_counter(), stop) - warm)
    run.rss_end_mb = process_rss_mb(pid)


async def _session(
    index: int,
    load: TailLoad,
    channel: grpc.aio.Channel,
    plan: RunnablePlan,
    templates: list[list[pb.FrameChunk]],
    run: TailRun,
    *,
    warm: float,
    stop: float,
    budget: int | None,
) -> None:
    session = SessionClient(channel)
    hello = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        edge_id=f"bench-{index}",
        model_hash=plan.model_hash,
        cut_id=load.cut,
        codec=load.codec,
        max_in_flight=load.window,
    )
    try:
        accept = await session.open(hello)
    except SessionError as exc:
        run.session_failures.append(str(exc))
        return
    window = asyncio.Semaphore(min(load.window, accept.max_in_flight))
    sent_at: dict[int, float] = {}
    done_sending = asyncio.Event()

    async def sender() -> None:
        seq = 0
        while time.perf_counter() < stop and (budget is None or seq < budget):
            await window.acquire()
            if time.perf_counter() >= stop:
                window.release()
                break
            seq += 1
            template = templates[seq % len(templates)]
            chunks = []
            for piece in template:
                chunk = pb.FrameChunk()
                chunk.CopyFrom(piece)
                chunk.seq = seq
                chunk.capture_ts_ns = time.time_ns()
                chunks.append(chunk)
            chunks[0].queue_budget_ms = load.queue_budget_ms
            sent_at[seq] = time.perf_counter()
            run.sent += 1
            await session.send_chunks(chunks)
        done_sending.set()
        await session.close()

    async def receiver() -> None:
        while True:
            if done_sending.is_set() and not sent_at:
                return
            event = await session.receive()
            if event is None:
                return
            now = time.perf_counter()
            if isinstance(event, SessionResult | SessionFrameError):
                started = sent_at.pop(event.seq, None)
                window.release()
                if isinstance(event, SessionResult):
                    run.results += 1
                    run.batch_sizes[event.batch_size] += 1
                    if started is not None and started >= warm and now <= stop:
                        latency = (now - started) * 1000
                        run.latencies_ms.append(latency)
                        run.overheads_ms.append(latency - event.timings.compute_ns / 1e6)
                        t = event.timings
                        run.compute_ms.append(t.compute_ns / 1e6)
                        run.server_steps_ms.append((t.queue_ns + t.decode_ns + t.encode_ns) / 1e6)
                else:
                    run.errors[event.code_name] += 1
            else:  # SessionClosed
                run.session_failures.append(f"session ended: {event.code_name} {event.reason}")
                return

    try:
        async with asyncio.timeout(load.duration_s + DRAIN_TIMEOUT_S):
            await asyncio.gather(sender(), receiver())
    except (TimeoutError, SessionError) as exc:
        run.session_failures.append(f"session {index}: {type(exc).__name__}: {exc}")
    finally:
        session.cancel()


async def _watch_rss(pid: int, run: TailRun, *, warm: float) -> None:
    await asyncio.sleep(max(0.0, warm - time.perf_counter()))
    run.rss_warm_mb = process_rss_mb(pid)


@contextlib.contextmanager
def _server(load: TailLoad) -> Any:
    """The tail for ``load`` in a child process; yields (address, pid)."""
    args = [
        "--max-batch", str(load.max_batch), "--max-sessions", str(max(256, load.sessions)),
        "--max-in-flight", str(max(8, load.window)), "--grace-s", "5", *load.server_args,
    ]  # fmt: skip
    with tail_process(load.plan_dir, threads=load.threads, args=args) as served:
        yield served


def summary(runs: Sequence[TailRun]) -> str:
    """A table of runs, one line each."""
    lines = [
        f"{'sessions':>8} {'batch':>5} {'frames/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'results':>8} {'errors':>14} {'lost':>5} {'RSS MB warm→end':>16} {'batch sizes':<30}"
    ]
    for r in runs:
        errors = ",".join(f"{k}={v}" for k, v in sorted(r.errors.items())) or "0"
        sizes = " ".join(f"{k}:{v}" for k, v in sorted(r.batch_sizes.items()))
        lines.append(
            f"{r.load.sessions:>8} {r.load.max_batch:>5} {r.fps:>9.1f} {r.percentile(50):>8.2f} "
            f"{r.percentile(95):>8.2f} {r.percentile(99):>8.2f} {r.results:>8} {errors:>14} "
            f"{r.lost:>5} {r.rss_warm_mb:>7.0f}→{r.rss_end_mb:<7.0f} {sizes[:30]:<30}"
        )
    return "\n".join(lines)
