"""Protocol version 3: int8/int4 (scale, offset) pairs as float16, all-zero offsets left out.

The pairs must shrink without loosening the error bound beyond ``(1 + 2**-9)`` of the float32
one, and the decoder must rebuild exactly what the encoder computed the codes with.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitwire.protocol import decode, encode
from splitwire.protocol.quantise import quantise_affine
from splitwire.protocol.wire import header_from_proto, header_to_proto

LEVELS = {"int8": 255, "int4": 15}


def _channel_ranges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = tuple(d for d in range(x.dim()) if d != 1)
    return x.amin(dim=dims), x.amax(dim=dims)


def test_worked_example_from_the_docstring() -> None:
    """A ReLU6 channel over [0, 6.1], 8 bits: the float16 scale is 0.0239258 (rounded up from
    6.1 / 255 = 0.0239216), the offset 0 travels as nothing."""
    x = torch.linspace(0, 6.1, 1000).view(1, 1, 1000)  # rank 3: the channel axis is the last
    x = x.transpose(1, 2).contiguous()  # (1, 1000, 1): one channel along axis 2
    enc = encode(x, "int8")
    assert enc.header.param_dtype == "float16"
    assert enc.header.offsets == b""
    (scale,) = np.frombuffer(enc.header.scales, dtype="<f2")
    assert float(scale) == pytest.approx(0.0239258, abs=1e-7)
    assert float(scale) >= 6.1 / 255
    err = (decode(enc.header, enc.payload) - x).abs().max().item()
    assert err <= float(scale) / 2 * (1 + 1e-6)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("shift", [0.0, -0.37, 3.0])
def test_error_stays_within_the_float32_bound(scheme: str, shift: float) -> None:
    gen = torch.Generator().manual_seed(11)
    # Channel spreads 0.5..5 around offsets up to 3: float16 holds every pair within 2**-9.
    spread = 0.5 + torch.rand(1, 64, 1, 1, generator=gen) * 4.5
    x = torch.randn(2, 64, 9, 9, generator=gen) * spread
    x = x + shift
    if shift == 0.0:
        x = torch.relu(x)
    enc = encode(x, scheme + "+zstd1")
    assert enc.header.param_dtype == "float16"
    lo, hi = _channel_ranges(x)
    exact = (hi - lo) / LEVELS[scheme]  # the float32 scheme's scale
    err = (decode(enc.header, enc.payload) - x).abs().amax(dim=(0, 2, 3))
    # fp32 arithmetic of the reconstruction adds a few ulp of the value itself.
    slack = 4 * torch.finfo(torch.float32).eps * x.abs().amax(dim=(0, 2, 3))
    assert bool((err <= exact / 2 * (1 + 2**-9) + slack).all()), (err / (exact / 2)).max()


def test_decoder_rebuilds_what_the_encoder_assumed() -> None:
    """codes * scale16 + offset16, with the very values in the header, is the decoded tensor."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 5, 5, generator=gen) - 0.5
    codes, scales, offsets, half = quantise_affine(x, axis=1, bits=8)
    assert half
    assert torch.equal(scales.half().float(), scales)  # float16-exact
    assert torch.equal(offsets.half().float(), offsets)
    enc = encode(x, "int8")
    assert torch.equal(
        decode(enc.header, enc.payload),
        codes.float() * scales.view(1, 16, 1, 1) + offsets.view(1, 16, 1, 1),
    )


def test_offsets_are_left_out_only_when_all_zero() -> None:
    relu = torch.relu(torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(1)))
    relu[:, :, 0, 0] = 0.0  # every channel's minimum is 0
    signed = relu - 0.25
    assert encode(relu, "int8").header.offsets == b""
    assert len(encode(signed, "int8").header.offsets) == 2 * 8


def test_float32_pairs_where_float16_would_lose_accuracy() -> None:
    """An offset of 1000 with a range of 0.5: float16 steps by 0.5 there, so rounding the offset
    down would double the scale; a constant channel at 0.1 (not float16-exact) would stop being
    exact. Both keep float32 pairs and the float32 bound."""
    gen = torch.Generator().manual_seed(5)
    far = 1000.0 + torch.rand(1, 4, 6, 6, generator=gen) * 0.5
    constant = torch.full((1, 4, 6, 6), 0.1)
    tiny = torch.rand(1, 4, 6, 6, generator=gen) * 1e-6  # scales below float16's normal range
    for x in (far, constant, tiny):
        enc = encode(x, "int8")
        assert enc.header.param_dtype == "float32"
        lo, hi = _channel_ranges(x)
        err = (decode(enc.header, enc.payload) - x).abs().amax(dim=(0, 2, 3))
        slack = 4 * torch.finfo(torch.float32).eps * x.abs().amax(dim=(0, 2, 3))
        assert bool((err <= (hi - lo) / 255 / 2 * (1 + 1e-5) + slack).all())
    assert torch.equal(decode(*_roundtrip_parts(constant)), constant)


def _roundtrip_parts(x: torch.Tensor) -> tuple:
    enc = encode(x, "int8")
    return enc.header, enc.payload


def test_header_bytes_of_a_wide_relu_layer() -> None:
    """1280 ReLU channels (EfficientNet-Lite0's head conv): 2 × 4 × 1280 = 10 240 bytes of
    float32 pairs before version 3, 2 × 1280 = 2 560 bytes of float16 scales now."""
    x = torch.relu(torch.randn(1, 1280, 7, 7, generator=torch.Generator().manual_seed(2)))
    enc = encode(x, "int8+zstd1")
    assert (len(enc.header.scales), len(enc.header.offsets)) == (2560, 0)
    message = header_to_proto(enc.header)
    assert message.ByteSize() < 2700  # dtype, shape, sizes: ~50 bytes
    assert header_from_proto(message) == enc.header


def test_float32_is_the_protos_empty_default() -> None:
    enc = encode(torch.randn(1, 4, 3, 3) + 1000.0, "int8")
    assert enc.header.param_dtype == "float32"
    message = header_to_proto(enc.header)
    assert message.param_dtype == ""
    assert header_from_proto(message).param_dtype == "float32"
