"""Hostile input over gRPC, against a real server and real exported halves.

Every test runs a well-behaved session (:class:`Bystander`) on the same server while it
attacks another: the bystander must keep getting correct results during and after the attack,
the attacked session must get a per-frame ``FrameError`` (or a ``SessionEnd
PROTOCOL_VIOLATION``) and never an ``INTERNAL``, and the server's memory must stay bounded.
The server runs in this process, so its memory is this process's: ``VmRSS`` and, where
``/proc/self/clear_refs`` lets us reset it, the peak ``VmHWM`` of ``/proc/self/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import random
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import zstandard
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from splitwire.cloud import CloudServer
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import (
    PROTOCOL_VERSION,
    EncodedTensor,
    TensorHeader,
    frame_chunks,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import (
    SessionClient,
    SessionClosed,
    SessionError,
    SessionEvent,
    SessionFrameError,
    SessionRejected,
    SessionResult,
    open_channel,
)
from splitwire.protocol.header import DTYPES

from .conftest import encoded, exchange, head_outputs, inputs, result, tail_outputs

# Memory is read from /proc/self/status: these tests need Linux, as the service's deployment does.
# The server's resident memory may grow by less than this over one hostile test ...
RSS_BOUND_MB = 300
# ... and a refused bomb may cost at most this much at its peak.
BOMB_BOUND_MB = 64
# What a hostile frame may get: never INTERNAL (that would be a server bug), never a crash.
REFUSALS = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})
SESSION_METHOD = "/splitwire.v1.SplitSession/Session"


# -- memory --------------------------------------------------------------------------------


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"{key} missing from /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssWatch:
    """The process's resident memory from now on: current, and peak where it can be reset."""

    def __init__(self) -> None:
        self.exact_peak = _reset_peak()
        self.baseline = _status_mb("VmRSS")
        self.peak = self.baseline

    def sample(self) -> float:
        """The peak since the last reset (VmRSS now, without peak tracking)."""
        now = _status_mb("VmHWM" if self.exact_peak else "VmRSS")
        self.peak = max(self.peak, now)
        return now

    @contextlib.contextmanager
    def bounded(self, bound_mb: float, what: str) -> Iterator[None]:
        """The block may raise the peak by less than ``bound_mb`` above the RSS at its start."""
        self.sample()
        _reset_peak()
        before = _status_mb("VmRSS")
        yield
        growth = self.sample() - before
        assert growth < bound_mb, f"{what}: peak RSS grew by {growth:.0f} MB (bound {bound_mb})"

    def growth_mb(self) -> float:
        self.sample()
        return max(self.peak, _status_mb("VmRSS")) - self.baseline


# -- the bystander -------------------------------------------------------------------------


class Bystander:
    """A healthy session sending one valid frame at a time; each must get the right result."""

    def __init__(self, session: SessionClient, plan: RunnablePlan) -> None:
        self._session = session
        x = inputs(0)
        self._frame = encoded([x], "fp32")
        self._reference = tail_outputs(plan, "c0000", [x])[0]
        self.results = 0
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="bystander")
        self.rss: RssWatch | None = None

    async def _run(self) -> None:
        seq = 0
        while True:
            seq += 1
            await self._session.send(seq, time.time_ns(), self._frame)
            got = result(await self._session.receive())
            assert got.seq == seq
            # Batched with other sessions' frames: equal up to the kernels' reassociation.
            torch.testing.assert_close(got.outputs[0], self._reference, rtol=1e-4, atol=1e-4)
            self.results += 1
            self._changed.set()

    async def progress(self, count: int = 1, *, timeout_s: float = 60.0) -> None:
        """Wait until ``count`` more results have arrived (fails if the bystander failed)."""
        target = self.results + count
        async with asyncio.timeout(timeout_s):
            while self.results < target:
                self._changed.clear()
                waiter = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the bystander stopped")

    def bounded(self, bound_mb: float, what: str) -> contextlib.AbstractContextManager[None]:
        assert self.rss is not None
        return self.rss.bounded(bound_mb, what)

    async def stop(self) -> None:
        if self._task.done():
            self._task.result()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# Every client of a test connects from 127.0.0.1 without a token, so to the server an attacker
# and the edges beside it are one peer: tests of other bounds turn the misbehaviour cooldown off
# (it has tests of its own in test_bounds) so that the next session is not refused for theirs.
ONE_PEER: dict[str, Any] = {"violation_cooldown_s": 0.0}


@contextlib.asynccontextmanager
async def under_attack(
    server: CloudServer, connect: Callable[..., Any], plan: RunnablePlan
) -> AsyncIterator[Bystander]:
    """A bystander on ``server`` for the block; afterwards it must go on getting results, the
    RSS must have grown by less than RSS_BOUND_MB, and the server must serve a new session."""
    bystander = Bystander(await connect(server, cut="c0000", codec="fp32"), plan)
    try:
        await bystander.progress(2)  # warmed up: the tail has run, allocators have settled
        bystander.rss = RssWatch()
        yield bystander
        await bystander.progress(3)  # and after the attack
        growth = bystander.rss.growth_mb()
        assert growth < RSS_BOUND_MB, f"RSS grew by {growth:.0f} MB (bound {RSS_BOUND_MB})"
    finally:
        await bystander.stop()
    assert await health(server) == health_pb2.HealthCheckResponse.SERVING
    fresh = await connect(server, codec="fp32")
    result((await exchange(fresh, [encoded([inputs(1)], "fp32")]))[1])


async def health(server: CloudServer) -> int:
    async with open_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return answer.status


# -- frames --------------------------------------------------------------------------------


def forged(payload: bytes, **fields: Any) -> EncodedTensor:
    """A tensor with a hand-written header (checksum and payload_size of ``payload`` unless
    given)."""
    fields.setdefault("payload_size", len(payload))
    fields.setdefault("checksum", zlib.crc32(payload))
    fields.setdefault("zstd_level", 0)
    return EncodedTensor(TensorHeader(**fields), payload)


def chunked(
    seq: int, tensors: Sequence[EncodedTensor], max_chunk_bytes: int
) -> list[pb.FrameChunk]:
    return frame_chunks(seq, 1000 + seq, tensors, max_chunk_bytes=max_chunk_bytes)


async def answer(session: SessionClient, chunks: Sequence[pb.FrameChunk]) -> SessionEvent:
    """Send ``chunks`` and return the next event."""
    await session.send_chunks(chunks)
    event = await session.receive()
    assert event is not None, "the stream ended"
    return event


def refused(event: SessionEvent | None, code: str, field: str | None = None) -> SessionFrameError:
    """``event`` as a FrameError with ``code`` (and ``field``, when given)."""
    assert isinstance(event, SessionFrameError), f"expected a FrameError {code}, got {event}"
    assert event.code_name == code, f"expected {code}, got {event}"
    if field is not None:
        assert event.field == field, f"expected field {field!r}, got {event}"
    return event


def ended(event: SessionEvent | None, words: str) -> SessionClosed:
    """``event`` as a SessionEnd PROTOCOL_VIOLATION whose reason says ``words``."""
    assert isinstance(event, SessionClosed), f"expected a SessionEnd, got {event}"
    assert event.code_name == "PROTOCOL_VIOLATION", event
    assert words in event.reason, event
    return event


async def drain(session: SessionClient) -> list[SessionEvent]:
    """Every event until the stream ends."""
    events = []
    async with asyncio.timeout(60):
        while (event := await session.receive()) is not None:
            events.append(event)
    return events


def pixels(seed: int, shape: tuple[int, ...] = (1, 3, 64, 64)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) * 255).to(torch.uint8)


# -- fuzzing -------------------------------------------------------------------------------

# A mutation changes one frame in place and says what it must get: "error" (a FrameError with
# a field) or "any" (the frame may still be valid: a result or a FrameError).
Mutation = Callable[[random.Random, list[EncodedTensor], list[pb.FrameChunk]], str]


def _header(chunks: list[pb.FrameChunk]) -> pb.TensorHeader:
    return chunks[0].tensors[0]


def _mutate_shape(rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]) -> str:
    header = _header(chunks)
    old = list(header.shape)
    kind = rng.randrange(4)
    if kind == 0:
        new = rng.sample(old, len(old))
    elif kind == 1:
        new = old[:-1]
    elif kind == 2:
        dims = [0, 1, 7, 64, 1 << 20, 1 << 40, (1 << 64) - 1]
        new = [rng.choice(dims) for _ in range(rng.randrange(1, 10))]
    else:
        new = old.copy()
        new[rng.randrange(len(new))] += rng.randrange(1, 100)
    if new == old:
        new = [*old, 1]
    header.ClearField("shape")
    header.shape.extend(new)
    return "error"


def _mutate_dtype(rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]) -> str:
    header = _header(chunks)
    header.dtype = rng.choice(
        [d for d in DTYPES if d != header.dtype] + ["", "float8", "complex64", "x" * 300]
    )
    return "error"


def _nearby(rng: random.Random, old: int, top: int) -> int:
    new = rng.choice([0, old - 1, old + 1, old + rng.randrange(2, 1 << 20), top, old * 2 + 5])
    new = min(max(new, 0), top)
    return new if new != old else (old + 1 if old < top else old - 1)


def _mutate_raw_size(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    header = _header(chunks)
    header.raw_size = _nearby(rng, header.raw_size, (1 << 64) - 1)
    return "error"


def _mutate_payload_size(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    header = _header(chunks)
    header.payload_size = _nearby(rng, header.payload_size, (1 << 64) - 1)
    return "error"


def _mutate_checksum(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    header = _header(chunks)
    header.checksum ^= rng.randrange(1, 1 << 32)
    return "error"


def _mutate_scales(rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]) -> str:
    header = _header(chunks)
    scales = bytearray(header.scales)
    kind = rng.randrange(5)
    if kind == 0 or not scales:
        scales += struct.pack("<f", 1.0)  # one too many (or scales where none belong)
    elif kind == 1:
        del scales[-rng.randrange(1, 4) :]
    elif kind == 2:
        scales = bytearray()
    else:
        bad = (float("nan"), float("inf"), -1.0)[kind - 2]
        struct.pack_into("<f", scales, 4 * rng.randrange(len(scales) // 4), bad)
    header.scales = bytes(scales)
    return "error"


def _mutate_param_dtype(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    """Version 3's fields: the parameters' type swapped or unknown, offsets of a wrong length."""
    header = _header(chunks)
    kind = rng.randrange(3)
    if kind == 0:  # float16 <-> float32 (a wrong width for every scale), or on a raw tensor
        header.param_dtype = "float32" if header.param_dtype == "float16" else "float16"
    elif kind == 1:
        header.param_dtype = rng.choice(["float64", "bfloat16", "half", "\x00"])
    else:  # empty offsets mean "all zero"; any other length but the channel count is wrong
        header.offsets = header.offsets[:-1] if header.offsets else b"\x00"
    return "error"


def _mutate_chunk_count(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    chunk = rng.choice(chunks)
    old = chunk.chunk_count
    new = rng.choice([0, old - 1, old + 1, old + rng.randrange(2, 40), (1 << 32) - 1])
    chunk.chunk_count = new if new not in (old, -1) else old + 1
    return "error"


def _mutate_chunk_index(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    chunk = rng.choice(chunks)
    old = chunk.chunk_index
    new = rng.choice([old + 1, old + rng.randrange(2, 100), (1 << 32) - 1, 0 if old else 1])
    chunk.chunk_index = new
    return "error"


def _mutate_random_chunk(
    rng: random.Random, _: list[EncodedTensor], chunks: list[pb.FrameChunk]
) -> str:
    """Replace the frame by one random chunk: random header fields, random payload."""
    seq = chunks[0].seq
    chunk = pb.FrameChunk(
        seq=seq,
        capture_ts_ns=rng.randrange(-(1 << 63), 1 << 63),
        chunk_index=rng.choice([0, 0, 0, rng.randrange(1 << 32)]),
        chunk_count=rng.choice([0, 1, 1, 2, rng.randrange(1 << 32)]),
        payload=rng.randbytes(rng.randrange(0, 4096)),
        cut_id=rng.choice(["", "", "c0000", "c9999", "../etc"]),
        codec=rng.choice(["", "", "fp32", "int9", "jpeg200", "int4+zstd19"]),
        queue_budget_ms=rng.randrange(1 << 32),
    )
    for _ in range(rng.choice([0, 1, 1, 2, 65])):
        chunk.tensors.append(
            pb.TensorHeader(
                dtype=rng.choice([*DTYPES, "", "float128"]),
                shape=[
                    rng.choice([0, 1, 3, 64, 1 << 33, (1 << 64) - 1])
                    for _ in range(rng.randrange(0, 10))
                ],
                scheme=rng.choice(["raw", "fp16", "bf16", "int8", "int4", "jpeg", "png", ""]),
                zstd_level=rng.choice([0, 1, 3, 23, (1 << 32) - 1]),
                channel_axis=rng.randrange(-(1 << 31), 1 << 31),
                scales=rng.randbytes(rng.choice([0, 4, 12, 7])),
                offsets=rng.randbytes(rng.choice([0, 4, 12, 7])),
                raw_size=rng.choice([0, 1, 49152, rng.randrange(1 << 64)]),
                payload_size=rng.choice([0, len(chunk.payload), rng.randrange(1 << 64)]),
                checksum=rng.choice([zlib.crc32(chunk.payload), rng.randrange(1 << 32)]),
                byte_shuffle=rng.random() < 0.5,
                part_sizes=[rng.randrange(1 << 64) for _ in range(rng.choice([0, 1, 3]))],
                param_dtype=rng.choice(["", "float16", "float32", "float64"]),
            )
        )
    chunks[:] = [chunk]
    return "any"


def _payload_mutation(kind: str) -> Mutation:
    """Random bytes as payloads: the first tensor's payload changed before chunking."""

    def mutate(rng: random.Random, tensors: list[EncodedTensor], _: list[pb.FrameChunk]) -> str:
        header, payload = tensors[0].header, bytearray(tensors[0].payload)
        checksum = header.checksum
        if kind in ("random", "random+crc"):
            payload = bytearray(rng.randbytes(len(payload)))
        elif kind == "flips+crc":
            for _ in range(rng.randrange(1, 16)):
                payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        elif kind == "truncated":
            del payload[rng.randrange(len(payload)) :]
        else:  # "extended"
            payload += rng.randbytes(rng.randrange(1, 5000))
        if kind.endswith("+crc"):
            checksum = zlib.crc32(payload)
        tensors[0] = EncodedTensor(dataclasses.replace(header, checksum=checksum), bytes(payload))
        return "any" if kind.endswith("+crc") else "error"

    return mutate


HEADER_MUTATIONS: dict[str, Mutation] = {
    "shape": _mutate_shape,
    "dtype": _mutate_dtype,
    "raw_size": _mutate_raw_size,
    "payload_size": _mutate_payload_size,
    "checksum": _mutate_checksum,
    "scales": _mutate_scales,
    "param_dtype": _mutate_param_dtype,
    "chunk_count": _mutate_chunk_count,
    "chunk_index": _mutate_chunk_index,
    "random chunk": _mutate_random_chunk,
}
PAYLOAD_MUTATIONS: dict[str, Mutation] = {
    f"payload {kind}": _payload_mutation(kind)
    for kind in ("random", "random+crc", "flips+crc", "truncated", "extended")
}


@dataclasses.dataclass(frozen=True)
class Base:
    """A valid frame to mutate: its tensors, chunk size, and the cut/codec chunk 0 names."""

    tensors: tuple[EncodedTensor, ...]
    max_chunk_bytes: int = 1 << 20
    cut_id: str = ""
    codec: str = ""


async def test_random_and_mutated_frames(
    start_server, connect, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    x = inputs(3)
    cut = split_cuts[0]
    bases = [
        Base(tuple(encoded([x], "fp32"))),
        Base(tuple(encoded([x], "fp32")), max_chunk_bytes=20_000),  # three chunks
        Base(tuple(encoded([x], "fp16+zstd1")), codec="fp16+zstd1"),  # byte-shuffled
        Base(
            tuple(encoded(head_outputs(plan, cut, x), "int8+zstd1")), cut_id=cut, codec="int8+zstd1"
        ),
        Base(tuple(encoded([pixels(3)], "jpeg90")), codec="jpeg90"),
    ]
    mutations = {**HEADER_MUTATIONS, **PAYLOAD_MUTATIONS}
    rng = random.Random(20_241_105)
    seq = 0
    seen: dict[str, set[str]] = {name: set() for name in mutations}
    async with under_attack(server, connect, plan) as bystander:
        for _ in range(12):  # sessions of 8 frames: never beyond max_in_flight or max pending
            session = await connect(server, cut="c0000", codec="fp32")
            expected: dict[int, tuple[str, str]] = {}
            for _ in range(8):
                seq += 1
                base = rng.choice(bases)
                name = rng.choice(list(mutations))
                tensors = list(base.tensors)
                chunks: list[pb.FrameChunk] = []
                if name in PAYLOAD_MUTATIONS:
                    must = mutations[name](rng, tensors, chunks)
                chunks = chunked(seq, tensors, base.max_chunk_bytes)
                chunks[0].cut_id, chunks[0].codec = base.cut_id, base.codec
                if name in HEADER_MUTATIONS:
                    must = mutations[name](rng, tensors, chunks)
                expected[seq] = (name, must)
                await session.send_chunks(chunks)
            await session.close()
            events = await drain(session)
            answers: dict[int, SessionEvent] = {}
            for event in events:
                assert not isinstance(event, SessionClosed), f"session ended: {event}"
                assert event.seq in expected and event.seq not in answers, f"stray {event}"
                answers[event.seq] = event
            assert set(answers) == set(expected), f"unanswered: {set(expected) - set(answers)}"
            for number, event in answers.items():
                name, must = expected[number]
                if isinstance(event, SessionResult):
                    assert must == "any", f"{name} mutation got a result"
                    seen[name].add("result")
                    continue
                allowed = REFUSALS | ({"PLAN_MISMATCH"} if must == "any" else set())
                assert event.code_name in allowed, f"{name} mutation: {event}"
                if must == "error":
                    # The field at fault is named, except for a frame the stream cut short.
                    assert event.field or "stream ended" in event.message, f"{name}: {event}"
                seen[name].add(event.field or event.code_name)
            await bystander.progress()
    # The mutations reached many different checks, not one early refusal.
    fields = set().union(*seen.values())
    assert len(fields) >= 12, seen
    assert all(seen.values()), f"mutations never drawn: {[n for n, s in seen.items() if not s]}"


# -- wrong tensors and oversized claims ------------------------------------------------------


async def test_valid_encodings_of_the_wrong_tensors(
    start_server, connect, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    first, second = split_cuts
    x = inputs(4)
    a, b = head_outputs(plan, first, x)
    cases: list[tuple[str, list[EncodedTensor], dict[str, str], str]] = [
        ("smaller image", encoded([torch.randn(1, 3, 32, 32)], "fp32"), {}, "tensors[0].shape"),
        ("rank 3", encoded([torch.randn(1, 3, 64)], "fp32"), {}, "tensors[0].shape"),
        ("rank 5", encoded([torch.randn(1, 3, 64, 64, 1)], "fp32"), {}, "tensors[0].shape"),
        ("float64", encoded([x.double()], "fp32"), {}, "tensors[0].dtype"),
        ("float16", encoded([x.half()], "fp32"), {}, "tensors[0].dtype"),
        ("int64", encoded([x.long()], "fp32"), {}, "tensors[0].dtype"),
        ("bool", encoded([x > 0], "fp32"), {}, "tensors[0].dtype"),
        ("uint8 pixels as fp32", encoded([pixels(1)], "fp32"), {}, "tensors[0].dtype"),
        ("two tensors", encoded([x, x], "fp32"), {}, "tensors"),
        (
            "the other cut's activations",
            encoded(head_outputs(plan, second, x), "int8+zstd1"),
            {"cut_id": first, "codec": "int8+zstd1"},
            "tensors[1].shape",
        ),
        (
            "two batch sizes in one frame",
            encoded([a[:1], torch.cat([b, b])[:2]], "int8+zstd1"),
            {"cut_id": first, "codec": "int8+zstd1"},
            "tensors[1].shape",
        ),
        (
            "a cut's activations sent as the input",
            encoded(head_outputs(plan, first, x)[:1], "fp32"),
            {},
            "tensors[0].shape",
        ),
        (
            "a small camera frame",
            encoded([pixels(2, (1, 3, 32, 32))], "jpeg90"),
            {"codec": "jpeg90"},
            "tensors[0].shape",
        ),
        (
            "a grey camera frame",
            encoded([pixels(2, (1, 1, 64, 64))], "jpeg90"),
            {"codec": "jpeg90"},
            "tensors[0].shape",
        ),
    ]
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        for seq, (what, tensors, route, field) in enumerate(cases, start=1):
            answers = await exchange(session, [tensors], first_seq=seq, **route)
            error = refused(answers[seq], "INVALID_ARGUMENT", field)
            assert "expect" in error.message, f"{what}: {error.message}"
            await bystander.progress()
        # The session goes on.
        result((await exchange(session, [encoded([x], "fp32")], first_seq=100))[100])


async def test_claims_beyond_the_limits(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server(max_frame_bytes=4 << 20)
    fp32 = {"dtype": "float32", "scheme": "raw"}
    tiny = b"\0" * 64
    cases = [
        # (what, tensor, code, field)
        ("2**40 elements", forged(tiny, shape=(1 << 40,), raw_size=4 << 40, **fp32),
         "RESOURCE_EXHAUSTED", "tensors[0].shape"),
        ("a shape whose product overflows 64 bits", forged(tiny, shape=((1 << 64) - 1,) * 4,
         raw_size=0, **fp32), "RESOURCE_EXHAUSTED", "tensors[0].shape"),
        ("rank 9", forged(tiny, shape=(1,) * 9, raw_size=4, **fp32), "RESOURCE_EXHAUSTED",
         "tensors[0].shape"),
        ("more elements than a tensor may have", forged(tiny, shape=(1, 1, 8192, 8193),
         raw_size=4 * 8192 * 8193, **fp32), "RESOURCE_EXHAUSTED", "tensors[0].shape"),
        ("more bytes than a tensor may have", forged(tiny, dtype="float64", scheme="raw",
         shape=(1, (1 << 25) + 1), raw_size=8 * ((1 << 25) + 1)), "RESOURCE_EXHAUSTED",
         "tensors[0].shape"),
        ("12 MiB raw frame", forged(tiny, shape=(1, 3, 1024, 1024), raw_size=12 << 20,
         payload_size=12 << 20, **fp32), "RESOURCE_EXHAUSTED", "tensors"),
        ("payload_size beyond max_frame_bytes", forged(tiny, shape=(1, 3, 1024, 1024),
         raw_size=12 << 20, payload_size=5 << 20, zstd_level=1, **fp32),
         "RESOURCE_EXHAUSTED", "tensors"),
        ("payload_size beyond what zstd makes", forged(tiny, shape=(1, 3, 64, 64),
         raw_size=49152, payload_size=(1 << 64) - 1, zstd_level=1, **fp32),
         "INVALID_ARGUMENT", "tensors[0].payload_size"),
        ("65 tensors", [forged(tiny, shape=(16,), raw_size=64, **fp32)] * 65,
         "INVALID_ARGUMENT", "tensors"),
    ]  # fmt: skip
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        for seq, (what, tensor, code, field) in enumerate(cases, start=1):
            tensors = tensor if isinstance(tensor, list) else [tensor]
            with bystander.bounded(BOMB_BOUND_MB, what):
                event = await answer(session, chunked(seq, tensors, 1 << 20))
            refused(event, code, field)
            await bystander.progress()

        # A chunk larger than max_chunk_bytes (but within gRPC's message limit).
        header = forged(bytes(2 << 20), shape=(1, 512 << 10), raw_size=2 << 20, **fp32)
        chunk = chunked(50, [header], 2 << 20)[0]
        chunk.chunk_count = 2
        refused(await answer(session, [chunk]), "RESOURCE_EXHAUSTED", "payload")
        result((await exchange(session, [encoded([inputs(2)], "fp32")], first_seq=51))[51])

        # A message beyond gRPC's limit fails that stream only (RESOURCE_EXHAUSTED status).
        options = [("grpc.max_send_message_length", 16 << 20)]
        async with aio.insecure_channel(server.address, options=options) as channel:
            big = SessionClient(channel)
            await big.open(_hello(plan))
            with pytest.raises(SessionError) as caught:
                await big.send_chunks([pb.FrameChunk(seq=1, chunk_count=1, payload=bytes(5 << 20))])
                await big.receive()
            assert caught.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
        await bystander.progress()


async def test_partial_frames_are_bounded(start_server, connect, plan: RunnablePlan) -> None:
    # Frames here stay partial on purpose, for longer than --frame-timeout-s's default on a
    # busy machine: the timeout has its own test (test_bounds).
    server = await start_server(max_frame_bytes=4 << 20, max_in_flight=8, max_frame_batch=32,
                                max_session_bytes=4 << 20, frame_timeout_s=600)  # fmt: skip
    x = inputs(5)
    async with under_attack(server, connect, plan) as bystander:
        # Pending frames: each session's assembler holds at most max_in_flight partial frames.
        session = await connect(server, cut="c0000", codec="fp32")
        frames = {seq: chunked(seq, encoded([x], "fp32"), 20_000) for seq in range(1, 41)}
        for seq in range(1, 9):
            await session.send_chunks(frames[seq][:1])
        for seq in range(9, 41):
            event = await answer(session, frames[seq][:1])
            error = refused(event, "RESOURCE_EXHAUSTED", "seq")
            assert error.seq == seq and "8 frames already incomplete" in error.message
        # Completing one makes room; it is computed like any other.
        await session.send_chunks(frames[1][1:])
        assert result(await session.receive()).seq == 1
        result(await answer(session, chunked(100, encoded([x], "fp32"), 20_000)))
        await bystander.progress()
        # The stream ends: every frame still incomplete gets its FrameError.
        await session.close()
        events = await drain(session)
        assert sorted(e.seq for e in events) == list(range(2, 9))
        for event in events:
            refused(event, "INVALID_ARGUMENT", "")
            assert "stream ended before the frame's last chunk" in event.message

        # Buffered bytes: a session holds what has arrived of its frames, at most
        # --max-session-bytes (4 MiB here), however much their chunk 0 announced. Frames of
        # 32 samples (the plan's shape: others are refused on chunk 0) in two chunks, 1 MiB
        # and 0.5 MiB.
        session = await connect(server, cut="c0000", codec="fp32")
        batch = encoded([inputs(6, batch=32)], "fp32")
        claims = {seq: chunked(seq, batch, 1 << 20) for seq in range(1, 5)}
        with bystander.bounded(RSS_BOUND_MB, "four partial frames of 32 samples"):
            for seq in (1, 2, 3, 4):
                await session.send_chunks(claims[seq][:1])  # 4 MiB held
            event = await answer(session, claims[4][1:])
        error = refused(event, "RESOURCE_EXHAUSTED", "payload")
        assert error.seq == 4 and "would exceed --max-session-bytes" in error.message, error
        await bystander.progress()
        # What is left fits a frame of one sample, not the 1.5 MiB of a whole frame of 32 and
        # as much again decoded.
        result(await answer(session, chunked(5, encoded([x], "fp32"), 1 << 20)))
        error = refused(await answer(session, claims[1][1:]), "RESOURCE_EXHAUSTED", "tensors")
        assert "decoding the frame: holding" in error.message, error
        result(await answer(session, chunked(6, encoded([x], "fp32"), 1 << 20)))

        # Many sessions, each at its limits, alongside the bystander.
        floods = [await connect(server, cut="c0000", codec="fp32") for _ in range(4)]
        for flood in floods:
            for seq in range(1, 5):
                await flood.send_chunks(chunked(seq, batch, 1 << 20)[:1])
        await bystander.progress(2)
        for flood in floods:
            await flood.close()
            events = await drain(flood)
            # Each held its four frames' first chunks (4 MiB), answered as the stream ended.
            assert [e.code_name for e in events] == ["INVALID_ARGUMENT"] * 4, events
    await session.close()
    await drain(session)
    assert server.service.budget.held == 0


def _hello(plan: RunnablePlan, **fields: Any) -> pb.Hello:
    values: dict[str, Any] = {
        "protocol_version": PROTOCOL_VERSION,
        "edge_id": "hostile",
        "model_hash": plan.model_hash,
        "cut_id": "c0000",
        "codec": "fp32",
        "max_in_flight": 8,
    }
    values.update(fields)
    return pb.Hello(**values)


# -- bombs ---------------------------------------------------------------------------------


def zstd_zeros(size: int, *, content_size: bool = True, level: int = 3) -> bytes:
    """A zstd frame of ``size`` zero bytes, compressed without ever holding them."""
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=content_size)
    stream = compressor.compressobj(size=size if content_size else -1)
    block = bytes(1 << 20)
    parts = [stream.compress(block[: min(len(block), size - done)])
             for done in range(0, size, len(block))]  # fmt: skip
    parts.append(stream.flush())
    return b"".join(parts)


def with_content_size(frame: bytes, claimed: int) -> bytes:
    """``frame`` with its header's Frame_Content_Size rewritten (a lying zstd frame)."""
    descriptor = frame[4]
    assert descriptor >> 6 == 2, "expected a 4-byte content size field"
    start = 5 + (0 if descriptor & 0x20 else 1) + (0, 1, 2, 4)[descriptor & 3]
    return frame[:start] + struct.pack("<I", claimed) + frame[start + 4 :]


async def test_zstd_bombs(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server()
    raw = 1 * 3 * 64 * 64 * 4
    header = {"dtype": "float32", "shape": (1, 3, 64, 64), "scheme": "raw", "zstd_level": 3,
              "raw_size": raw}  # fmt: skip
    bomb = zstd_zeros(64 << 20)
    assert len(bomb) < 16 << 10
    huge = 1 << 28  # 2**26 float32 elements: exactly the decode limits
    honest = zstd_zeros(huge)
    cases = [
        ("64 MiB declared, raw_size says 48 KiB", forged(bomb, **header), "INVALID_ARGUMENT",
         "tensors[0].payload", "declares 67108864 bytes"),
        ("64 MiB, content size rewritten to raw_size", forged(with_content_size(bomb, raw),
         **header), "INVALID_ARGUMENT", "tensors[0].payload", "zstd"),
        ("64 MiB without a content size", forged(zstd_zeros(64 << 20, content_size=False),
         **header), "INVALID_ARGUMENT", "tensors[0].payload", "declares -1 bytes"),
        ("a valid frame followed by a bomb", forged(zstd_zeros(raw) + bomb, **header),
         "INVALID_ARGUMENT", "tensors[0].payload", "zstd"),
        ("an honest 256 MiB frame", forged(honest, dtype="float32",
         shape=(1, 1, 8192, 8192), scheme="raw", zstd_level=3, raw_size=huge),
         "INVALID_ARGUMENT", "tensors[0].shape", "expected shape (N, 3, 64, 64)"),
        ("an honest 256 MiB frame, byte-shuffled", forged(honest, dtype="float32",
         shape=(1, 1, 8192, 8192), scheme="raw", zstd_level=3, raw_size=huge,
         byte_shuffle=True), "INVALID_ARGUMENT", "tensors[0].shape", "expected shape"),
    ]  # fmt: skip
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        for seq, (what, tensor, code, field, words) in enumerate(cases, start=1):
            with bystander.bounded(BOMB_BOUND_MB, what):
                event = await answer(session, chunked(seq, [tensor], 1 << 20))
            assert words in refused(event, code, field).message, f"{what}: {event}"
            await bystander.progress()
        # Several bombs at once, from several sessions.
        sessions = [await connect(server, cut="c0000", codec="fp32") for _ in range(4)]
        with bystander.bounded(BOMB_BOUND_MB, "honest bombs from four sessions at once"):
            events = await asyncio.gather(
                *(answer(s, chunked(1, [cases[4][1]], 1 << 20)) for s in sessions)
            )
        for event in events:
            refused(event, "INVALID_ARGUMENT", "tensors[0].shape")


def jpeg_claiming(height: int, width: int, *, progressive: bool = False) -> bytes:
    """A small 64×64 JPEG whose frame header (SOF) claims ``height`` × ``width``."""
    buffer = io.BytesIO()
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    Image.fromarray(image).save(buffer, format="JPEG", quality=90, progressive=progressive)
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def jpeg_tensor(payload: bytes, shape: tuple[int, int, int, int], **fields: Any) -> EncodedTensor:
    fields.setdefault("part_sizes", (len(payload),))
    return forged(payload, dtype="uint8", shape=shape, scheme="jpeg",
                  raw_size=int(np.prod(shape)), **fields)  # fmt: skip


async def test_jpeg_bombs(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server()
    side = 4729  # 3 × 4729² uint8 is just within the decode limits, and below Pillow's guard
    garbage = b"\xff\xd8" + random.Random(1).randbytes(500) + b"\xff\xd9"
    cases = [
        ("SOF claims 65500², header the plan's 64²", jpeg_tensor(jpeg_claiming(65500, 65500),
         (1, 3, 64, 64)), "INVALID_ARGUMENT", "tensors[0].payload"),
        ("SOF and header claim 4729²", jpeg_tensor(jpeg_claiming(side, side),
         (1, 3, side, side)), "INVALID_ARGUMENT", "tensors[0].shape"),
        ("SOF and header claim 65500²", jpeg_tensor(jpeg_claiming(65500, 65500),
         (1, 3, 65500, 65500)), "RESOURCE_EXHAUSTED", "tensors[0].shape"),
        ("progressive", jpeg_tensor(jpeg_claiming(64, 64, progressive=True), (1, 3, 64, 64)),
         "INVALID_ARGUMENT", "tensors[0].payload"),
        ("not a JPEG inside SOI…EOI", jpeg_tensor(garbage, (1, 3, 64, 64)),
         "INVALID_ARGUMENT", "tensors[0].payload"),
        ("parts shorter than any JPEG", jpeg_tensor(b"\xff\xd8\xff\xd9", (1, 3, 64, 64)),
         "INVALID_ARGUMENT", "tensors[0].part_sizes"),
        ("parts that do not add up", jpeg_tensor(jpeg_claiming(64, 64), (2, 3, 64, 64),
         part_sizes=(200, 200)), "INVALID_ARGUMENT", "tensors[0].part_sizes"),
    ]  # fmt: skip
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="jpeg90")
        for seq, (what, tensor, code, field) in enumerate(cases, start=1):
            with bystander.bounded(BOMB_BOUND_MB, what):
                event = await answer(session, chunked(seq, [tensor], 1 << 20))
            refused(event, code, field)
            await bystander.progress()
        result((await exchange(session, [encoded([pixels(4)], "jpeg90")], first_seq=99))[99])


# -- chunk order and the end of the stream --------------------------------------------------


async def test_chunk_order_violations(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server()
    tensors = encoded([inputs(6)], "fp32")

    def frame(seq: int) -> list[pb.FrameChunk]:
        chunks = chunked(seq, tensors, 20_000)
        assert len(chunks) == 3
        return chunks

    def reorder(seq: int) -> list[pb.FrameChunk]:
        c0, c1, c2 = frame(seq)
        return [c1, c0, c2]

    def repeat(seq: int) -> list[pb.FrameChunk]:
        c0, c1, c2 = frame(seq)
        return [c0, c0, c1, c2]

    def skip(seq: int) -> list[pb.FrameChunk]:
        c0, _, c2 = frame(seq)
        return [c0, c2]

    def too_many(seq: int) -> list[pb.FrameChunk]:
        chunks = frame(seq)
        extra = pb.FrameChunk(seq=seq, capture_ts_ns=chunks[0].capture_ts_ns, chunk_index=3,
                              payload=b"\1" * 100)  # fmt: skip
        chunks.append(extra)
        for chunk in chunks:
            chunk.chunk_count = 4
        return chunks

    def beyond_max_chunks(seq: int) -> list[pb.FrameChunk]:
        chunks = frame(seq)
        for chunk in chunks:
            chunk.chunk_count = 33  # 32 MiB frames in 1 MiB chunks: at most 32
        return chunks

    def disagreeing(seq: int) -> list[pb.FrameChunk]:
        chunks = frame(seq)
        chunks[1].chunk_count = 4
        return chunks

    def headers_again(seq: int) -> list[pb.FrameChunk]:
        chunks = frame(seq)
        chunks[2].tensors.extend(chunks[0].tensors)
        return chunks

    def fewer(seq: int) -> list[pb.FrameChunk]:
        chunks = frame(seq)
        for chunk in chunks:
            chunk.chunk_count = 2  # the third chunk then belongs to a failed frame
        return chunks

    cases = [
        (reorder, "chunk_index", "arrived before chunk 0"),
        (repeat, "chunk_index", "expected chunk 1 of 3"),
        (skip, "chunk_index", "expected chunk 1 of 3"),
        (too_many, "payload", "more than the 49152 payload bytes"),
        (beyond_max_chunks, "chunk_count", "expected 1..32"),
        (disagreeing, "chunk_count", "disagrees with chunk 0"),
        (headers_again, "chunk_count", "disagrees with chunk 0"),
        (fewer, "payload", "frame ended with 40000 payload bytes"),
    ]
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        seq = 0
        for make, field, words in cases:
            seq += 1
            error = refused(await answer(session, make(seq)), "INVALID_ARGUMENT", field)
            assert error.seq == seq and words in error.message, f"{make.__name__}: {error}"
            # The frame's leftover chunks are dropped silently: the next answer is the next
            # frame's result, not a second error for this one.
            seq += 1
            assert result(await answer(session, frame(seq))).seq == seq
            await bystander.progress()
        # Two frames' chunks interleaved are fine.
        a, b = frame(seq + 1), frame(seq + 2)
        await session.send_chunks([a[0], b[0], a[1], b[1], b[2], a[2]])
        assert {result(await session.receive()).seq for _ in range(2)} == {seq + 1, seq + 2}


async def test_stream_ending_mid_frame(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server()
    tensors = encoded([inputs(7)], "fp32")
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        await session.send_chunks(chunked(1, tensors, 20_000))
        await session.send_chunks(chunked(2, tensors, 20_000)[:1])
        await session.send_chunks(chunked(3, tensors, 20_000)[:2])
        await session.close()
        events = {event.seq: event for event in await drain(session)}  # no SessionEnd
        assert sorted(events) == [1, 2, 3]
        result(events[1])
        for seq in (2, 3):
            assert "stream ended" in refused(events[seq], "INVALID_ARGUMENT").message
        # Abandoning the stream (cancel) mid-frame costs the server nothing either.
        for _ in range(4):
            dropped = await connect(server, cut="c0000", codec="fp32")
            await dropped.send_chunks(chunked(1, tensors, 20_000)[:2])
            dropped.cancel()
        await bystander.progress(2)
        async with asyncio.timeout(30):  # the server notices, and forgets them
            while len(server.service.sessions) > 1:
                await asyncio.sleep(0.02)


# -- the session protocol ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_stream(server: CloudServer) -> AsyncIterator[Any]:
    """A Session call that sends bytes as they are (to send what is not an EdgeMessage)."""
    async with open_channel(server.address) as channel:
        session = channel.stream_stream(
            SESSION_METHOD,
            request_serializer=lambda data: data,
            response_deserializer=pb.CloudMessage.FromString,
        )
        call = session()
        try:
            yield call
        finally:
            call.cancel()


async def _read_end(call: Any) -> pb.SessionEnd:
    async with asyncio.timeout(30):
        while (message := await call.read()) is not aio.EOF:
            if message.WhichOneof("kind") == "end":
                assert await call.read() is aio.EOF, "the stream should close after SessionEnd"
                return message.end
    raise AssertionError("the stream closed without a SessionEnd")


async def test_protocol_violations_end_the_session(
    start_server, connect, plan: RunnablePlan
) -> None:
    # A frame of 8 keeps the tail busy below.
    server = await start_server(**ONE_PEER, max_frame_batch=8)
    tensors = encoded([inputs(8)], "fp32")
    violations = 0

    def violation() -> float | None:
        return server.metrics.registry.get_sample_value(
            "splitwire_sessions_total", {"outcome": "protocol_violation"}
        )

    async with under_attack(server, connect, plan) as bystander:
        # A frame chunk before the Hello.
        early = await connect(server, open=False)
        await early.send_message(pb.EdgeMessage(chunk=chunked(1, tensors, 1 << 20)[0]))
        ended(await early.receive(), "expected a Hello as the first message, got a frame chunk")
        assert await early.receive() is None
        violations += 1
        # An empty message before the Hello.
        empty = await connect(server, open=False)
        await empty.send_message(pb.EdgeMessage())
        ended(await empty.receive(), "got an empty message")
        violations += 1
        await bystander.progress()

        # A second Hello: the frame in flight is answered first, then the session ends, and
        # further sends fail as a SessionError.
        again = await connect(server, cut="c0000", codec="fp32")
        await again.send(1, 0, tensors)
        await again.send_message(pb.EdgeMessage(hello=_hello(plan)))
        assert result(await again.receive()).seq == 1
        ended(await again.receive(), "a second Hello")
        assert await again.receive() is None
        with pytest.raises(SessionError, match="already over"):
            await again.send(2, 0, tensors)
        violations += 1
        # An empty message after the Hello.
        empty = await connect(server, cut="c0000", codec="fp32")
        await empty.send_message(pb.EdgeMessage())
        ended(await empty.receive(), "an empty message")
        violations += 1
        await bystander.progress()

        # A seq reused after its answer is fine; reused while in flight, it ends the session
        # (a batch of 8 keeps the first copy busy in the tail while the second arrives).
        reuse = await connect(server, cut="c0000", codec="fp32")
        result((await exchange(reuse, [tensors]))[1])
        result((await exchange(reuse, [tensors]))[1])
        busy = encoded([inputs(9, batch=8)], "fp32")
        await reuse.send_chunks(chunked(7, busy, 1 << 20) + chunked(7, busy, 1 << 20))
        assert result(await reuse.receive()).seq == 7
        ended(await reuse.receive(), "seq 7 reused while that frame is in flight")
        violations += 1
        await bystander.progress()

        # Bytes that are not an EdgeMessage at all, first or after the Hello.
        garbage = b"\xff\xff\xff\xff\x0f\x00not protobuf"
        async with raw_stream(server) as call:
            await call.write(garbage)
            end = await _read_end(call)
            assert end.code == pb.PROTOCOL_VIOLATION and "EdgeMessage" in end.reason
        violations += 1
        async with raw_stream(server) as call:
            await call.write(pb.EdgeMessage(hello=_hello(plan)).SerializeToString())
            assert (await call.read()).WhichOneof("kind") == "accept"
            for chunk in chunked(1, tensors, 1 << 20):
                await call.write(pb.EdgeMessage(chunk=chunk).SerializeToString())
            await call.write(garbage)
            first = await call.read()
            assert first.WhichOneof("kind") == "result" and first.result.seq == 1
            end = await _read_end(call)
            assert end.code == pb.PROTOCOL_VIOLATION and "EdgeMessage" in end.reason
        violations += 1
        await bystander.progress()
        assert violation() == violations


async def test_a_flood_of_hellos(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server(max_sessions=4)
    x = inputs(10)
    async with under_attack(server, connect, plan) as bystander:  # holds one of the four
        async with open_channel(server.address) as channel:
            await channel.channel_ready()
            for _ in range(3):
                # Many hellos at once on one connection: their streams arrive together.
                flood = [SessionClient(channel) for _ in range(40)]
                outcomes = await asyncio.gather(
                    *(s.open(_hello(plan), timeout_s=30) for s in flood), return_exceptions=True
                )
                accepted = [s for s, o in zip(flood, outcomes, strict=True)
                            if isinstance(o, pb.Accept)]  # fmt: skip
                rejected = [o for o in outcomes if not isinstance(o, pb.Accept)]
                assert len(accepted) == 3, f"{len(accepted)} accepted with --max-sessions 4"
                for outcome in rejected:
                    assert isinstance(outcome, SessionRejected), outcome
                    assert outcome.code == pb.RESOURCE_EXHAUSTED, outcome
                    # Refused at admission (sessions open) or, when the flood's streams
                    # arrive before their Hellos are read, as streams waiting for their Hello.
                    assert "(the limit, --max-sessions)" in outcome.reason, outcome.reason
                # Those within the limit work.
                answers = await asyncio.gather(
                    *(exchange(s, [encoded([x], "fp32")]) for s in accepted)
                )
                for per_session in answers:
                    result(per_session[1])
                await bystander.progress()
                for session in accepted:
                    await session.close()
                    assert await drain(session) == []
                async with asyncio.timeout(30):
                    while len(server.service.sessions) > 1:
                        await asyncio.sleep(0.02)
                for session in flood:
                    session.cancel()
        accepted_total = server.metrics.registry.get_sample_value(
            "splitwire_sessions_total", {"outcome": "accepted"}
        )
        assert accepted_total == 1 + 3 * 3
