"""``splitwire bench fidelity``: a small real run (ResNet-18 at 64², two cuts, few repeats)
through the CLI, checking that each half is reported against its own exported archive."""

from __future__ import annotations

import json

import pytest

from splitwire.benchmarks.fidelity import FidelityRecord, drift_corrected_ms, summarize
from splitwire.cli import main


@pytest.mark.slow
def test_fidelity_reports_each_half(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench", "fidelity", "--model", "zoo:resnet18?num_classes=10",
        "--input-shape", "1,3,64,64", "--every", "8", "--max-cuts", "2", "--repeats", "3",
        "--json",
    ]  # fmt: skip
    assert main(argv) == 0

    report = json.loads(capsys.readouterr().out)
    records = report["records"]
    assert len(records) == 2
    for record in records:
        assert record["index"] % 8 == 0
        for half in ("head", "tail"):
            for key in (f"predicted_{half}_ms", f"{half}_ms", f"{half}_ratio", f"{half}_ratio_raw"):
                assert record[key] > 0, key
            assert isinstance(record[f"{half}_within"], bool)
        assert record["drift"] > 0
    # Each half is predicted from its own nodes: a later cut has more on the edge.
    assert records[0]["predicted_head_ms"] < records[1]["predicted_head_ms"]
    assert records[0]["predicted_tail_ms"] > records[1]["predicted_tail_ms"]
    for figures in (report["within"], report["within_raw"]):
        assert figures["cuts"]["total"] == 2
        assert figures["heads"]["total"] == figures["tails"]["total"] == 2
        for fraction in figures.values():
            assert 0 <= fraction["within"] <= fraction["total"]


def _record(
    head: tuple[float, float], tail: tuple[float, float], drift: float = 1.0
) -> FidelityRecord:
    return FidelityRecord(
        cut="c0001", name="x", index=1, predicted_head_ms=head[0], head_ms=head[1],
        predicted_tail_ms=tail[0], tail_ms=tail[1], corrected_head_ms=head[1] / drift,
        corrected_tail_ms=tail[1] / drift, whole_ms=10.0 * drift, drift=drift,
    )  # fmt: skip


def test_a_cut_is_within_when_both_halves_are() -> None:
    records = [
        _record((5.0, 5.2), (5.0, 4.9)),  # both within
        _record((5.0, 6.0), (5.0, 5.0)),  # head 17 % low
        _record((0.3, 0.5), (9.0, 9.1)),  # tiny head far off, tail within
    ]
    fractions = summarize(records, corrected=True)
    assert (fractions["cuts"].within, fractions["cuts"].total) == (1, 3)
    assert (fractions["heads"].within, fractions["tails"].within) == (1, 3)
    assert (fractions["cuts_without_tiny"].within, fractions["cuts_without_tiny"].total) == (2, 3)
    assert fractions["heads_without_tiny"].total == 2


def test_drift_correction_divides_each_round_by_that_rounds_slowdown() -> None:
    # A burst of load doubles the second and third rounds of the half and of the whole graph.
    head_s = [0.010, 0.020, 0.020, 0.010, 0.011]
    drift = [1.0, 2.0, 2.0, 1.0, 1.0]
    assert drift_corrected_ms(head_s, drift) == pytest.approx(10.0)

    slow_machine = _record((5.0, 6.0), (5.0, 6.0), drift=1.2)
    assert slow_machine.ratio("head") == pytest.approx(1.0)
    assert slow_machine.within("tail")
    assert not slow_machine.within("tail", corrected=False)
