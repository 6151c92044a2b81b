"""``splitwire bench adaptive`` on the test plan: a link that drops after 2 s, both policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitwire.benchmarks.adaptive import run_adaptive, table


@pytest.mark.slow
def test_both_runs_report_before_and_after_the_drop(plan_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "drop.yaml"
    trace.write_text(
        "end: 5\npoints:\n  - {t: 0, bw: 100mbit, rtt: 4ms}\n  - {t: 2, bw: 1mbit, rtt: 40ms}\n"
    )
    result = run_adaptive(
        model="zoo:resnet18?num_classes=10", input_shape=(1, 3, 64, 64), trace_path=trace,
        fps=8.0, hold_s=0.5, plan_dir=plan_dir,
    )  # fmt: skip
    assert result["change_s"] == 2.0 and set(result["runs"]) == {"auto", "fixed"}
    for run in result["runs"].values():
        assert run["frames"] == 40 and run["answered"] == 40, run
        assert run["p95_after_ms"] >= run["p50_after_ms"] > 0
        assert run["options_after_change"]
    start = f"{result['start']['cut']} {result['start']['codec']}"
    assert set(result["runs"]["fixed"]["options_after_change"]) == {start}
    assert not result["runs"]["fixed"]["switches"]
    assert result["check"]["target"] == "≥ 1.5" and isinstance(result["check"]["met"], bool)
    assert "fixed / auto" in table(result)
