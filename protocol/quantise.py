"""Per-channel affine quantisation to 8 or 4 bits, and 4-bit packing.

For each channel ``c`` (an index along ``axis``) the codes are
``q = round((x - lo_c) / scale_c)`` with ``scale_c = (hi_c - lo_c) / (2**bits - 1)``, so the
reconstruction ``q * scale_c + lo_c`` is within ``scale_c / 2`` of ``x``. ReLU activations have
``lo_c = 0`` and many exact zeros, which zstd then removes almost for free.

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
    x: torch.Tensor, *, axis: int, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise a contiguous float tensor per channel.

    Args:
        x: contiguous floating-point tensor with at least one element.
        axis: channel axis, or -1 for a single channel.
        bits: 8 or 4.

    Returns:
        ``(codes, scales, offsets)``: uint8 codes shaped like ``x`` (values ``0..2**bits-1``),
        and float32 ``scales``/``offsets`` with one value per channel.

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
    return codes, torch.from_numpy(scales), lo.contiguous()


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
