"""One edge session: Hello → Accept, then frames in, results out, until either side ends it.

Per session, one task reads (chunks are reassembled by :class:`FrameAssembler` as they come),
one task per complete frame decodes it, queues it for the batcher, encodes its results and
writes them, and one task watches the clock, so a slow frame never holds up the reading of the
next. What can go wrong, and what the edge gets:

=============================================  =============================================
a bad frame (header, checksum, shape, dtype)   ``FrameError`` ``INVALID_ARGUMENT`` naming the
                                               field; the session goes on
a frame for a cut or codec not served          ``FrameError`` ``PLAN_MISMATCH``
a frame of more samples than                   ``FrameError`` ``RESOURCE_EXHAUSTED``
``--max-frame-batch``                          ``tensors[0].shape``, before decoding
more frames than ``Accept.max_in_flight``,     ``FrameError`` ``RESOURCE_EXHAUSTED``
a bound of the assembler or the batch queue,
more bytes than ``--max-session-bytes`` or
``--max-buffered-bytes``
a frame that outwaited its queue budget        ``FrameError`` ``STALE``
a frame not whole ``--frame-timeout-s`` after  ``FrameError`` ``RESOURCE_EXHAUSTED``; its
its first chunk                                later chunks are ignored
a chunk before the Hello, a second Hello, a    ``SessionEnd`` ``PROTOCOL_VIOLATION``; the
seq reused while in flight, no Hello within    session ends, no other session notices
``--hello-timeout-s``
``--max-sessions`` streams already waiting     ``SessionEnd`` ``RESOURCE_EXHAUSTED`` at once
for their Hello
a Hello string longer than                     ``Reject`` ``INVALID_ARGUMENT`` naming it
:data:`MAX_NAME_CHARS`
nothing in flight and no frame for             ``SessionEnd`` ``UNAVAILABLE`` with
``--idle-timeout-s``                           ``retry_after_ms`` :data:`IDLE_RETRY_AFTER_MS`
an answer the edge does not take within        the session ends: nothing more is read or
``--write-timeout-s`` (it sends, never reads)  computed for it, its bytes are given back
``--max-refused-frames`` frames refused for    ``SessionEnd`` ``PROTOCOL_VIOLATION``: nothing
what they carry (the rows above the queue      more is read; refusing a flood frame by frame
budget's) within ``REFUSED_WINDOW_S``          would cost every other session its latency
the stream ends with a frame half-sent         ``FrameError`` for that frame
the server shuts down                          frames in flight finish, then ``SessionEnd``
                                               ``UNAVAILABLE`` with a retry delay
=============================================  =============================================

Memory: a frame holds its in-flight slot and its bytes (as they arrive, then decoded, then its
answer) until its answer has been handed to gRPC. An edge that sends and never reads therefore
fills its slots and its ``--max-session-bytes``, its next frame is refused, that refusal waits
for the edge too, and the session stops being read: it holds at most its budget, and for at most
``--write-timeout-s`` after its last answer went through.

Peer strings reach the logs through :func:`~splitwire.protocol.peer_text.peer_text`, and every
line a peer can cause at will through the server's
:class:`~splitwire.protocol.peer_text.RateLimitedLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from splitwire.cloud.config import REFUSED_WINDOW_S
from splitwire.cloud.cooldown import HOLD_S, peer_key
from splitwire.cloud.errors import FrameRefused, SessionEnded
from splitwire.cloud.frames import (
    INLINE_CODEC_BYTES,
    HeldBytes,
    check_headers,
    codec_refusal,
    decode,
    decoded_bytes,
    encode_answer,
    frame_error,
)
from splitwire.cloud.registry import Route, short_hash
from splitwire.protocol import (
    MAX_CHUNK_BYTES,
    PROTOCOL_VERSION,
    AssembledFrame,
    CodecError,
    FrameAssembler,
    FrameLimits,
    ResultTimings,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.framing import ByteBudget
from splitwire.protocol.peer_text import peer_text

if TYPE_CHECKING:
    from splitwire.cloud.service import TailService

logger = logging.getLogger(__name__)

_session_ids = itertools.count(1)
# Shutdown: how long an edge should wait before reconnecting. Short, because behind a load
# balancer the reconnect lands on another replica that is ready now; long enough, with the
# agent's jitter, to spread a drained replica's sessions over a few frames' time. A lone
# server's restart is covered by the agent's backoff, not by this hint.
RETRY_AFTER_MS = 100
# An idle session's end: the edge reconnects after this (with its jitter), so an edge that has
# nothing to send costs one Hello per --idle-timeout-s, not a reconnect loop.
IDLE_RETRY_AFTER_MS = 1000
# Longest edge id, model hash, cut id or codec name taken from a peer (a sha256 in hex is 64).
MAX_NAME_CHARS = 128
_NOT_EDGE_MESSAGE = "a message that does not parse as a splitwire.v1.EdgeMessage"


class _Ending(SessionEnded):
    """How a session ends: the ``SessionEnd`` to send (if the edge can still be told) and the
    retry delay it carries."""

    def __init__(
        self, code: pb.ErrorCode, message: str, *, retry_after_ms: int = 0, tell: bool = True
    ) -> None:
        super().__init__(code, message)
        self.retry_after_ms = retry_after_ms
        self.tell = tell


class SessionHandler:
    """Runs one ``SplitSession.Session`` stream (see the module docstring)."""

    def __init__(self, service: TailService, context: aio.ServicerContext) -> None:
        self._service = service
        self._context = context
        self._config = service.config
        self._metrics = service.metrics
        self._log = service.peer_log
        self._id = f"{self._config.server_id or 'tail'}-{next(_session_ids)}"
        self._peer = peer_key(context.peer(), context.invocation_metadata())
        self._misbehaved = False  # broke the protocol: its peer waits (splitwire.cloud.cooldown)
        self._hello = pb.Hello()
        self._routes: dict[tuple[str, str], Route] = {}
        self._in_flight: set[int] = set()
        self._answering = 0  # frames of _in_flight whose answer is being written
        self._max_in_flight = self._config.max_in_flight
        self._max_frame_batch = self._config.max_frame_batch
        # One writer at a time; a write waits for HTTP/2 flow control, so an edge that sends
        # but never reads stalls its own session (reading included), nothing else.
        self._write_lock = asyncio.Lock()
        self._gone = False
        self._stalled = False  # a write outwaited --write-timeout-s
        # Set when nothing can be written any more (the edge went away or stopped reading).
        self._unwritable = asyncio.Event()
        self._settled = asyncio.Event()
        self._last_activity_s = time.monotonic()
        self._refused = _RefusedFrames(self._config.max_refused_frames, REFUSED_WINDOW_S)
        self._budget = ByteBudget(
            self._config.max_session_bytes, name="--max-session-bytes", parent=service.budget
        )
        self._assembler = FrameAssembler(
            FrameLimits(
                max_frame_bytes=self._config.max_frame_bytes,
                max_pending_frames=self._config.max_in_flight,
                max_buffered_bytes=self._config.max_session_bytes,
            ),
            budget=self._budget,
        )

    @property
    def _edge(self) -> str:
        """The edge's id as logs may show it."""
        return peer_text(self._hello.edge_id) if self._hello.edge_id else "anonymous"

    async def run(self) -> None:
        """Serve the stream until the edge closes it, breaks the protocol, times out, or the
        server shuts down."""
        await self._run()
        if self._misbehaved or self._stalled:
            self._service.cooldown.punish(self._peer)
        self._drop_if_stalled()

    async def _run(self) -> None:
        service = self._service
        wait_s = service.cooldown.remaining_s(self._peer)
        if wait_s > 0:
            self._metrics.sessions_total.labels("cooldown").inc()
            reason = (
                f"a session of this peer (token and host) ended for breaking the protocol or "
                f"not taking its answers; reconnect in {wait_s:.1f} s (--violation-cooldown-s)"
            )
            self._log.log("cooldown", logging.INFO, "ending a stream: %s", reason)
            if service.held < self._config.max_sessions:
                service.held += 1
                try:
                    await asyncio.sleep(min(wait_s, HOLD_S))
                finally:
                    service.held -= 1
                wait_s = service.cooldown.remaining_s(self._peer)
            retry_after_ms = math.ceil(wait_s * 1e3)
            await self._send(
                [_end(_Ending(pb.RESOURCE_EXHAUSTED, reason, retry_after_ms=retry_after_ms))]
            )
            return
        if service.handshakes >= self._config.max_sessions:
            # Streams that have not said Hello yet are bounded too (each costs ~20 kB of gRPC
            # and task state for up to --hello-timeout-s): an honest edge says Hello at once,
            # so it meets this only when a flood of silent streams is going on.
            self._metrics.sessions_total.labels("resource_exhausted").inc()
            reason = (
                f"{service.handshakes} streams are waiting to send their Hello (the limit, "
                "--max-sessions); retry later or connect to another replica"
            )
            self._log.log("hello", logging.INFO, "ended a stream at once: %s", reason)
            await self._send([_end(_Ending(pb.RESOURCE_EXHAUSTED, reason))])
            return
        service.handshakes += 1
        accepted = False
        try:
            accepted = await self._handshake()
        finally:
            service.handshakes -= 1
            if not accepted:
                service.sessions.discard(self)  # the slot admission took, if it took one
        if not accepted:
            return
        self._metrics.sessions.inc()
        ending: _Ending | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                ending = await self._serve(tasks)
                while self._in_flight:
                    await self._settled.wait()
                if ending is not None and ending.tell:
                    await self._send([_end(ending)])
        finally:
            for seq in self._assembler.pending():
                self._assembler.drop(seq)
            service.sessions.discard(self)
            self._metrics.sessions.dec()
        why = f": {ending.message}" if ending is not None else ""
        self._log.log(
            "session", logging.INFO, "session %s (%s) closed%s", self._id, self._edge, why
        )

    def _drop_if_stalled(self) -> None:
        """After a write that outwaited --write-timeout-s, have gRPC drop the call.

        Its status could not pass the write still queued behind HTTP/2 flow control (sending
        it fails in gRPC's core, which logs a traceback), and grpc.aio gives a server no way to
        cancel a call but this: a handler that ends in CancelledError is dropped without a
        status (RST_STREAM), and the edge sees CANCELLED.
        """
        if self._stalled:
            raise asyncio.CancelledError(f"session {self._id}: the edge took no answers")

    # -- handshake --------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        """Read the Hello and answer it; True when the session is accepted."""
        timeout_s = self._config.hello_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                message = await self._context.read()
        except DecodeError as exc:
            await self._reject_violation(f"{_NOT_EDGE_MESSAGE} ({exc}); send Hello first")
            return False
        except TimeoutError:
            self._metrics.timeouts.labels("hello").inc()
            await self._reject_violation(
                f"no Hello within {timeout_s:g} s of opening the stream (--hello-timeout-s); "
                "expected a Hello as the first message",
                kind="timeout",
            )
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
        reason = _long_name(hello) or self._admission(hello)
        if reason is None:
            # Taken before the first await: concurrent hellos cannot all pass --max-sessions.
            self._service.sessions.add(self)
        else:
            code, text = reason
            self._metrics.sessions_total.labels(pb.ErrorCode.Name(code).lower()).inc()
            self._log.log(
                "hello",
                logging.INFO,
                "rejected session from %s: %s",
                peer_text(hello.edge_id) if hello.edge_id else "anonymous",
                text,
            )
            await self._send([pb.CloudMessage(reject=pb.Reject(code=code, reason=text))])
            return False
        self._hello = hello
        self._max_in_flight = min(hello.max_in_flight or self._max_in_flight, self._max_in_flight)
        cut_ids = self._service.registry.cuts(hello.model_hash)
        await self._send(
            [
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
            ]
        )
        if self._gone:
            return False
        self._last_activity_s = time.monotonic()
        self._metrics.sessions_total.labels("accepted").inc()
        self._log.log(
            "session",
            logging.INFO,
            "session %s: edge %s, model %s, cut %s, %s, %d in flight",
            self._id,
            self._edge,
            short_hash(hello.model_hash),  # admitted: a served model, cut and codec
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
            self._route(hello.cut_id, hello.codec, model_hash=hello.model_hash)
        except FrameRefused as exc:
            return exc.code, exc.message
        return None

    async def _reject_violation(self, reason: str, *, kind: str = "violation") -> None:
        self._misbehaved = True
        self._metrics.sessions_total.labels("protocol_violation").inc()
        self._log.log(kind, logging.WARNING, "ended a session: %s", reason)
        await self._send([_end(_Ending(pb.PROTOCOL_VIOLATION, reason))])

    # -- frames in --------------------------------------------------------------------------

    async def _serve(self, tasks: asyncio.TaskGroup) -> _Ending | None:
        """Read until the edge half-closes (None), the protocol breaks, a timeout passes, the
        edge stops taking answers, or the server drains (the ending to send, if it can be,
        once the frames in flight are answered)."""
        reader = asyncio.ensure_future(self._read(tasks))
        watch = asyncio.ensure_future(self._watch(tasks))
        drain = asyncio.ensure_future(self._service.drained.wait())
        unwritable = asyncio.ensure_future(self._unwritable.wait())
        refused = asyncio.ensure_future(self._refused.exceeded.wait())
        try:
            await asyncio.wait(
                {reader, watch, drain, unwritable, refused}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (watch, drain, unwritable, refused):
                waiter.cancel()
        if self._unwritable.is_set():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            return _Ending(pb.UNAVAILABLE, "the edge stopped taking answers", tell=False)
        if self._refused.exceeded.is_set():
            # Not another frame of this peer is read: what it sends is refused anyway.
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._answer_pending(pb.PROTOCOL_VIOLATION, "the session is ending")
            return self._violation(
                f"{self._refused.limit} frames refused within {REFUSED_WINDOW_S:g} s for what "
                f"they carried (--max-refused-frames; the last: {self._refused.last}); expected "
                "frames that fit the plan and the limits Accept gave: fix the edge, then reconnect"
            )
        if reader.done():
            ending = reader.result()
            if ending is None:
                await self._answer_pending(
                    pb.INVALID_ARGUMENT, "the stream ended before the frame's last chunk"
                )
            return ending
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if watch.done() and not watch.cancelled():
            return watch.result()
        await self._answer_pending(
            pb.UNAVAILABLE, "the server shut down before the frame was complete"
        )
        return _Ending(
            pb.UNAVAILABLE,
            f"the server is shutting down; frames not answered before this were not computed; "
            f"reconnect in {RETRY_AFTER_MS} ms",
            retry_after_ms=RETRY_AFTER_MS,
        )

    async def _read(self, tasks: asyncio.TaskGroup) -> _Ending | None:
        while not self._gone:
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
            self._last_activity_s = time.monotonic()
            if what:
                return self._violation(
                    f"{what} in session {self._id}; expected frame chunks after the Hello"
                )
            assert message is not None
            chunk = message.chunk
            del message
            if chunk.seq in self._in_flight:
                return self._violation(
                    f"seq {chunk.seq} reused while that frame is in flight; expected a new seq "
                    "per frame"
                )
            self._metrics.bytes_in.inc(len(chunk.payload))
            try:
                frame = self._assembler.add(chunk)
            except CodecError as exc:
                await self._refuse(chunk.seq, chunk.capture_ts_ns, codec_refusal(exc))
                continue
            if frame is None:
                if chunk.chunk_index == 0:
                    await self._check_started(chunk)
                continue
            arrival_ns = time.perf_counter_ns()
            # A frame whose answer is being written frees its slot in a moment: an edge that
            # sends its next frame as soon as it reads an answer may get here first.
            while len(self._in_flight) >= self._max_in_flight and self._answering:
                await self._settled.wait()
            if len(self._in_flight) >= self._max_in_flight:
                await self._refuse(frame.seq, frame.capture_ts_ns, FrameRefused(
                    pb.RESOURCE_EXHAUSTED,
                    f"{len(self._in_flight)} frames in flight (the limit Accept gave); wait "
                    "for an answer before sending more",
                    field="seq", by_peer=True,
                ))  # fmt: skip
                continue
            held = HeldBytes(self._budget)
            try:
                # The assembler has just given these bytes back: they are the frame's now.
                held.take(sum(len(p) for p in frame.payloads), what="the frame", field="tensors")
            except FrameRefused as exc:
                await self._refuse(frame.seq, frame.capture_ts_ns, exc)
                continue
            self._in_flight.add(frame.seq)
            self._metrics.in_flight.inc()
            tasks.create_task(
                self._process(frame, arrival_ns, held), name=f"{self._id} #{frame.seq}"
            )
        return None

    async def _check_started(self, chunk: pb.FrameChunk) -> None:
        """A frame of several chunks is checked against the plan on its chunk 0 (whose headers
        the assembler has validated): one the plan refuses is refused now, and the rest of it
        is never buffered."""
        try:
            headers = [(tuple(t.shape), t.dtype) for t in chunk.tensors]
            check_headers(headers, self._frame_route(chunk), max_batch=self._max_frame_batch)
        except FrameRefused as exc:
            self._assembler.fail(chunk.seq)
            await self._refuse(chunk.seq, chunk.capture_ts_ns, exc)

    def _violation(self, reason: str) -> _Ending:
        self._misbehaved = True
        self._metrics.sessions_total.labels("protocol_violation").inc()
        self._log.log("violation", logging.WARNING, "ending session %s: %s", self._id, reason)
        return _Ending(pb.PROTOCOL_VIOLATION, reason)

    async def _watch(self, tasks: asyncio.TaskGroup) -> _Ending:
        """Give up on frames begun too long ago; end the session once it has been idle."""
        config = self._config
        # Deadlines are met within a quarter of the shortest: a few wake-ups per second at most.
        tick_s = min(max(min(config.frame_timeout_s, config.idle_timeout_s) / 4, 0.01), 1.0)
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            for seq, capture_ts_ns in self._assembler.started_before(now - config.frame_timeout_s):
                self._assembler.fail(seq)
                self._metrics.timeouts.labels("frame").inc()
                message = (
                    f"frame {seq} still incomplete {config.frame_timeout_s:g} s after its first "
                    "chunk (--frame-timeout-s); expected a frame's chunks one after another"
                )
                self._log.log("timeout", logging.INFO, "session %s: %s", self._id, message)
                # Written by its own task: the watch must not wait on an edge that does not read.
                refusal = FrameRefused(pb.RESOURCE_EXHAUSTED, message, field="chunk_index")
                tasks.create_task(self._refuse(seq, capture_ts_ns, refusal))
            idle_s = now - self._last_activity_s
            busy = self._in_flight or self._assembler.pending()
            if not busy and idle_s >= config.idle_timeout_s:
                self._metrics.timeouts.labels("idle").inc()
                return _Ending(
                    pb.UNAVAILABLE,
                    f"no frame for {idle_s:.0f} s (--idle-timeout-s "
                    f"{config.idle_timeout_s:g}); the session's slot is given back: "
                    f"reconnect in {IDLE_RETRY_AFTER_MS} ms, or when there are frames to send",
                    retry_after_ms=IDLE_RETRY_AFTER_MS,
                )

    async def _answer_pending(self, code: pb.ErrorCode, message: str) -> None:
        """Frames begun but never completed get an answer too."""
        for seq in self._assembler.pending():
            self._assembler.drop(seq)
            await self._refuse(seq, 0, FrameRefused(code, message))

    # -- one frame --------------------------------------------------------------------------

    async def _process(self, frame: AssembledFrame, arrival_ns: int, held: HeldBytes) -> None:
        """Answer one frame; its slot and bytes are held until the answer is handed to gRPC."""
        try:
            try:
                answer = await self._answer(frame, arrival_ns, held)
            except FrameRefused as exc:
                answer = [self._refusal(frame.seq, frame.capture_ts_ns, exc)]
            except Exception:
                logger.exception("session %s: frame %d failed", self._id, frame.seq)
                answer = [self._refusal(frame.seq, frame.capture_ts_ns, FrameRefused(
                    pb.INTERNAL, "the server failed on this frame (it logged why)"
                ))]  # fmt: skip
            self._answering += 1
            try:
                await self._send(answer)
            finally:
                self._answering -= 1
        finally:
            held.release()
            self._in_flight.discard(frame.seq)
            self._metrics.in_flight.dec()
            self._notify()

    def _notify(self) -> None:
        """Wake whoever waits for a frame to settle (every waiter holds the old event)."""
        self._settled.set()
        self._settled = asyncio.Event()

    async def _answer(
        self, frame: AssembledFrame, arrival_ns: int, held: HeldBytes
    ) -> list[pb.CloudMessage]:
        """Check, decode, compute (batched), encode: the result messages of one frame.

        Raises:
            FrameRefused: the frame gets a FrameError instead.
        """
        loop = asyncio.get_running_loop()
        first = frame.first
        assert isinstance(first, pb.FrameChunk)
        route = self._frame_route(first)
        labels = (short_hash(route.model_hash), route.cut)
        self._metrics.frames.labels(*labels).inc()
        # Against the plan and the batch bound before anything is decoded: a small zstd or
        # JPEG payload whose header claims a large tensor must not be inflated only to be
        # refused. Decoding yields exactly the headers' dtypes and shapes.
        headers = [(h.shape, h.dtype) for h in frame.headers]
        check_headers(headers, route, max_batch=self._max_frame_batch)
        decoded = decoded_bytes(frame)
        held.take(decoded, what="decoding the frame", field="tensors")
        batcher = self._service.batcher
        with batcher.expect(route):
            if decoded <= INLINE_CODEC_BYTES:
                inputs, decode_ns = decode(frame, route)
            else:
                inputs, decode_ns = await loop.run_in_executor(
                    self._service.codec_pool, decode, frame, route
                )
            pending = batcher.submit(
                route, inputs, arrival_ns=arrival_ns,
                budget_ns=first.queue_budget_ms * 1_000_000, owner=self._id,
            )  # fmt: skip
            del inputs  # the batcher holds them until the tail has run
        try:
            result = await pending
        finally:
            # A refused frame raises out of here; its traceback holds this frame, which must
            # not hold the future holding that exception (a cycle keeping the decoded tensors
            # alive until a full garbage collection: hundreds of MB under load).
            del pending
        held.give(decoded)  # the tail has run: the decoded inputs are gone
        timings = ResultTimings(result.queue_ns, decode_ns, result.compute_ns, 0)
        output_bytes = sum(t.nbytes for t in result.outputs)
        held.take(2 * output_bytes, what="the frame's answer", field="")  # outputs, encoded
        if output_bytes <= INLINE_CODEC_BYTES:
            messages, encode_ns = encode_answer(
                frame, route, result.outputs, timings, result.batch_size
            )
        else:
            messages, encode_ns = await loop.run_in_executor(
                self._service.codec_pool, encode_answer, frame, route, result.outputs, timings,
                result.batch_size,
            )  # fmt: skip
        self._metrics.decode_time.observe(decode_ns / 1e9)
        self._metrics.encode_time.observe(encode_ns / 1e9)
        self._metrics.results.labels(*labels).inc()
        self._metrics.bytes_out.inc(sum(len(m.result.payload) for m in messages))
        return messages

    def _frame_route(self, first: pb.FrameChunk) -> Route:
        """What serves a frame: its chunk 0's cut and codec, or the Hello's."""
        return self._route(first.cut_id or self._hello.cut_id, first.codec or self._hello.codec)

    def _route(self, cut: str, codec: str, *, model_hash: str | None = None) -> Route:
        """What serves ``cut`` and ``codec`` of this session's model (or of ``model_hash``).

        Raises:
            FrameRefused: a name longer than :data:`MAX_NAME_CHARS`, or as
                :meth:`TailRegistry.resolve`.
        """
        for field, value in (("cut_id", cut), ("codec", codec)):
            if len(value) > MAX_NAME_CHARS:
                raise FrameRefused(
                    pb.INVALID_ARGUMENT,
                    f"{field} of {len(value)} characters; expected at most {MAX_NAME_CHARS}",
                    field=field,
                )
        key = (cut, codec)
        route = self._routes.get(key) if model_hash is None else None
        if route is None:
            model = self._hello.model_hash if model_hash is None else model_hash
            route = self._service.registry.resolve(model, cut, codec)
            if model_hash is None and len(self._routes) < 64:
                self._routes[key] = route  # a session uses a handful; never grow without bound
        return route

    async def _refuse(self, seq: int, capture_ts_ns: int, exc: FrameRefused) -> None:
        await self._send([self._refusal(seq, capture_ts_ns, exc)])

    def _refusal(self, seq: int, capture_ts_ns: int, exc: FrameRefused) -> pb.CloudMessage:
        """The FrameError for ``seq``, counted and logged (and, when the edge is at fault,
        counted against --max-refused-frames)."""
        self._metrics.errors.labels(pb.ErrorCode.Name(exc.code)).inc()
        if exc.by_peer:
            self._refused.add(exc.message)
        self._log.log(
            "frame", logging.DEBUG, "session %s: frame %d refused: %s", self._id, seq, exc.message
        )
        return frame_error(seq, capture_ts_ns, exc)

    # -- messages out -----------------------------------------------------------------------

    async def _send(self, messages: list[pb.CloudMessage]) -> None:
        """Write one answer (its chunks together: a frame's chunks never interleave).

        Each write may wait for the edge (HTTP/2 flow control) at most --write-timeout-s; past
        that, or once the edge is gone, nothing more is written in this session.
        """
        timeout_s = self._config.write_timeout_s
        async with self._write_lock:
            if self._gone:
                return
            try:
                for message in messages:
                    async with asyncio.timeout(timeout_s):
                        await self._context.write(message)
            except TimeoutError:
                self._stalled = True
                self._metrics.timeouts.labels("write").inc()
                self._log.log(
                    "timeout",
                    logging.INFO,
                    "session %s: the edge took no answer for %g s (--write-timeout-s); "
                    "ending the session",
                    self._id,
                    timeout_s,
                )
                self._stop_writing()
            except (aio.AioRpcError, aio.BaseError, grpc.RpcError, RuntimeError,
                    asyncio.InvalidStateError) as exc:  # fmt: skip
                # The edge is gone; what was left to say cannot be said.
                self._log.log(
                    "gone", logging.INFO, "session %s: edge went away while writing (%s)",
                    self._id, type(exc).__name__,
                )  # fmt: skip
                self._stop_writing()
            else:
                self._last_activity_s = time.monotonic()

    def _stop_writing(self) -> None:
        self._gone = True
        self._unwritable.set()


class _RefusedFrames:
    """Frames refused for the edge's fault in the last ``window_s``: once ``limit`` of them fall
    within the window, :attr:`exceeded` is set and the session ends."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.last = ""
        self.exceeded = asyncio.Event()
        self._window_s = window_s
        self._times: deque[float] = deque(maxlen=limit)

    def add(self, message: str) -> None:
        now = time.monotonic()
        self._times.append(now)
        self.last = message[:200]
        if len(self._times) == self.limit and now - self._times[0] <= self._window_s:
            self.exceeded.set()


def _long_name(hello: pb.Hello) -> tuple[pb.ErrorCode, str] | None:
    """A Hello string too long to keep or to show (a 3 MiB edge id), named."""
    for field in ("edge_id", "model_hash", "cut_id", "codec"):
        length = len(getattr(hello, field))
        if length > MAX_NAME_CHARS:
            return (
                pb.INVALID_ARGUMENT,
                f"Hello.{field} of {length} characters; expected at most {MAX_NAME_CHARS}",
            )
    return None


def _end(exc: _Ending) -> pb.CloudMessage:
    return pb.CloudMessage(
        end=pb.SessionEnd(code=exc.code, reason=exc.message, retry_after_ms=exc.retry_after_ms)
    )
