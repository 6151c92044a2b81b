"""JPEG streams ↔ uint8 image arrays, for the ``jpeg`` codec scheme (Pillow underneath).

Encoding writes one baseline JPEG per image: Pillow's standard Huffman tables, the codec's
chroma subsampling for colour images (4:2:0, or 4:4:4 for ``jpegQs444``), no metadata; the
decoder takes either (both decode to RGB). Decoding trusts nothing in a stream: each part must
be one complete JPEG (SOI … EOI) whose frame header agrees with the tensor header's H, W and C
*before* any pixel is decoded — ``Image.open`` reads only the markers up to the first scan, so a
stream that claims a huge size costs an error message. Pillow's decompression-bomb guard stays
on (its error is caught, and from its warning threshold on the frame is refused before
decoding), and every
Pillow failure becomes a :class:`PayloadError` naming the image. No warning filter is touched:
``warnings.catch_warnings`` is process-wide and decoding runs in several threads.
Progressive streams are refused: this encoder never writes them, and their
many scans make a small stream expensive to decode.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image

from splitwire.protocol.errors import PayloadError

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_MODES = {1: ("L",), 3: ("RGB", "YCbCr")}
# What Pillow raises on malformed input: its parsers raise SyntaxError/ValueError/EOFError,
# short reads struct.error, the decoder OSError; bombs raise their own error (or warning). Every
# reader of untrusted images in splitwire catches exactly these.
PILLOW_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def encode_images(images: np.ndarray, quality: int, *, subsampling: str = "4:2:0") -> list[bytes]:
    """One JPEG stream per image of a uint8 ``(N, C, H, W)`` array with C of 1 or 3.

    The caller has checked dtype, shape, ``quality`` (1..95) and ``subsampling`` (``4:2:0`` or
    ``4:4:4``; grey images have no chroma, so it changes nothing for them).
    """
    # Pillow wants (H, W) or (H, W, 3) rows: one transposing copy for the whole batch.
    planes = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    planes = np.ascontiguousarray(planes)
    streams = []
    for plane in planes:
        buffer = io.BytesIO()
        Image.fromarray(plane).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
        streams.append(buffer.getvalue())
    return streams


def decode_images(
    payload: bytes | bytearray | memoryview,
    part_sizes: Sequence[int],
    shape: tuple[int, int, int, int],
) -> np.ndarray:
    """Decode consecutive JPEG streams of ``part_sizes`` bytes into a uint8 ``shape`` array.

    ``shape`` is ``(N, C, H, W)`` from a validated header, so the output (allocated here, and
    owned by the caller) is within the receiver's limits, and ``part_sizes`` sum to the
    payload's length.

    Raises:
        PayloadError: a part is not one JPEG stream of an H×W image with C channels, or Pillow
            cannot decode it; the message names the image ("image 2 of 4: ...").
    """
    batch, channels, height, width = shape
    out = np.empty(shape, dtype=np.uint8)
    view = memoryview(payload)
    start = 0
    for index, size in enumerate(part_sizes):
        stream = view[start : start + size]
        start += size
        try:
            pixels = _decode_one(stream, channels=channels, height=height, width=width)
        except PayloadError as exc:
            raise PayloadError(f"image {index} of {batch}: {exc.message}", field="payload") from exc
        if channels == 1:
            out[index, 0] = pixels
        else:
            out[index] = pixels.transpose(2, 0, 1)
    return out


def _decode_one(stream: memoryview, *, channels: int, height: int, width: int) -> np.ndarray:
    """One JPEG stream as (H, W) or (H, W, 3) uint8, checked against the expected size first."""
    if stream[:2] != _SOI or stream[-2:] != _EOI:
        raise PayloadError(
            f"{len(stream)} bytes that are not one complete JPEG stream; expected SOI "
            "(ff d8) first and EOI (ff d9) last",
            field="payload",
        )
    try:
        with Image.open(io.BytesIO(stream), formats=["JPEG"]) as image:
            # Everything below up to load() comes from the markers alone: nothing decoded.
            if image.format != "JPEG":
                raise PayloadError(f"a {image.format} stream; expected plain JPEG", field="payload")
            if image.size != (width, height):
                found_w, found_h = image.size
                raise PayloadError(
                    f"JPEG frame is {found_h}×{found_w} (H×W); header expected {height}×{width}",
                    field="payload",
                )
            # Pillow's bomb guard only warns below twice its limit; refuse from the limit on.
            bomb_limit = Image.MAX_IMAGE_PIXELS
            if bomb_limit is not None and width * height > bomb_limit:
                raise PayloadError(
                    f"{height}×{width} pixels exceed Pillow's decompression-bomb limit of "
                    f"{bomb_limit} (DecompressionBomb); expected smaller frames",
                    field="payload",
                )
            if image.mode not in _MODES[channels]:
                raise PayloadError(
                    f"JPEG holds {image.mode} pixels; header expected {channels} channel(s) "
                    f"({' or '.join(_MODES[channels])})",
                    field="payload",
                )
            if "progressive" in image.info or "progression" in image.info:
                raise PayloadError(
                    "progressive JPEG; expected a baseline (sequential) stream",
                    field="payload",
                )
            image.load()
            pixels = np.asarray(image.convert("RGB") if image.mode == "YCbCr" else image)
    except PILLOW_ERRORS as exc:
        raise PayloadError(
            f"not a decodable JPEG stream ({type(exc).__name__}: {exc})", field="payload"
        ) from exc
    expected = (height, width) if channels == 1 else (height, width, 3)
    if pixels.shape != expected or pixels.dtype != np.uint8:  # pragma: no cover - Pillow's job
        raise PayloadError(
            f"Pillow decoded {pixels.dtype} {pixels.shape}; expected uint8 {expected}",
            field="payload",
        )
    return pixels
