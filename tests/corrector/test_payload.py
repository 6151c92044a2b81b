"""The remote answer as it travels: the heavy model's result codecs, what they cost and what the
edge decodes (the evaluation prices and fuses this)."""

from __future__ import annotations

import torch

from splitwire.corrector.payload import RESULT_CODECS, transmit
from splitwire.corrector.selection import one_hot_logits
from splitwire.corrector.video import scene
from splitwire.partitioner.models.texture_unet import TextureUNet


def test_the_heavy_model_declares_a_class_map_and_int8_features() -> None:
    assert [str(c) for c in RESULT_CODECS] == list(TextureUNet.result_codecs)
    assert RESULT_CODECS[0].classes and str(RESULT_CODECS[1]) == "int8+zstd1"


def test_an_answer_travels_in_about_two_kilobytes() -> None:
    labels = scene((9, 3), speed=(0.0, 0.0)).render([0]).labels  # (1, 64, 64), like an answer
    logits = one_hot_logits(labels, 5)
    downlink = torch.randn(1, 8, 16, 16)
    sent = transmit(logits, downlink)
    assert torch.equal(sent.classes, labels.long())
    assert sent.class_map_bytes < 1024  # against 80 KiB of fp32 logits
    assert 1500 < sent.feature_bytes < 2400  # int8 codes + scales: ~2 KiB
    # The result messages add the two headers (names, shapes, checksums), nothing else.
    overhead = sent.wire_bytes - sent.feature_bytes - sent.class_map_bytes
    assert 0 < overhead < 200
    # What the edge fuses is the int8 feature map: within half a quantisation step.
    step = (downlink.amax(dim=(2, 3)) - downlink.amin(dim=(2, 3))) / 255
    assert bool(((sent.downlink - downlink).abs() <= step[..., None, None] * 0.51 + 1e-6).all())
