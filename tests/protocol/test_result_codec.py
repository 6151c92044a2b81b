"""A tail output's result codec: what it parses to, what it accepts at plan load, what the edge
must receive, and that the cloud's encoding is the protocol's own codec."""

from __future__ import annotations

import pytest
import torch

from splitwire.protocol import CodecSpecError, decode
from splitwire.protocol.result_codec import DEFAULT_RESULT_CODEC, ExpectedTensor, ResultCodec


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("classes+zstd3", "classes+zstd3"), ("classes", "classes"), ("INT8+zstd1", "int8+zstd1"),
     ("fp32", "fp32"), (" fp16 ", "fp16")],
)  # fmt: skip
def test_codecs_parse_to_one_spelling(text: str, canonical: str) -> None:
    codec = ResultCodec.parse(text)
    assert str(codec) == canonical
    assert ResultCodec.parse(str(codec)) == codec
    assert codec.classes == canonical.startswith("classes")
    assert codec.default == (canonical == "fp32")


@pytest.mark.parametrize(
    ("text", "message"),
    [("classes+zstd0", r"expected 1\.\.22"), ("classes+zstd999", r"expected 1\.\.22"),
     ("jpeg75", "not a camera frame"), ("frame", "not a camera frame"),
     ("none", "always sent"), ("logits", r"unknown scheme 'logits'.* or classes\[\+zstdLEVEL\]")],
)  # fmt: skip
def test_codecs_a_tail_cannot_send_are_refused(text: str, message: str) -> None:
    with pytest.raises(CodecSpecError, match=message):
        ResultCodec.parse(text)


def test_classes_only_of_class_scores() -> None:
    classes = ResultCodec.parse("classes+zstd3")
    classes.check((1, 5, 64, 64), "float32")
    classes.check((1, 10), "float16")
    for shape, dtype in (((1, 5, 64, 64), "int64"), ((10,), "float32"), ((1, 300), "float32")):
        with pytest.raises(CodecSpecError, match=r"float class scores \(N, K, \.\.\.\)"):
            classes.check(shape, dtype)
    ResultCodec.parse("int8+zstd1").check((1, 5), "int64")  # sent losslessly, as always


def test_what_the_edge_expects_is_what_the_cloud_sends() -> None:
    logits = torch.randn(1, 5, 64, 64)
    classes = ResultCodec.parse("classes+zstd3")
    expect = classes.expect("output0", (1, 5, 64, 64), "float32")
    assert expect == ExpectedTensor("output0", (1, 64, 64), "uint8", scheme="raw", max_class=4)
    sent = classes.encode(logits, name="output0")
    assert (tuple(sent.header.shape), sent.header.dtype, sent.header.scheme) == (
        expect.shape, expect.dtype, expect.scheme
    )  # fmt: skip
    assert torch.equal(decode(sent.header, sent.payload), logits.argmax(1).to(torch.uint8))
    assert len(sent.payload) < 4096 // 2  # zstd on 4096 indices

    features = ResultCodec.parse("int8+zstd1")
    downlink = torch.randn(1, 8, 16, 16)
    expect = features.expect("output1", (1, 8, 16, 16), "float32")
    assert (expect.shape, expect.dtype, expect.scheme, expect.max_class) == (
        (1, 8, 16, 16), "float32", "int8", None
    )  # fmt: skip
    sent = features.encode(downlink, name="output1")
    assert sent.header.scheme == "int8" and len(sent.payload) < downlink.numel() * 1.1

    plain = DEFAULT_RESULT_CODEC.expect("output0", (1, 10), "float32")
    assert (plain.scheme, plain.max_class) == ("raw", None)
