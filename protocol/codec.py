"""Encode a tensor for the wire, and decode it back — validating everything first.

>>> enc = encode(torch.relu(torch.randn(1, 64, 56, 56)), "int8+zstd1")
>>> enc.header.scheme, len(enc.payload) < 0.2 * 64 * 56 * 56 * 4
('int8', True)
>>> decode(enc.header, enc.payload).shape
torch.Size([1, 64, 56, 56])

The payload is C-contiguous, little-endian; non-contiguous and channels-last inputs are made
contiguous first, and decoded tensors are contiguous and own their memory. Under ``jpeg`` the
payload is instead one JPEG stream per image, back to back (``header.part_sizes``); under
``frame`` it is the camera frame's uint8 bytes (header scheme ``raw``, optionally zstd); under
``none`` nothing is encoded at all.
"""

from __future__ import annotations

import sys
import threading
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import zstandard

from splitwire.protocol.codec_spec import CodecSpec
from splitwire.protocol.errors import ChecksumError, EncodeError, PayloadError
from splitwire.protocol.header import (
    DTYPE_NAMES,
    DTYPES,
    FLOAT_DTYPES,
    JPEG_CHANNELS,
    JPEG_MAX_SIDE,
    DecodeLimits,
    TensorHeader,
    element_width,
    validate_header,
)
from splitwire.protocol.jpeg import decode_images, encode_images
from splitwire.protocol.quantise import (
    default_channel_axis,
    dequantise_affine,
    pack_int4,
    quantise_affine,
    unpack_int4,
)

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("splitwire's wire format is little-endian; this host is big-endian")

DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class EncodedTensor:
    """A tensor ready for the wire: its header and the payload bytes it describes."""

    header: TensorHeader
    payload: bytes


def encode(tensor: torch.Tensor, spec: CodecSpec | str, *, name: str = "") -> EncodedTensor:
    """Encode ``tensor`` with ``spec`` (e.g. ``"int8+zstd1"``).

    Float tensors get the spec's scheme; other dtypes (indices, masks) always travel raw, so
    the codec never changes a non-float value. The header records the original dtype, which
    :func:`decode` restores. The camera schemes are the exception: ``frame`` and ``jpeg`` take
    uint8 ``(N, 1|3, H, W)`` images only; ``frame`` sends their bytes, ``jpeg`` one JPEG stream
    per image.

    Args:
        tensor: any CPU or accelerator tensor of a dtype in ``splitwire.protocol.header.DTYPES``.
        spec: a :class:`CodecSpec` or its text form.
        name: the tensor's name in the plan, carried for diagnostics.

    Raises:
        CodecSpecError: ``spec`` does not parse.
        EncodeError: unsupported dtype, values the scheme cannot represent (NaN into int8), a
            tensor that is not a uint8 image under ``frame`` or ``jpeg``, or any tensor under
            ``none``.
    """
    spec = CodecSpec.parse(spec)
    if not spec.sends:
        raise EncodeError(
            "codec 'none' sends nothing: the edge runs the whole model, so no tensor crosses "
            "the network and there is nothing to encode",
            field="codec",
        )
    x = tensor.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    dtype = DTYPE_NAMES.get(x.dtype)
    if dtype is None:
        raise EncodeError(
            f"unsupported dtype {x.dtype}; expected one of {', '.join(DTYPES)}", field="dtype"
        )
    if spec.camera:
        _check_camera_image(x, spec)
    if spec.scheme == "jpeg":
        return _encode_jpeg(x, spec, name=name)
    x = x.contiguous()
    scheme = wire_scheme(spec, dtype)
    axis, scales, offsets, param_dtype = -1, b"", b"", "float32"
    if scheme == "raw":
        data = x
    elif scheme == "fp16":
        data = x.to(torch.float16)
    elif scheme == "bf16":
        data = x.to(torch.bfloat16)
    else:
        axis = default_channel_axis(x.shape)
        bits = 8 if scheme == "int8" else 4
        if x.numel() == 0:
            channels = 1 if axis == -1 else x.shape[axis]
            data = torch.empty(0, dtype=torch.uint8)
            scales = bytes(4 * channels)
        else:
            codes, scale_t, offset_t, half = quantise_affine(x, axis=axis, bits=bits)
            data = codes if bits == 8 else pack_int4(codes)
            param_dtype = "float16" if half else "float32"
            scales, offsets = _param_bytes(scale_t, offset_t, half=half)
    # Byte planes only help an entropy coder; without zstd they would just cost a copy.
    shuffle = spec.zstd_level > 0 and data.element_size() > 1
    raw = _byte_view(_shuffle(data) if shuffle else data)
    payload = _compressor(spec.zstd_level).compress(raw) if spec.zstd_level else raw.tobytes()
    header = TensorHeader(
        dtype=dtype,
        shape=tuple(x.shape),
        scheme=scheme,
        zstd_level=spec.zstd_level,
        raw_size=raw.nbytes,
        payload_size=len(payload),
        checksum=zlib.crc32(payload),
        channel_axis=axis,
        scales=scales,
        offsets=offsets,
        name=name,
        byte_shuffle=shuffle,
        param_dtype=param_dtype,
    )
    return EncodedTensor(header=header, payload=payload)


def decode(
    header: TensorHeader,
    payload: bytes | bytearray | memoryview,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> torch.Tensor:
    """Turn a header and its payload back into a tensor of the header's dtype and shape.

    Nothing is allocated before the header has been validated against ``limits``, and zstd
    is never allowed to produce more than the header's ``raw_size``.

    Raises:
        HeaderError: a header field is invalid or inconsistent (:class:`LimitError` if too big).
        PayloadError: the payload's size or compression disagrees with the header.
        ChecksumError: the payload was corrupted.
    """
    layout = validate_header(header, limits)
    if len(payload) != header.payload_size:
        raise PayloadError(
            f"payload has {len(payload)} bytes; header announced {header.payload_size}",
            field="payload_size",
        )
    checksum = zlib.crc32(payload)
    if checksum != header.checksum:
        raise ChecksumError(
            f"CRC-32 of the payload is {checksum:#010x}; header says {header.checksum:#010x}",
            field="checksum",
        )
    dtype = DTYPES[header.dtype]
    if layout.numel == 0:
        return torch.empty(header.shape, dtype=dtype)
    if header.scheme == "jpeg":
        batch, channels, height, width = header.shape
        pixels = decode_images(payload, header.part_sizes, (batch, channels, height, width))
        return torch.from_numpy(pixels)
    raw = _decompress(payload, header.raw_size) if header.zstd_level else payload
    # One copy into memory the returned tensor owns: decoded tensors never alias wire buffers.
    buf = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    if header.byte_shuffle:
        buf = _unshuffle(buf, element_width(header.scheme, header.dtype))
    if header.scheme == "raw":
        out = buf.view(dtype).view(header.shape)
        if dtype == torch.bool and bool((buf > 1).any()):
            raise PayloadError("bool payload holds bytes other than 0 and 1", field="payload")
        return out
    if header.scheme in ("fp16", "bf16"):
        wire = torch.float16 if header.scheme == "fp16" else torch.bfloat16
        return buf.view(wire).view(header.shape).to(dtype)
    codes = buf if header.scheme == "int8" else unpack_int4(buf, layout.numel)
    return dequantise_affine(
        codes,
        shape=header.shape,
        axis=header.channel_axis,
        scales=torch.from_numpy(_param_array(header.scales, header.param_dtype)),
        offsets=torch.from_numpy(
            _param_array(header.offsets, header.param_dtype)
            if header.offsets
            else np.zeros(layout.channels, dtype=np.float32)
        ),
        dtype=dtype,
    )


def _param_bytes(scales: torch.Tensor, offsets: torch.Tensor, *, half: bool) -> tuple[bytes, bytes]:
    """The header's scale and offset bytes: float16 when ``half`` (the values are float16-exact),
    and no offsets at all when every offset is 0 (ReLU outputs)."""
    wire = np.float16 if half else np.float32
    scale_bytes = scales.numpy().astype(wire).tobytes()
    lo = offsets.numpy()
    return scale_bytes, b"" if not lo.any() else lo.astype(wire).tobytes()


def _param_array(data: bytes, param_dtype: str) -> np.ndarray:
    """Scales or offsets from the header, as float32 (validated: length and finiteness)."""
    wire = "<f2" if param_dtype == "float16" else "<f4"
    return np.frombuffer(data, dtype=wire).astype(np.float32)


def _check_camera_image(x: torch.Tensor, spec: CodecSpec) -> None:
    """``frame`` and ``jpeg`` take what a camera gives: uint8 (N, 1|3, H, W) images."""
    shape = tuple(x.shape)
    if (
        x.dtype != torch.uint8
        or len(shape) != 4
        or shape[1] not in JPEG_CHANNELS
        or not (1 <= shape[2] <= JPEG_MAX_SIDE and 1 <= shape[3] <= JPEG_MAX_SIDE)
    ):
        raise EncodeError(
            f"{spec.scheme} encodes uint8 (N, 1|3, H, W) camera images with H, W in "
            f"1..{JPEG_MAX_SIDE}; got {DTYPE_NAMES[x.dtype]} {shape}: send the camera's frame "
            "before preprocessing, or quantise the input with int8",
            field="dtype" if x.dtype != torch.uint8 else "shape",
        )


def _encode_jpeg(x: torch.Tensor, spec: CodecSpec, *, name: str) -> EncodedTensor:
    """One JPEG stream per image of a uint8 (N, 1|3, H, W) tensor, concatenated."""
    shape = tuple(x.shape)
    assert spec.subsampling  # every jpeg spec has one (CodecSpec fills in 4:2:0)
    streams = encode_images(x.contiguous().numpy(), spec.quality, subsampling=spec.subsampling)
    payload = b"".join(streams)
    header = TensorHeader(
        dtype="uint8",
        shape=shape,
        scheme="jpeg",
        zstd_level=0,
        raw_size=x.numel(),
        payload_size=len(payload),
        checksum=zlib.crc32(payload),
        name=name,
        part_sizes=tuple(len(stream) for stream in streams),
    )
    return EncodedTensor(header=header, payload=payload)


def wire_scheme(spec: CodecSpec, dtype: str) -> str:
    """What actually happens to a tensor of ``dtype`` under ``spec`` (never a wasted cast)."""
    if dtype not in FLOAT_DTYPES or spec.scheme == "fp32":
        return "raw"
    if (spec.scheme, dtype) in (("fp16", "float16"), ("bf16", "bfloat16")):
        return "raw"
    return spec.scheme


def _shuffle(t: torch.Tensor) -> torch.Tensor:
    """The bytes of ``t`` grouped by position in the element: (width, numel) uint8.

    numpy's strided byte copy is ~10× faster than torch's for this transpose.
    """
    flat = t.reshape(-1).view(torch.uint8).numpy()
    return torch.from_numpy(np.ascontiguousarray(flat.reshape(-1, t.element_size()).T))


def _unshuffle(planes: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`_shuffle`: flat element bytes from ``width`` byte planes."""
    return torch.from_numpy(np.ascontiguousarray(planes.numpy().reshape(width, -1).T).reshape(-1))


def _byte_view(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous tensor, without copying (bf16 has no numpy dtype, uint8 does)."""
    return t.reshape(-1).view(torch.uint8).numpy().data


def _decompress(payload: bytes | bytearray | memoryview, raw_size: int) -> bytes:
    try:
        content_size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"not a zstd frame ({exc})", field="payload") from exc
    if content_size != raw_size:
        # Checked before decompressing: zstd would otherwise allocate what the frame claims.
        raise PayloadError(
            f"zstd frame declares {content_size} bytes; header's raw_size is {raw_size}",
            field="payload",
        )
    try:
        raw = _decompressor().decompress(payload, max_output_size=raw_size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"zstd frame is corrupt ({exc})", field="payload") from exc
    if len(raw) != raw_size:
        raise PayloadError(
            f"zstd produced {len(raw)} bytes; header's raw_size is {raw_size}", field="payload"
        )
    return raw


# zstd contexts are costly to create and not safe to share between threads: one per thread.
_contexts = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _contexts.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_contexts, "decompressor"):
        _contexts.decompressor = zstandard.ZstdDecompressor()
    return _contexts.decompressor
