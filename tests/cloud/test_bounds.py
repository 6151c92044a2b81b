"""The tail's memory, CPU and waits are bounded whatever a peer sends (issue 17, item 2).

One test per attack of the issue, against a real server on loopback with a healthy session
(:class:`~tests.cloud.test_hostile.Bystander`) beside the attacker: the attack is refused or
bounded (resident memory measured as ``test_hostile`` does: the server runs in this process),
and the bystander keeps getting correct results. Timeouts are set to a second or less here;
their defaults are in :mod:`splitwire.cloud.config`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import torch
import zstandard
from grpc import aio

from splitwire.cloud import CloudServer
from splitwire.cloud.auth import REFUSAL_MAX_S
from splitwire.cloud.config import CloudConfig
from splitwire.cloud.errors import ConfigError
from splitwire.cloud.session import IDLE_RETRY_AFTER_MS
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import frame_chunks
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import (
    SessionClient,
    SessionClosed,
    SessionError,
    SessionRejected,
    SessionResult,
    open_channel,
)
from splitwire.protocol.peer_text import peer_text
from splitwire.protocol.transport import CLIENT_OPTIONS, bearer

from ..pki import Pki
from .conftest import encoded, exchange, inputs, result, tail_outputs
from .test_hostile import (
    BOMB_BOUND_MB,
    ONE_PEER,
    SESSION_METHOD,
    _hello,
    chunked,
    forged,
    refused,
    under_attack,
)

TOKEN = "edge-fleet-token-1"


@pytest.fixture(autouse=True)
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Any:
    """A hostile peer is an expected event: nothing (splitwire, grpc, asyncio) logs an error
    or a traceback for it."""
    yield
    errors = [
        r for r in caplog.get_records("call")
        if (r.levelno >= logging.ERROR or r.exc_info) and not _earlier_loops_grpc_poller(r)
    ]  # fmt: skip
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


def _earlier_loops_grpc_poller(record: logging.LogRecord) -> bool:
    """grpc.aio's process-wide completion-queue poller handing an event to the closed event loop
    of an earlier test (each test has its own loop; a known grpc race, grpc/grpc#25364): not
    something a peer caused, and only ever this exact callback and error."""
    exc = record.exc_info[1] if record.exc_info else None
    return (
        record.name == "asyncio"
        and "PollerCompletionQueue._handle_events" in record.getMessage()
        and isinstance(exc, RuntimeError)
        and str(exc) == "Event loop is closed"
    )


def _sample(server: CloudServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


async def _until(condition: Any, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.02)


# -- the batch dimension ---------------------------------------------------------------------


def _batch_bomb(batch: int) -> pb.FrameChunk:
    """A frame of the plan's input shape but ``batch`` samples: zeros, zstd-compressed in one
    frame that declares its size, a few hundred bytes per 10 MB (the issue's attack)."""
    raw_size = batch * 3 * 64 * 64 * 4
    payload = zstandard.ZstdCompressor(level=19).compress(bytes(raw_size))
    tensor = forged(payload, dtype="float32", scheme="raw", shape=(batch, 3, 64, 64),
                    raw_size=raw_size, zstd_level=19)  # fmt: skip
    return chunked(1, [tensor], 1 << 20)[0]


async def test_batch_bombs_are_refused_before_decoding(
    start_server, connect, plan: RunnablePlan
) -> None:
    server = await start_server()
    bomb = _batch_bomb(1024)
    assert bomb.ByteSize() < 2000  # 50 MB of float32 zeros announced in < 2 kB
    # Refused on the headers: nothing is decoded, the tail never runs (the issue: 81 s of it).
    alone = await connect(server, cut="c0000", codec="fp32")
    for seq in range(1, 9):
        bomb.seq = seq
        await alone.send_chunks([bomb])
    for _ in range(8):
        refused(await alone.receive(), "RESOURCE_EXHAUSTED", "tensors[0].shape")
    assert _sample(server, "splitwire_decode_seconds_count") == 0
    assert _sample(server, "splitwire_queue_wait_seconds_count") == 0
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        with bystander.bounded(BOMB_BOUND_MB, "eight batch-1024 bombs"):
            started = time.monotonic()
            for seq in range(1, 9):
                bomb.seq = seq
                await session.send_chunks([bomb])
            events = [await session.receive() for _ in range(8)]
            elapsed = time.monotonic() - started
        for event in events:
            error = refused(event, "RESOURCE_EXHAUSTED", "tensors[0].shape")
            assert "a frame of batch 1024; expected 1..1 samples" in error.message, error
        assert elapsed < 5, f"eight refusals took {elapsed:.1f} s"
        await bystander.progress()
        # Batch 0 is no frame at all.
        empty = forged(b"", dtype="float32", scheme="raw", shape=(0, 3, 64, 64), raw_size=0)
        error = refused((await exchange(session, [[empty]], first_seq=20))[20], "INVALID_ARGUMENT")
        assert "a frame of batch 0" in error.message


async def test_a_session_flooding_refused_frames_is_ended(
    start_server, connect, plan: RunnablePlan
) -> None:
    # Each bomb is refused on its headers, but answering a flood of them frame by frame would
    # cost every other session its latency: at --max-refused-frames within the window, the
    # session ends and nothing more of it is read.
    server = await start_server(**ONE_PEER, max_refused_frames=6)
    bomb = _batch_bomb(1024)
    async with under_attack(server, connect, plan) as bystander:
        session = await connect(server, cut="c0000", codec="fp32")
        # Like an edge with a wrong plan: each frame sent once the last one's answer came.
        for seq in range(1, 7):
            bomb.seq = seq
            await session.send_chunks([bomb])
            refused(await session.receive(), "RESOURCE_EXHAUSTED", "tensors[0].shape")
        end = await session.receive()
        assert isinstance(end, SessionClosed), end
        assert end.code_name == "PROTOCOL_VIOLATION", end
        assert "6 frames refused within 10 s" in end.reason, end.reason
        assert "a frame of batch 1024" in end.reason, end.reason
        assert await session.receive() is None  # the stream is over
        await bystander.progress()


async def test_a_peer_whose_session_misbehaved_waits_before_its_next(
    start_server, connect, plan: RunnablePlan, tmp_path
) -> None:
    # A misbehaving peer that reconnects at once would make the server pay for its session
    # again and again: its next streams within --violation-cooldown-s end at once. The key is
    # the token and the host, so a device with another token is not held back.
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\nedge-fleet-token-2\n")
    server = await start_server(max_refused_frames=2, token_file=tokens)
    bomb = _batch_bomb(1024)
    session = await connect(server, cut="c0000", codec="fp32", token=TOKEN)
    for seq in (1, 2):
        bomb.seq = seq
        await session.send_chunks([bomb])
        refused(await session.receive(), "RESOURCE_EXHAUSTED", "tensors[0].shape")
    end = await session.receive()
    assert isinstance(end, SessionClosed) and end.code_name == "PROTOCOL_VIOLATION", end
    with pytest.raises(SessionRejected) as again:
        await connect(server, cut="c0000", codec="fp32", token=TOKEN)
    assert pb.ErrorCode.Name(again.value.code) == "RESOURCE_EXHAUSTED", again.value
    assert "--violation-cooldown-s" in str(again.value), again.value
    assert _sample(server, "splitwire_sessions_total", outcome="cooldown") == 1
    other = await connect(server, cut="c0000", codec="fp32", token="edge-fleet-token-2")
    await exchange(other, [encoded([inputs(1)], "fp32")])


async def test_a_cooldown_ends_and_can_be_turned_off(
    start_server, connect, plan: RunnablePlan
) -> None:
    bomb = _batch_bomb(1024)

    async def misbehave(server: CloudServer) -> None:
        session = await connect(server, cut="c0000", codec="fp32")
        bomb.seq = 1
        await session.send_chunks([bomb])
        refused(await session.receive(), "RESOURCE_EXHAUSTED", "tensors[0].shape")
        assert (await session.receive()).code_name == "PROTOCOL_VIOLATION"

    server = await start_server(max_refused_frames=1, violation_cooldown_s=0.5)
    await misbehave(server)
    with pytest.raises(SessionRejected):
        await connect(server, cut="c0000", codec="fp32")
    await asyncio.sleep(0.6)
    await exchange(await connect(server, cut="c0000", codec="fp32"), [encoded([inputs(1)], "fp32")])
    off = await start_server(max_refused_frames=1, violation_cooldown_s=0)
    await misbehave(off)
    await exchange(await connect(off, cut="c0000", codec="fp32"), [encoded([inputs(1)], "fp32")])


async def test_max_frame_batch_allows_up_to_its_value(
    start_server, connect, plan: RunnablePlan
) -> None:
    server = await start_server(max_frame_batch=4, max_batch=8)
    x = inputs(11, batch=4)
    reference = tail_outputs(plan, "c0000", [x])[0]
    sessions = [await connect(server, cut="c0000", codec="fp32") for _ in range(4)]
    # Four sessions' frames of four samples at once: a tail call never takes more than
    # max(--max-batch, --max-frame-batch) = 8 samples, i.e. two of these frames.
    answers = await asyncio.gather(*(exchange(s, [encoded([x], "fp32")]) for s in sessions))
    for per_session in answers:
        got = result(per_session[1])
        torch.testing.assert_close(got.outputs[0], reference, rtol=1e-4, atol=1e-4)
        assert got.batch_size <= 2, got.batch_size
    error = refused(
        (await exchange(sessions[0], [encoded([inputs(12, batch=5)], "fp32")], first_seq=2))[2],
        "RESOURCE_EXHAUSTED",
        "tensors[0].shape",
    )
    assert "expected 1..4 samples per frame (--max-frame-batch)" in error.message


# -- a client that sends and never reads ------------------------------------------------------


@contextlib.asynccontextmanager
async def never_reading(server: CloudServer, plan: RunnablePlan) -> AsyncIterator[Any]:
    """A session whose client sends frames as fast as it can and never reads an answer. Its
    channel keeps the smallest HTTP/2 window (no BDP probing), as an attacker's would."""
    options = (*CLIENT_OPTIONS, ("grpc.http2.bdp_probe", 0))
    async with aio.insecure_channel(server.address, options=options) as channel:
        session = SessionClient(channel)
        await session.open(_hello(plan, edge_id="never-reads"))
        # Valid frames of 8 samples (393 kB): each holds its slot, its bytes and its decoded
        # inputs until its answer has been handed to gRPC.
        chunks = frame_chunks(1, 1, encoded([inputs(7, batch=8)], "fp32"))
        state = {"sent": 0, "error": None}

        async def send_forever() -> None:
            seq = 0
            try:
                while True:
                    seq += 1
                    for chunk in chunks:
                        chunk.seq = seq
                    await session.send_chunks(chunks)
                    state["sent"] = seq
            except SessionError as exc:
                state["error"] = exc

        task = asyncio.create_task(send_forever())
        try:
            yield state
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            session.cancel()


@pytest.mark.timed
async def test_a_client_that_never_reads_stops_being_read(
    start_server, connect, plan: RunnablePlan
) -> None:
    server = await start_server(**ONE_PEER, write_timeout_s=3.0, max_frame_batch=8)
    async with under_attack(server, connect, plan) as bystander:
        with bystander.bounded(64, "a session that sends frames and never reads"):
            async with never_reading(server, plan) as attacker:
                # The server stops reading it: its sends stall (HTTP/2 flow control).
                last, still = -1, 0.0
                deadline = time.monotonic() + 30
                while still < 1.0:
                    assert time.monotonic() < deadline, "the attacker's sends never stalled"
                    await asyncio.sleep(0.1)
                    still = still + 0.1 if attacker["sent"] == last else 0.0
                    last = attacker["sent"]
                # It holds at most its eight slots, each frame's 393 kB until its answer is
                # written, and nothing more (but the bystander's frame).
                held = server.service.budget.held
                assert held <= 9 * 393_216 + 2 * 49152, held
                await bystander.progress(2)
                # Its frames beyond the eight it may have in flight are refused: at
                # --max-refused-frames of them the session ends (or, if its answers stall
                # first, after --write-timeout-s), and its bytes go back.
                await _until(lambda: len(server.service.sessions) == 1, timeout_s=30,
                             what="the never-reading session ended")  # fmt: skip
                ended = _sample(server, "splitwire_timeouts_total", kind="write") + _sample(
                    server, "splitwire_sessions_total", outcome="protocol_violation"
                )
                assert ended == 1
                assert server.service.budget.held < 1 << 20  # the bystander's frame at most
        await bystander.progress(2)


@pytest.mark.timed
async def test_the_tail_serves_sessions_round_robin(
    start_server, connect, plan: RunnablePlan
) -> None:
    # One frame per tail call: session A's eight frames in flight would all be computed before
    # B's single frame if the tail served frames first come; round robin computes B's next.
    # B must wait at most about one call while A still has frames waiting (first come, B would
    # wait one call per frame of A ahead of it, or come after all but a few of them).
    server = await start_server(max_batch=1)
    greedy = await connect(server, cut="c0000", codec="fp32")
    light = await connect(server, cut="c0000", codec="fp32")
    frame = encoded([inputs(21)], "fp32")
    for seq in range(1, 9):
        await greedy.send(seq, time.time_ns(), frame)
    await light.send(1, time.time_ns(), frame)
    arrivals: list[tuple[float, str, SessionResult]] = []

    async def read(session: SessionClient, name: str, count: int) -> None:
        for _ in range(count):
            arrivals.append((time.monotonic(), name, result(await session.receive())))

    await asyncio.gather(read(greedy, "greedy", 8), read(light, "light", 1))
    arrivals.sort(key=lambda a: a[0])
    order = [name for _, name, _ in arrivals]
    assert len(order) - 1 - order.index("light") >= 3, order  # A had frames left to compute
    computes = sorted(r.timings.compute_ns for _, name, r in arrivals if name == "greedy")
    light_result = next(r for _, name, r in arrivals if name == "light")
    assert light_result.timings.queue_ns <= 2 * computes[len(computes) // 2], (
        light_result.timings,
        computes,
    )


# -- chunk 0 announcing 32 MiB ----------------------------------------------------------------


async def test_frames_announcing_32_mib_are_refused_on_chunk_0(
    start_server, connect, plan: RunnablePlan
) -> None:
    server = await start_server()
    # 44 bytes of frames announcing 32 MiB: 682 samples of the plan's input, and one tensor
    # of a shape the plan does not have.
    claims = [
        (forged(bytes(682 * 49152), shape=(682, 3, 64, 64), dtype="float32", scheme="raw",
                raw_size=682 * 49152), "RESOURCE_EXHAUSTED", "a frame of batch 682"),
        (forged(bytes(32 << 20), shape=(1, 8 << 20), dtype="float32", scheme="raw",
                raw_size=32 << 20), "INVALID_ARGUMENT", "expected shape (N, 3, 64, 64)"),
    ]  # fmt: skip
    async with under_attack(server, connect, plan) as bystander:
        attackers = [await connect(server, cut="c0000", codec="fp32") for _ in range(16)]
        for claim, code, words in claims:
            first = frame_chunks(1, 7, [claim], max_chunk_bytes=1 << 20)[0]
            first.payload = b"\0" * 44
            with bystander.bounded(32, "16 sessions announcing 32 MiB each"):  # was +1 GiB
                for attacker in attackers:
                    await attacker.send_chunks([first])
                for attacker in attackers:
                    error = refused(await attacker.receive(), code, "tensors[0].shape")
                    assert error.seq == 1 and words in error.message, error
            # Their later chunks are ignored; each session goes on.
            late = frame_chunks(1, 7, [claim], max_chunk_bytes=1 << 20)[1]
            await attackers[0].send_chunks([late])
            result((await exchange(attackers[0], [encoded([inputs(3)], "fp32")], first_seq=2))[2])
            await bystander.progress()
        assert server.service.budget.held <= 2 * 49152  # the bystander's frame at most


@pytest.mark.timed
async def test_frames_never_completed_time_out(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server(frame_timeout_s=1.0)
    chunks = frame_chunks(1, 7, encoded([inputs(2)], "fp32"), max_chunk_bytes=20_000)
    async with under_attack(server, connect, plan) as bystander:
        attackers = [await connect(server, cut="c0000", codec="fp32") for _ in range(16)]
        for attacker in attackers:
            await attacker.send_chunks(chunks[:1])  # and never the other two
        # A frame after it, answered: the server has read chunk 0 (one stream keeps its
        # order) and holds its 20 kB, and the bystander's frame (read and decoded) at most.
        valid = [encoded([inputs(2)], "fp32")]
        for answers in await asyncio.gather(
            *(exchange(attacker, valid, first_seq=2) for attacker in attackers)
        ):
            result(answers[2])
        assert server.service.budget.held <= 16 * 20_000 + 2 * 49152
        # Never continued: each is answered once --frame-timeout-s has passed ...
        for attacker in attackers:
            async with asyncio.timeout(10):
                error = refused(await attacker.receive(), "RESOURCE_EXHAUSTED", "chunk_index")
            assert error.seq == 1 and error.capture_ts_ns == 7
            assert "still incomplete 1 s after its first chunk (--frame-timeout-s)" in error.message
        assert _sample(server, "splitwire_timeouts_total", kind="frame") == 16
        assert server.service.budget.held <= 2 * 49152
        # ... and its late chunks are ignored; the session goes on.
        await attackers[0].send_chunks(chunks[1:])
        result((await exchange(attackers[0], valid, first_seq=3))[3])
        await bystander.progress()


# -- sessions that say nothing -----------------------------------------------------------------


@pytest.mark.timed
async def test_idle_sessions_give_their_slot_back(
    start_server, connect, plan: RunnablePlan
) -> None:
    server = await start_server(max_sessions=5, idle_timeout_s=1.0)
    async with under_attack(server, connect, plan) as bystander:  # one of the five slots
        silent = [await connect(server, cut="c0000", codec="fp32") for _ in range(4)]
        with pytest.raises(SessionRejected, match="5 sessions open"):
            await connect(server, cut="c0000", codec="fp32")
        # Each Hello-then-nothing session is ended, in a way that tells the edge to come back.
        for session in silent:
            async with asyncio.timeout(10):
                end = await session.receive()
            assert isinstance(end, SessionClosed), end
            assert end.code_name == "UNAVAILABLE" and end.retry_after_ms == IDLE_RETRY_AFTER_MS
            assert "(--idle-timeout-s 1)" in end.reason, end.reason
            assert await session.receive() is None
        assert _sample(server, "splitwire_timeouts_total", kind="idle") == 4
        # The bystander, busy all along, is never idle; a new edge gets a slot.
        await bystander.progress(3)
        fresh = await connect(server, cut="c0000", codec="fp32")
        result((await exchange(fresh, [encoded([inputs(4)], "fp32")]))[1])


@pytest.mark.timed
async def test_streams_without_a_hello_are_closed(
    start_server, connect, plan: RunnablePlan
) -> None:
    server = await start_server(**ONE_PEER, hello_timeout_s=1.0, max_sessions=150)
    async with under_attack(server, connect, plan) as bystander:
        with bystander.bounded(64, "200 streams that never send a Hello"):
            async with open_channel(server.address) as channel:
                stub = channel.stream_stream(
                    SESSION_METHOD,
                    request_serializer=pb.EdgeMessage.SerializeToString,
                    response_deserializer=pb.CloudMessage.FromString,
                )
                calls = [stub() for _ in range(200)]

                async def outcome(call: Any) -> tuple[str, str]:
                    async with asyncio.timeout(20):
                        message = await call.read()
                        assert await call.read() is aio.EOF
                    assert message.WhichOneof("kind") == "end", message
                    return pb.ErrorCode.Name(message.end.code), message.end.reason

                outcomes = await asyncio.gather(*(outcome(call) for call in calls))
        kinds = collections.Counter(code for code, _ in outcomes)
        # At most --max-sessions streams wait for their Hello (the bystander's is long said);
        # the others are ended at once, and the waiting ones after --hello-timeout-s.
        assert kinds == {"PROTOCOL_VIOLATION": 150, "RESOURCE_EXHAUSTED": 50}, kinds
        for code, reason in outcomes:
            words = "no Hello within 1 s" if code == "PROTOCOL_VIOLATION" else "waiting to send"
            assert words in reason, reason
        assert server.service.handshakes == 0
        assert _sample(server, "splitwire_timeouts_total", kind="hello") == 150
        await bystander.progress()


# -- peer strings in the logs ----------------------------------------------------------------


async def test_peer_strings_cannot_forge_or_flood_the_log(
    start_server, connect, plan: RunnablePlan, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server()
    caplog.set_level(logging.DEBUG, logger="splitwire")
    forged_line = "edge\n2026-01-01 00:00:00 INFO splitwire.cloud.session: all good\x1b[2J"
    # Accepted with a forged line in its id; one frame refused, to log a frame line too.
    session = await connect(server, cut="c0000", codec="fp32", edge_id=forged_line)
    refused((await exchange(session, [encoded([inputs(1, batch=2)], "fp32")]))[1],
            "RESOURCE_EXHAUSTED")  # fmt: skip
    # 20 hellos rejected with 3 MiB ids, 20 with a forged line and a wrong version, 20 with
    # a cut and codec no plan has.
    huge = "\x1b[31m" + "A" * (3 << 20)
    rejected = [
        *({"edge_id": huge} for _ in range(20)),
        *({"edge_id": forged_line, "protocol_version": 99} for _ in range(20)),
        *({"cut_id": "\n" + "c" * 100, "codec": "\x1b" + "x" * 100} for _ in range(20)),
    ]
    reasons = []
    for fields in rejected:
        with pytest.raises(SessionRejected) as caught:
            await connect(server, **fields)
        reasons.append(caught.value.reason)
    assert "Hello.edge_id of 3145733 characters; expected at most 128" in reasons[0]
    assert all(len(reason) < 1000 for reason in reasons)
    records = [r for r in caplog.records if r.name.startswith("splitwire.cloud")]
    text = "\n".join(r.getMessage() for r in records)
    assert len(text) < 20_000, f"{len(text)} characters of log for 60 rejected hellos"
    for record in records:
        line = record.getMessage()
        assert "\n" not in line and "\x1b" not in line, line
    assert f"edge {peer_text(forged_line)}, model" in text  # the accepted session's line
    # Ten lines of a kind per interval; the rest are counted, and the count is logged.
    rejections = [r for r in records if r.getMessage().startswith("rejected session from")]
    assert len(rejections) == 10, len(rejections)
    assert "more than 10 hello lines in 10 s; until the 10 s are over" in text


# -- calls without a token ---------------------------------------------------------------------


async def test_refused_calls_are_always_unauthenticated(
    start_server, connect, plan: RunnablePlan, tmp_path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    tokens.chmod(0o600)
    server = await start_server(token_file=tokens)
    bystander_session = await connect(server, cut="c0000", codec="fp32", token=TOKEN)
    frame = encoded([inputs(5)], "fp32")
    stop = asyncio.Event()

    async def load() -> int:  # a session writing frames all along
        seq = 0
        while not stop.is_set():
            seq += 1
            result((await exchange(bystander_session, [frame], first_seq=seq))[seq])
        return seq

    async def edge_open(token: str | None) -> grpc.StatusCode | None:
        async with open_channel(server.address) as channel:
            try:
                await SessionClient(channel, token=token).open(_hello(plan), timeout_s=30)
            except SessionError as exc:
                return exc.status
        return None

    async def writer(token: str | None, messages: int = 6) -> grpc.StatusCode:
        """A caller that writes ``messages`` messages before reading anything."""
        async with open_channel(server.address) as channel:
            call = channel.stream_stream(SESSION_METHOD,
                                         request_serializer=pb.EdgeMessage.SerializeToString,
                                         response_deserializer=pb.CloudMessage.FromString)(
                metadata=bearer(token) if token else None)  # fmt: skip
            message = pb.EdgeMessage(hello=_hello(plan))
            with contextlib.suppress(asyncio.InvalidStateError, aio.AioRpcError):
                for _ in range(messages):
                    await call.write(message)
            return await call.code()

    loading = asyncio.create_task(load())
    codes: collections.Counter[str] = collections.Counter()
    for _ in range(4):
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(edge_open(token) for token in [None, "wrong"] * 25),
            *(writer(token) for token in [None, "wrong"] * 25),
        )
        assert time.monotonic() - started < 15
        codes.update(code.name if code else "ACCEPTED" for code in outcomes)
    stop.set()
    frames = await loading
    assert codes == {"UNAUTHENTICATED": 400}, codes
    assert frames > 0
    # A caller that writes nothing is answered too, once the refusal stops waiting for it.
    started = time.monotonic()
    assert await writer(None, messages=0) == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started < REFUSAL_MAX_S + 2
    assert _sample(server, "splitwire_unauthenticated_calls_total") == 401


@pytest.mark.parametrize("tls", [False, True])
async def test_tokens_without_tls_are_warned_about(
    start_server, pki: Pki, tmp_path, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    from splitwire.cloud.config import TlsConfig

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    tokens.chmod(0o600)
    caplog.set_level(logging.WARNING, logger="splitwire")
    await start_server(
        token_file=tokens, tls=TlsConfig(pki.server_cert, pki.server_key) if tls else None
    )
    warned = "bearer tokens travel in clear text" in caplog.text
    assert warned != tls
    assert TOKEN not in caplog.text


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"max_frame_batch": 0}, "--max-frame-batch 0: expected at least 1"),
        ({"hello_timeout_s": 0}, "--hello-timeout-s 0: expected a positive"),
        ({"idle_timeout_s": -1}, "--idle-timeout-s -1: expected a positive"),
        ({"max_session_bytes": 1 << 20}, "--max-session-bytes 1048576 is below --max-frame-bytes"),
        ({"max_buffered_bytes": 1 << 20, "max_session_bytes": 2 << 20, "max_frame_bytes": 1 << 20},
         "--max-buffered-bytes 1048576 is below --max-session-bytes"),
    ],
)  # fmt: skip
def test_contradictory_bounds_are_refused(tmp_path, fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        CloudConfig(listen="127.0.0.1:0", plans=(tmp_path,), **fields)
