"""Attacks on a real ``splitwire cloud`` process, each a client that behaves as the attack row of
the hardening issue says, and the well-behaved session that must keep being served beside it.

Every attack is an ``async`` function ``attack(target, duration_s) -> AttackOutcome`` that
attacks for about ``duration_s`` and reports what it sent and the facts its verdict rests on
(``checks``: each must hold). :mod:`splitwire.benchmarks.hostile` starts the server, measures
its memory and the bystander's latency, and judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from grpc import aio

from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.protocol import PROTOCOL_VERSION, EncodedTensor, encode, frame_chunks
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
from splitwire.protocol.client import (
    SessionClient,
    SessionClosed,
    SessionError,
    SessionFrameError,
    SessionResult,
    open_channel,
)
from splitwire.protocol.header import DTYPES
from splitwire.protocol.transport import CLIENT_OPTIONS, bearer
from splitwire.stats import percentile

# The bystander: one frame in flight, this many frames a second, and how long one answer may
# take before it counts as missing.
BYSTANDER_FPS = 20.0
BYSTANDER_ANSWER_S = 5.0
CODEC = "int8+zstd1"


@dataclass(frozen=True)
class TailTarget:
    """The server under attack and what a session of it needs."""

    address: str
    plan: RunnablePlan
    cut: str
    token: str | None = None
    metrics_address: str | None = None
    log: Callable[[], str] = lambda: ""


@dataclass
class AttackOutcome:
    """What an attack sent and the facts its verdict needs (every ``checks`` value must hold)."""

    sent: str
    checks: dict[str, bool] = field(default_factory=dict)
    detail: str = ""


TailAttack = Callable[[TailTarget, float], Awaitable[AttackOutcome]]


def hello(
    target: TailTarget, *, edge_id: str = "hostile", model_hash: str | None = None
) -> pb.Hello:
    """A Hello for the target's plan and cut."""
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        edge_id=edge_id,
        model_hash=target.plan.model_hash if model_hash is None else model_hash,
        cut_id=target.cut,
        codec=CODEC,
        max_in_flight=8,
    )


def frame(target: TailTarget, *, batch: int = 1, seed: int = 0) -> list[EncodedTensor]:
    """An encoded frame of the target's cut: random activations, or zeros when ``batch > 1``
    (what a bomb sends: a large tensor that compresses to almost nothing)."""
    specs = target.plan.crossing(target.cut, CODEC)
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        shape = (batch, *spec.shape[1:])
        dtype = DTYPES[spec.dtype]
        if batch > 1:
            tensors.append(torch.zeros(shape, dtype=dtype))
        else:
            tensors.append(torch.randn(shape, generator=generator).to(dtype))
    return [encode(t, CODEC, name=f"t{i}") for i, t in enumerate(tensors)]


@dataclass(frozen=True)
class BystanderSample:
    """One frame of the bystander: when it was sent (``time.monotonic()``, the same clock in
    every process of this machine) and its latency, or why it got no result."""

    sent_s: float
    latency_ms: float | None
    failure: str | None = None


class Bystander:
    """A well-behaved edge session in a process of its own (so the attacker's work in this
    process does not delay it): one frame in flight at :data:`BYSTANDER_FPS`, each answer timed.
    Samples are labelled with the phase (:meth:`mark`) they were sent in.
    """

    def __init__(self, target: TailTarget) -> None:
        self._args = (target.address, str(target.plan.directory), target.cut, target.token)
        context = multiprocessing.get_context("spawn")
        self._queue: multiprocessing.Queue[BystanderSample | str] = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=_bystander_process, args=(*self._args, self._queue, self._stop),
            name="bystander", daemon=True,
        )  # fmt: skip
        self._phases: list[tuple[str, float]] = [("warmup", time.monotonic())]
        self._samples: list[BystanderSample] = []

    async def __aenter__(self) -> Bystander:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the child (on this thread's cores) and wait until its session is accepted."""
        self._process.start()
        # The child reports "ready" once its session is accepted (or the error that stopped it).
        ready = await asyncio.to_thread(self._queue.get, True, 120.0)
        if ready != "ready":
            raise SessionError(f"the bystander could not start: {ready}")

    async def stop(self) -> None:
        """Stop the child and collect every sample it sent."""
        self._stop.set()
        # Read while it finishes: a child cannot exit while its samples fill the queue's pipe.
        deadline = time.monotonic() + 10.0
        while self._process.is_alive() and time.monotonic() < deadline:
            self._collect()
            await asyncio.sleep(0.05)
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._collect()

    def mark(self, phase: str) -> None:
        """Frames sent from now on belong to ``phase``."""
        self._phases.append((phase, time.monotonic()))

    def _collect(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, BystanderSample):
                self._samples.append(item)

    def _phase_of(self, sent_s: float) -> str:
        phase = self._phases[0][0]
        for name, start in self._phases:
            if sent_s >= start:
                phase = name
        return phase

    def latencies(self, phase: str) -> list[float]:
        """Latencies (ms) of the results to frames sent in ``phase``."""
        return [
            s.latency_ms
            for s in self._samples
            if s.latency_ms is not None and self._phase_of(s.sent_s) == phase
        ]

    def failures(self) -> Counter[str]:
        """Frames that got no result, by phase and reason."""
        return Counter(
            f"{self._phase_of(s.sent_s)}: {s.failure}" for s in self._samples if s.failure
        )

    def p95_ms(self, phase: str) -> float | None:
        """The 95th percentile of the results' latency in ``phase`` (None without results)."""
        samples = self.latencies(phase)
        return percentile(samples, 95) if samples else None

    def answered(self, phase: str) -> int:
        return len(self.latencies(phase))


def _bystander_process(
    address: str,
    plan_dir: str,
    cut: str,
    token: str | None,
    out: multiprocessing.Queue[BystanderSample | str],
    stop: Any,
) -> None:
    torch.set_num_threads(1)
    target = TailTarget(address=address, plan=open_plan(Path(plan_dir)), cut=cut, token=token)
    asyncio.run(_bystander_session(target, out, stop))


async def _bystander_session(
    target: TailTarget, out: multiprocessing.Queue[BystanderSample | str], stop: Any
) -> None:
    payload = frame(target, seed=1)
    channel = open_channel(target.address)
    session = SessionClient(channel, token=target.token)
    try:
        await session.open(hello(target, edge_id="bystander"))
    except SessionError as exc:
        out.put(str(exc))
        return
    out.put("ready")
    period = 1.0 / BYSTANDER_FPS
    seq = 0
    try:
        while not stop.is_set():
            seq += 1
            sent = time.monotonic()
            failure = None
            try:
                await session.send(seq, time.time_ns(), payload)
                async with asyncio.timeout(BYSTANDER_ANSWER_S):
                    event = await session.receive()
            except TimeoutError:
                failure = f"no answer within {BYSTANDER_ANSWER_S:.0f} s"
            except SessionError as exc:
                failure = f"session failed ({exc.status.name if exc.status else exc})"
            else:
                if isinstance(event, SessionFrameError):
                    failure = event.code_name
                elif not isinstance(event, SessionResult):
                    failure = f"session ended ({event})"
            elapsed = time.monotonic() - sent
            out.put(BystanderSample(sent, None if failure else elapsed * 1000, failure))
            if failure and not failure.isupper():  # the session is gone, not one frame
                return
            await asyncio.sleep(max(0.0, period - elapsed))
    finally:
        session.cancel()
        await channel.close()


def _stub(target: TailTarget) -> tuple[aio.Channel, pb_grpc.SplitSessionStub]:
    channel = aio.insecure_channel(target.address, options=CLIENT_OPTIONS)
    return channel, pb_grpc.SplitSessionStub(channel)


async def _open(stub: pb_grpc.SplitSessionStub, target: TailTarget, **hello_fields: Any) -> Any:
    """A raw call past its Accept (the attacks need the call itself, not a SessionClient)."""
    call = stub.Session(metadata=bearer(target.token) if target.token else None)
    await call.write(pb.EdgeMessage(hello=hello(target, **hello_fields)))
    answer = await call.read()
    if answer is aio.EOF or answer.WhichOneof("kind") != "accept":
        raise SessionError(f"the attack's session was not accepted: {answer}")
    return call


# -- the attacks -------------------------------------------------------------------------------


async def batch_bomb(target: TailTarget, duration_s: float) -> AttackOutcome:
    """Frames declaring batch 1024 in a few hundred bytes of zstd, from 4 sessions, each
    sending its next frame when the last is answered and opening a new session at once when
    one ends. Holds if none is computed."""
    bomb = frame(target, batch=1024)
    wire = sum(len(t.payload) for t in bomb)
    answers: Counter[str] = Counter()
    deadline = time.monotonic() + duration_s
    sessions = 0

    async def one(index: int) -> None:
        nonlocal sessions
        channel = open_channel(target.address)
        session = SessionClient(channel, token=target.token)
        try:
            await session.open(hello(target, edge_id=f"bomb-{index}"))
            sessions += 1
            seq = 0
            while time.monotonic() < deadline:
                seq += 1
                await session.send(seq, time.time_ns(), bomb)
                remaining = deadline - time.monotonic() + BYSTANDER_ANSWER_S
                async with asyncio.timeout(max(0.1, remaining)):
                    event = await session.receive()
                answers[_kind(event)] += 1
                if not isinstance(event, SessionResult | SessionFrameError):
                    return
        except (TimeoutError, SessionError) as exc:
            answers[f"session: {type(exc).__name__}"] += 1
        finally:
            session.cancel()
            await channel.close()

    async def reconnecting(index: int) -> None:
        while time.monotonic() < deadline:
            await one(index)

    await asyncio.gather(*(reconnecting(i) for i in range(4)))
    sent = sum(n for kind, n in answers.items() if not kind.startswith(("session", "end")))
    return AttackOutcome(
        sent=f"{sent} frames of batch 1024 ({wire} B on the wire each) from 4 clients that "
        f"reconnect when ended ({sessions} sessions)",
        checks={"no bomb computed": answers["result"] == 0},
        detail=_counts(answers),
    )


async def never_reads(target: TailTarget, duration_s: float) -> AttackOutcome:
    """8 sessions that send valid frames as fast as the server takes them and never read an
    answer. Holds if the server stops reading them (its memory is judged by the caller)."""
    chunks = frame_chunks(0, 0, frame(target, seed=2))
    written = 0
    deadline = time.monotonic() + duration_s
    channels: list[aio.Channel] = []

    sessions = 0

    async def one(index: int) -> None:
        nonlocal written, sessions
        channel, stub = _stub(target)
        channels.append(channel)
        try:
            call = await _open(stub, target, edge_id=f"deaf-{index}")
        except (aio.AioRpcError, SessionError):
            await asyncio.sleep(0.1)
            return
        sessions += 1
        seq = 0
        try:
            while time.monotonic() < deadline:
                seq += 1
                for chunk in chunks:
                    message = pb.FrameChunk()
                    message.CopyFrom(chunk)
                    message.seq = seq
                    async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
                        await call.write(pb.EdgeMessage(chunk=message))
                written += 1
        except TimeoutError:
            pass
        except (aio.AioRpcError, asyncio.InvalidStateError):
            return  # the server ended it: open another
        finally:
            call.cancel()

    async def reconnecting(index: int) -> None:
        while time.monotonic() < deadline:
            await one(index)

    await asyncio.gather(*(reconnecting(i) for i in range(8)))
    for channel in channels:
        await channel.close()
    return AttackOutcome(
        sent=f"{written} frames from 8 clients that never read and reconnect when ended "
        f"({sessions} sessions)",
        checks={},
        detail=f"{written / max(duration_s, 1e-9):.0f} frames/s accepted by the server",
    )


async def announce_and_stall(target: TailTarget, duration_s: float) -> AttackOutcome:
    """16 sessions each send chunk 0 of frames announcing 32 MiB (an empty payload) and never
    continue, as many frames as the server lets them. Holds if memory stays bounded."""
    announced = encode(torch.zeros((8 << 20) - 1024), "fp32", name="big")
    total = len(announced.payload)
    chunk_count = -(-total // (1 << 20))
    first = frame_chunks(0, 0, [announced])[0]
    first.payload = b""
    first.chunk_count = chunk_count
    first.cut_id, first.codec = target.cut, CODEC
    del announced
    calls = []
    started = Counter[str]()

    async def one(index: int, stub: pb_grpc.SplitSessionStub) -> None:
        call = await _open(stub, target, edge_id=f"stall-{index}")
        calls.append(call)
        for seq in range(1, 9):
            message = pb.FrameChunk()
            message.CopyFrom(first)
            message.seq = seq
            await call.write(pb.EdgeMessage(chunk=message))
            started["frames"] += 1

    channel, stub = _stub(target)
    try:
        await asyncio.gather(*(one(i, stub) for i in range(16)), return_exceptions=True)
        await asyncio.sleep(duration_s)
    finally:
        for call in calls:
            call.cancel()
        await channel.close()
    return AttackOutcome(
        sent=f"{started['frames']} chunk-0s announcing {total >> 20} MiB each "
        f"({first.ByteSize()} B on the wire) from 16 sessions",
    )


async def silent_sessions(target: TailTarget, duration_s: float) -> AttackOutcome:
    """Fill every session slot with Hellos followed by silence, plus 200 streams that never
    send anything; meanwhile a real edge tries to connect every 0.5 s. Holds if it gets in
    within the attack and the silent streams are closed by the server."""
    channel, stub = _stub(target)
    silent_calls: list[Any] = []
    admitted_after: float | None = None
    rejected: Counter[str] = Counter()
    start = time.monotonic()
    for _ in range(200):
        silent_calls.append(stub.Session(metadata=bearer(target.token) if target.token else None))
    hellos = 0
    for i in range(64):
        call = stub.Session(metadata=bearer(target.token) if target.token else None)
        silent_calls.append(call)
        with contextlib.suppress(aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(pb.EdgeMessage(hello=hello(target, edge_id=f"silent-{i}")))
            hellos += 1
    await asyncio.sleep(0.5)
    deadline = start + duration_s
    while time.monotonic() < deadline and admitted_after is None:
        edge_channel = open_channel(target.address)
        session = SessionClient(edge_channel, token=target.token)
        try:
            await session.open(hello(target, edge_id="late-edge"), timeout_s=2.0)
            admitted_after = time.monotonic() - start
        except SessionError as exc:
            rejected[type(exc).__name__ + (f" {exc.status.name}" if exc.status else "")] += 1
            await asyncio.sleep(0.5)
        finally:
            session.cancel()
            await edge_channel.close()
    # A stream the server closed ends once its last messages are read (gRPC gives a client the
    # status only then): read each to its end, briefly; what does not end is still open.
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    still_open = sum([not await _ends(call) for call in silent_calls])
    for call in silent_calls:
        call.cancel()
    await channel.close()
    return AttackOutcome(
        sent=f"200 streams without a Hello and {hellos} Hellos followed by silence",
        checks={
            "a new edge admitted": admitted_after is not None,
            "silent streams closed": still_open == 0,
        },
        detail=(
            f"new edge admitted after {admitted_after:.1f} s"
            if admitted_after is not None
            else "new edge never admitted"
        )
        + f" ({_counts(rejected) or 'no refusal'} before); {still_open} of "
        f"{len(silent_calls)} silent streams still open after {duration_s:.0f} s",
    )


FORGED_LINE = "2026-12-07 12:00:00 INFO splitwire.cloud.session: FORGED by the peer"


async def forged_log_lines(target: TailTarget, duration_s: float) -> AttackOutcome:
    """20 rejected Hellos whose 3 MiB ``edge_id`` carries newlines, a forged log line and ANSI
    escapes. Holds if the server's log grows by ≤ 64 kB and carries neither."""
    edge_id = ("\n" + FORGED_LINE + "\x1b[2J\x1b[31m").ljust(3 << 20, "x")
    before = len(target.log())
    channel, stub = _stub(target)
    answers: Counter[str] = Counter()
    for _ in range(20):
        call = stub.Session(metadata=bearer(target.token) if target.token else None)
        try:
            await call.write(
                pb.EdgeMessage(hello=hello(target, edge_id=edge_id, model_hash="0" * 64))
            )
            answer = await call.read()
            rejected = answer is not aio.EOF and answer.HasField("reject")
            answers["reject" if rejected else "other"] += 1
        except aio.AioRpcError as exc:
            answers[exc.code().name] += 1
        finally:
            call.cancel()
    await channel.close()
    await asyncio.sleep(min(duration_s, 1.0))  # let the server's log reach its file
    log = target.log()[before:]
    growth = len(log.encode())
    forged = any(line.startswith(FORGED_LINE) for line in log.splitlines())
    return AttackOutcome(
        sent=f"20 Hellos with a {len(edge_id) >> 20} MiB edge_id (newline, forged line, ANSI)",
        checks={
            "log growth <= 64 kB": growth <= 64 << 10,
            "no forged line": not forged,
            "no escape character": "\x1b" not in log,
        },
        detail=f"log grew by {growth} B; answers {_counts(answers)}",
    )


async def no_token(target: TailTarget, duration_s: float) -> AttackOutcome:
    """Rounds of 64 concurrent calls without a token, each writing its Hello at once and reading,
    for the attack's duration. Holds if every one ends ``UNAUTHENTICATED``."""
    codes: Counter[str] = Counter()
    deadline = time.monotonic() + duration_s
    channel, stub = _stub(target)

    async def one() -> None:
        call = stub.Session()
        try:
            await call.write(pb.EdgeMessage(hello=hello(target, edge_id="intruder")))
            answer = await call.read()
            codes["answered" if answer is not aio.EOF else "EOF"] += 1
        except aio.AioRpcError as exc:
            codes[exc.code().name] += 1
        except asyncio.InvalidStateError:
            codes[(await call.code()).name] += 1

    while time.monotonic() < deadline:
        await asyncio.gather(*(one() for _ in range(64)))
    await channel.close()
    total = sum(codes.values())
    return AttackOutcome(
        sent=f"{total} calls without a token",
        checks={"every call UNAUTHENTICATED": codes["UNAUTHENTICATED"] == total},
        detail=_counts(codes),
    )


async def _ends(call: Any, *, within_s: float = 0.2) -> bool:
    """True when ``call``'s stream ends (EOF or a status) within ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            while await call.read() is not aio.EOF:
                pass
    except TimeoutError:
        return False
    except (aio.AioRpcError, asyncio.InvalidStateError):
        pass
    return True


def _kind(event: object) -> str:
    if isinstance(event, SessionResult):
        return "result"
    if isinstance(event, SessionFrameError):
        return event.code_name
    if isinstance(event, SessionClosed):
        return f"end {event.code_name}"
    return "stream over"


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())
