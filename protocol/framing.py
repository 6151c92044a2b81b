"""Frames on the wire: split encoded tensors into ≤ 1 MiB chunks, and put chunks back together.

A frame is every tensor crossing the cut for one input. Its payloads are concatenated in header
order and cut into chunks; chunk 0 carries all the headers. For a 3.2 MB payload and the default
1 MiB chunk::

    chunk 0: headers=[h0, h1], payload=bytes[0 : 1 MiB]
    chunk 1: payload=bytes[1 MiB : 2 MiB]
    chunk 2: payload=bytes[2 MiB : 3 MiB]
    chunk 3: payload=bytes[3 MiB : 3.2 MB]

The chunks of one frame arrive in order (one gRPC stream preserves order), but frames may
interleave. :class:`FrameAssembler` keeps a bounded number of partial frames, validates every
header on chunk 0, and reports each failure for the frame it concerns, so the receiver can answer
that frame and go on. It holds only what has arrived: chunk 0 announcing 32 MiB costs the bytes
chunk 0 carried, and every chunk's bytes are counted against a :class:`ByteBudget` (a session's,
inside the server's), so a sender that starts frames and never finishes them holds at most the
budget, and for no longer than the receiver lets it (:meth:`FrameAssembler.started_before`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.codec import DEFAULT_LIMITS, EncodedTensor, decode
from splitwire.protocol.errors import ChunkError, CodecError, LimitError
from splitwire.protocol.header import DecodeLimits, TensorHeader, validate_header
from splitwire.protocol.wire import header_from_proto, header_to_proto

MAX_CHUNK_BYTES = 1 << 20

Chunk = pb.FrameChunk | pb.ResultChunk


@dataclass(frozen=True)
class FrameLimits:
    """Bounds on what a receiver buffers for frames (each tensor also obeys ``tensor``)."""

    max_chunk_bytes: int = MAX_CHUNK_BYTES
    max_tensors: int = 64
    max_frame_bytes: int = 256 << 20
    # Partial frames held at once, and the bytes of theirs that have arrived (unless the
    # assembler is given a ByteBudget, which then bounds those bytes instead).
    max_pending_frames: int = 16
    max_buffered_bytes: int = 512 << 20
    tensor: DecodeLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        for name in (
            "max_chunk_bytes",
            "max_tensors",
            "max_frame_bytes",
            "max_pending_frames",
            "max_buffered_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"FrameLimits.{name} must be positive, got {getattr(self, name)}")

    @property
    def max_chunks(self) -> int:
        """Most chunks a frame of ``max_frame_bytes`` can need."""
        return max(1, -(-self.max_frame_bytes // self.max_chunk_bytes))


class ByteBudget:
    """Bytes held against a bound, optionally inside a larger bound that others share.

    A session's budget sits inside the server's: taking from it takes from both, and fails if
    either would go over. Nothing is allocated here; holders take before they keep bytes and
    give back when they let go of them.

    >>> server = ByteBudget(100, name="--max-buffered-bytes")
    >>> session = ByteBudget(60, name="--max-session-bytes", parent=server)
    >>> session.take(50)
    >>> session.take(20)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    splitwire.protocol.errors.LimitError: holding 20 more bytes would exceed --max-session-bytes ...
    >>> session.give(50); server.held
    0

    Args:
        limit: the most bytes held at once.
        name: what the bound is called in errors (the flag that sets it).
        parent: a budget every take also draws on.
    """

    def __init__(self, limit: int, *, name: str, parent: ByteBudget | None = None) -> None:
        if limit <= 0:
            raise ValueError(f"ByteBudget {name}: limit must be positive, got {limit}")
        self.limit = limit
        self.name = name
        self.parent = parent
        self.held = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes.

        Raises:
            LimitError: this budget or a parent would go over its limit (nothing is taken).
        """
        budget: ByteBudget | None = self
        while budget is not None:
            if budget.held + size > budget.limit:
                raise LimitError(
                    f"holding {size} more bytes would exceed {budget.name} ({budget.limit} "
                    f"bytes, {budget.held} held); wait for answers before sending more"
                )
            budget = budget.parent
        budget = self
        while budget is not None:
            budget.held += size
            budget = budget.parent

    def give(self, size: int) -> None:
        """Let go of ``size`` bytes taken earlier."""
        budget: ByteBudget | None = self
        while budget is not None:
            budget.held -= size
            budget = budget.parent


@dataclass(frozen=True)
class ResultTimings:
    """Durations the tail measured on its own clock for one frame, in nanoseconds."""

    queue_ns: int = 0
    decode_ns: int = 0
    compute_ns: int = 0
    encode_ns: int = 0


@dataclass(frozen=True)
class AssembledFrame:
    """A complete frame: validated headers and one payload view per tensor.

    ``first`` is the frame's chunk 0 as received (for a result, it carries the timings).
    """

    seq: int
    capture_ts_ns: int
    headers: tuple[TensorHeader, ...]
    payloads: tuple[memoryview, ...]
    first: Chunk


def frame_chunks(
    seq: int,
    capture_ts_ns: int,
    tensors: Sequence[EncodedTensor],
    *,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
) -> list[pb.FrameChunk]:
    """Split one frame of encoded tensors into edge → cloud chunk messages."""
    return _chunks(pb.FrameChunk, seq, capture_ts_ns, tensors, max_chunk_bytes)


def result_chunks(
    seq: int,
    capture_ts_ns: int,
    tensors: Sequence[EncodedTensor],
    *,
    timings: ResultTimings,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
) -> list[pb.ResultChunk]:
    """Split the tail's outputs for one frame into cloud → edge chunk messages."""
    chunks = _chunks(pb.ResultChunk, seq, capture_ts_ns, tensors, max_chunk_bytes)
    first = chunks[0]
    first.queue_ns, first.decode_ns = timings.queue_ns, timings.decode_ns
    first.compute_ns, first.encode_ns = timings.compute_ns, timings.encode_ns
    return chunks


_ChunkT = TypeVar("_ChunkT", pb.FrameChunk, pb.ResultChunk)


def _chunks(
    kind: type[_ChunkT],
    seq: int,
    capture_ts_ns: int,
    tensors: Sequence[EncodedTensor],
    max_chunk_bytes: int,
) -> list[_ChunkT]:
    """Both chunk messages share these fields; chunk 0 carries every header."""
    pieces = _split_payloads([t.payload for t in tensors], max_chunk_bytes)
    chunks = [
        kind(
            seq=seq,
            capture_ts_ns=capture_ts_ns,
            chunk_index=i,
            chunk_count=len(pieces),
            payload=piece,
        )
        for i, piece in enumerate(pieces)
    ]
    chunks[0].tensors.extend(header_to_proto(t.header) for t in tensors)
    return chunks


def decode_frame(
    frame: AssembledFrame, *, limits: DecodeLimits = DEFAULT_LIMITS
) -> list[torch.Tensor]:
    """Decode every tensor of an assembled frame.

    Raises:
        CodecError: for the first tensor that fails, with ``seq`` set and the field prefixed by
            ``tensors[i]``.
    """
    out = []
    for i, (header, payload) in enumerate(zip(frame.headers, frame.payloads, strict=True)):
        try:
            out.append(decode(header, payload, limits=limits))
        except CodecError as exc:
            raise exc.within(prefix=f"tensors[{i}]", seq=frame.seq) from exc
    return out


def _split_payloads(payloads: Sequence[bytes], max_chunk_bytes: int) -> list[bytes]:
    """Concatenate ``payloads`` and cut them into pieces of at most ``max_chunk_bytes``,
    copying each byte once. An empty frame is one empty piece."""
    if max_chunk_bytes <= 0:
        raise ValueError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
    pieces: list[bytes] = []
    current: list[memoryview] = []
    room = max_chunk_bytes
    for payload in payloads:
        view = memoryview(payload)
        while len(view):
            take = view[:room]
            current.append(take)
            view = view[len(take) :]
            room -= len(take)
            if room == 0:
                pieces.append(b"".join(current))
                current, room = [], max_chunk_bytes
    if current or not pieces:
        pieces.append(b"".join(current))
    return pieces


@dataclass
class _PartialFrame:
    seq: int
    capture_ts_ns: int
    chunk_count: int
    headers: tuple[TensorHeader, ...]
    first: Chunk
    size: int  # payload bytes the headers announce
    sizes: tuple[int, ...]
    started_s: float  # time.monotonic() when chunk 0 arrived
    # The chunks' payloads as they came: nothing is allocated ahead of the bytes.
    pieces: list[bytes] = field(default_factory=list)
    next_index: int = 0
    filled: int = 0


class FrameAssembler:
    """Reassembles frames from chunks, one instance per stream direction of a session.

    >>> assembler = FrameAssembler()
    >>> for chunk in frame_chunks(1, 0, [encode(torch.ones(3), "fp32")]):
    ...     frame = assembler.add(chunk)
    >>> frame.seq
    1

    Every :class:`ChunkError` (or header error) raised by :meth:`add` concerns the frame of the
    chunk just added (its ``seq`` is set); that frame is dropped, later chunks of it are ignored,
    and other frames are unaffected. Frames still incomplete when the stream ends are listed by
    :meth:`pending`, so the receiver can report them too; those started too long ago by
    :meth:`started_before`, so the receiver can give up on them (:meth:`fail`).

    Args:
        limits: bounds on each frame and on the partial frames held.
        budget: what the bytes of partial frames are counted against (default: a budget of
            ``limits.max_buffered_bytes`` of this assembler's own). A frame's bytes are given
            back when it completes, fails or is dropped: the holder of a complete frame counts
            its bytes itself from then on.
    """

    _FORGET_AFTER = 256  # failed seqs remembered, so a broken frame is reported once

    def __init__(
        self, limits: FrameLimits | None = None, *, budget: ByteBudget | None = None
    ) -> None:
        self.limits = limits or FrameLimits()
        self.budget = budget or ByteBudget(
            self.limits.max_buffered_bytes, name="the limit of buffered bytes"
        )
        self._partial: OrderedDict[int, _PartialFrame] = OrderedDict()
        self._failed: OrderedDict[int, None] = OrderedDict()

    def add(self, chunk: Chunk) -> AssembledFrame | None:
        """Take one chunk; return the frame it completes, if any.

        Raises:
            ChunkError: the chunk does not fit its frame (order, count, size, missing chunk 0).
            HeaderError: a header on chunk 0 is invalid (``LimitError`` if too large).
        """
        seq = chunk.seq
        if seq in self._failed:
            return None
        try:
            if seq in self._partial:
                return self._continue(self._partial[seq], chunk)
            return self._start(chunk)
        except CodecError as exc:
            self._fail(seq)
            raise exc.within(seq=seq) if exc.seq is None else exc from None

    def pending(self) -> list[int]:
        """Sequence numbers of frames begun but not completed."""
        return list(self._partial)

    def started_before(self, moment_s: float) -> list[tuple[int, int]]:
        """``(seq, capture_ts_ns)`` of the partial frames whose chunk 0 arrived before
        ``moment_s`` (a ``time.monotonic()`` reading)."""
        return [(p.seq, p.capture_ts_ns) for p in self._partial.values() if p.started_s < moment_s]

    def drop(self, seq: int) -> None:
        """Forget a partial frame (e.g. the sender gave up on it); its later chunks start a
        new frame (and fail, lacking chunk 0)."""
        partial = self._partial.pop(seq, None)
        if partial is not None:
            self.budget.give(partial.filled)

    def fail(self, seq: int) -> None:
        """Forget a partial frame and ignore its later chunks (e.g. it took too long)."""
        self._fail(seq)

    def _start(self, chunk: Chunk) -> AssembledFrame | None:
        limits = self.limits
        if chunk.chunk_index != 0:
            raise ChunkError(
                f"chunk {chunk.chunk_index} arrived before chunk 0; expected chunk 0 first",
                field="chunk_index",
            )
        if not 1 <= chunk.chunk_count <= limits.max_chunks:
            raise ChunkError(
                f"chunk_count {chunk.chunk_count} out of range; expected 1..{limits.max_chunks}",
                field="chunk_count",
            )
        if not 1 <= len(chunk.tensors) <= limits.max_tensors:
            raise ChunkError(
                f"chunk 0 carries {len(chunk.tensors)} tensor headers; expected "
                f"1..{limits.max_tensors}",
                field="tensors",
            )
        headers = []
        for i, message in enumerate(chunk.tensors):
            header = header_from_proto(message)
            try:
                validate_header(header, limits.tensor)
            except CodecError as exc:
                raise exc.within(prefix=f"tensors[{i}]") from exc
            headers.append(header)
        sizes = tuple(h.payload_size for h in headers)
        total = sum(sizes)
        if total > limits.max_frame_bytes:
            raise LimitError(
                f"frame payload of {total} bytes exceeds the limit of {limits.max_frame_bytes}",
                field="tensors",
            )
        needed = max(1, -(-total // limits.max_chunk_bytes))
        if chunk.chunk_count < needed:
            raise ChunkError(
                f"chunk_count {chunk.chunk_count} cannot carry {total} bytes in chunks of at "
                f"most {limits.max_chunk_bytes}; expected at least {needed}",
                field="chunk_count",
            )
        if len(self._partial) >= limits.max_pending_frames:
            raise LimitError(
                f"{len(self._partial)} frames already incomplete (the limit); "
                "send each frame's chunks together",
                field="seq",
            )
        if total > self.budget.limit:
            raise LimitError(
                f"a frame of {total} payload bytes can never fit in {self.budget.name} "
                f"({self.budget.limit} bytes); send smaller frames",
                field="tensors",
            )
        partial = _PartialFrame(
            seq=chunk.seq,
            capture_ts_ns=chunk.capture_ts_ns,
            chunk_count=chunk.chunk_count,
            headers=tuple(headers),
            first=_without_payload(chunk),
            size=total,
            sizes=sizes,
            started_s=time.monotonic(),
        )
        self._partial[chunk.seq] = partial
        return self._continue(partial, chunk)

    def _continue(self, partial: _PartialFrame, chunk: Chunk) -> AssembledFrame | None:
        if chunk.chunk_index != partial.next_index:
            raise ChunkError(
                f"chunk {chunk.chunk_index} arrived; expected chunk {partial.next_index} "
                f"of {partial.chunk_count}",
                field="chunk_index",
            )
        if chunk.chunk_index and (
            chunk.chunk_count != partial.chunk_count
            or chunk.capture_ts_ns != partial.capture_ts_ns
            or len(chunk.tensors)
        ):
            raise ChunkError(
                "chunk disagrees with chunk 0 (chunk_count, capture_ts_ns, or headers repeated); "
                "expected only chunk 0 to carry headers",
                field="chunk_count",
            )
        payload = chunk.payload  # (a copy: upb makes one per access)
        size = len(payload)
        if size > self.limits.max_chunk_bytes:
            raise LimitError(
                f"chunk payload of {size} bytes exceeds the limit of {self.limits.max_chunk_bytes}",
                field="payload",
            )
        end = partial.filled + size
        if end > partial.size:
            raise ChunkError(
                f"chunks carry more than the {partial.size} payload bytes the headers announce",
                field="payload",
            )
        try:
            self.budget.take(size)
        except LimitError as exc:
            raise exc.within(prefix="payload") from None
        partial.pieces.append(payload)
        partial.filled = end
        partial.next_index += 1
        if partial.next_index < partial.chunk_count:
            return None
        self.drop(partial.seq)
        if partial.filled != partial.size:
            raise ChunkError(
                f"frame ended with {partial.filled} payload bytes; headers announce {partial.size}",
                field="payload",
            )
        # One chunk (most frames) is used as it came; several are joined once, now that all
        # of them are here.
        joined = partial.pieces[0] if len(partial.pieces) == 1 else b"".join(partial.pieces)
        partial.pieces.clear()
        view = memoryview(joined)
        payloads, offset = [], 0
        for size in partial.sizes:
            payloads.append(view[offset : offset + size])
            offset += size
        return AssembledFrame(
            seq=partial.seq,
            capture_ts_ns=partial.capture_ts_ns,
            headers=partial.headers,
            payloads=tuple(payloads),
            first=partial.first,
        )

    def _fail(self, seq: int) -> None:
        self.drop(seq)
        self._failed[seq] = None
        while len(self._failed) > self._FORGET_AFTER:
            self._failed.popitem(last=False)


def _without_payload(chunk: Chunk) -> Chunk:
    """Chunk 0's fields but its payload, which is kept once, with the other chunks' (a copy of
    the message would keep the payload's bytes in its arena)."""
    fields = {f.name: value for f, value in chunk.ListFields() if f.name != "payload"}
    return type(chunk)(**fields)
