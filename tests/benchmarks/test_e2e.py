"""``splitwire bench e2e`` on the test plan: two cuts, one link, a few frames."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from splitwire.benchmarks.e2e import checks, mark_best, rpc_links, run_e2e, table
from splitwire.partitioner.link import parse_link

FIELDS = {
    "model", "link", "cut", "codec", "backend", "predicted_latency_ms", "measured_p50_ms",
    "measured_p95_ms", "measured_fps", "planner_pick", "edge", "measured_terms", "predicted_terms",
    "uplink_estimate_bps", "netem_up_bps",
}  # fmt: skip


@pytest.mark.slow
def test_records_have_every_field(plan_dir: Path, split_cuts: tuple[str, str]) -> None:
    link = "bw=20mbit,rtt=20ms"
    result = run_e2e(
        model="zoo:resnet18?num_classes=10", input_shape=(1, 3, 64, 64), links=[link],
        frames=4, warmup=1, plan_dir=plan_dir, cuts=split_cuts, rpc=False, edge_slowdown=2.0,
    )  # fmt: skip
    records = result["records"]
    assert all(set(r) >= FIELDS for r in records), records
    backends = {r["backend"] for r in records}
    assert {"splitwire", "all-on-edge", "all-in-cloud-raw", "all-in-cloud-jpeg"} <= backends
    assert {r["cut"] for r in records if r["backend"] == "splitwire"} <= set(split_cuts)
    assert sum(r["planner_pick"] for r in records) == 1
    assert sum(r["measured_best"] for r in records) == 1
    for r in records:
        assert r["link"].endswith("bw=20mbit,rtt=20ms")
        assert r["edge"] == {"edge_slowdown": 2.0, "emulated": True, "how": r["edge"]["how"]}
        assert r["lost"] == 0 and r["measured_p95_ms"] >= r["measured_p50_ms"] > 0
        if r["backend"] != "all-on-edge":  # a round trip through the emulator at least
            assert r["measured_p50_ms"] >= 20.0
        assert r["measured_fps"] > 0 and r["predicted_latency_ms"] > 0
        if r["backend"] == "splitwire":
            assert r["measured_terms"]["network_ms"] >= 20.0, r
            assert r["uplink_estimate_bps"] > 0, r
    assert {c["check"].split(" on ")[0] for c in result["checks"]} >= {"choice", "vs all-on-edge"}
    text = table(result)
    assert "EMULATED 2x slower" in text and ("PASS" in text or "MISS" in text)


def test_torch_rpc_runs_on_loopback_and_on_20_mbit_links_only() -> None:
    links = [parse_link(spec) for spec in ("bw=5mbit,rtt=80ms", "bw=20mbit,rtt=40ms")]
    assert rpc_links(links) == [None, links[1]]


def test_rpc_comparisons_are_checked_per_link_and_kept_out_of_fidelity() -> None:
    link = "bw=20mbit,rtt=40ms"
    planned = {
        "link": link,
        "cut": "c1",
        "codec": "int8",
        "backend": "splitwire",
        "planner_pick": True,
        "predicted_latency_ms": 100.0,
        "measured_p50_ms": 100.0,
    }
    pair = [
        {"link": where, "backend": backend, "comparison": "torch-rpc", "measured_fps": fps,
         "predicted_latency_ms": None, "measured_p50_ms": 1.0, "planner_pick": False}
        for where, backend, fps in [("loopback", "splitwire", 30.0), ("loopback", "torch-rpc",
                                    40.0), (link, "splitwire", 20.0), (link, "torch-rpc", 5.0)]
    ]  # fmt: skip
    found = checks([planned, *pair], [link])

    def check(prefix: str) -> dict[str, Any]:
        return next(c for c in found if c["check"].startswith(prefix))

    assert check(f"fidelity on {link}:")["ratio"] == 1.0  # the comparison rows are not in it
    assert not check("vs torch RPC on loopback")["met"]
    rpc = check(f"vs torch RPC on {link}")
    assert rpc["ratio"] == 4.0 and rpc["met"] and rpc["target"] == "≥ 2"


def test_the_camera_shows_the_plans_frames_or_the_photos_asked_for(
    plan: Any, tmp_path: Path
) -> None:
    """The test plan was calibrated on synthetic frames: ``plan`` shows those (the first the
    planner's very ones), ``skimage`` real photos, ``synthetic`` the agent's own scene."""
    import numpy as np

    from splitwire.benchmarks.e2e import camera_source
    from splitwire.errors import SplitwireError
    from splitwire.partitioner.photos import photo_frames

    spec, shows = camera_source(plan, tmp_path / "a.npy", count=3)
    assert spec == f"npy:{tmp_path / 'a.npy'}" and "synthetic camera frames" in shows
    spec, shows = camera_source(plan, tmp_path / "b.npy", count=3, camera="skimage")
    assert "scikit-image" in shows
    _, channels, height, width = plan.plan.input_shape
    photos = photo_frames("skimage", 3, height=height, width=width, channels=channels, seed=1234)
    assert np.array_equal(np.load(tmp_path / "b.npy"), photos.numpy())
    assert camera_source(plan, tmp_path / "c.npy", count=3, camera="synthetic")[0] == "synthetic"
    with pytest.raises(SplitwireError, match="--camera video: expected one of plan, synthetic"):
        camera_source(plan, tmp_path / "d.npy", count=3, camera="video")


def test_term_ratios_point_at_the_term_that_misses() -> None:
    from splitwire.benchmarks.e2e import term_ratios

    def record(edge: float, network: float, cloud: float, sent: float) -> dict[str, Any]:
        return {
            "link": "wifi", "bytes_up": sent,
            "predicted_terms": {"edge_ms": 10.0, "transfer_ms": 20.0, "cloud_ms": 5.0,
                                "bytes_up": 1000.0},
            "measured_terms": {"edge_ms": edge, "network_ms": network, "cloud_ms": cloud},
        }  # fmt: skip

    records = [record(12.0, 20.0, 5.0, 1000.0), record(13.0, 22.0, 5.5, 1500.0),
               record(14.0, 24.0, 6.0, 2000.0)]  # fmt: skip
    assert term_ratios(records, "wifi") == {
        "edge": 1.3, "network": 1.1, "cloud": 1.1, "bytes": 1.5
    }  # fmt: skip
    assert term_ratios(records, "lte") == dict.fromkeys(("edge", "network", "cloud", "bytes"))


def test_the_split_table_compares_the_pick_with_all_on_edge_and_the_best_cloud_option() -> None:
    from splitwire.benchmarks.e2e import split_table

    edge = {"edge_slowdown": 4.0, "emulated": True, "how": "sleeps"}

    def record(backend: str, p50: float, **more: Any) -> dict[str, Any]:
        return {"link": "name=custom,bw=21mbit,rtt=30ms", "backend": backend, "cut": "c0005",
                "cut_name": "layer2", "codec": "int8+zstd1", "measured_p50_ms": p50,
                "planner_pick": False, "within_budget": True, "edge": edge} | more  # fmt: skip

    result = {
        "model": "zoo:efficientnet_lite1@pretrained",
        "load_average": {"start": [1.5, 1.0, 1.0], "end": [2.0, 1.0, 1.0]},
        "records": [
            record("splitwire", 80.0, planner_pick=True),
            record("all-on-edge", 200.0, codec="none"),
            record("all-in-cloud-raw", 120.0, codec="frame+zstd1"),
            record("all-in-cloud-jpeg", 60.0, codec="jpeg50", within_budget=False),
        ],
    }
    table = split_table([result]).splitlines()
    assert len(table) == 3
    row = table[2]
    assert "efficientnet_lite1@pretrained | 4× (emulated) | bw=21mbit,rtt=30ms" in row
    assert "split after layer2 (c0005, int8+zstd1) | 80 ms | 2.50 |" in row
    # JPEG is faster but over the budget: the best cloud option within it is the raw frame.
    assert "1.50 (all-in-cloud-raw frame+zstd1, 120 ms)" in row
    assert row.endswith("| split after layer2 (c0005, int8+zstd1) | 1.5 → 2 |")


def test_an_option_that_answered_nothing_is_a_miss_and_never_the_best() -> None:
    link = "bw=20mbit,rtt=40ms"

    def record(p50: float, *, pick: bool = False) -> dict[str, Any]:
        return {"link": link, "cut": "c1", "codec": "int8", "backend": "splitwire",
                "planner_pick": pick, "predicted_latency_ms": 100.0,
                "measured_p50_ms": p50}  # fmt: skip

    records = [record(100.0, pick=True), record(math.nan), record(104.0)]
    mark_best(records)
    assert [r["measured_best"] for r in records] == [True, False, False]
    fidelity = next(c for c in checks(records, [link]) if c["check"].startswith("fidelity"))
    assert fidelity["measured"] == round(2 / 3, 3)  # the silent option is not within 15 %


def test_cut_0_under_a_tensor_codec_is_all_in_the_cloud_not_a_split() -> None:
    from splitwire.benchmarks.e2e import split_table

    edge = {"edge_slowdown": 10.0, "emulated": True, "how": "sleeps"}
    common = {"link": "name=lte,up=10mbit", "within_budget": True, "edge": edge}
    records = [
        common | {"backend": "splitwire", "cut": "c0000", "cut_name": "input",
                  "codec": "fp16+zstd1", "measured_p50_ms": 300.0, "planner_pick": True},
        common | {"backend": "all-on-edge", "cut": "c0099", "cut_name": "fc", "codec": "none",
                  "measured_p50_ms": 900.0, "planner_pick": False},
        common | {"backend": "all-in-cloud-raw", "cut": "c0000", "cut_name": "input",
                  "codec": "frame", "measured_p50_ms": 330.0, "planner_pick": False},
    ]  # fmt: skip
    row = split_table([{"model": "zoo:m", "records": records}]).splitlines()[2]
    assert "| lte | all-in-cloud, the input tensor as fp16+zstd1 | 300 ms | 3.00 |" in row
    assert "| 1.00 (all-in-cloud, the input tensor as fp16+zstd1, 300 ms) |" in row
