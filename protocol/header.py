"""The header that describes one encoded tensor, and its validation.

A receiver checks every field of a header against the others and against :class:`DecodeLimits`
*before* it allocates anything: a header is attacker-controlled input, and a shape of
``(2**40,)`` must cost an error message, not the process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splitwire.protocol.codec_spec import MAX_ZSTD_LEVEL
from splitwire.protocol.errors import HeaderError, LimitError
from splitwire.protocol.peer_text import peer_text

# Wire names of the dtypes a tensor may have. The wire is little-endian (checked in codec.py).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}
FLOAT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})

# What the payload holds before zstd: "raw" is the dtype's own bytes, "jpeg" is one JPEG stream
# per uint8 image (never zstd'd), the rest approximate floats.
WIRE_SCHEMES = ("raw", "fp16", "bf16", "int8", "int4", "jpeg")
QUANTISED_SCHEMES = frozenset({"int8", "int4"})
# How the (scale, offset) pairs of a quantised scheme travel: little-endian float32 or float16.
PARAM_DTYPES = {"float32": "<f4", "float16": "<f2"}
# JPEG's frame header stores H and W in 16 bits, and libjpeg refuses sides above 65500.
JPEG_MAX_SIDE = 65500
JPEG_CHANNELS = (1, 3)
# The shortest stream any JPEG decoder accepts carries SOI (2 bytes), one 8-bit quantisation
# table (DQT, 69), a one-component frame header (SOF, 13), a scan header (SOS, 10) and EOI (2).
MIN_JPEG_BYTES = 96


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds a receiver enforces on every header before allocating memory for it.

    The defaults admit a 1080p stem activation at batch 1 (64×540×960 ≈ 33 M elements) and
    refuse anything that would need more than 256 MiB for one tensor.
    """

    max_rank: int = 8
    max_elements: int = 1 << 26
    max_tensor_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        for name in ("max_rank", "max_elements", "max_tensor_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DecodeLimits.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class TensorHeader:
    """Everything needed to turn a payload back into a tensor (mirrors the proto's TensorHeader).

    ``scales``/``offsets`` are little-endian arrays of ``param_dtype`` (float32 or float16), one
    value per index of ``channel_axis`` (or a single pair when ``channel_axis == -1``), present
    for ``int8``/``int4`` only; empty ``offsets`` mean every offset is 0 (ReLU outputs).
    ``part_sizes`` are the byte lengths of the payload's consecutive JPEG streams, one per
    image, present for ``jpeg`` only (whose ``raw_size`` is the decoded pixel bytes).
    """

    dtype: str
    shape: tuple[int, ...]
    scheme: str
    zstd_level: int
    raw_size: int
    payload_size: int
    checksum: int
    channel_axis: int = -1
    scales: bytes = b""
    offsets: bytes = b""
    name: str = ""
    byte_shuffle: bool = False
    part_sizes: tuple[int, ...] = ()
    param_dtype: str = "float32"


@dataclass(frozen=True)
class TensorLayout:
    """What a validated header implies: element count and, for quantised schemes, channels."""

    numel: int
    channels: int


def element_width(scheme: str, dtype: str) -> int:
    """Bytes per element a scheme writes (int4 packs two elements per byte: width 1).

    For ``jpeg`` this is the width of a decoded pixel: the payload itself has no fixed width.
    """
    if scheme == "raw":
        return DTYPES[dtype].itemsize
    if scheme in ("fp16", "bf16"):
        return 2
    if scheme in QUANTISED_SCHEMES or scheme == "jpeg":
        return 1
    raise HeaderError(
        f"unknown scheme {peer_text(scheme)}; expected one of {WIRE_SCHEMES}", field="scheme"
    )


def scheme_bytes(scheme: str, dtype: str, numel: int) -> int:
    """Bytes a scheme produces for ``numel`` elements of ``dtype`` (before zstd)."""
    if scheme == "int4":
        return (numel + 1) // 2
    return numel * element_width(scheme, dtype)


def validate_header(header: TensorHeader, limits: DecodeLimits) -> TensorLayout:
    """Check every field of ``header`` against the others and against ``limits``.

    Returns:
        The element count and channel count the header implies.

    Raises:
        HeaderError: a field is unknown or disagrees with another field.
        LimitError: the tensor is larger than ``limits`` allow.
    """
    if header.dtype not in DTYPES:
        raise HeaderError(
            f"unknown dtype {peer_text(header.dtype)}; expected one of {', '.join(DTYPES)}",
            field="dtype",
        )
    if header.scheme not in WIRE_SCHEMES:
        raise HeaderError(
            f"unknown scheme {peer_text(header.scheme)}; expected one of {', '.join(WIRE_SCHEMES)}",
            field="scheme",
        )
    if header.scheme == "jpeg" and header.dtype != "uint8":
        raise HeaderError(
            f"scheme 'jpeg' carries uint8 images but dtype is {peer_text(header.dtype)}; "
            "expected 'uint8'",
            field="dtype",
        )
    if header.scheme not in ("raw", "jpeg") and header.dtype not in FLOAT_DTYPES:
        raise HeaderError(
            f"scheme {peer_text(header.scheme)} approximates floats but dtype is "
            f"{peer_text(header.dtype)}; "
            "non-float tensors travel as 'raw'",
            field="scheme",
        )
    if not 0 <= header.zstd_level <= MAX_ZSTD_LEVEL:
        raise HeaderError(
            f"zstd level {header.zstd_level} out of range; expected 0..{MAX_ZSTD_LEVEL}",
            field="zstd_level",
        )
    shape = header.shape
    if len(shape) > limits.max_rank:
        raise LimitError(
            f"rank {len(shape)} exceeds the limit; expected at most {limits.max_rank} dimensions",
            field="shape",
        )
    if any(dim < 0 for dim in shape):
        raise HeaderError(f"negative dimension in {shape}; expected sizes >= 0", field="shape")
    # Multiply with a running bound so a hostile shape cannot build a huge Python int.
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > limits.max_elements:
            raise LimitError(
                f"shape {shape} has more than {limits.max_elements} elements (the limit)",
                field="shape",
            )
    if numel * DTYPES[header.dtype].itemsize > limits.max_tensor_bytes:
        raise LimitError(
            f"shape {shape} of {header.dtype} needs more than {limits.max_tensor_bytes} bytes "
            "(the limit)",
            field="shape",
        )
    if header.scheme == "jpeg":
        _validate_jpeg(header, limits)
    elif header.part_sizes:
        raise HeaderError(
            f"scheme {peer_text(header.scheme)} carries no part_sizes; got "
            f"{len(header.part_sizes)}",
            field="part_sizes",
        )
    expected_raw = scheme_bytes(header.scheme, header.dtype, numel)
    if header.raw_size != expected_raw:
        raise HeaderError(
            f"raw_size {header.raw_size} disagrees with shape {shape} under scheme "
            f"{peer_text(header.scheme)}; expected {expected_raw}",
            field="raw_size",
        )
    # A JPEG payload's size is not a function of its raw_size (_validate_jpeg checks it).
    sized_by_raw = header.scheme != "jpeg"
    if sized_by_raw and header.zstd_level == 0 and header.payload_size != header.raw_size:
        raise HeaderError(
            f"payload_size {header.payload_size} without zstd must equal raw_size "
            f"{header.raw_size}",
            field="payload_size",
        )
    # zstd never expands incompressible data by more than a small frame overhead.
    if sized_by_raw and header.payload_size > zstd_bound(header.raw_size):
        raise HeaderError(
            f"payload_size {header.payload_size} exceeds what zstd can produce from "
            f"{header.raw_size} bytes (at most {zstd_bound(header.raw_size)})",
            field="payload_size",
        )
    if header.byte_shuffle and element_width(header.scheme, header.dtype) == 1:
        raise HeaderError(
            f"byte_shuffle set for one-byte elements ({header.scheme}, {header.dtype}); "
            "expected it only for wider elements",
            field="byte_shuffle",
        )
    if not 0 <= header.checksum <= 0xFFFFFFFF:
        raise HeaderError(f"checksum {header.checksum} is not a CRC-32", field="checksum")
    channels = _validate_quantisation(header, numel) if header.scheme in QUANTISED_SCHEMES else 0
    if header.scheme not in QUANTISED_SCHEMES and (header.scales or header.offsets):
        raise HeaderError(
            f"scheme {peer_text(header.scheme)} carries no scales/offsets; got "
            f"{len(header.scales)}/{len(header.offsets)} bytes",
            field="scales",
        )
    if header.scheme not in QUANTISED_SCHEMES and header.param_dtype != "float32":
        raise HeaderError(
            f"scheme {peer_text(header.scheme)} carries no scales/offsets; got param_dtype "
            f"{peer_text(header.param_dtype)}, expected 'float32' (the default)",
            field="param_dtype",
        )
    return TensorLayout(numel=numel, channels=channels)


def zstd_bound(size: int) -> int:
    """Largest zstd frame for ``size`` input bytes (ZSTD_COMPRESSBOUND plus a frame header)."""
    return size + (size >> 8) + 64


def _validate_jpeg(header: TensorHeader, limits: DecodeLimits) -> None:
    """The shape, zstd level and part sizes of a ``jpeg`` header (its size is within limits)."""
    shape = header.shape
    if len(shape) != 4 or shape[1] not in JPEG_CHANNELS:
        raise HeaderError(
            f"scheme 'jpeg' expected (N, 1|3, H, W) images; got shape {shape}", field="shape"
        )
    batch, _, height, width = shape
    if not (1 <= height <= JPEG_MAX_SIDE and 1 <= width <= JPEG_MAX_SIDE):
        raise HeaderError(
            f"image size {height}×{width} in shape {shape}; JPEG expected H and W in "
            f"1..{JPEG_MAX_SIDE}",
            field="shape",
        )
    if header.zstd_level:
        raise HeaderError(
            f"zstd level {header.zstd_level} with scheme 'jpeg'; expected 0 (JPEG streams are "
            "already entropy-coded)",
            field="zstd_level",
        )
    if len(header.part_sizes) != batch:
        raise HeaderError(
            f"{len(header.part_sizes)} part sizes for a batch of {batch} images; expected one "
            "JPEG stream per image",
            field="part_sizes",
        )
    for i, size in enumerate(header.part_sizes):
        if size < MIN_JPEG_BYTES:
            raise HeaderError(
                f"part_sizes[{i}] is {size} bytes; expected at least {MIN_JPEG_BYTES} (the "
                "shortest JPEG stream)",
                field="part_sizes",
            )
    total = sum(header.part_sizes)
    if total != header.payload_size:
        raise HeaderError(
            f"part sizes sum to {total} bytes; expected payload_size {header.payload_size}",
            field="part_sizes",
        )
    if header.payload_size > limits.max_tensor_bytes:
        raise LimitError(
            f"JPEG payload of {header.payload_size} bytes exceeds the limit of "
            f"{limits.max_tensor_bytes}",
            field="payload_size",
        )


def _validate_quantisation(header: TensorHeader, numel: int) -> int:
    rank = len(header.shape)
    axis = header.channel_axis
    if axis == -1:
        channels = 1
    elif 0 <= axis < rank:
        channels = header.shape[axis]
    else:
        raise HeaderError(
            f"channel_axis {axis} out of range for rank {rank}; expected -1 or 0..{rank - 1}",
            field="channel_axis",
        )
    wire = PARAM_DTYPES.get(header.param_dtype)
    if wire is None:
        raise HeaderError(
            f"unknown param_dtype {peer_text(header.param_dtype)}; expected one of "
            f"{', '.join(PARAM_DTYPES)}",
            field="param_dtype",
        )
    width = np.dtype(wire).itemsize
    for field in ("scales", "offsets"):
        data: bytes = getattr(header, field)
        if field == "offsets" and not data:
            continue  # every offset is 0
        if len(data) != width * channels:
            raise HeaderError(
                f"{len(data)} bytes for {channels} channels; expected {width * channels} "
                f"(one {header.param_dtype} each)"
                + (" or none (all offsets 0)" if field == "offsets" else ""),
                field=field,
            )
    scales = np.frombuffer(header.scales, dtype=wire)
    offsets = np.frombuffer(header.offsets, dtype=wire)
    if not (np.isfinite(scales).all() and np.isfinite(offsets).all()):
        raise HeaderError(
            f"non-finite scale or offset; expected finite {header.param_dtype}", field="scales"
        )
    if (scales < 0).any():
        raise HeaderError("negative scale; expected scales >= 0", field="scales")
    return channels
