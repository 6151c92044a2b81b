"""The camera-frame baselines: send what the camera gives and run the whole model in the cloud.

sc2bench's warning is that many split methods lose to JPEG-compressing the input and running
the whole model remotely, so the planner prices that on the same table as every split. A camera
gives a uint8 ``(N, C, H, W)`` frame, and the model's input is that frame after the plan's
preprocessing (:class:`~splitwire.partitioner.plan_file.Preprocess`), so the baselines encode the
*frame*, exactly as the edge agent does, and the cloud preprocesses what it decodes:

=====================  ===============================================  =====================
codec                  what travels                                      baseline
=====================  ===============================================  =====================
``frame``              the frame's H·W·C bytes (+ the tensor header)     ``all-in-cloud-raw``
``frame+zstd1``        the same, zstd level 1                            ``all-in-cloud-raw``
``jpegQ``              one JPEG at quality Q, chroma 4:2:0               ``all-in-cloud-jpeg``
``jpegQs444``          one JPEG at quality Q, full chroma (4:4:4)        ``all-in-cloud-jpeg``
=====================  ===============================================  =====================

for every Q of the plan's JPEG grid (:data:`DEFAULT_JPEG_QUALITIES` unless
``--jpeg-quality`` says otherwise). Bytes are the encoded payload plus its protobuf header, as for
every other candidate; encode and decode are timed here, per frame, and scaled by each profile's
slowdown. Models whose input is not an ``(N, 1|3, H, W)`` image get none of these (their raw
baseline is the input tensor sent with ``fp32`` at cut ``c0000``).

The reference outputs the accuracy cost is measured against are the model's on the
preprocessed frames, so ``frame`` costs exactly 0. With real photos the frames come from the
photos; with synthetic calibration data (random-weight models) they are synthetic frames:
:func:`synthetic_frames`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from splitwire.partitioner.calibration import synthetic_images
from splitwire.partitioner.plan_file import Preprocess
from splitwire.protocol import CodecSpec, decode, encode
from splitwire.protocol.wire import header_to_proto

# The JPEG qualities priced by default, each at 4:2:0 and 4:4:4: a low, a typical web/camera
# and a high setting.
DEFAULT_JPEG_QUALITIES = (50, 75, 90)
# The raw-frame baselines: the camera's bytes as they are, and with cheap entropy coding.
FRAME_CODECS = ("frame", "frame+zstd1")


@dataclass(frozen=True)
class CameraResult:
    """Frames after one codec's round trip, and what it cost per frame."""

    decoded: torch.Tensor
    mean_bytes: float
    encode_ms: float
    decode_ms: float


def jpeg_applicable(input_shape: tuple[int, ...]) -> bool:
    """JPEG (and every camera baseline) needs an (N, 1 or 3, H, W) image."""
    return len(input_shape) == 4 and input_shape[1] in (1, 3)


def camera_codecs(jpeg_qualities: Iterable[int]) -> tuple[CodecSpec, ...]:
    """The baselines' codecs: the raw frame, then each quality at 4:2:0 and at 4:4:4.

    Raises:
        CodecSpecError: a quality outside 1..95.
    """
    jpegs = [
        CodecSpec(scheme="jpeg", quality=q, subsampling=s)
        for q in sorted(set(jpeg_qualities))
        for s in ("4:2:0", "4:4:4")
    ]
    return (*(CodecSpec.parse(c) for c in FRAME_CODECS), *jpegs)


def synthetic_frames(
    count: int, shape: Sequence[int], *, preprocess: Preprocess, seed: int = 1234
) -> torch.Tensor:
    """``count`` uint8 frames ``(count, C, H, W)`` whose preprocessing gives (up to 8-bit
    rounding and clipping at 0 and 255) :func:`~splitwire.partitioner.calibration.
    synthetic_images` of the same seed: the camera frames of the synthetic calibration data."""
    images = synthetic_images(count, shape, seed=seed)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def camera_roundtrip(frames: torch.Tensor, codec: CodecSpec) -> CameraResult:
    """Encode each uint8 frame of ``frames`` (N, C, H, W) on its own with ``codec``, as the edge
    does, and decode it as the cloud does.

    Raises:
        EncodeError: ``frames`` are not uint8 (N, 1|3, H, W) images, or ``codec`` is no camera
            codec's.
    """
    if not codec.camera:
        raise ValueError(f"codec {codec} is no camera codec; expected frame or jpegQ[s444]")
    decoded = torch.empty_like(frames)
    if len(frames):  # untimed: the first call pays for Pillow's and zstd's setup
        warm = encode(frames[:1], codec)
        decode(warm.header, warm.payload)
    total_bytes, encode_ns, decode_ns = 0, 0, 0
    for i in range(len(frames)):
        start = time.perf_counter_ns()
        encoded = encode(frames[i : i + 1], codec)
        middle = time.perf_counter_ns()
        decoded[i : i + 1] = decode(encoded.header, encoded.payload)
        decode_ns += time.perf_counter_ns() - middle
        encode_ns += middle - start
        total_bytes += len(encoded.payload) + header_to_proto(encoded.header).ByteSize()
    count = max(1, len(frames))
    return CameraResult(
        decoded, total_bytes / count, encode_ns / 1e6 / count, decode_ns / 1e6 / count
    )
