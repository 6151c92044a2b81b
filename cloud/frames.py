"""One frame's way through the tail, apart from the session that carries it: checked against
the plan and the batch bound on its headers alone, decoded, its answer encoded, and the bytes
it holds meanwhile counted (:class:`HeldBytes`).

Every step raises :class:`~splitwire.cloud.errors.FrameRefused` for a frame that cannot be
answered with a result, with the wire's error code and the field at fault.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from splitwire.cloud.errors import FrameRefused
from splitwire.cloud.registry import Route
from splitwire.partitioner.errors import TensorSpecError
from splitwire.partitioner.runtime import check_described
from splitwire.protocol import (
    AssembledFrame,
    CodecError,
    LimitError,
    ResultTimings,
    decode_frame,
    result_chunks,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.framing import ByteBudget
from splitwire.protocol.header import DTYPES

# Frames (and results) that decode to at most this many bytes are decoded (encoded) on the
# event loop: ~0.2 ms for 256 kB, less than the two thread hops it saves. Larger ones go to the
# codec threads so that one big frame never stalls every other session.
INLINE_CODEC_BYTES = 256 << 10


class HeldBytes:
    """The bytes one frame holds in its session's budget, given back together when it is done."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def take(self, size: int, *, what: str, field: str) -> None:
        """Hold ``size`` more bytes for ``what``.

        Raises:
            FrameRefused: ``RESOURCE_EXHAUSTED``, the session's or the server's budget is full.
        """
        try:
            self._budget.take(size)
        except LimitError as exc:
            raise FrameRefused(
                pb.RESOURCE_EXHAUSTED, f"{what}: {exc.message}", field=field
            ) from None
        self.bytes += size

    def give(self, size: int) -> None:
        """Give ``size`` of them back early (what they held is gone)."""
        self._budget.give(size)
        self.bytes -= size

    def release(self) -> None:
        """Give back all they hold: the frame is done."""
        self.give(self.bytes)


def check_headers(
    headers: Sequence[tuple[tuple[int, ...], str]], route: Route, *, max_batch: int | None
) -> None:
    """A frame's ``(shape, dtype)`` headers against the plan and the batch bound (``None``:
    the plan's input batch), before anything of it is decoded.

    Raises:
        FrameRefused: ``INVALID_ARGUMENT`` naming the tensor at fault; ``RESOURCE_EXHAUSTED``
            for more samples than allowed.
    """
    try:
        batch = check_described(headers, route.crossing)
    except TensorSpecError as exc:
        raise FrameRefused(pb.INVALID_ARGUMENT, str(exc), field=exc.field) from exc
    limit = route.plan.plan.input_shape[0] if max_batch is None else max_batch
    if not 1 <= batch <= limit:
        flag = "--max-frame-batch" if max_batch is not None else "the plan's input batch"
        raise FrameRefused(
            pb.RESOURCE_EXHAUSTED if batch > limit else pb.INVALID_ARGUMENT,
            f"a frame of batch {batch}; expected 1..{limit} samples per frame ({flag}): send "
            "one frame per input, the server batches frames itself",
            field="tensors[0].shape",
            by_peer=True,
        )


def decode(frame: AssembledFrame, route: Route) -> tuple[list[torch.Tensor], int]:
    """Decode and prepare the tail's inputs of a checked frame (on the loop or in a codec
    thread, see INLINE_CODEC_BYTES)."""
    start = time.perf_counter_ns()
    try:
        tensors = decode_frame(frame)
    except CodecError as exc:
        raise codec_refusal(exc) from exc
    inputs = route.tail_inputs(tensors)
    return inputs, time.perf_counter_ns() - start


def encode_answer(
    frame: AssembledFrame,
    route: Route,
    outputs: Sequence[torch.Tensor],
    timings: ResultTimings,
    batch_size: int,
) -> tuple[list[pb.CloudMessage], int]:
    """The result chunks of one frame, each output encoded with the plan's result codec (on
    the loop or in a codec thread)."""
    start = time.perf_counter_ns()
    encoded = [
        spec.result_codec.encode(t, name=f"output{i}")
        for i, (spec, t) in enumerate(zip(route.outputs, outputs, strict=True))
    ]
    encode_ns = time.perf_counter_ns() - start
    chunks = result_chunks(
        frame.seq,
        frame.capture_ts_ns,
        encoded,
        timings=ResultTimings(timings.queue_ns, timings.decode_ns, timings.compute_ns, encode_ns),
    )
    chunks[0].batch_size = batch_size
    return [pb.CloudMessage(result=c) for c in chunks], encode_ns


def codec_refusal(exc: CodecError) -> FrameRefused:
    """A wire-format error as the frame's answer: a bound reached is RESOURCE_EXHAUSTED,
    anything else malformed is INVALID_ARGUMENT; the field at fault is kept."""
    code = pb.RESOURCE_EXHAUSTED if isinstance(exc, LimitError) else pb.INVALID_ARGUMENT
    return FrameRefused(code, exc.message, field=exc.field)


def decoded_bytes(frame: AssembledFrame) -> int:
    """What decoding the frame produces (its headers were validated on arrival): the inline
    decision goes by this, not by the wire size, which zstd can make tiny."""
    return sum(math.prod(h.shape) * DTYPES[h.dtype].itemsize for h in frame.headers)


def frame_error(seq: int, capture_ts_ns: int, exc: FrameRefused) -> pb.CloudMessage:
    return pb.CloudMessage(
        error=pb.FrameError(
            seq=seq,
            capture_ts_ns=capture_ts_ns,
            code=exc.code,
            message=exc.message,
            field=exc.field,
        )
    )
