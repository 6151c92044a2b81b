"""``splitwire bench e2e`` on the test plan: two cuts, one link, a few frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitwire.benchmarks.e2e import SlowedHead, SlowedPlan, run_e2e, table
from splitwire.partitioner.runtime import RunnablePlan

FIELDS = {
    "model", "link", "cut", "codec", "backend", "predicted_latency_ms", "measured_p50_ms",
    "measured_p95_ms", "measured_fps", "planner_pick", "edge",
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
    assert {c["check"].split(" on ")[0] for c in result["checks"]} >= {"choice", "vs all-on-edge"}
    text = table(result)
    assert "EMULATED 2x slower" in text and ("PASS" in text or "MISS" in text)


def test_slowed_head_takes_k_times_its_compute(plan: RunnablePlan) -> None:
    import time

    import torch

    slowed = SlowedPlan(plan.plan, plan.directory, slowdown=3.0)
    cut = sorted(plan.plan.cuts)[-1]
    head = slowed.head(cut)
    assert isinstance(head, SlowedHead)
    x = plan.preprocess(torch.zeros(plan.camera_frame().shape, dtype=torch.uint8))
    with torch.inference_mode():
        plan.head(cut)(x)  # warm
        start = time.perf_counter()
        plan.head(cut)(x)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        torch.testing.assert_close(head(x), plan.head(cut)(x))
        assert time.perf_counter() - start >= 2.0 * alone
    assert not isinstance(SlowedPlan(plan.plan, plan.directory).head(cut), SlowedHead)
