"""The per-frame costs of schema 3 profiles (FrameCosts): measured by profiling, read as 0 from a
schema 2 profile, and charged by the cost model on hand-computed cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from splitwire.partitioner.accuracy import AccuracyBudget, TaskMetrics
from splitwire.partitioner.cost import ALL_IN_CLOUD_RAW, ALL_ON_EDGE, Measurement, evaluate
from splitwire.partitioner.cuts import CrossingTensor, Cut
from splitwire.partitioner.device import DeviceInfo
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.measure import reprice, unpriced
from splitwire.partitioner.planner import plan_option
from splitwire.partitioner.profile_format import (
    SCHEMA,
    CodecTiming,
    FrameCosts,
    NodeTiming,
    Profile,
)
from splitwire.partitioner.profiling import measure_frame_costs

NODES = ("conv", "relu", "fc")
INT8 = CodecTiming(
    "int8+zstd1", encode_mb_s=400.0, decode_mb_s=1000.0, encode_call_ms=0.2, decode_call_ms=0.1
)
# Preprocess 0.3 ms, message 1.2 ms + 2.5 ms/MB, hand-off 0.15 ms (the FrameCosts docstring's).
EDGE_FRAME = FrameCosts(
    preprocess_ms=0.3, message_call_ms=1.2, message_ms_per_mb=2.5, handoff_ms=0.15
)
# A cloud whose transport is cheaper: a plan charges the mean of both ends'.
CLOUD_FRAME = FrameCosts(
    preprocess_ms=0.1, message_call_ms=0.8, message_ms_per_mb=1.5, handoff_ms=0.05
)


NONE = FrameCosts()  # what a schema 2 profile reads as


def _profile(frame: FrameCosts = NONE, schema: int = SCHEMA) -> Profile:
    return Profile(
        schema=schema,
        model_spec="m",
        model_hash="ab" * 32,
        input_shape=(1, 3, 8, 8),
        device=DeviceInfo("cpu", 1, "2.13.0"),
        nodes=tuple(NodeTiming(n, "op", 1.0, 4) for n in NODES),
        codecs=(INT8,),
        call_overhead_ms=0.5,
        total_ms=3.5,
        frame=frame,
    )


def _cut(index: int, edge_nodes: tuple[str, ...]) -> Cut:
    shape = (1, 16, 4, 4)  # 1 kB of float32
    crossing = (CrossingTensor("t0", shape, "float32", 1024),)
    return Cut(index=index, id=f"c{index:04d}", name="x", crossing=crossing, edge_nodes=edge_nodes)


def _priced(
    edge: Profile, cloud: Profile, *, baseline: str | None = None, codec: str = "int8+zstd1"
) -> Measurement:
    cut = _cut(3, NODES) if baseline == ALL_ON_EDGE else _cut(2, NODES[:2])
    if baseline == ALL_IN_CLOUD_RAW:
        cut = _cut(0, ())
    m = unpriced(
        cut, codec=codec, baseline=baseline, bytes_wire=40_000.0, result_bytes=40,
        metrics=TaskMetrics.exact(None), budget=AccuracyBudget("rel", 0.01),
    )  # fmt: skip
    camera = {"frame": (0.4, 0.6)}
    return reprice(m, cut, edge=edge, cloud=cloud, all_nodes=NODES, camera_ms=camera)


def test_a_schema_2_profile_reads_with_every_frame_cost_0(tmp_path: Path) -> None:
    data = _profile(schema=2).to_dict()
    assert data["schema"] == 2 and "frame" not in data  # written back as it was read
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    old = Profile.load(path)
    assert old.schema == 2 and old.frame == FrameCosts()
    # Priced exactly as schema 2 priced: head 2 + 0.5 overhead + encode 0.20256 ms.
    split = _priced(old, old)
    assert split.edge_ms == pytest.approx(2.5 + 0.20256)
    assert split.cloud_ms == pytest.approx(1.5 + 0.101024)


def test_a_schema_2_profile_with_frame_costs_is_refused(tmp_path: Path) -> None:
    data = _profile(EDGE_FRAME).to_dict() | {"schema": 2}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="unknown key 'frame'"):
        Profile.load(path)


def test_frame_costs_survive_save_and_load(tmp_path: Path) -> None:
    path = _profile(EDGE_FRAME).save(tmp_path / "p.yaml")
    assert Profile.load(path).frame == EDGE_FRAME
    data = yaml.safe_load(path.read_text())
    del data["frame"]["handoff_ms"]  # a missing term of a schema 3 file reads as 0
    path.write_text(yaml.safe_dump(data))
    assert Profile.load(path).frame.handoff_ms == 0.0


def test_a_split_pays_preprocess_and_hand_off_on_the_edge_and_the_message_on_the_cloud() -> None:
    m = _priced(_profile(EDGE_FRAME), _profile(CLOUD_FRAME))
    # Message for 40 kB: edge 1.2 + 0.1 = 1.3 ms, cloud 0.8 + 0.06 = 0.86 ms; mean 1.08 ms.
    assert m.message_ms == pytest.approx(1.08)
    assert m.edge_ms == pytest.approx(0.3 + 2.5 + 0.20256 + 0.15)
    assert m.cloud_ms == pytest.approx(0.101024 + 1.5 + 1.08)
    link = parse_link("bw=20mbit,rtt=40ms")
    priced = evaluate(m, link)
    assert priced.edge_ms == pytest.approx(m.edge_ms)
    assert priced.latency_ms == pytest.approx(
        m.edge_ms + 1000 * link.transfer_s(40_000, 40) + m.cloud_ms
    )
    option = plan_option(m)
    assert (option.edge_ms, option.cloud_ms) == pytest.approx((m.edge_ms, m.cloud_ms))


def test_all_on_edge_pays_no_message_and_a_camera_baseline_no_edge_preprocessing() -> None:
    edge, cloud = _profile(EDGE_FRAME), _profile(CLOUD_FRAME)
    local = _priced(edge, cloud, baseline=ALL_ON_EDGE, codec="none")
    assert local.edge_ms == pytest.approx(0.3 + 3.5 + 0.15)
    assert local.cloud_ms == 0.0 and local.message_ms == 0.0
    camera = _priced(edge, cloud, baseline=ALL_IN_CLOUD_RAW, codec="frame")
    assert camera.preprocess_ms == 0.0
    assert camera.edge_ms == pytest.approx(0.4 + 0.15)
    assert camera.cloud_ms == pytest.approx(0.6 + 3.5 + 1.08)


def test_an_emulated_slowdown_slows_preprocessing_not_the_transport() -> None:
    slow = _profile(EDGE_FRAME).scaled(4)
    assert slow.frame.preprocess_ms == pytest.approx(1.2)
    assert (slow.frame.message_call_ms, slow.frame.handoff_ms) == (1.2, 0.15)


def test_frame_costs_are_checked() -> None:
    with pytest.raises(Exception, match="handoff_ms = -1"):
        FrameCosts(handoff_ms=-1)
    assert EDGE_FRAME.message_ms(1_000_000) == pytest.approx(3.7)


def test_profiling_measures_every_frame_cost() -> None:
    """Real timings on this machine: preprocessing a 224² frame, the gRPC round trip on
    loopback (a 2 MB frame, two chunks, costs more than 1 kB), the executor hand-off."""
    costs = measure_frame_costs((1, 3, 224, 224))
    assert costs.preprocess_ms > 0 and costs.handoff_ms > 0
    assert costs.message_call_ms > 0
    assert costs.message_ms(2_000_000) > costs.message_ms(1_000) + 0.1
    assert measure_frame_costs((1, 10)).preprocess_ms == 0.0  # no image, no preprocessing


def test_splitwire_profile_writes_and_prints_the_frame_costs(tmp_path: Path) -> None:
    out = tmp_path / "edge.yaml"
    args = ["profile", "--model", "zoo:resnet18", "--input-shape", "1,3,32,32", "--threads",
            "1", "--repeats", "1", "--out", str(out)]  # fmt: skip
    made = subprocess.run(
        [sys.executable, "-m", "splitwire", *args], capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stderr[-2000:]
    assert "per frame: preprocess" in made.stdout and "ms/MB, hand-off" in made.stdout
    saved = Profile.load(out)
    assert saved.schema == SCHEMA and saved.frame.message_call_ms > 0
    assert saved.frame.preprocess_ms > 0  # a 3-channel image input


def test_cut_0_under_a_tensor_codec_pays_the_head_call() -> None:
    """The edge calls cut 0's (empty) head before encoding the input: its fixed cost (0.5 ms
    here) is priced, where a camera baseline, which calls no head, pays none."""
    profile = _profile(EDGE_FRAME)
    cut = _cut(0, ())
    m = unpriced(
        cut, codec="int8+zstd1", baseline=None, bytes_wire=40_000.0, result_bytes=40,
        metrics=TaskMetrics.exact(None), budget=AccuracyBudget("rel", 0.01),
    )  # fmt: skip
    priced = reprice(m, cut, edge=profile, cloud=profile, all_nodes=NODES)
    assert priced.head_ms == 0.5
    assert priced.tail_ms == pytest.approx(3.5)  # every node + the tail's own call
    camera = _priced(profile, profile, baseline=ALL_IN_CLOUD_RAW, codec="frame")
    assert camera.head_ms == 0.0
