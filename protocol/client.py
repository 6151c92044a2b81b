"""The edge end of one session, at the level of frames: what the agent and the load benchmark
build on.

    channel = open_channel("127.0.0.1:8500")
    async with SessionClient(channel, token=token) as session:
        accept = await session.open(Hello(...))           # SessionRejected if refused
        await session.send(1, time.time_ns(), [encode(x, "int8+zstd1")])
        event = await session.receive()                   # SessionResult | SessionFrameError
                                                          # | SessionClosed | None (stream over)

gRPC failures (an unreachable server, ``UNAUTHENTICATED``, a cancelled stream) are converted
here, once, into :class:`SessionError` with the status kept. Sends are serialised by a lock,
so several tasks may send on one session; one task should receive.

The server is a peer, not a friend: a result is taken only for a frame this side has in flight
(chunks of any other are dropped unread and counted in ``stray_results``), its chunk 0's
headers are checked against what the sender said to expect (``send(..., expect=...)``: each
output's exact shape and dtype) before anything is buffered or decoded, and the reassembly
obeys the session's :class:`FrameLimits`, which :func:`result_limits` derives from the plan
instead of the 256 MiB defaults. A result that fails any of this raises :class:`ResultRefused`
(a :class:`SessionError` naming the frame): it is never decoded, and the session is over.
Strings the server sends (reasons, details) are quoted and truncated by
:func:`~splitwire.protocol.peer_text.peer_text` before they reach a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import torch
from grpc import aio

from splitwire.errors import SplitwireError
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
from splitwire.protocol.codec import EncodedTensor
from splitwire.protocol.errors import CodecError, HeaderError, PayloadError
from splitwire.protocol.framing import (
    MAX_CHUNK_BYTES,
    FrameAssembler,
    FrameLimits,
    ResultTimings,
    decode_frame,
    frame_chunks,
)
from splitwire.protocol.header import DTYPES, DecodeLimits, zstd_bound
from splitwire.protocol.peer_text import peer_text
from splitwire.protocol.result_codec import ExpectedTensor
from splitwire.protocol.transport import CLIENT_OPTIONS, bearer

# An Accept may lower the chunk size below MAX_CHUNK_BYTES, but not this far: 1-byte chunks
# would turn one 100 kB activation into 100 000 messages.
MIN_ACCEPTED_CHUNK_BYTES = 16 << 10
# The server's explanations (reject reasons, error details) are its diagnostics for the operator,
# which say what was expected and what to do: a sentence fits; a flood does not.
SERVER_TEXT_CHARS = 240
# A result may be this many times the bytes its plan implies (see result_limits) ...
RESULT_BYTES_FACTOR = 2
# ... plus this much, for zstd's frame overhead on tiny outputs such as (1, 10) logits.
RESULT_BYTES_SLACK = 4 << 10


class SessionError(SplitwireError):
    """The session failed as a whole (not one frame).

    Attributes:
        status: the gRPC status code, when gRPC reported one (``UNAUTHENTICATED``, ...).
    """

    def __init__(self, message: str, *, status: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.status = status


class ResultRefused(SessionError):
    """A result this side refused without decoding it: its headers disagree with what its frame
    expects, or its chunks break the protocol or the session's bounds. The server broke the
    session's contract, so the session is over; ``seq`` names the frame that got no usable
    answer.

    Attributes:
        seq, capture_ts_ns: the frame, as the result named it.
        field: the header field or part of the result at fault, e.g. ``"tensors[0].shape"``.
    """

    def __init__(self, message: str, *, seq: int, capture_ts_ns: int, field: str) -> None:
        super().__init__(message)
        self.seq = seq
        self.capture_ts_ns = capture_ts_ns
        self.field = field


class SessionRejected(SessionError):
    """The server answered the Hello with ``Reject``.

    Attributes:
        code: the wire ``ErrorCode``; ``reason`` the server's explanation.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"session rejected ({code_name(code)}): {server_text(reason)}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class SessionResult:
    """The tail's outputs for one frame, with the cloud's own durations.

    ``received_ns`` is ``time.perf_counter_ns()`` when the last chunk arrived (the edge's
    clock, for round-trip times).
    """

    seq: int
    capture_ts_ns: int
    outputs: tuple[torch.Tensor, ...]
    timings: ResultTimings
    batch_size: int
    received_ns: int
    wire_bytes: int


@dataclass(frozen=True)
class SessionFrameError:
    """The server could not answer this frame with a result; the session goes on."""

    seq: int
    capture_ts_ns: int
    code: int
    message: str
    field: str

    @property
    def code_name(self) -> str:
        """The wire error code's name, e.g. ``"STALE"``."""
        return code_name(self.code)


@dataclass(frozen=True)
class SessionClosed:
    """The server ended the session (``SessionEnd``); ``retry_after_ms`` for ``UNAVAILABLE``."""

    code: int
    reason: str
    retry_after_ms: int

    @property
    def code_name(self) -> str:
        """The wire error code's name, e.g. ``"UNAVAILABLE"``."""
        return code_name(self.code)


SessionEvent = SessionResult | SessionFrameError | SessionClosed


def server_text(text: str) -> str:
    """An explanation the server sent (a reason, a message, details), quoted and escaped for a
    log line by :func:`~splitwire.protocol.peer_text.peer_text`, at most
    :data:`SERVER_TEXT_CHARS` long."""
    return peer_text(text, limit=SERVER_TEXT_CHARS)


def code_name(code: int) -> str:
    """The name of a wire ``ErrorCode``; ``CODE_<n>`` for a number this version does not know
    (a peer may send any)."""
    try:
        return pb.ErrorCode.Name(code)
    except ValueError:
        return f"CODE_{code}"


def result_limits(
    answers: Iterable[Sequence[ExpectedTensor]],
    *,
    in_flight: int,
    factor: int = RESULT_BYTES_FACTOR,
    slack: int = RESULT_BYTES_SLACK,
) -> FrameLimits:
    """Bounds on the results of a session whose frames may be answered with any of ``answers``
    (one entry per cut the sender may use), with at most ``in_flight`` frames unanswered.

    A result may be ``factor`` times the bytes its largest answer implies (zstd's worst case
    included) plus ``slack``; it carries at most as many tensors as the largest answer; at most
    ``in_flight`` results are partly received at once.

    Raises:
        ValueError: no answers, an empty answer, an unknown dtype, or ``in_flight < 1``.
    """
    answers = [tuple(a) for a in answers]
    if not answers or not all(answers) or in_flight < 1:
        raise ValueError(
            f"result_limits: expected at least one non-empty answer and in_flight >= 1, got "
            f"{len(answers)} answers and in_flight {in_flight}"
        )
    most_bytes = most_tensor_bytes = most_elements = most_rank = 0
    for answer in answers:
        total = 0
        for tensor in answer:
            if tensor.dtype not in DTYPES:
                raise ValueError(f"result_limits: unknown dtype {tensor.dtype!r} of {tensor.name}")
            elements = 1
            for dim in tensor.shape:
                elements *= dim
            size = elements * DTYPES[tensor.dtype].itemsize
            total += zstd_bound(size)
            most_tensor_bytes = max(most_tensor_bytes, size)
            most_elements = max(most_elements, elements)
            most_rank = max(most_rank, len(tensor.shape))
        most_bytes = max(most_bytes, total)
    frame_bytes = factor * most_bytes + slack
    return FrameLimits(
        max_chunk_bytes=MAX_CHUNK_BYTES,
        max_tensors=max(len(a) for a in answers),
        max_frame_bytes=frame_bytes,
        max_pending_frames=in_flight,
        max_buffered_bytes=in_flight * frame_bytes,
        tensor=DecodeLimits(
            max_rank=max(most_rank, 1),
            max_elements=max(factor * most_elements, 1),
            max_tensor_bytes=max(factor * most_tensor_bytes, 1),
        ),
    )


def open_channel(
    address: str,
    *,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> aio.Channel:
    """An ``aio`` channel to ``address`` with the session's options; TLS when ``tls_ca`` is
    given, mutual TLS when the client certificate and key are given too.

    Raises:
        SessionError: a certificate file cannot be read.
    """
    if tls_ca is None:
        return aio.insecure_channel(address, options=CLIENT_OPTIONS)

    def read(path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SessionError(f"cannot read {path}: {exc.strerror}") from exc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(tls_ca), private_key=read(tls_key), certificate_chain=read(tls_cert)
    )
    return aio.secure_channel(address, credentials, options=CLIENT_OPTIONS)


class SessionClient:
    """One ``SplitSession.Session`` stream (see the module docstring).

    Args:
        channel: from :func:`open_channel`.
        token: bearer token to present, if the server wants one.
        limits: bounds on the results this side reassembles (default: :class:`FrameLimits`'
            generous defaults; an agent passes :func:`result_limits` of its plan).
    """

    def __init__(
        self, channel: aio.Channel, *, token: str | None = None, limits: FrameLimits | None = None
    ) -> None:
        self._stub = pb_grpc.SplitSessionStub(channel)
        self._metadata = bearer(token) if token else None
        self._assembler = FrameAssembler(limits)
        self._call: Any = None
        self._send_lock = asyncio.Lock()
        # Frames sent and not answered yet, with what their answer must carry (None: anything
        # within the limits). Bounded by what the sender sends: the server cannot add to it.
        self._in_flight: dict[int, tuple[ExpectedTensor, ...] | None] = {}
        self._sizes: dict[int, int] = {}
        self.accept: pb.Accept | None = None
        self._cancelled = False
        # Results for frames not in flight (answered already, or never sent), dropped unread.
        self.stray_results = 0

    @property
    def limits(self) -> FrameLimits:
        """The bounds on the results this side reassembles."""
        return self._assembler.limits

    async def open(self, hello: pb.Hello, *, timeout_s: float = 10.0) -> pb.Accept:
        """Send the Hello and wait for the answer.

        Raises:
            SessionRejected: the server answered ``Reject``.
            SessionError: the stream failed (unreachable, ``UNAUTHENTICATED``, timeout), or the
                Accept asks for something no sane server does (chunks below
                :data:`MIN_ACCEPTED_CHUNK_BYTES`).
        """
        self._call = self._stub.Session(metadata=self._metadata)
        try:
            async with asyncio.timeout(timeout_s):
                await self._call.write(pb.EdgeMessage(hello=hello))
                answer = await self._call.read()
        except TimeoutError as exc:
            self._call.cancel()
            raise SessionError(f"no answer to the Hello within {timeout_s} s") from exc
        except aio.AioRpcError as exc:
            raise _rpc_error(exc) from exc
        except asyncio.InvalidStateError as exc:
            raise await self._over() from exc
        if answer is aio.EOF:
            raise SessionError("the server closed the stream without answering the Hello")
        kind = answer.WhichOneof("kind")
        if kind == "reject":
            raise SessionRejected(answer.reject.code, answer.reject.reason)
        if kind == "end":
            raise SessionRejected(answer.end.code, answer.end.reason)
        if kind != "accept":
            raise SessionError(f"expected Accept or Reject after the Hello, got {kind}")
        chunk = answer.accept.max_chunk_bytes
        if chunk and not MIN_ACCEPTED_CHUNK_BYTES <= chunk <= MAX_CHUNK_BYTES:
            self._call.cancel()
            raise SessionError(
                f"the server's Accept asks for chunks of {chunk} bytes; expected 0 (the default) "
                f"or {MIN_ACCEPTED_CHUNK_BYTES}..{MAX_CHUNK_BYTES}"
            )
        self.accept = answer.accept
        return answer.accept

    async def send(
        self,
        seq: int,
        capture_ts_ns: int,
        tensors: Sequence[EncodedTensor],
        *,
        cut_id: str = "",
        codec: str = "",
        queue_budget_ms: int = 0,
        expect: Sequence[ExpectedTensor] | None = None,
    ) -> int:
        """Send one frame (chunked); returns the payload bytes sent.

        Args:
            expect: what the frame's answer must carry, each output's exact shape and dtype;
                a result that differs is refused before it is buffered (None: any result
                within the session's limits).

        Raises:
            SessionError: the stream failed.
        """
        max_chunk = self.accept.max_chunk_bytes if self.accept else 0
        chunks = frame_chunks(seq, capture_ts_ns, tensors, **(
            {"max_chunk_bytes": max_chunk} if max_chunk else {}
        ))  # fmt: skip
        first = chunks[0]
        first.cut_id, first.codec, first.queue_budget_ms = cut_id, codec, queue_budget_ms
        await self.send_chunks(chunks, expect=expect)
        return sum(len(c.payload) for c in chunks)

    async def send_chunks(
        self, chunks: Sequence[pb.FrameChunk], *, expect: Sequence[ExpectedTensor] | None = None
    ) -> None:
        """Send pre-built chunks as they are (the benchmark pre-encodes its frames); each
        chunk 0 puts its frame in flight, answered by a result that matches ``expect``.

        Raises:
            SessionError: the stream failed.
        """
        async with self._send_lock:
            try:
                for chunk in chunks:
                    if chunk.chunk_index == 0:
                        self._in_flight[chunk.seq] = tuple(expect) if expect is not None else None
                    with self._abandoned():
                        await self._call.write(pb.EdgeMessage(chunk=chunk))
            except aio.AioRpcError as exc:
                raise _rpc_error(exc) from exc
            except asyncio.InvalidStateError as exc:
                raise await self._over() from exc

    async def send_message(self, message: pb.EdgeMessage) -> None:
        """Send any message as it is (tests use this to break the protocol on purpose); before
        :meth:`open`, it starts the stream with this message instead of a Hello. A chunk 0
        puts its frame in flight, answered by any result within the limits."""
        async with self._send_lock:
            if self._call is None:
                self._call = self._stub.Session(metadata=self._metadata)
            if message.WhichOneof("kind") == "chunk" and message.chunk.chunk_index == 0:
                self._in_flight[message.chunk.seq] = None
            try:
                with self._abandoned():
                    await self._call.write(message)
            except aio.AioRpcError as exc:
                raise _rpc_error(exc) from exc
            except asyncio.InvalidStateError as exc:
                raise await self._over() from exc

    async def _over(self) -> SessionError:
        """For a write on a stream that already finished (the server ended the session)."""
        code = await self._call.code()
        details = await self._call.details()
        return SessionError(
            f"the session's stream is already over ({code.name}: {server_text(details or '')}); "
            "expected a new session to be opened",
            status=code,
        )

    async def receive(self) -> SessionEvent | None:
        """The next result, frame error or end of session; None when the stream is over.

        Raises:
            ResultRefused: a result broke what its frame expects or the session's bounds (it
                was not decoded); the session is over.
            SessionError: the stream failed, or the server sent a message that has no place in
                a session (a second Accept, ...).
        """
        while True:
            try:
                with self._abandoned():
                    message = await self._call.read()
            except aio.AioRpcError as exc:
                raise _rpc_error(exc) from exc
            if message is aio.EOF:
                return None
            kind = message.WhichOneof("kind")
            if kind == "error":
                e = message.error
                self._answered(e.seq)
                return SessionFrameError(e.seq, e.capture_ts_ns, e.code, e.message, e.field)
            if kind == "end":
                return SessionClosed(message.end.code, message.end.reason,
                                     message.end.retry_after_ms)  # fmt: skip
            if kind != "result":
                raise SessionError(f"unexpected {kind} message during the session")
            result = self._take(message.result)
            if result is not None:
                return result

    def _take(self, chunk: pb.ResultChunk) -> SessionResult | None:
        """One result chunk: the result it completes, or None (its frame is incomplete, or not
        in flight: then the chunk is dropped unread).

        Raises:
            ResultRefused: see :meth:`receive`.
        """
        seq = chunk.seq
        if seq not in self._in_flight:
            self.stray_results += chunk.chunk_index == 0
            return None
        self._sizes[seq] = self._sizes.get(seq, 0) + chunk.ByteSize()
        expect = self._in_flight[seq]
        try:
            if expect is not None and chunk.chunk_index == 0:
                _check_expected(chunk, expect)
            frame = self._assembler.add(chunk)
            if frame is None:
                return None
            received = time.perf_counter_ns()
            outputs = decode_frame(frame, limits=self._assembler.limits.tensor)
            if expect is not None:
                _check_classes(outputs, expect)
        except CodecError as exc:
            self._answered(seq)
            raise ResultRefused(
                f"result of frame {seq} refused: {exc.field + ': ' if exc.field else ''}"
                f"{exc.message}",
                seq=seq,
                capture_ts_ns=chunk.capture_ts_ns,
                field=exc.field,
            ) from exc
        first = frame.first
        assert isinstance(first, pb.ResultChunk)
        wire_bytes = self._sizes.get(seq, 0)
        self._answered(seq)
        return SessionResult(
            seq=frame.seq,
            capture_ts_ns=frame.capture_ts_ns,
            outputs=tuple(outputs),
            timings=ResultTimings(
                first.queue_ns, first.decode_ns, first.compute_ns, first.encode_ns
            ),
            batch_size=first.batch_size,
            received_ns=received,
            wire_bytes=wire_bytes,
        )

    def _answered(self, seq: int) -> None:
        """``seq`` is no longer in flight: forget it, and any part of its result."""
        self._in_flight.pop(seq, None)
        self._sizes.pop(seq, None)
        self._assembler.drop(seq)

    async def close(self) -> None:
        """Tell the server no more frames come (it answers those in flight, then ends)."""
        if self._call is not None:
            async with self._send_lock:
                # Already over (cancelled, failed) is as good as closed.
                with contextlib.suppress(aio.AioRpcError, grpc.RpcError, RuntimeError):
                    await self._call.done_writing()

    def cancel(self) -> None:
        """Abandon the stream at once: a task reading or writing it gets a
        :class:`SessionError` (not a ``CancelledError``, which would end that task)."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    @contextlib.contextmanager
    def _abandoned(self) -> Iterator[None]:
        """grpc.aio raises ``CancelledError`` in whoever awaits a call that :meth:`cancel` ended;
        unless that task itself is being cancelled, it becomes a :class:`SessionError`."""
        try:
            yield
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancelled and task is not None and not task.cancelling():
                raise SessionError("the session was abandoned by this side") from None
            raise

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def _check_expected(chunk: pb.ResultChunk, expect: tuple[ExpectedTensor, ...]) -> None:
    """Chunk 0's headers against what the frame's answer must carry (count, rank, shape,
    dtype), before anything of the result is buffered.

    Raises:
        HeaderError: the first disagreement, naming the tensor, what was expected and what came.
    """
    headers = chunk.tensors
    if len(headers) != len(expect):
        raise HeaderError(
            f"{len(headers)} tensors; the plan's answer has {len(expect)} "
            f"({', '.join(t.name for t in expect)})",
            field="tensors",
        )
    for i, (header, tensor) in enumerate(zip(headers, expect, strict=True)):
        wanted = f"{_shape(tensor.shape)} {tensor.dtype}"
        # Rank first: a hostile header may carry a million dimensions.
        if len(header.shape) != len(tensor.shape):
            raise HeaderError(
                f"tensor {i} ({tensor.name}): expected {wanted}, got rank {len(header.shape)}",
                field=f"tensors[{i}].shape",
            )
        if tuple(header.shape) != tensor.shape or header.dtype != tensor.dtype:
            raise HeaderError(
                f"tensor {i} ({tensor.name}): expected {wanted}, got {_shape(header.shape)} "
                f"{peer_text(header.dtype)}; the tail does not answer with this plan's outputs",
                field=f"tensors[{i}].shape",
            )
        if tensor.scheme is not None and header.scheme != tensor.scheme:
            raise HeaderError(
                f"tensor {i} ({tensor.name}): expected wire scheme {tensor.scheme} (the plan's "
                f"result codec), got {peer_text(header.scheme)}",
                field=f"tensors[{i}].scheme",
            )


def _check_classes(outputs: Sequence[torch.Tensor], expect: tuple[ExpectedTensor, ...]) -> None:
    """Every index of a decoded class map against the plan's classes (its dtype, uint8, was
    checked on the header: nothing below 0).

    Raises:
        PayloadError: naming the tensor, the classes expected and the index that came.
    """
    for i, (tensor, wanted) in enumerate(zip(outputs, expect, strict=True)):
        if wanted.max_class is None or tensor.numel() == 0:
            continue
        top = int(tensor.max())
        if top > wanted.max_class:
            raise PayloadError(
                f"tensor {i} ({wanted.name}): class {top} in the class map; expected classes "
                f"0..{wanted.max_class}",
                field=f"tensors[{i}].payload",
            )


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _rpc_error(exc: aio.AioRpcError) -> SessionError:
    details = server_text(exc.details() or "")
    return SessionError(f"session stream failed: {exc.code().name}: {details}", status=exc.code())
