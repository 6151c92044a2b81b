"""One edge session: Hello → Accept, then frames in, results out, until either side ends it.

Per session, one task reads (chunks are reassembled by :class:`FrameAssembler` as they come),
one task per complete frame decodes it, queues it for the batcher and encodes its results, and
one task writes, so a slow frame never holds up the reading of the next. What can go wrong,
and what the edge gets:

=============================================  =============================================
a bad frame (header, checksum, shape, dtype)   ``FrameError`` ``INVALID_ARGUMENT`` naming the
                                               field; the session goes on
a frame for a cut or codec not served          ``FrameError`` ``PLAN_MISMATCH``
more frames than ``Accept.max_in_flight``,     ``FrameError`` ``RESOURCE_EXHAUSTED``
a bound of the assembler or the batch queue
a frame that outwaited its queue budget        ``FrameError`` ``STALE``
a chunk before the Hello, a second Hello, a    ``SessionEnd`` ``PROTOCOL_VIOLATION``; the
seq reused while in flight                     session ends, no other session notices
the stream ends with a frame half-sent         ``FrameError`` for that frame
the server shuts down                          frames in flight finish, then ``SessionEnd``
                                               ``UNAVAILABLE`` with a retry delay
=============================================  =============================================
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
import torch
from google.protobuf.message import DecodeError
from grpc import aio

from splitwire.cloud.errors import FrameRefused, SessionEnded
from splitwire.cloud.registry import Route, short_hash
from splitwire.partitioner.errors import TensorSpecError
from splitwire.partitioner.runtime import check_described
from splitwire.protocol import (
    MAX_CHUNK_BYTES,
    PROTOCOL_VERSION,
    AssembledFrame,
    CodecError,
    FrameAssembler,
    FrameLimits,
    LimitError,
    ResultTimings,
    decode_frame,
    encode,
    result_chunks,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.header import DTYPES
from splitwire.protocol.transport import RESULT_CODEC

if TYPE_CHECKING:
    from splitwire.cloud.service import TailService

logger = logging.getLogger(__name__)

_session_ids = itertools.count(1)
# Shutdown: how long an edge should wait before reconnecting. Short, because behind a load
# balancer the reconnect lands on another replica that is ready now; long enough, with the
# agent's jitter, to spread a drained replica's sessions over a few frames' time. A lone
# server's restart is covered by the agent's backoff, not by this hint.
RETRY_AFTER_MS = 100
_NOT_EDGE_MESSAGE = "a message that does not parse as a splitwire.v1.EdgeMessage"
# Frames (and results) that decode to at most this many bytes are decoded (encoded) on the
# event loop: ~0.2 ms for 256 kB, less than the two thread hops it saves. Larger ones go to the
# codec threads so that one big frame never stalls every other session.
INLINE_CODEC_BYTES = 256 << 10


class SessionHandler:
    """Runs one ``SplitSession.Session`` stream (see the module docstring)."""

    def __init__(self, service: TailService, context: aio.ServicerContext) -> None:
        self._service = service
        self._context = context
        self._config = service.config
        self._metrics = service.metrics
        self._id = f"{self._config.server_id or 'tail'}-{next(_session_ids)}"
        self._hello = pb.Hello()
        self._routes: dict[tuple[str, str], Route] = {}
        self._in_flight: set[int] = set()
        self._max_in_flight = self._config.max_in_flight
        # One writer at a time; a write waits for HTTP/2 flow control, so an edge that sends
        # but never reads stalls its own session (reading included), nothing else.
        self._write_lock = asyncio.Lock()
        self._gone = False
        self._assembler = FrameAssembler(
            FrameLimits(
                max_frame_bytes=self._config.max_frame_bytes,
                max_pending_frames=self._config.max_in_flight,
                max_buffered_bytes=2 * self._config.max_frame_bytes,
            )
        )

    async def run(self) -> None:
        """Serve the stream until the edge closes it, breaks the protocol, or the server
        shuts down."""
        service = self._service
        accepted = False
        try:
            accepted = await self._handshake()
        finally:
            if not accepted:
                service.sessions.discard(self)  # the slot admission took, if it took one
        if not accepted:
            return
        self._metrics.sessions.inc()
        try:
            async with asyncio.TaskGroup() as tasks:
                ending = await self._serve(tasks)
                while self._in_flight:
                    await self._settled.wait()
                    self._settled.clear()
                if ending is not None:
                    await self._send([_end(ending)])
        finally:
            service.sessions.discard(self)
            self._metrics.sessions.dec()
        logger.info("session %s (%s) closed", self._id, self._hello.edge_id or "anonymous")

    # -- handshake --------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        """Read the Hello and answer it; True when the session is accepted."""
        try:
            message = await self._context.read()
        except DecodeError as exc:
            await self._reject_violation(f"{_NOT_EDGE_MESSAGE} ({exc}); send Hello first")
            return False
        if message is aio.EOF:
            return False
        assert isinstance(message, pb.EdgeMessage)
        kind = message.WhichOneof("kind")
        if kind != "hello":
            got = "a frame chunk" if kind == "chunk" else "an empty message"
            await self._reject_violation(
                f"expected a Hello as the first message, got {got}; send Hello first"
            )
            return False
        hello = message.hello
        self._hello = hello
        reason = self._admission(hello)
        if reason is None:
            # Taken before the first await: concurrent hellos cannot all pass --max-sessions.
            self._service.sessions.add(self)
        else:
            code, text = reason
            self._metrics.sessions_total.labels(pb.ErrorCode.Name(code).lower()).inc()
            logger.info("rejected session from %s: %s", hello.edge_id or "anonymous", text)
            await self._context.write(pb.CloudMessage(reject=pb.Reject(code=code, reason=text)))
            return False
        self._max_in_flight = min(hello.max_in_flight or self._max_in_flight, self._max_in_flight)
        cut_ids = self._service.registry.cuts(hello.model_hash)
        await self._context.write(
            pb.CloudMessage(
                accept=pb.Accept(
                    protocol_version=PROTOCOL_VERSION,
                    session_id=self._id,
                    server_id=self._config.server_id,
                    max_in_flight=self._max_in_flight,
                    max_chunk_bytes=MAX_CHUNK_BYTES,
                    cut_ids=cut_ids,
                    max_frame_bytes=self._config.max_frame_bytes,
                )
            )
        )
        self._metrics.sessions_total.labels("accepted").inc()
        logger.info(
            "session %s: edge %s, model %s, cut %s, %s, %d in flight",
            self._id,
            hello.edge_id or "anonymous",
            short_hash(hello.model_hash),
            hello.cut_id,
            hello.codec,
            self._max_in_flight,
        )
        return True

    def _admission(self, hello: pb.Hello) -> tuple[pb.ErrorCode, str] | None:
        if hello.protocol_version != PROTOCOL_VERSION:
            return (
                pb.UNSUPPORTED_VERSION,
                f"edge speaks protocol version {hello.protocol_version}; this server speaks "
                f"{PROTOCOL_VERSION}: upgrade the older side",
            )
        if self._service.draining:
            return (
                pb.UNAVAILABLE,
                "the server is shutting down; reconnect (to another replica) in "
                f"{RETRY_AFTER_MS} ms",
            )
        if len(self._service.sessions) >= self._config.max_sessions:
            return (
                pb.RESOURCE_EXHAUSTED,
                f"{len(self._service.sessions)} sessions open (the limit, --max-sessions); "
                "retry later or connect to another replica",
            )
        try:
            self._route(hello.cut_id, hello.codec)
        except FrameRefused as exc:
            return exc.code, exc.message
        return None

    async def _reject_violation(self, reason: str) -> None:
        self._metrics.sessions_total.labels("protocol_violation").inc()
        logger.warning("ended a session: %s", reason)
        await self._context.write(_end(SessionEnded(pb.PROTOCOL_VIOLATION, reason)))

    # -- frames in --------------------------------------------------------------------------

    _settled: asyncio.Event

    async def _serve(self, tasks: asyncio.TaskGroup) -> SessionEnded | None:
        """Read until the edge half-closes (None), the protocol breaks or the server drains
        (the SessionEnd to send once the frames in flight are answered)."""
        self._settled = asyncio.Event()
        reader = asyncio.ensure_future(self._read(tasks))
        drain = asyncio.ensure_future(self._service.drained.wait())
        try:
            await asyncio.wait({reader, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._answer_pending(
                pb.UNAVAILABLE, "the server shut down before the frame was complete"
            )
            return SessionEnded(
                pb.UNAVAILABLE,
                f"the server is shutting down; frames not answered before this were not "
                f"computed; reconnect in {RETRY_AFTER_MS} ms",
            )
        ending = reader.result()
        if ending is None:
            await self._answer_pending(
                pb.INVALID_ARGUMENT, "the stream ended before the frame's last chunk"
            )
        return ending

    async def _read(self, tasks: asyncio.TaskGroup) -> SessionEnded | None:
        while True:
            try:
                message = await self._context.read()
            except DecodeError as exc:
                message, what = None, f"{_NOT_EDGE_MESSAGE} ({exc})"
            else:
                if message is aio.EOF:
                    return None
                assert isinstance(message, pb.EdgeMessage)
                kind = message.WhichOneof("kind") or ""
                what = {"chunk": "", "hello": "a second Hello"}.get(kind, "an empty message")
            if what:
                reason = f"{what} in session {self._id}; expected frame chunks after the Hello"
                self._metrics.sessions_total.labels("protocol_violation").inc()
                logger.warning("ending session %s: %s", self._id, reason)
                return SessionEnded(pb.PROTOCOL_VIOLATION, reason)
            assert message is not None
            chunk = message.chunk
            self._metrics.bytes_in.inc(len(chunk.payload))
            if chunk.seq in self._in_flight:
                reason = (
                    f"seq {chunk.seq} reused while that frame is in flight; expected a new seq "
                    "per frame"
                )
                self._metrics.sessions_total.labels("protocol_violation").inc()
                logger.warning("ending session %s: %s", self._id, reason)
                return SessionEnded(pb.PROTOCOL_VIOLATION, reason)
            try:
                frame = self._assembler.add(chunk)
            except CodecError as exc:
                await self._refuse(chunk.seq, chunk.capture_ts_ns, _codec_refusal(exc))
                continue
            if frame is None:
                continue
            arrival_ns = time.perf_counter_ns()
            if len(self._in_flight) >= self._max_in_flight:
                await self._refuse(frame.seq, frame.capture_ts_ns, FrameRefused(
                    pb.RESOURCE_EXHAUSTED,
                    f"{len(self._in_flight)} frames in flight (the limit Accept gave); wait "
                    "for an answer before sending more",
                    field="seq",
                ))  # fmt: skip
                continue
            self._in_flight.add(frame.seq)
            self._metrics.in_flight.inc()
            tasks.create_task(self._process(frame, arrival_ns), name=f"{self._id} #{frame.seq}")

    async def _answer_pending(self, code: pb.ErrorCode, message: str) -> None:
        """Frames begun but never completed get an answer too."""
        for seq in self._assembler.pending():
            self._assembler.drop(seq)
            await self._refuse(seq, 0, FrameRefused(code, message))

    # -- one frame --------------------------------------------------------------------------

    async def _process(self, frame: AssembledFrame, arrival_ns: int) -> None:
        try:
            answer = await self._answer(frame, arrival_ns)
        except FrameRefused as exc:
            answer = [self._refusal(frame.seq, frame.capture_ts_ns, exc)]
        except Exception:
            logger.exception("session %s: frame %d failed", self._id, frame.seq)
            answer = [self._refusal(frame.seq, frame.capture_ts_ns, FrameRefused(
                pb.INTERNAL, "the server failed on this frame (it logged why)"
            ))]  # fmt: skip
        finally:
            # Out of flight *before* the answer is written: an edge that sends its next frame
            # the moment it reads this answer must find the slot free.
            self._in_flight.discard(frame.seq)
            self._metrics.in_flight.dec()
            self._settled.set()
        await self._send(answer)

    async def _answer(self, frame: AssembledFrame, arrival_ns: int) -> list[pb.CloudMessage]:
        """Decode, compute (batched), encode: the result messages of one frame.

        Raises:
            FrameRefused: the frame gets a FrameError instead.
        """
        loop = asyncio.get_running_loop()
        first = frame.first
        assert isinstance(first, pb.FrameChunk)
        route = self._route(first.cut_id or self._hello.cut_id, first.codec or self._hello.codec)
        labels = (short_hash(route.model_hash), route.cut)
        self._metrics.frames.labels(*labels).inc()
        batcher = self._service.batcher
        with batcher.expect(route):
            if _decoded_bytes(frame) <= INLINE_CODEC_BYTES:
                inputs, decode_ns = _decode(frame, route)
            else:
                inputs, decode_ns = await loop.run_in_executor(
                    self._service.codec_pool, _decode, frame, route
                )
            pending = batcher.submit(
                route, inputs, arrival_ns=arrival_ns, budget_ns=first.queue_budget_ms * 1_000_000
            )
        try:
            result = await pending
        finally:
            # A refused frame raises out of here; its traceback holds this frame, which must
            # not hold the future holding that exception (a cycle keeping the decoded tensors
            # alive until a full garbage collection: hundreds of MB under load).
            del pending
        timings = ResultTimings(result.queue_ns, decode_ns, result.compute_ns, 0)
        if sum(t.nbytes for t in result.outputs) <= INLINE_CODEC_BYTES:
            messages, encode_ns = _encode(frame, result.outputs, timings, result.batch_size)
        else:
            messages, encode_ns = await loop.run_in_executor(
                self._service.codec_pool, _encode, frame, result.outputs, timings,
                result.batch_size,
            )  # fmt: skip
        self._metrics.decode_time.observe(decode_ns / 1e9)
        self._metrics.encode_time.observe(encode_ns / 1e9)
        self._metrics.results.labels(*labels).inc()
        self._metrics.bytes_out.inc(sum(len(m.result.payload) for m in messages))
        return messages

    def _route(self, cut: str, codec: str) -> Route:
        key = (cut, codec)
        route = self._routes.get(key)
        if route is None:
            route = self._service.registry.resolve(self._hello.model_hash, cut, codec)
            if len(self._routes) < 64:  # a session uses a handful; never grow without bound
                self._routes[key] = route
        return route

    async def _refuse(self, seq: int, capture_ts_ns: int, exc: FrameRefused) -> None:
        await self._send([self._refusal(seq, capture_ts_ns, exc)])

    def _refusal(self, seq: int, capture_ts_ns: int, exc: FrameRefused) -> pb.CloudMessage:
        """The FrameError for ``seq``, counted and logged."""
        self._metrics.errors.labels(pb.ErrorCode.Name(exc.code)).inc()
        logger.debug("session %s: frame %d refused: %s", self._id, seq, exc.message)
        return _frame_error(seq, capture_ts_ns, exc)

    # -- messages out -----------------------------------------------------------------------

    async def _send(self, messages: list[pb.CloudMessage]) -> None:
        """Write one answer (its chunks together: a frame's chunks never interleave)."""
        async with self._write_lock:
            if self._gone:
                return
            try:
                for message in messages:
                    await self._context.write(message)
            except (aio.AioRpcError, grpc.RpcError, RuntimeError, asyncio.InvalidStateError) as exc:
                # The edge is gone; what was left to say cannot be said.
                self._gone = True
                logger.info("session %s: edge went away while writing (%s)", self._id, exc)


def _decode(frame: AssembledFrame, route: Route) -> tuple[list[torch.Tensor], int]:
    """Check against the plan, decode, prepare the tail's inputs (on the loop or in a codec
    thread, see INLINE_CODEC_BYTES)."""
    start = time.perf_counter_ns()
    try:
        # Against the plan before decoding, on the validated headers alone: a small zstd or
        # JPEG payload whose header claims a large tensor must not be inflated only to be
        # refused. Decoding yields exactly the headers' dtypes and shapes.
        check_described([(h.shape, h.dtype) for h in frame.headers], route.crossing)
        tensors = decode_frame(frame)
    except CodecError as exc:
        raise _codec_refusal(exc) from exc
    except TensorSpecError as exc:
        raise FrameRefused(pb.INVALID_ARGUMENT, str(exc), field=exc.field) from exc
    inputs = route.prepare(tensors)
    return inputs, time.perf_counter_ns() - start


def _encode(
    frame: AssembledFrame,
    outputs: Sequence[torch.Tensor],
    timings: ResultTimings,
    batch_size: int,
) -> tuple[list[pb.CloudMessage], int]:
    """The result chunks of one frame (on the loop or in a codec thread)."""
    start = time.perf_counter_ns()
    encoded = [encode(t, RESULT_CODEC, name=f"output{i}") for i, t in enumerate(outputs)]
    encode_ns = time.perf_counter_ns() - start
    chunks = result_chunks(
        frame.seq,
        frame.capture_ts_ns,
        encoded,
        timings=ResultTimings(timings.queue_ns, timings.decode_ns, timings.compute_ns, encode_ns),
    )
    chunks[0].batch_size = batch_size
    return [pb.CloudMessage(result=c) for c in chunks], encode_ns


def _codec_refusal(exc: CodecError) -> FrameRefused:
    """A wire-format error as the frame's answer: a bound reached is RESOURCE_EXHAUSTED,
    anything else malformed is INVALID_ARGUMENT; the field at fault is kept."""
    code = pb.RESOURCE_EXHAUSTED if isinstance(exc, LimitError) else pb.INVALID_ARGUMENT
    return FrameRefused(code, exc.message, field=exc.field)


def _decoded_bytes(frame: AssembledFrame) -> int:
    """What decoding the frame produces (its headers were validated on arrival): the inline
    decision goes by this, not by the wire size, which zstd can make tiny."""
    return sum(math.prod(h.shape) * DTYPES[h.dtype].itemsize for h in frame.headers)


def _frame_error(seq: int, capture_ts_ns: int, exc: FrameRefused) -> pb.CloudMessage:
    return pb.CloudMessage(
        error=pb.FrameError(
            seq=seq,
            capture_ts_ns=capture_ts_ns,
            code=exc.code,
            message=exc.message,
            field=exc.field,
        )
    )


def _end(exc: SessionEnded) -> pb.CloudMessage:
    retry = RETRY_AFTER_MS if exc.code == pb.UNAVAILABLE else 0
    return pb.CloudMessage(
        end=pb.SessionEnd(code=exc.code, reason=exc.message, retry_after_ms=retry)
    )
