"""The camera schemes (``jpeg``, ``frame``) and ``none``, with real Pillow: round trips, 4:4:4
against 4:2:0 on a real photo, spec grammar, and hostile streams that must be refused before any
pixel is decoded."""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, JpegImagePlugin

from splitwire.partitioner.photos import photo_frames
from splitwire.protocol import (
    CodecSpec,
    CodecSpecError,
    DecodeLimits,
    EncodedTensor,
    EncodeError,
    HeaderError,
    LimitError,
    PayloadError,
    TensorHeader,
    decode,
    encode,
)
from splitwire.protocol.header import MIN_JPEG_BYTES
from splitwire.protocol.wire import header_from_proto, header_to_proto

SMALL = DecodeLimits(max_rank=6, max_elements=1 << 16, max_tensor_bytes=1 << 18)


def _smooth(batch: int, channels: int, height: int = 48, width: int = 64) -> torch.Tensor:
    """Camera-like uint8 images: slow gradients and waves, different per image and channel."""
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    images = [
        torch.stack(
            [
                128 + 60 * torch.sin(2 * math.pi * (x * (1 + c) + y * (1 + i) / 2)) + 50 * (x - y)
                for c in range(channels)
            ]
        )
        for i in range(batch)
    ]
    return torch.stack(images).round().clamp(0, 255).to(torch.uint8)


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = ((x.double() - y.double()) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _sof(stream: bytes | bytearray) -> int:
    """Offset of the height field in a stream's frame header (SOF), found by walking markers."""
    pos = 2
    while True:
        assert stream[pos] == 0xFF, "walked off the marker chain"
        marker = stream[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return pos + 5  # FF Cn, length (2), precision (1), then height (2), width (2)
        pos += 2 + int.from_bytes(stream[pos + 2 : pos + 4], "big")


def _claiming(stream: bytes, height: int, width: int) -> bytes:
    """``stream`` with its frame header rewritten to claim ``height``×``width``."""
    patched = bytearray(stream)
    at = _sof(patched)
    patched[at : at + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(patched)


def _reframe(enc: EncodedTensor, parts: list[bytes], **changes: object) -> EncodedTensor:
    """A self-consistent header (sizes, checksum) around new ``parts``, plus ``changes``."""
    payload = b"".join(parts)
    header = dataclasses.replace(
        enc.header,
        part_sizes=tuple(len(p) for p in parts),
        payload_size=len(payload),
        checksum=zlib.crc32(payload),
        **changes,
    )
    return EncodedTensor(header=header, payload=payload)


def _parts(enc: EncodedTensor) -> list[bytes]:
    out, start = [], 0
    for size in enc.header.part_sizes:
        out.append(enc.payload[start : start + size])
        start += size
    return out


@pytest.fixture
def no_oversized_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Pillow decodes the pixels of any stream not 16×16 (opening is fine)."""
    load = ImageFile.ImageFile.load

    def guarded(self: ImageFile.ImageFile) -> object:
        if self.size != (16, 16):
            raise AssertionError(f"Pillow decoded a {self.size} stream that should be refused")
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_roundtrip_of_smooth_images(channels: int) -> None:
    x = _smooth(3, channels)
    enc = encode(x, "jpeg90", name="camera")
    y = decode(enc.header, enc.payload)

    assert y.dtype == torch.uint8 and y.shape == x.shape and y.is_contiguous()
    for i in range(3):
        assert _psnr(x[i], y[i]) > 30, (i, _psnr(x[i], y[i]))
    assert len(enc.payload) < 0.5 * x.numel()  # it is a compressor
    y += 1  # owns writable memory


def test_header_describes_the_streams() -> None:
    x = _smooth(3, 3)
    enc = encode(x, "jpeg75")
    h = enc.header
    assert (h.dtype, h.shape, h.scheme, h.zstd_level) == ("uint8", (3, 3, 48, 64), "jpeg", 0)
    assert h.raw_size == x.numel()
    assert len(h.part_sizes) == 3 and sum(h.part_sizes) == h.payload_size == len(enc.payload)
    assert h.checksum == zlib.crc32(enc.payload)
    assert not (h.scales or h.offsets or h.byte_shuffle)
    for part in _parts(enc):
        assert part[:2] == b"\xff\xd8" and part[-2:] == b"\xff\xd9"
        assert Image.open(io.BytesIO(part)).size == (64, 48)
    # part_sizes survive the protobuf form.
    assert header_from_proto(header_to_proto(h)) == h


def test_quality_trades_size_for_fidelity() -> None:
    x = _smooth(1, 3)
    low, high = encode(x, "jpeg20"), encode(x, "jpeg95")
    assert len(low.payload) < len(high.payload)
    assert _psnr(x, decode(low.header, low.payload)) < _psnr(x, decode(high.header, high.payload))


def test_layouts_and_empty_batch() -> None:
    x = _smooth(2, 3)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    enc = encode(channels_last, "jpeg")
    assert enc.payload == encode(x, "jpeg90").payload
    empty = encode(torch.empty(0, 3, 8, 8, dtype=torch.uint8), "jpeg90")
    assert empty.payload == b"" and empty.header.part_sizes == ()
    assert decode(empty.header, empty.payload).shape == (0, 3, 8, 8)


def test_444_is_bigger_and_more_faithful_than_420_on_a_real_photo() -> None:
    """Full-resolution chroma costs bytes and buys fidelity, on a photo bundled with
    scikit-image (a camera's uint8 frame, not a synthetic pattern)."""
    photos = photo_frames("skimage", 3, height=224, width=224, channels=3, seed=5)
    for quality in (50, 75, 90):
        sub, full = encode(photos, f"jpeg{quality}"), encode(photos, f"jpeg{quality}s444")
        for part, sampling in [(p, 2) for p in _parts(sub)] + [(p, 0) for p in _parts(full)]:
            # Pillow's own reading of the frame header: 2 is 4:2:0, 0 is 4:4:4.
            assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(part))) == sampling
        # The decoder takes either; the header is the same but for the stream sizes.
        low, high = decode(sub.header, sub.payload), decode(full.header, full.payload)
        assert low.shape == high.shape == photos.shape and high.dtype == torch.uint8
        for i in range(len(photos)):
            assert len(_parts(full)[i]) > len(_parts(sub)[i]), (quality, i)
            assert _psnr(photos[i], high[i]) > _psnr(photos[i], low[i]), (quality, i)


def test_subsampling_changes_nothing_for_grey_images() -> None:
    x = _smooth(2, 1)
    full, sub = encode(x, "jpeg75s444"), encode(x, "jpeg75")
    assert len(full.payload) == len(sub.payload)  # only the frame header's sampling factor differs
    assert torch.equal(decode(full.header, full.payload), decode(sub.header, sub.payload))


@pytest.mark.parametrize("level", ["", "+zstd1"])
def test_frame_sends_the_camera_bytes(level: str) -> None:
    photos = photo_frames("skimage", 2, height=40, width=56, channels=3, seed=1)
    enc = encode(photos, "frame" + level, name="image")
    h = enc.header
    assert (h.dtype, h.shape, h.scheme) == ("uint8", (2, 3, 40, 56), "raw")
    assert h.raw_size == 2 * 3 * 40 * 56 and not (h.scales or h.byte_shuffle or h.part_sizes)
    if level:
        assert h.zstd_level == 1 and len(enc.payload) < h.raw_size
    else:
        assert enc.payload == photos.numpy().tobytes()  # the frame's own bytes, nothing else
    out = decode(h, enc.payload)
    assert out.dtype == torch.uint8 and torch.equal(out, photos)


@pytest.mark.parametrize(
    ("tensor", "got"),
    [
        (torch.zeros(1, 3, 8, 8), "got float32 (1, 3, 8, 8)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "got uint8 (3, 8, 8)"),
        (torch.zeros(1, 2, 8, 8, dtype=torch.uint8), "got uint8 (1, 2, 8, 8)"),
    ],
)
def test_frame_takes_uint8_images_only(tensor: torch.Tensor, got: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode(tensor, "frame+zstd1")
    assert "frame encodes uint8 (N, 1|3, H, W) camera images" in str(info.value)
    assert got in str(info.value)


# --- spec grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quality", "canonical"),
    [
        ("jpeg90", 90, "jpeg90"),
        ("jpeg", 90, "jpeg90"),
        (" JPEG1 ", 1, "jpeg1"),
        ("jpeg95", 95, "jpeg95"),
        ("jpeg75s444", 75, "jpeg75s444"),
        (" JPEG50S444", 50, "jpeg50s444"),
    ],
)
def test_parse_jpeg(text: str, quality: int, canonical: str) -> None:
    spec = CodecSpec.parse(text)
    assert (spec.scheme, spec.quality, spec.zstd_level) == ("jpeg", quality, 0)
    assert spec.subsampling == ("4:4:4" if "s444" in canonical else "4:2:0")
    assert str(spec) == canonical
    assert CodecSpec.parse(str(spec)) == spec
    assert spec.sends and not spec.lossless and spec.camera


def test_parse_frame() -> None:
    for text in ("frame", "frame+zstd1"):
        spec = CodecSpec.parse(text)
        assert (
            spec.scheme == "frame"
            and str(spec) == text
            and (spec.quality, spec.subsampling) == (0, "")
        )
        assert spec.camera and spec.lossless and spec.sends
    assert not any(CodecSpec.parse(t).camera for t in ("fp32", "int8+zstd1", "none"))


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("jpeg0", "quality", "JPEG quality 0 out of range; expected 1..95"),
        ("jpeg96", "quality", "JPEG quality 96 out of range; expected 1..95"),
        ("jpeg123456", "quality", "expected 1..95"),
        ("jpeg90+zstd1", "zstd_level", "already entropy-coded"),
        ("jpegq", "scheme", "unknown scheme 'jpegq'"),
        ("none+zstd3", "zstd_level", "nothing to compress"),
        ("jpeg75s420", "subsampling", "4:2:0 is the default"),
        ("jpeg75s422", "subsampling", "expected 's444' (4:4:4) or no suffix"),
        ("jpeg75s444+zstd1", "zstd_level", "already entropy-coded"),
        ("jpeg75-444", "codec", "cannot parse codec"),
        ("frame75", "scheme", "unknown scheme 'frame75'"),
    ],
)
def test_parse_rejects(text: str, field: str, fragment: str) -> None:
    with pytest.raises(CodecSpecError) as info:
        CodecSpec.parse(text)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_quality_belongs_to_jpeg_only() -> None:
    with pytest.raises(CodecSpecError, match="only for jpeg"):
        CodecSpec("int8", quality=90)
    with pytest.raises(CodecSpecError, match=r"expected 1\.\.95"):
        CodecSpec("jpeg")  # constructed directly, the quality is explicit
    assert CodecSpec("jpeg", quality=90) == CodecSpec.parse("jpeg")
    assert CodecSpec("jpeg", quality=90, subsampling="4:2:0") == CodecSpec.parse("jpeg")
    with pytest.raises(CodecSpecError, match="only for jpeg") as info:
        CodecSpec("frame", subsampling="4:4:4")
    assert info.value.field == "subsampling"
    with pytest.raises(CodecSpecError, match="expected one of 4:2:0, 4:4:4"):
        CodecSpec("jpeg", quality=90, subsampling="4:2:2")  # type: ignore[arg-type]


def test_none_sends_nothing() -> None:
    spec = CodecSpec.parse("none")
    assert (spec.scheme, str(spec), spec.sends, spec.lossless) == ("none", "none", False, False)
    assert CodecSpec.parse("fp32").sends
    with pytest.raises(EncodeError, match="'none' sends nothing") as info:
        encode(torch.ones(1, 3, 8, 8), spec)
    assert "edge runs the whole model" in str(info.value)


@pytest.mark.parametrize(
    ("tensor", "got"),
    [
        (torch.zeros(1, 3, 224, 224), "got float32 (1, 3, 224, 224)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int8), "got int8 (1, 3, 8, 8)"),
        (torch.zeros(3, 224, 224, dtype=torch.uint8), "got uint8 (3, 224, 224)"),
        (torch.zeros(1, 4, 8, 8, dtype=torch.uint8), "got uint8 (1, 4, 8, 8)"),
        (torch.zeros(1, 3, 0, 8, dtype=torch.uint8), "got uint8 (1, 3, 0, 8)"),
    ],
)
def test_encode_takes_uint8_images_only(tensor: torch.Tensor, got: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode(tensor, "jpeg90")
    message = str(info.value)
    assert "jpeg encodes uint8 (N, 1|3, H, W) camera images" in message
    assert got in message and "quantise the input" in message


# --- hostile headers ------------------------------------------------------------------------

SAMPLE = encode(_smooth(4, 3, 16, 16), "jpeg90")


@pytest.mark.parametrize(
    ("changes", "error", "field", "fragment"),
    [
        ({"dtype": "float32"}, HeaderError, "dtype", "expected 'uint8'"),
        ({"dtype": "int8"}, HeaderError, "dtype", "expected 'uint8'"),
        ({"part_sizes": SAMPLE.header.part_sizes[:3]}, HeaderError, "part_sizes", "3 part sizes"),
        ({"part_sizes": (*SAMPLE.header.part_sizes, 200)}, HeaderError, "part_sizes", "batch of 4"),
        ({"zstd_level": 1}, HeaderError, "zstd_level", "already entropy-coded"),
        ({"shape": (4, 2, 16, 16), "raw_size": 2048}, HeaderError, "shape", "(N, 1|3, H, W)"),
        ({"shape": (4, 3, 256), "raw_size": 3072}, HeaderError, "shape", "(N, 1|3, H, W)"),
        ({"raw_size": 1000}, HeaderError, "raw_size", "expected 3072"),
        ({"scales": b"\0" * 4}, HeaderError, "scales", "no scales/offsets"),
        ({"byte_shuffle": True}, HeaderError, "byte_shuffle", "one-byte elements"),
    ],
)
def test_inconsistent_headers_are_refused(
    changes: dict[str, object], error: type[Exception], field: str, fragment: str
) -> None:
    header = dataclasses.replace(SAMPLE.header, **changes)
    with pytest.raises(error) as info:
        decode(header, SAMPLE.payload)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_part_sizes_must_add_up_to_the_payload() -> None:
    sizes = list(SAMPLE.header.part_sizes)
    sizes[1] += 5  # still one per image, but no longer the payload's length
    header = dataclasses.replace(SAMPLE.header, part_sizes=tuple(sizes))
    with pytest.raises(HeaderError, match="part sizes sum to") as info:
        decode(header, SAMPLE.payload)
    assert info.value.field == "part_sizes"
    shifted = list(SAMPLE.header.part_sizes)
    shifted[0], shifted[1] = shifted[0] + 7, shifted[1] - 7  # right sum, wrong boundaries
    header = dataclasses.replace(SAMPLE.header, part_sizes=tuple(shifted))
    with pytest.raises(PayloadError, match="image 0 of 4"):
        decode(header, SAMPLE.payload)


def test_parts_shorter_than_any_jpeg_are_refused() -> None:
    enc = _reframe(SAMPLE, [*_parts(SAMPLE)[:3], b"\xff\xd8\xff\xd9"])
    with pytest.raises(HeaderError, match=f"at least {MIN_JPEG_BYTES}"):
        decode(enc.header, enc.payload)


def test_other_schemes_carry_no_part_sizes() -> None:
    enc = encode(torch.ones(2, 3), "fp32")
    with pytest.raises(HeaderError, match="no part_sizes") as info:
        decode(dataclasses.replace(enc.header, part_sizes=(24,)), enc.payload)
    assert info.value.field == "part_sizes"


def test_a_huge_image_is_refused_by_the_limits_before_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream claiming 60000×60000 in a header claiming the same: a LimitError, no Pillow."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow was called for a header beyond the limits")

    monkeypatch.setattr(Image, "open", refuse)
    stream = _claiming(_parts(SAMPLE)[0], 60000, 60000)
    enc = _reframe(SAMPLE, [stream], shape=(1, 3, 60000, 60000), raw_size=3 * 60000 * 60000)
    with pytest.raises(LimitError, match="elements"):
        decode(enc.header, enc.payload)
    with pytest.raises(LimitError):
        decode(enc.header, enc.payload, limits=SMALL)


# --- hostile streams ------------------------------------------------------------------------


@pytest.mark.usefixtures("no_oversized_decoding")
@pytest.mark.parametrize(("height", "width"), [(16, 17), (15, 16), (4000, 4000), (65500, 1)])
def test_stream_size_must_match_the_header(height: int, width: int) -> None:
    """Including a bomb: a tiny stream whose frame claims far more than the header says."""
    parts = _parts(SAMPLE)
    parts[2] = _claiming(parts[2], height, width)
    enc = _reframe(SAMPLE, parts)
    with pytest.raises(PayloadError) as info:
        decode(enc.header, enc.payload)
    assert info.value.field == "payload"
    assert f"image 2 of 4: JPEG frame is {height}×{width} (H×W); header expected 16×16" in str(
        info.value
    )


def test_an_honest_tiny_stream_is_bounded_by_the_limits() -> None:
    """A header that admits the stream's claimed size is as big as DecodeLimits let it be."""
    stream = _claiming(_parts(SAMPLE)[0], 2000, 2000)
    enc = _reframe(SAMPLE, [stream], shape=(1, 3, 2000, 2000), raw_size=3 * 2000 * 2000)
    with pytest.raises(LimitError):
        decode(enc.header, enc.payload, limits=SMALL)


@pytest.mark.parametrize("pixels", [10_000 * 10_000, 15_000 * 15_000])
def test_pillows_bomb_guard_stays_on(pixels: int) -> None:
    """Past Image.MAX_IMAGE_PIXELS the warning (or, at twice that, the error) is a PayloadError.

    The limits are raised so that only Pillow's guard stands in the way.
    """
    side = math.isqrt(pixels)
    assert side * side > Image.MAX_IMAGE_PIXELS
    stream = _claiming(encode(_smooth(1, 1, 16, 16), "jpeg90").payload, side, side)
    enc = _reframe(
        encode(_smooth(1, 1, 16, 16), "jpeg90"), [stream], shape=(1, 1, side, side), raw_size=pixels
    )
    limits = DecodeLimits(max_elements=1 << 28, max_tensor_bytes=1 << 28)
    filters = list(warnings.filters)
    with pytest.raises(PayloadError, match=r"image 0 of 1: .*DecompressionBomb"):
        decode(enc.header, enc.payload, limits=limits)
    assert warnings.filters == filters  # the error filter was local


@pytest.mark.parametrize("load_truncated", [False, True])
def test_truncated_streams_are_refused(
    monkeypatch: pytest.MonkeyPatch, load_truncated: bool
) -> None:
    """Even when someone sets Pillow's global LOAD_TRUNCATED_IMAGES."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    parts = _parts(SAMPLE)
    parts[1] = parts[1][: len(parts[1]) * 2 // 3]
    enc = _reframe(SAMPLE, parts)
    with pytest.raises(PayloadError, match=r"image 1 of 4: .*not one complete JPEG stream"):
        decode(enc.header, enc.payload)
    parts[1] = parts[1] + b"\xff\xd9"  # ends like a stream, but the scan is cut short
    enc = _reframe(SAMPLE, parts)
    if not load_truncated:
        with pytest.raises(PayloadError, match="image 1 of 4"):
            decode(enc.header, enc.payload)


@pytest.mark.parametrize(
    "garbage",
    [
        bytes(range(256)),
        b"\xff\xd8" + bytes(200) + b"\xff\xd9",
        b"\xff\xd8\xff\xe0" + b"\xff" * 200 + b"\xff\xd9",
        b"\x89PNG\r\n\x1a\n" + bytes(200),
    ],
    ids=["bytes", "zeros", "ff-run", "png"],
)
def test_garbage_parts_are_payload_errors(garbage: bytes) -> None:
    parts = _parts(SAMPLE)
    parts[3] = garbage
    enc = _reframe(SAMPLE, parts)
    with pytest.raises(PayloadError, match="image 3 of 4: ") as info:
        decode(enc.header, enc.payload)
    assert info.value.field == "payload"


def test_channel_count_must_match() -> None:
    gray = _parts(encode(_smooth(1, 1, 16, 16), "jpeg90"))[0]
    parts = _parts(SAMPLE)
    parts[0] = gray
    enc = _reframe(SAMPLE, parts)
    with pytest.raises(PayloadError, match="image 0 of 4: JPEG holds L pixels; header expected 3"):
        decode(enc.header, enc.payload)


def test_progressive_streams_are_refused() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(
        buffer, format="JPEG", progressive=True
    )
    parts = _parts(SAMPLE)
    parts[0] = buffer.getvalue()
    enc = _reframe(SAMPLE, parts)
    with pytest.raises(PayloadError, match="progressive"):
        decode(enc.header, enc.payload)


def test_a_foreign_baseline_stream_of_the_right_size_decodes() -> None:
    """The receiver does not require splitwire's encoder: any matching baseline JPEG will do."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(
        buffer, format="JPEG", quality=100, subsampling="4:4:4", optimize=True
    )
    enc = _reframe(SAMPLE, [buffer.getvalue()], shape=(1, 3, 16, 16), raw_size=768)
    y = decode(enc.header, enc.payload)
    assert y.shape == (1, 3, 16, 16) and (y.int() - 100).abs().max() <= 2


def test_header_type_is_unchanged_for_other_schemes() -> None:
    assert TensorHeader("uint8", (1,), "raw", 0, 1, 1, 0).part_sizes == ()
