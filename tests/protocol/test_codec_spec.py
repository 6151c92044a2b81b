from __future__ import annotations

import pytest

from splitwire.protocol import CodecSpec, CodecSpecError, EncodeError, encode


@pytest.mark.parametrize(
    ("text", "scheme", "level"),
    [
        ("fp32", "fp32", 0),
        ("int8+zstd1", "int8", 1),
        (" INT4+ZSTD19 ", "int4", 19),
        ("bf16", "bf16", 0),
        ("jpeg90", "jpeg", 0),
        ("jpeg90s444", "jpeg", 0),
        ("frame", "frame", 0),
        ("frame+zstd3", "frame", 3),
        ("none", "none", 0),
    ],
)
def test_parse(text: str, scheme: str, level: int) -> None:
    spec = CodecSpec.parse(text)
    assert (spec.scheme, spec.zstd_level) == (scheme, level)
    assert CodecSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("int9", "unknown scheme 'int9'"),
        ("int8+zstd0", "zstd level 0"),
        ("int8+zstd23", "out of range"),
        ("int8+lz4", "cannot parse codec"),
        ("png", "unknown scheme 'png'"),
        ("", "cannot parse codec"),
    ],
)
def test_parse_errors_say_what_is_expected(text: str, fragment: str) -> None:
    with pytest.raises(CodecSpecError) as info:
        CodecSpec.parse(text)
    assert fragment in str(info.value)
    assert "fp32" in str(info.value) or "1..22" in str(info.value)


def test_only_fp32_is_lossless_for_every_dtype() -> None:
    assert CodecSpec.parse("fp32+zstd3").lossless
    assert CodecSpec.parse("frame+zstd1").lossless  # for the uint8 frames it takes, its only input
    assert not CodecSpec.parse("fp16").lossless
    assert not CodecSpec.parse("jpeg95").lossless
    assert not CodecSpec.parse("none").lossless


def test_encode_refuses_what_it_cannot_represent() -> None:
    import torch

    with pytest.raises(EncodeError, match="NaN/inf"):
        encode(torch.tensor([1.0, float("nan")]), "int8")
    with pytest.raises(EncodeError, match="unsupported dtype"):
        encode(torch.ones(2, dtype=torch.complex64), "fp32")
