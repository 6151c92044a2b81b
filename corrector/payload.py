"""The remote class map on the downlink: the heavy model's answer, entropy-coded beside its
feature map, so that the edge can show it wherever the scene has not moved (:mod:`.selection`).

    >>> data = encode_classes(logits.argmax(1).to(torch.uint8))    # tail: (N, H, W) uint8
    >>> classes = decode_classes(data, shape=(1, 64, 64), num_classes=5)   # edge, validated

Wire form: one zstd frame (level 3: the map is tiny, so the slower level costs microseconds)
of the uint8 class indices in C order, with its content size written in the frame. A 64×64
map of five classes, mostly background, takes a few hundred bytes against 80 KiB for the fp32
logits. It is peer input: :func:`decode_classes` checks the compressed size against
``max_bytes`` and the size the frame declares against the expected shape *before*
decompressing, then every value against the number of classes.
"""

from __future__ import annotations

import torch
import zstandard

from splitwire.corrector.errors import FeatureShapeError
from splitwire.protocol.codec import encode as encode_tensor

__all__ = [
    "MAX_CLASS_MAP_BYTES",
    "decode_classes",
    "downlink_bytes",
    "encode_classes",
    "feature_bytes",
]

# Largest compressed class map accepted: the raw map of a 64x64 frame is 4096 bytes and zstd
# never expands it by more than a few dozen bytes, so 8 KiB refuses nothing honest.
MAX_CLASS_MAP_BYTES = 8192
# What the feature map is priced with: the codec the README's plans ship.
FEATURE_CODEC = "int8+zstd1"
_LEVEL = 3


def encode_classes(classes: torch.Tensor) -> bytes:
    """A class map (N, H, W) of values 0..255 → one zstd frame."""
    raw = classes.to(torch.uint8).contiguous().numpy().tobytes()
    return zstandard.ZstdCompressor(level=_LEVEL, write_content_size=True).compress(raw)


def decode_classes(
    data: bytes,
    *,
    shape: tuple[int, int, int],
    num_classes: int,
    max_bytes: int = MAX_CLASS_MAP_BYTES,
) -> torch.Tensor:
    """A peer's compressed class map → int64 (N, H, W), checked before and after decoding.

    Args:
        data: what the peer sent.
        shape: the (N, H, W) the plan allows.
        num_classes: K: every value must be in 0..K-1.
        max_bytes: the largest compressed size accepted.

    Raises:
        FeatureShapeError: too many bytes, not one zstd frame, a declared size other than the
            shape's, a corrupt frame, or a value outside 0..K-1 (the message says which).
    """
    if len(data) > max_bytes:
        raise FeatureShapeError(
            f"remote class map: {len(data)} bytes, expected at most {max_bytes}"
        )
    expected = shape[0] * shape[1] * shape[2]
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise FeatureShapeError(f"remote class map: not a zstd frame ({exc})") from exc
    if declared != expected:  # checked before decompressing: no allocation on the peer's word
        raise FeatureShapeError(
            f"remote class map: the frame declares {declared} bytes, expected {expected} for "
            f"shape {shape}"
        )
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=expected, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise FeatureShapeError(f"remote class map: corrupt zstd frame ({exc})") from exc
    if len(raw) != expected:
        raise FeatureShapeError(f"remote class map: decoded {len(raw)} bytes, expected {expected}")
    classes = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(shape)
    top = int(classes.max()) if expected else 0
    if top >= num_classes:
        raise FeatureShapeError(
            f"remote class map: expected classes 0..{num_classes - 1}, got a {top}"
        )
    return classes.long()


def feature_bytes(downlink: torch.Tensor) -> int:
    """Bytes of a downlink feature map (N, C, h, w) under :data:`FEATURE_CODEC`."""
    encoded = encode_tensor(downlink.float().contiguous(), FEATURE_CODEC)
    # The quantisation parameters travel in the header: they are part of the price.
    return len(encoded.payload) + len(encoded.header.scales) + len(encoded.header.offsets)


def downlink_bytes(downlink: torch.Tensor, classes: torch.Tensor) -> tuple[int, int]:
    """(feature map, class map) payload bytes of one frame's remote answer."""
    return feature_bytes(downlink), len(encode_classes(classes))
