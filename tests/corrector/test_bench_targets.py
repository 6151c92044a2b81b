"""``splitwire bench corrector``'s offline targets: every target of the delay corrector issue is
stated with its measured figure and its reference from the same evaluation."""

from __future__ import annotations

import pytest

from splitwire.benchmarks.corrector_live import PRICE_LINKS, offline_targets
from splitwire.corrector.checkpoint import load_checkpoint
from splitwire.corrector.training import TrainResult


@pytest.mark.slow
def test_every_target_has_a_measured_figure_and_a_reference(smoke: TrainResult) -> None:
    checks, pricing = offline_targets(load_checkpoint(smoke.directory), clips=2)
    whats = [c["what"] for c in checks]
    for regime in ("static", "low", "high", "unseen 5-6"):
        assert any(w.startswith(f"{regime}: fused >= max(local, remote)") for w in whats), whats
    assert any("delay 0: fused within 1 point of the heavy model" in w for w in whats)
    assert any("keeps >= 85 %" in w for w in whats)
    assert any("beats the stronger baseline by >= 10 points" in w for w in whats)
    for c in checks:
        assert isinstance(c["measured"], float) and isinstance(c["reference"], float), c
        assert isinstance(c["met"], bool)
    # The smoke heavy model is weak, but delay 0 shows the heavy model's own class map.
    zero = next(c for c in checks if "delay 0:" in c["what"])
    assert zero["met"] and zero["gap_points"] == 0.0
    payloads = pricing["feature_bytes"] + pricing["class_map_bytes"]
    assert payloads < pricing["bytes_per_frame"] < payloads + 200  # the headers beside them
    assert set(pricing["downlink_ms"]) == set(PRICE_LINKS)
    # 3g's downlink (3 Mbit/s) is the slowest of the three: its time is the longest.
    assert pricing["downlink_ms"]["3g"] == max(pricing["downlink_ms"].values()) > 0
