"""The class map on the downlink is peer input: sizes are checked before decompressing, every
value after, and nothing a peer claims is allocated on its word."""

from __future__ import annotations

import pytest
import torch
import zstandard

from splitwire.corrector.errors import FeatureShapeError
from splitwire.corrector.payload import (
    MAX_CLASS_MAP_BYTES,
    decode_classes,
    downlink_bytes,
    encode_classes,
)
from splitwire.corrector.video import scene

SHAPE = (1, 64, 64)


def test_a_class_map_round_trips_in_a_few_hundred_bytes() -> None:
    labels = scene((9, 3), speed=(0.0, 0.0)).render([0]).labels  # (1, 64, 64), like an answer
    data = encode_classes(labels)
    assert len(data) < 1024  # against 80 KiB of fp32 logits
    assert torch.equal(decode_classes(data, shape=SHAPE, num_classes=5), labels)
    features, classes = downlink_bytes(torch.randn(1, 8, 16, 16), labels)
    assert classes == len(data) and 1500 < features < 2400  # int8 codes + scales: ~2 KiB


def test_oversized_payloads_are_refused_before_decompressing() -> None:
    noise = torch.randint(0, 256, (1, 128, 128), dtype=torch.uint8)
    data = encode_classes(noise)
    assert len(data) > MAX_CLASS_MAP_BYTES
    with pytest.raises(FeatureShapeError, match=f"at most {MAX_CLASS_MAP_BYTES}"):
        decode_classes(data, shape=(1, 128, 128), num_classes=256)


def test_a_frame_declaring_another_size_is_refused_unopened() -> None:
    # A "bomb": 64 MiB of zeros compress to a few KiB.
    bomb = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(64 << 20))
    assert len(bomb) < MAX_CLASS_MAP_BYTES
    with pytest.raises(FeatureShapeError, match="declares 67108864 bytes, expected 4096"):
        decode_classes(bomb, shape=SHAPE, num_classes=5)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(4096))
    with pytest.raises(FeatureShapeError, match="declares"):
        decode_classes(unsized, shape=SHAPE, num_classes=5)
    with pytest.raises(FeatureShapeError, match="not a zstd frame"):
        decode_classes(b"\x00" * 32, shape=SHAPE, num_classes=5)
    good = encode_classes(torch.zeros(SHAPE, dtype=torch.uint8))
    with pytest.raises(FeatureShapeError, match=r"corrupt|decoded"):
        decode_classes(good[:-3] + b"\xff\xff\xff", shape=SHAPE, num_classes=5)


def test_values_outside_the_classes_are_refused() -> None:
    data = encode_classes(torch.full(SHAPE, 7, dtype=torch.uint8))
    with pytest.raises(FeatureShapeError, match=r"classes 0..4, got a 7"):
        decode_classes(data, shape=SHAPE, num_classes=5)
