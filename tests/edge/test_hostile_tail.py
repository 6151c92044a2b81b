"""A real agent against a hostile or broken tail: a real grpc.aio server on 127.0.0.1 that this
test runs, answering the way the issue's attack rows describe.

* results that disagree with the plan (four 256 MiB zstd bombs, a (2 000 000, 10) bomb, a
  wrong batch) are refused from their headers, before anything is decoded: the agent's memory
  stays bounded and no such frame is ever ``remote``;
* a tail that ends every session at once with ``retry_after_ms`` 0 or 2^32 - 1 is retried with
  the capped backoff: neither a reconnect storm nor an agent that never comes back;
* a tail that accepts frames and answers nothing costs each frame its budget at most (computed
  on the edge under the auto policy) and the agent drops the session and reconnects;
* frame lines stay strict JSON when a tail answers NaN; a token sent without TLS is warned about.

The agent runs in this process, so its memory is this process's: the peak ``VmHWM`` of
``/proc/self/status`` (reset through ``/proc/self/clear_refs`` where allowed, else sampled).
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import json
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import zstandard
from grpc import aio

from splitwire.edge.agent import EdgeAgent
from splitwire.edge.config import ClientTls, EdgeConfig
from splitwire.edge.records import strict_json
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import PROTOCOL_VERSION, EncodedTensor, TensorHeader, encode
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
from splitwire.protocol.client import (
    SERVER_TEXT_CHARS,
    ExpectedTensor,
    SessionClient,
    SessionError,
    SessionRejected,
    open_channel,
)
from splitwire.protocol.framing import ResultTimings, result_chunks

from .agent_runs import assert_each_frame_once, lines, make_agent, without_local

# The agent's peak memory may grow by less than this under an attack (the issue measured
# +2.3 GB for the huge results before the fix; its target for every attack is 200 MB).
RSS_BOUND_MB = 100
RETRY_FOREVER_MS = 2**32 - 1


# -- the fake tail -------------------------------------------------------------------------


Answer = Callable[[pb.FrameChunk], list[EncodedTensor]]


@dataclass
class HostileTail(pb_grpc.SplitSessionServicer):
    """Accepts every Hello, then behaves as told.

    ``answer``: answers each frame (on its last chunk) with these tensors; ``end_retry_ms``:
    ends each session right after its Accept with ``SessionEnd UNAVAILABLE`` and this retry
    hint (after a ``FrameError`` for a frame never sent, with ``stray_error``); neither: reads
    every frame and answers nothing (a silent tail).
    """

    plan: RunnablePlan
    answer: Answer | None = None
    end_retry_ms: int | None = None
    stray_error: bool = False
    hellos: list[float] = field(default_factory=list)  # time.monotonic() of each
    frames: int = 0

    async def Session(self, requests: Any, context: aio.ServicerContext) -> None:
        message = await context.read()
        if message is aio.EOF or message.WhichOneof("kind") != "hello":
            return
        self.hellos.append(time.monotonic())
        await context.write(pb.CloudMessage(accept=pb.Accept(
            protocol_version=PROTOCOL_VERSION, session_id=f"s{len(self.hellos)}",
            server_id="hostile", max_in_flight=message.hello.max_in_flight,
            max_chunk_bytes=1 << 20, max_frame_bytes=1 << 26, cut_ids=sorted(self.plan.plan.cuts),
        )))  # fmt: skip
        if self.end_retry_ms is not None:
            if self.stray_error:
                error = pb.FrameError(seq=424242, code=pb.STALE, message="looks busy")
                await context.write(pb.CloudMessage(error=error))
            end = pb.SessionEnd(code=pb.UNAVAILABLE, reason="go away",
                                retry_after_ms=self.end_retry_ms)  # fmt: skip
            await context.write(pb.CloudMessage(end=end))
            return
        while (message := await context.read()) is not aio.EOF:
            chunk = message.chunk
            if message.WhichOneof("kind") != "chunk" or chunk.chunk_index + 1 < chunk.chunk_count:
                continue
            self.frames += 1
            if self.answer is None:
                continue
            timings = ResultTimings(0, 0, 1000, 0)
            parts = result_chunks(chunk.seq, chunk.capture_ts_ns, self.answer(chunk),
                                  timings=timings)  # fmt: skip
            for part in parts:
                await context.write(pb.CloudMessage(result=part))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[HostileTail], Awaitable[str]]]:
    """``address = await serve(tail)``: the fake tail on 127.0.0.1, stopped at teardown."""
    servers: list[aio.Server] = []

    async def start(tail: HostileTail) -> str:
        server = aio.server()
        pb_grpc.add_SplitSessionServicer_to_server(tail, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


@functools.cache
def zero_bomb(shape: tuple[int, ...]) -> EncodedTensor:
    """float32 zeros of ``shape`` as a valid zstd payload: a few kB on the wire that decode to
    the whole tensor. Compressed a MiB at a time, so this process never holds the tensor."""
    raw = math.prod(shape) * 4
    compressor = zstandard.ZstdCompressor(level=1).compressobj(size=raw)
    zeros = memoryview(bytes(1 << 20))
    parts, left = [], raw
    while left:
        parts.append(compressor.compress(zeros[: min(left, len(zeros))]))
        left -= min(left, len(zeros))
    parts.append(compressor.flush())
    payload = b"".join(parts)
    header = TensorHeader(
        dtype="float32", shape=shape, scheme="raw", zstd_level=1, raw_size=raw,
        payload_size=len(payload), checksum=zlib.crc32(payload), name="bomb",
    )  # fmt: skip
    return EncodedTensor(header, payload)


# -- memory --------------------------------------------------------------------------------


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"{key} missing from /proc/self/status")


class PeakWatch:
    """This process's peak resident memory from now on, in MB: the kernel's own peak where it
    can be reset, else VmRSS sampled every 10 ms."""

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.baseline = _status_mb("VmRSS")
        self._peak = self.baseline
        self._task = None if self.exact else asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self._peak = max(self._peak, _status_mb("VmRSS"))
            await asyncio.sleep(0.01)

    def growth_mb(self) -> float:
        if self._task is not None:
            self._task.cancel()
        now = _status_mb("VmHWM") if self.exact else max(self._peak, _status_mb("VmRSS"))
        return now - self.baseline


# -- tests ---------------------------------------------------------------------------------


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (RFC 8259 has neither)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


async def test_huge_results_are_refused_before_they_are_decoded(
    serve, plan_dir: Path, plan: RunnablePlan, split_cuts
) -> None:
    """Answers that claim four 256 MiB tensors, or one (2 000 000, 10) tensor (a few kB each
    on the wire): each is refused from its headers, the frame is computed on the edge instead,
    the session is dropped and reopened, and the agent's memory stays bounded."""
    bombs = [[zero_bomb((8192, 8192))] * 4, [zero_bomb((2_000_000, 10))]]
    tail = HostileTail(plan, answer=lambda chunk: bombs[chunk.seq % 2])
    address = await serve(tail)
    agent, out = make_agent(
        plan_dir, cloud=address, frames=30, fps=20, cut=split_cuts[0], codec="int8+zstd1",
        policy="auto", hold_s=60, budget_ms=1500,
    )  # fmt: skip
    await agent.prepare()  # the heads' first calls allocate: not the attack's doing
    watch = PeakWatch()
    async with asyncio.timeout(30):
        summary = await agent.run()
    growth = watch.growth_mb()
    records = lines(out)
    assert_each_frame_once(records, 30)
    assert summary["by_source"]["remote"] == 0, summary
    refused = [r for r in records if r["reason"] == "error:BAD_RESULT"]
    assert refused and {r["source"] for r in refused} <= {"local", "dropped"}, records
    assert tail.frames >= 2 and len(tail.hellos) >= 2  # each refusal drops the session
    assert growth < RSS_BOUND_MB, f"peak RSS grew by {growth:.0f} MB (bound {RSS_BOUND_MB})"


async def test_a_result_of_another_batch_is_never_remote(
    serve, plan_dir: Path, plan: RunnablePlan, split_cuts
) -> None:
    """(2, 10) logits for a frame of batch 1 match the plan's (N, 10) except for the batch: the
    batch is the frame's, so the result is refused, and without a fallback (a plan without the
    all-on-edge option) the frame is dropped with the reason."""
    tail = HostileTail(plan, answer=lambda chunk: [encode(torch.zeros(2, 10), "fp32")])
    address = await serve(tail)
    agent, out = make_agent(
        plan_dir, cloud=address, frames=4, cut=split_cuts[0], codec="fp32", policy="fixed",
        budget_ms=30_000, plan=without_local(plan),
    )  # fmt: skip
    async with asyncio.timeout(30):
        await agent.run()
    records = lines(out)
    assert_each_frame_once(records, 4)
    assert {(r["source"], r["reason"]) for r in records} == {("dropped", "error:BAD_RESULT")}


async def _hellos_while_running(
    serve, plan_dir: Path, split_cuts, tail: HostileTail, *, run_s: float, **fields: Any
) -> list[float]:
    """Run an agent against ``tail`` for ``run_s``; the Hellos it sent, as times after its
    first (every frame is still emitted once, none remote)."""
    address = await serve(tail)
    frames = int(run_s * 10)
    agent, out = make_agent(
        plan_dir, cloud=address, frames=frames, fps=10, cut=split_cuts[0], codec="fp32",
        policy="auto", hold_s=60, **fields,
    )  # fmt: skip
    async with asyncio.timeout(run_s + 20):
        summary = await agent.run()
    assert_each_frame_once(lines(out), frames)
    assert summary["by_source"]["remote"] == 0
    return [t - tail.hellos[0] for t in tail.hellos]


@pytest.mark.parametrize("stray_error", [False, True], ids=["end", "stray-error-then-end"])
async def test_a_tail_that_ends_every_session_at_once_is_retried_with_backoff(
    serve, plan_dir: Path, plan: RunnablePlan, split_cuts, stray_error: bool
) -> None:
    """SessionEnd with retry_after_ms = 0 right after each Accept: a session that answered
    nothing is a failed attempt, so the agent backs off (0.1 s doubling, jittered, capped at
    1 s here) instead of reconnecting in a loop (the issue saw 1 430 reconnects in 10 s). An
    error for a frame the agent never sent is no answer: it does not reset the backoff."""
    tail = HostileTail(plan, end_retry_ms=0, stray_error=stray_error)
    hellos = await _hellos_while_running(
        serve, plan_dir, split_cuts, tail, run_s=3.0, reconnect_initial_s=0.1, reconnect_max_s=1.0
    )
    # Each wait is at least half the backoff: 0.05, 0.1, 0.2, 0.4, then 0.5 s at the cap, so
    # the first 3 s hold at most 1 + 4 + (3 - 0.75) / 0.5 = 9.5 sessions.
    within = [t for t in hellos if t < 3.0]
    assert 3 <= len(within) <= 10, hellos


async def test_a_retry_hint_of_2_32_ms_waits_no_longer_than_the_cap(
    serve, plan_dir: Path, plan: RunnablePlan, split_cuts
) -> None:
    """retry_after_ms = 2^32 - 1 (seven weeks): the agent waits at most its backoff cap."""
    tail = HostileTail(plan, end_retry_ms=RETRY_FOREVER_MS)
    hellos = await _hellos_while_running(
        serve, plan_dir, split_cuts, tail, run_s=3.0, reconnect_initial_s=0.1, reconnect_max_s=0.5
    )
    gaps = [b - a for a, b in itertools.pairwise(hellos)]
    assert len(hellos) >= 4, hellos
    assert max(gaps) < 0.5 + 0.3, gaps  # the cap, and the loop's own delays on a busy machine


@pytest.mark.parametrize(("policy", "local"), [("auto", True), ("fixed", True), ("fixed", False)])
async def test_a_silent_tail_costs_each_frame_its_budget_and_the_session(
    serve, plan_dir: Path, plan: RunnablePlan, split_cuts, policy: str, local: bool
) -> None:
    """A tail that accepts frames and answers nothing: with the all-on-edge option shipped,
    under either policy, each frame is computed on the edge before its budget runs out
    (``local``, ``unanswered``); without it, it is dropped ``stale`` at its budget; either way,
    once the frames sent in a row without an answer fill every slot the session has (the
    window: 4 here, below the default --max-unanswered 8) the agent drops the session and
    opens another."""
    tail = HostileTail(plan)
    address = await serve(tail)
    budget_ms = 500.0
    agent, out = make_agent(
        plan_dir, cloud=address, frames=40, fps=20, cut=split_cuts[0], codec="fp32",
        policy=policy, hold_s=60, budget_ms=budget_ms, window=4,
        reconnect_initial_s=0.05, reconnect_max_s=0.2, plan=plan if local else without_local(plan),
    )  # fmt: skip
    async with asyncio.timeout(30):
        summary = await agent.run()
    records = lines(out)
    assert_each_frame_once(records, 40)
    assert summary["by_source"]["remote"] == 0
    assert len(tail.hellos) >= 2, "the agent never dropped the silent session"
    waited = [r for r in records if r["reason"] not in ("window_full", "disconnected")]
    if local:
        here = [r for r in waited if r["source"] == "local"]
        # Frames the dropped session held go to the edge too (``disconnected``).
        assert {r["reason"] for r in here} <= {"unanswered", "disconnected"}, records
        assert any(r["reason"] == "unanswered" for r in here), records
        # Most frames make it: the odd one may find the compute thread busy and go stale.
        assert len(here) >= 0.7 * len(waited), records
        # A little slack: the loop emits the line a moment after the model returns.
        assert max(r["latency_ms"] for r in here) <= budget_ms + 50
    else:
        assert waited and {(r["source"], r["reason"]) for r in waited} == {("dropped", "stale")}


async def test_frame_lines_are_strict_json_when_a_tail_answers_nan(
    serve, plan_dir: Path, plan: RunnablePlan, split_cuts
) -> None:
    """NaN and infinite logits are the tail's business, but the line that reports them is
    strict JSON: non-finite numbers become null, never a bare NaN. So is the run's summary."""
    logits = torch.full((1, 10), math.nan)
    logits[0, 3] = math.inf
    tail = HostileTail(plan, answer=lambda chunk: [encode(logits, "fp32")])
    address = await serve(tail)
    agent, out = make_agent(
        plan_dir, cloud=address, frames=3, cut=split_cuts[0], codec="fp32", policy="fixed",
        budget_ms=30_000,
    )  # fmt: skip
    async with asyncio.timeout(30):
        summary = await agent.run()
    raw = out.getvalue().splitlines()
    records = [strict_loads(line) for line in raw]
    assert_each_frame_once(records, 3)
    assert {r["source"] for r in records} == {"remote"}
    assert all(None in r["result"]["probabilities"] for r in records), records
    strict_loads(strict_json({**summary, "nan": math.nan, "deep": [{"inf": -math.inf}]}))


async def test_a_reject_with_an_unknown_code_and_a_huge_reason_is_bounded(
    serve, plan: RunnablePlan
) -> None:
    """A Reject whose code this version does not know (99) and whose reason is 2.6 MB of
    newlines and escapes: the client names the code and quotes a short, escaped reason."""

    class Rejecting(HostileTail):
        async def Session(self, requests: Any, context: aio.ServicerContext) -> None:
            await context.read()
            reason = "\n\x1b[2J forged\n" * 200_000
            await context.write(pb.CloudMessage(reject=pb.Reject(code=99, reason=reason)))

    address = await serve(Rejecting(plan))
    channel = open_channel(address)
    try:
        async with SessionClient(channel) as session:
            with pytest.raises(SessionRejected) as refused:
                await session.open(pb.Hello(protocol_version=PROTOCOL_VERSION, edge_id="e"))
    finally:
        await channel.close()
    message = str(refused.value)
    prefix = "session rejected (CODE_99): "
    assert message.startswith(prefix), message[:300]
    assert len(message) <= len(prefix) + SERVER_TEXT_CHARS, message[:300]
    assert "\n" not in message and "\x1b" not in message


async def test_an_accept_asking_for_tiny_chunks_is_refused(serve, plan: RunnablePlan) -> None:
    """An Accept with max_chunk_bytes = 1 would make every frame a message per byte: the
    session is refused as a failure (the agent backs off), naming the range it accepts."""

    class Tiny(HostileTail):
        async def Session(self, requests: Any, context: aio.ServicerContext) -> None:
            await context.read()
            accept = pb.Accept(protocol_version=PROTOCOL_VERSION, max_chunk_bytes=1)
            await context.write(pb.CloudMessage(accept=accept))
            await context.read()

    address = await serve(Tiny(plan))
    channel = open_channel(address)
    try:
        async with SessionClient(channel) as session:
            with pytest.raises(SessionError, match="chunks of 1 bytes; expected 0"):
                await session.open(pb.Hello(protocol_version=PROTOCOL_VERSION, edge_id="e"))
    finally:
        await channel.close()


async def test_results_for_frames_not_in_flight_are_dropped_unread(
    serve, plan: RunnablePlan, split_cuts
) -> None:
    """A tail that answers a frame twice and invents answers for frames never sent: only the
    first answer to a frame in flight is taken; the rest are dropped unread and counted."""

    class Inventing(HostileTail):
        async def Session(self, requests: Any, context: aio.ServicerContext) -> None:
            await context.read()
            await context.write(pb.CloudMessage(accept=pb.Accept(
                protocol_version=PROTOCOL_VERSION, session_id="s", server_id="x",
                max_in_flight=4, cut_ids=sorted(self.plan.plan.cuts),
            )))  # fmt: skip
            message = await context.read()
            chunk = message.chunk
            answer = [encode(torch.zeros(1, 10), "fp32")]
            for seq in (chunk.seq, chunk.seq, 7, 8):
                for part in result_chunks(seq, chunk.capture_ts_ns, answer,
                                          timings=ResultTimings()):  # fmt: skip
                    await context.write(pb.CloudMessage(result=part))

    address = await serve(Inventing(plan))
    channel = open_channel(address)
    cut = split_cuts[0]
    spec = plan.crossing(cut, "fp32")[0]
    frame = [encode(torch.zeros(spec.shape), "fp32")]
    output = plan.outputs(cut)[0]
    expect = [ExpectedTensor(output.name, (1, *output.shape[1:]), output.dtype)]
    try:
        async with SessionClient(channel) as session:
            await session.open(pb.Hello(protocol_version=PROTOCOL_VERSION, edge_id="e"))
            await session.send(1, 5, frame, cut_id=cut, codec="fp32", expect=expect)
            first = await session.receive()
            assert first is not None and first.seq == 1
            assert await session.receive() is None  # the stream ends; nothing else came through
            assert session.stray_results == 3
    finally:
        await channel.close()


def test_a_token_without_tls_is_warned_about(
    plan_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with caplog.at_level(logging.WARNING, logger="splitwire.edge"):
        EdgeAgent(EdgeConfig(plan=plan_dir, cloud="127.0.0.1:1", token_file=token),
                  output=io.StringIO())  # fmt: skip
        plain = [r.getMessage() for r in caplog.records]
        caplog.clear()
        tls = ClientTls(ca=tmp_path / "ca.pem")
        EdgeAgent(EdgeConfig(plan=plan_dir, cloud="127.0.0.1:1", token_file=token, tls=tls),
                  output=io.StringIO())  # fmt: skip
        encrypted = [r.getMessage() for r in caplog.records]
    assert any("without TLS" in m for m in plain), plain
    assert not any("without TLS" in m for m in encrypted), encrypted
    assert not any("s3cret" in m for m in plain + encrypted)
