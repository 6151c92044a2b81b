"""The JPEG baseline: compress the camera frame and run the whole model in the cloud.

sc2bench's warning is that many split methods lose to this, so the planner always prices it on
the same table. The model's input here is a normalised float tensor; a camera produces uint8
pixels, so each image is first mapped to 0..255 with its own min/max (that rounding is charged
to the baseline), JPEG-encoded with Pillow, decoded and mapped back.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class JpegResult:
    """Decoded images (same shape and dtype as the input) and what the round trip cost."""

    decoded: torch.Tensor
    mean_bytes: float
    encode_ms: float
    decode_ms: float


def jpeg_applicable(input_shape: tuple[int, ...]) -> bool:
    """JPEG needs an (N, 1 or 3, H, W) image."""
    return len(input_shape) == 4 and input_shape[1] in (1, 3)


def jpeg_roundtrip(images: torch.Tensor, *, quality: int) -> JpegResult:
    """JPEG-encode each of ``images`` (N, C, H, W) at ``quality`` and decode it again.

    Raises:
        ValueError: the tensor is not an (N, 1|3, H, W) image batch, or quality not in 1..95.
    """
    if not jpeg_applicable(tuple(images.shape)):
        raise ValueError(f"JPEG needs (N, 1|3, H, W) images; got shape {tuple(images.shape)}")
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality {quality} out of range; expected 1..95")
    decoded = torch.empty_like(images)
    sizes, encode_ns, decode_ns = [], 0, 0
    for i, image in enumerate(images.float()):
        lo, hi = image.min().item(), image.max().item()
        span = (hi - lo) or 1.0
        pixels = ((image - lo) / span * 255).round().clamp(0, 255).to(torch.uint8)
        array = pixels.permute(1, 2, 0).numpy()
        mode = "L" if array.shape[2] == 1 else "RGB"
        start = time.perf_counter_ns()
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(2) if mode == "L" else array, mode=mode).save(
            buffer, format="JPEG", quality=quality
        )
        encoded = buffer.getvalue()
        middle = time.perf_counter_ns()
        restored = np.asarray(Image.open(io.BytesIO(encoded)).convert(mode))
        end = time.perf_counter_ns()
        encode_ns += middle - start
        decode_ns += end - middle
        sizes.append(len(encoded))
        back = torch.from_numpy(restored.copy()).float().reshape(array.shape).permute(2, 0, 1)
        decoded[i] = (back / 255 * span + lo).to(images.dtype)
    count = len(images)
    return JpegResult(decoded, sum(sizes) / count, encode_ns / 1e6 / count, decode_ns / 1e6 / count)
