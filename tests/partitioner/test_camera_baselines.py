"""The camera-frame baselines on a trained model and real photos: the raw uint8 frame costs
H·W·3 bytes and nothing in accuracy, the JPEG grid (three qualities × 4:2:0/4:4:4) is on every
link's table, and a pick of a JPEG row is an option the runtimes can run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from splitwire.partitioner.baselines import camera_codecs, camera_roundtrip, synthetic_frames
from splitwire.partitioner.cost import ALL_IN_CLOUD_JPEG, ALL_IN_CLOUD_RAW, Measurement
from splitwire.partitioner.decisions import decide_link
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.plan_file import IMAGENET, TensorSpec
from splitwire.partitioner.planner import (
    PlanOutcome,
    PlanRequest,
    calibration_frames,
    plan_model,
    write_plan_directory,
)
from splitwire.partitioner.runtime import open_plan
from splitwire.protocol import CodecSpec, encode
from splitwire.protocol.wire import header_to_proto

pytestmark = pytest.mark.slow

SHAPE = (1, 3, 64, 64)
JPEGS = {"jpeg50", "jpeg50s444", "jpeg75", "jpeg75s444", "jpeg90", "jpeg90s444"}


@pytest.fixture(scope="module")
def outcome() -> PlanOutcome:
    """EfficientNet-Lite0 with its ImageNet weights on 4 photo crops; lossless activations only
    (no tail runs), so the camera baselines are what is measured. Without the `pretrained`
    extra (which `make test` installs) this fails with the install command, it does not skip."""
    request = PlanRequest(
        model_spec="zoo:efficientnet_lite0@pretrained",
        input_shape=SHAPE,
        links=(parse_link("wifi"), parse_link("3g")),
        codecs=(CodecSpec.parse("fp32"),),
        edge_slowdown=4,
        calibration=4,
        repeats=1,
    )
    return plan_model(request)


def _baselines(outcome: PlanOutcome, kind: str) -> dict[str, Measurement]:
    return {m.codec: m for m in outcome.measurements if m.baseline == kind}


def test_the_raw_baseline_sends_the_uint8_frame_and_loses_nothing(outcome: PlanOutcome) -> None:
    request = outcome.request
    assert request.calibration_data == "skimage"  # a trained image model: real photos
    raw = _baselines(outcome, ALL_IN_CLOUD_RAW)
    assert set(raw) == {"frame", "frame+zstd1"}  # the float input is no baseline for images
    frames = calibration_frames(SHAPE, 4, data="skimage", preprocess=outcome.preprocess)
    assert frames is not None and frames.dtype == torch.uint8
    pixels = 64 * 64 * 3
    header = header_to_proto(encode(frames[:1], "frame").header).ByteSize()
    frame = raw["frame"]
    assert frame.bytes_wire == pixels + header and header < 64
    assert frame.bytes_raw == pixels and frame.crossing[0].dtype == "uint8"
    assert raw["frame+zstd1"].bytes_wire < frame.bytes_wire
    for m in raw.values():
        # Measured (the whole model ran on the decoded, preprocessed frames), and exact.
        assert m.metrics is not None and m.metrics.kl == 0.0 and m.metrics.rel == 0.0
        assert m.metrics.top1 == 1.0 and m.accuracy_cost == 0.0
        assert m.cut == "c0000" and m.encode_ms > 0 and m.head_ms == 0.0
    # Four times fewer bytes than the float input the old raw baseline sent.
    fp32 = next(m for m in outcome.measurements if (m.cut, m.codec) == ("c0000", "fp32"))
    assert fp32.baseline is None and fp32.bytes_raw == 4 * pixels


def test_every_jpeg_row_is_on_every_links_table(outcome: PlanOutcome) -> None:
    jpegs = _baselines(outcome, ALL_IN_CLOUD_JPEG)
    assert set(jpegs) == JPEGS
    for decision in outcome.decisions:
        rows = {c.measurement.codec for c in decision.candidates if c.measurement.baseline}
        assert rows >= JPEGS | {"frame", "frame+zstd1", "none"}
    for quality in (50, 75, 90):
        sub, full = jpegs[f"jpeg{quality}"], jpegs[f"jpeg{quality}s444"]
        assert full.bytes_wire > sub.bytes_wire  # full chroma costs bytes on real photos
        for m in (sub, full):
            assert m.metrics is not None and m.metrics.kl is not None and m.metrics.kl > 0
            assert m.bytes_raw == 64 * 64 * 3
    assert jpegs["jpeg50"].bytes_wire < jpegs["jpeg75"].bytes_wire < jpegs["jpeg90"].bytes_wire


def test_a_jpeg_pick_is_a_runnable_option(outcome: PlanOutcome, tmp_path: Path) -> None:
    """Among what goes to the cloud, with any accuracy allowed, the fewest bytes win: a JPEG
    row, which the plan writes as an option the edge and the cloud run (the camera frame in,
    preprocessing in the cloud)."""
    link = parse_link("bw=200kbit,rtt=100ms,name=thin")
    remote = [m for m in outcome.measurements if m.sends]
    decision = decide_link(remote, link, objective="bytes", accuracy_budget=10.0)
    pick = decision.pick.measurement
    assert pick.baseline == ALL_IN_CLOUD_JPEG and pick.codec == "jpeg50"
    chosen = dataclasses.replace(
        outcome,
        decisions=(decision,),
        choice=pick,
        request=dataclasses.replace(outcome.request, links=(link,)),
    )
    write_plan_directory(chosen, tmp_path / "plan")
    plan = open_plan(tmp_path / "plan")
    assert (plan.plan.choice.cut, plan.plan.choice.codec) == ("c0000", "jpeg50")
    shipped = {o.codec for o in plan.options if o.cut == "c0000"}
    assert shipped >= JPEGS | {"frame", "frame+zstd1", "fp32"}
    for codec in (*JPEGS, "frame", "frame+zstd1"):
        assert plan.crossing("c0000", codec) == (TensorSpec("image", SHAPE, "uint8"),)
    assert plan.crossing("c0000", "fp32")[0].dtype == "float32"


def test_synthetic_frames_preprocess_to_the_synthetic_images() -> None:
    from splitwire.partitioner.calibration import synthetic_images

    frames = synthetic_frames(3, (3, 32, 32), preprocess=IMAGENET, seed=4)
    assert frames.dtype == torch.uint8 and frames.shape == (3, 3, 32, 32)
    images = synthetic_images(3, (3, 32, 32), seed=4)
    inside = (frames > 0) & (frames < 255)  # away from clipping only 8-bit rounding differs
    step = 0.5 / 255 / min(IMAGENET.std) + 1e-6
    assert bool(((IMAGENET.apply(frames) - images).abs()[inside] <= step).all())


def test_camera_codecs_and_roundtrip() -> None:
    assert [str(c) for c in camera_codecs((90, 50, 90))] == [
        "frame", "frame+zstd1", "jpeg50", "jpeg50s444", "jpeg90", "jpeg90s444",
    ]  # fmt: skip
    frames = synthetic_frames(2, (3, 16, 16), preprocess=IMAGENET)
    result = camera_roundtrip(frames, CodecSpec.parse("frame"))
    assert torch.equal(result.decoded, frames)
    with pytest.raises(ValueError, match="no camera codec"):
        camera_roundtrip(frames, CodecSpec.parse("int8"))
