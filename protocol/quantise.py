"""Per-channel affine quantisation to 8 or 4 bits, and 4-bit packing.

For each channel ``c`` (an index along ``axis``) the codes are
``q = round((x - lo_c) / scale_c)`` with ``scale_c = (hi_c - lo_c) / (2**bits - 1)``, so the
reconstruction ``q * scale_c + lo_c`` is within ``scale_c / 2`` of ``x``. ReLU activations have
``lo_c = 0`` and many exact zeros, which zstd then removes almost for free.

The (scale, offset) pairs travel in the header, and on a wide layer they weigh as much as the
codes (EfficientNet-Lite0's 1280-channel head conv: 10 kB of fp32 pairs in a 19.5 kB frame), so
they are sent as float16 when that costs no accuracy: the offset is rounded *down* to float16 and
the scale *up*, so ``[lo16, lo16 + levels * scale16]`` still covers ``[lo_c, hi_c]``, and the
codes are computed with these rounded values, which are exactly what the decoder multiplies
with. The error bound becomes ``scale16 / 2``; float16 is used only when every channel's
``scale16 <= scale_c * (1 + 2**-9)`` (a constant channel needs an offset float16 holds exactly),
otherwise the pairs stay float32. Worked example: a ReLU channel with range ``[0, 6.1]``, 8 bits:
``scale_c = 6.1 / 255 = 0.0239216``, float16 rounds it up to ``0.0239258`` (+1.8e-4 relative),
``lo16 = 0``: the bound grows from 0.0119608 to 0.0119629.

Everything here is whole-tensor torch arithmetic: no Python loop touches elements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from splitwire.protocol.errors import EncodeError

# A channel whose range is below this is constant to float32 precision: it is sent as its
# offset alone (codes 0), because 1/scale would overflow.
_MIN_SCALE = 1e-30


def default_channel_axis(shape: Sequence[int]) -> int:
    """The axis that gets its own (scale, offset) pairs, or -1 for one pair per tensor.

    ``(N, C, H, W)`` and ``(N, C)`` use the channel axis 1; ``(N, tokens, features)`` uses the
    feature axis 2, where transformer activations keep their outliers; rank 0/1 uses one pair.
    """
    rank = len(shape)
    if rank <= 1:
        return -1
    return 2 if rank == 3 else 1


def quantise_affine(
    x: torch.Tensor, *, axis: int, bits: int, half_params: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Quantise a contiguous float tensor per channel.

    Args:
        x: contiguous floating-point tensor with at least one element.
        axis: channel axis, or -1 for a single channel.
        bits: 8 or 4.
        half_params: round the (scale, offset) pairs to float16 when that keeps the error
            within ``(1 + 2**-9)`` of the float32 bound (see the module docstring).

    Returns:
        ``(codes, scales, offsets, half)``: uint8 codes shaped like ``x`` (values
        ``0..2**bits-1``), float32 ``scales``/``offsets`` with one value per channel, and
        whether those values are float16-exact (the codes were computed with them).

    Raises:
        EncodeError: ``x`` holds NaN/inf, or a channel's range overflows float32.
    """
    levels = (1 << bits) - 1
    xf = x if x.dtype == torch.float32 else x.float()
    bshape = [1] * xf.dim()
    if axis == -1:
        lo, hi = xf.amin().reshape(1), xf.amax().reshape(1)
    else:
        # amin/amax over several dims beat aminmax over a reshaped view by ~10× on one thread.
        reduce = tuple(d for d in range(xf.dim()) if d != axis)
        lo, hi = xf.amin(dim=reduce), xf.amax(dim=reduce)
        bshape[axis] = xf.shape[axis]
    # Per-channel arithmetic on C values: numpy, whose per-call overhead is a fraction of torch's.
    lo_n, hi_n = lo.numpy(), hi.numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        scales = (hi_n - lo_n) / np.float32(levels)
    if not (np.isfinite(lo_n).all() and np.isfinite(scales).all()):
        raise EncodeError(
            f"int{bits} needs finite values with a float32-representable range per channel; "
            "the tensor holds NaN/inf or values too far apart (use fp16/bf16/fp32 instead)",
            field="values",
        )
    rounded = _half_params(lo_n, hi_n, scales, levels) if half_params else None
    if rounded is not None:
        lo_n, scales = rounded
        lo = torch.from_numpy(lo_n)
    inv = np.where(scales >= _MIN_SCALE, np.float32(1) / np.maximum(scales, _MIN_SCALE), 0).astype(
        np.float32
    )
    # codes = trunc((x - (lo - scale/2)) / scale) = round((x - lo) / scale). Subtracting first
    # keeps precision when |lo| >> range, and by monotonic rounding x - start >= 0 and
    # (hi - start) * inv < levels + 1, so the cast needs no clamp. numpy's float->uint8 cast
    # is ~4× faster than torch's.
    start = (lo_n - np.float32(0.5) * scales).astype(np.float32)
    shifted = torch.sub(xf, torch.from_numpy(start).view(bshape))
    shifted.mul_(torch.from_numpy(inv).view(bshape))
    codes = torch.from_numpy(shifted.numpy().astype(np.uint8))
    return codes, torch.from_numpy(scales), lo.contiguous(), rounded is not None


def _half_params(
    lo: np.ndarray, hi: np.ndarray, scales: np.ndarray, levels: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Float16-exact ``(offsets, scales)`` covering every channel's range, as float32 arrays,
    or None when float16 would loosen some channel's error bound by more than 2**-9."""
    with np.errstate(over="ignore", invalid="ignore"):
        lo16 = lo.astype(np.float16)
        # Round the offset down: codes of values at lo_c must not go below 0.
        lo16 = np.where(lo16.astype(np.float64) > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16)
        needed = (hi.astype(np.float64) - lo16.astype(np.float64)) / levels
        s16 = needed.astype(np.float16)
        # Round the scale up: lo16 + levels * s16 must reach hi_c.
        s16 = np.where(s16.astype(np.float64) < needed, np.nextafter(s16, np.float16(np.inf)), s16)
        exact = scales.astype(np.float64)
        ok = (
            np.isfinite(lo16).all()
            and np.isfinite(s16).all()
            and bool((s16.astype(np.float64) <= exact * (1 + 2.0**-9)).all())
        )
    if not ok:
        return None
    return lo16.astype(np.float32), s16.astype(np.float32)


def dequantise_affine(
    codes: torch.Tensor,
    *,
    shape: Sequence[int],
    axis: int,
    scales: torch.Tensor,
    offsets: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Rebuild ``codes * scale + offset`` per channel, shaped ``shape`` and of ``dtype``."""
    bshape = [1] * len(shape)
    if axis != -1:
        bshape[axis] = shape[axis]
    out = codes.reshape(shape).to(torch.float32)
    out.mul_(scales.view(bshape)).add_(offsets.view(bshape))
    return out if dtype == torch.float32 else out.to(dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte (element ``2i`` in the low nibble), padding an odd count."""
    flat = codes.reshape(-1)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: the first ``numel`` 4-bit codes as uint8."""
    out = torch.empty(packed.numel() * 2, dtype=torch.uint8)
    torch.bitwise_and(packed, 0x0F, out=out[0::2])
    torch.bitwise_right_shift(packed, 4, out=out[1::2])
    return out[:numel]
