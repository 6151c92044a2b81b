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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
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
from splitwire.protocol.framing import (
    FrameAssembler,
    FrameLimits,
    ResultTimings,
    decode_frame,
    frame_chunks,
)
from splitwire.protocol.transport import CLIENT_OPTIONS, bearer


class SessionError(SplitwireError):
    """The session failed as a whole (not one frame).

    Attributes:
        status: the gRPC status code, when gRPC reported one (``UNAUTHENTICATED``, ...).
    """

    def __init__(self, message: str, *, status: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.status = status


class SessionRejected(SessionError):
    """The server answered the Hello with ``Reject``.

    Attributes:
        code: the wire ``ErrorCode``; ``reason`` the server's explanation.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"session rejected ({pb.ErrorCode.Name(code)}): {reason}")
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
        return pb.ErrorCode.Name(self.code)


@dataclass(frozen=True)
class SessionClosed:
    """The server ended the session (``SessionEnd``); ``retry_after_ms`` for ``UNAVAILABLE``."""

    code: int
    reason: str
    retry_after_ms: int

    @property
    def code_name(self) -> str:
        """The wire error code's name, e.g. ``"UNAVAILABLE"``."""
        return pb.ErrorCode.Name(self.code)


SessionEvent = SessionResult | SessionFrameError | SessionClosed


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
        limits: bounds on the results this side reassembles.
    """

    def __init__(
        self, channel: aio.Channel, *, token: str | None = None, limits: FrameLimits | None = None
    ) -> None:
        self._stub = pb_grpc.SplitSessionStub(channel)
        self._metadata = bearer(token) if token else None
        self._assembler = FrameAssembler(limits)
        self._call: Any = None
        self._send_lock = asyncio.Lock()
        self._sizes: dict[int, int] = {}
        self.accept: pb.Accept | None = None

    async def open(self, hello: pb.Hello, *, timeout_s: float = 10.0) -> pb.Accept:
        """Send the Hello and wait for the answer.

        Raises:
            SessionRejected: the server answered ``Reject``.
            SessionError: the stream failed (unreachable, ``UNAUTHENTICATED``, timeout).
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
    ) -> int:
        """Send one frame (chunked); returns the payload bytes sent.

        Raises:
            SessionError: the stream failed.
        """
        max_chunk = self.accept.max_chunk_bytes if self.accept else 0
        chunks = frame_chunks(seq, capture_ts_ns, tensors, **(
            {"max_chunk_bytes": max_chunk} if max_chunk else {}
        ))  # fmt: skip
        first = chunks[0]
        first.cut_id, first.codec, first.queue_budget_ms = cut_id, codec, queue_budget_ms
        await self.send_chunks(chunks)
        return sum(len(c.payload) for c in chunks)

    async def send_chunks(self, chunks: Sequence[pb.FrameChunk]) -> None:
        """Send pre-built chunks as they are (the benchmark pre-encodes its frames).

        Raises:
            SessionError: the stream failed.
        """
        async with self._send_lock:
            try:
                for chunk in chunks:
                    await self._call.write(pb.EdgeMessage(chunk=chunk))
            except aio.AioRpcError as exc:
                raise _rpc_error(exc) from exc
            except asyncio.InvalidStateError as exc:
                raise await self._over() from exc

    async def send_message(self, message: pb.EdgeMessage) -> None:
        """Send any message as it is (tests use this to break the protocol on purpose); before
        :meth:`open`, it starts the stream with this message instead of a Hello."""
        async with self._send_lock:
            if self._call is None:
                self._call = self._stub.Session(metadata=self._metadata)
            try:
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
            f"the session's stream is already over ({code.name}: {details}); expected a new "
            "session to be opened",
            status=code,
        )

    async def receive(self) -> SessionEvent | None:
        """The next result, frame error or end of session; None when the stream is over.

        Raises:
            SessionError: the stream failed, or a result's chunks do not make up a frame.
        """
        while True:
            try:
                message = await self._call.read()
            except aio.AioRpcError as exc:
                raise _rpc_error(exc) from exc
            if message is aio.EOF:
                return None
            kind = message.WhichOneof("kind")
            if kind == "error":
                e = message.error
                return SessionFrameError(e.seq, e.capture_ts_ns, e.code, e.message, e.field)
            if kind == "end":
                return SessionClosed(message.end.code, message.end.reason,
                                     message.end.retry_after_ms)  # fmt: skip
            if kind != "result":
                raise SessionError(f"unexpected {kind} message during the session")
            chunk = message.result
            self._sizes[chunk.seq] = self._sizes.get(chunk.seq, 0) + chunk.ByteSize()
            try:
                frame = self._assembler.add(chunk)
            except SplitwireError as exc:
                raise SessionError(f"result of frame {chunk.seq} is malformed: {exc}") from exc
            if frame is None:
                continue
            received = time.perf_counter_ns()
            first = frame.first
            assert isinstance(first, pb.ResultChunk)
            try:
                outputs = decode_frame(frame)
            except SplitwireError as exc:
                raise SessionError(f"result of frame {frame.seq} does not decode: {exc}") from exc
            return SessionResult(
                seq=frame.seq,
                capture_ts_ns=frame.capture_ts_ns,
                outputs=tuple(outputs),
                timings=ResultTimings(
                    first.queue_ns, first.decode_ns, first.compute_ns, first.encode_ns
                ),
                batch_size=first.batch_size,
                received_ns=received,
                wire_bytes=self._sizes.pop(frame.seq, 0),
            )

    async def close(self) -> None:
        """Tell the server no more frames come (it answers those in flight, then ends)."""
        if self._call is not None:
            async with self._send_lock:
                # Already over (cancelled, failed) is as good as closed.
                with contextlib.suppress(aio.AioRpcError, grpc.RpcError, RuntimeError):
                    await self._call.done_writing()

    def cancel(self) -> None:
        """Abandon the stream at once."""
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def _rpc_error(exc: aio.AioRpcError) -> SessionError:
    return SessionError(f"session stream failed: {exc.code().name}: {exc.details()}",
                        status=exc.code())  # fmt: skip
