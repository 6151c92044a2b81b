"""Every spec × dtype × shape round-trips: exactly where the codec is lossless, within the
documented bound where it is not."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from splitwire.protocol import CodecSpec, EncodedTensor, decode, encode
from splitwire.protocol.header import DTYPE_NAMES, FLOAT_DTYPES

SPECS = [
    f"{scheme}{suffix}"
    for scheme, suffix in itertools.product(
        ["fp32", "fp16", "bf16", "int8", "int4"], ["", "+zstd1", "+zstd3"]
    )
]
DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _shaped(kind: str, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Test tensors of every layout the codec must accept."""
    base_shape = {
        "scalar": (),
        "empty": (0,),
        "empty-4d": (0, 4, 2, 2),
        "1d": (37,),
        "2d": (3, 17),
        "3d": (2, 9, 24),
        "4d": (2, 8, 5, 7),
        "channels-last": (2, 8, 5, 7),
        "non-contiguous": (6, 10),
    }[kind]
    if dtype.is_floating_point:
        t = torch.randn(base_shape, generator=gen, dtype=torch.float32) * 3
        t = torch.relu(t) if kind == "4d" else t  # ReLU-like zeros too
        t = t.to(dtype)
    elif dtype == torch.bool:
        t = torch.rand(base_shape, generator=gen) > 0.5
    else:
        info = torch.iinfo(dtype)
        t = torch.randint(info.min, info.max, base_shape, generator=gen, dtype=torch.int64)
        t = t.to(dtype)
    if kind == "channels-last":
        t = t.contiguous(memory_format=torch.channels_last)
        assert not t.is_contiguous()
    if kind == "non-contiguous":
        t = t.t()
        assert not t.is_contiguous()
    return t


KINDS = ["scalar", "empty", "empty-4d", "1d", "2d", "3d", "4d", "channels-last", "non-contiguous"]


def _is_exact(spec: CodecSpec, dtype: torch.dtype) -> bool:
    name = DTYPE_NAMES[dtype]
    return (
        spec.lossless
        or name not in FLOAT_DTYPES
        or (spec.scheme, name) in (("fp16", "float16"), ("bf16", "bfloat16"))
    )


def _assert_within_quantisation_bound(x: torch.Tensor, y: torch.Tensor, enc: EncodedTensor) -> None:
    """|x - y| <= scale_c / 2 per channel, plus the float rounding of the reconstruction."""
    header = enc.header
    wire = torch.float16 if header.param_dtype == "float16" else torch.float32
    scales = torch.frombuffer(bytearray(header.scales), dtype=wire).float()
    xf, yf = x.float(), y.float()
    shape = [1] * x.dim()
    if header.channel_axis != -1:
        shape[header.channel_axis] = x.shape[header.channel_axis]
    bound = scales.view(shape) / 2 * (1 + 1e-3) + 1e-6 * xf.abs() + 1e-30
    if y.dtype != torch.float32:
        # The reconstruction is rounded once more to the output dtype, relative to the value
        # rounded (y, not x: a tiny x can be reconstructed as a value half a step away).
        bound = bound + yf.abs() * (2**-8 if y.dtype == torch.bfloat16 else 2**-11)
    assert bool(((xf - yf).abs() <= bound).all()), (xf - yf).abs().max()


@pytest.mark.parametrize("spec_text", SPECS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip(spec_text: str, dtype: torch.dtype, kind: str) -> None:
    spec = CodecSpec.parse(spec_text)
    # crc32, not hash(): str hashes change with every interpreter, and so would the data.
    gen = torch.Generator().manual_seed(zlib.crc32(f"{spec_text}/{dtype}/{kind}".encode()))
    x = _shaped(kind, dtype, gen)
    enc = encode(x, spec, name="t")
    y = decode(enc.header, enc.payload)

    assert y.dtype == x.dtype
    assert y.shape == x.shape
    assert y.is_contiguous()
    assert enc.header.payload_size == len(enc.payload)
    if _is_exact(spec, dtype):
        # Bit-exact: compare the bytes, not the values (-0.0 == 0.0 would hide a difference).
        assert torch.equal(x.contiguous().view(-1).view(torch.uint8), y.view(-1).view(torch.uint8))
        return
    if spec.scheme == "fp16":
        # Round to nearest half: relative error <= 2**-11 for normal values.
        bound = x.float().abs() * 2**-11 + 2**-24
        assert bool(((x.float() - y.float()).abs() <= bound).all())
    elif spec.scheme == "bf16":
        bound = x.float().abs() * 2**-8 + 1e-38
        assert bool(((x.float() - y.float()).abs() <= bound).all())
    else:
        _assert_within_quantisation_bound(x, y, enc)


def test_special_values_travel_exactly_when_lossless() -> None:
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45, 3.4e38])
    for spec in ("fp32", "fp32+zstd1"):
        enc = encode(x, spec)
        y = decode(enc.header, enc.payload)
        assert torch.equal(x.view(torch.int32), y.view(torch.int32))


def test_int8_error_on_relu_activation_is_small() -> None:
    """The codec's documented accuracy on an activation-like tensor (facts: 0.3-0.7 %)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(1, 64, 28, 28, generator=gen))
    for spec, budget in (("int8+zstd1", 0.01), ("fp16+zstd1", 1e-3), ("int4+zstd1", 0.15)):
        enc = encode(x, spec)
        y = decode(enc.header, enc.payload)
        rel = ((x - y).norm() / x.norm()).item()
        assert rel <= budget, (spec, rel)


def test_quantisation_keeps_precision_far_from_zero() -> None:
    """A channel in [1e6, 1e6 + 1] keeps 1/255 resolution (x - lo is taken before scaling)."""
    x = 1e6 + torch.linspace(0, 1, 1000).view(1, 1, 1000)
    enc = encode(x, "int8")
    y = decode(enc.header, enc.payload)
    # float32 spacing at 1e6 is 0.0625; the quantisation step is 1/255.
    assert (x - y).abs().max().item() <= 0.07


def test_constant_channels_decode_exactly() -> None:
    x = torch.stack([torch.full((4, 4), 2.5), torch.zeros(4, 4), torch.full((4, 4), -1.0)])
    x = x.unsqueeze(0)  # (1, 3, 4, 4): every channel constant
    for spec in ("int8", "int4+zstd1"):
        enc = encode(x, spec)
        assert torch.equal(decode(enc.header, enc.payload), x)


def test_decoded_tensor_owns_its_memory() -> None:
    x = torch.arange(10, dtype=torch.float32)
    enc = encode(x, "fp32")
    payload = bytearray(enc.payload)
    y = decode(enc.header, payload)
    payload[:4] = b"\xff\xff\xff\xff"
    assert y[0].item() == 0.0
    y += 1  # writable, no warnings about read-only buffers


def test_header_records_the_transform_actually_applied() -> None:
    half = torch.ones(4, dtype=torch.float16)
    assert encode(half, "fp16").header.scheme == "raw"  # no wasted cast
    assert encode(torch.ones(4), "fp16").header.scheme == "fp16"
    assert encode(torch.ones(4, dtype=torch.int64), "int8").header.scheme == "raw"
    enc = encode(torch.ones(2, 3, 4), "int8")
    assert (enc.header.scheme, enc.header.channel_axis) == ("int8", 2)
    # Four channels (constant ones: 1.0 is float16-exact), one float16 scale and offset each.
    assert enc.header.param_dtype == "float16"
    assert (len(enc.header.scales), len(enc.header.offsets)) == (2 * 4, 2 * 4)


def test_int4_packs_two_values_per_byte() -> None:
    x = torch.randn(1, 3, 5, 7)  # 105 elements: odd count, padded
    enc = encode(x, "int4")
    assert enc.header.raw_size == 53
    assert len(enc.payload) == 53


def test_byte_planes_only_where_they_help() -> None:
    """Wide elements are regrouped by byte position before zstd, and only then."""
    x = torch.relu(torch.randn(1, 16, 8, 8))
    assert encode(x, "fp16+zstd1").header.byte_shuffle
    assert encode(x, "fp32+zstd1").header.byte_shuffle
    assert not encode(x, "fp16").header.byte_shuffle  # no entropy coder, no point
    assert not encode(x, "int8+zstd1").header.byte_shuffle  # one byte per element
    smooth = torch.linspace(0, 1, 4096).view(1, 1, 64, 64)
    planes = encode(smooth, "fp32+zstd1")
    assert len(planes.payload) < 0.8 * 4096 * 4  # the exponent planes compress


def test_byte_shuffle_on_one_byte_elements_is_refused() -> None:
    import dataclasses

    from splitwire.protocol import HeaderError

    enc = encode(torch.ones(8), "int8+zstd1")
    with pytest.raises(HeaderError, match="byte_shuffle set for one-byte elements"):
        decode(dataclasses.replace(enc.header, byte_shuffle=True), enc.payload)
