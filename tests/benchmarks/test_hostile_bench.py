"""`splitwire bench hostile` in small: one attack per side against real processes (a tail, an
agent against the fake tail, both runtimes given a crafted plan), shortened to seconds. Each
attack's own checks and the memory bound must hold; the bystander's p95 ratio is a benchmark
figure (the README's), not asserted here, where the rest of the suite shares the cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitwire.benchmarks.hostile import RSS_TARGET_MB, AttackRecord, run_hostile, table
from splitwire.partitioner.runtime import RunnablePlan

pytestmark = pytest.mark.slow


def _held(record: AttackRecord) -> list[str]:
    """What failed apart from the latency ratio."""
    missed = [name for name, held in record.checks.items() if not held]
    if record.rss_growth_mb is not None and record.rss_growth_mb > RSS_TARGET_MB:
        missed.append(f"RSS growth {record.rss_growth_mb:.0f} MB")
    return missed


async def test_one_attack_per_side_is_refused_or_bounded(
    plan_dir: Path, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    attacks = ("batch-bomb", "huge-results", "pickled-weights")
    records = await run_hostile(
        plan_dir=plan_dir, plan=plan, cut=split_cuts[0], attacks=attacks,
        quiet_s=2.0, attack_s=3.0,
    )  # fmt: skip
    assert [r.attack for r in records] == list(attacks)
    report = table(records)
    for record in records:
        assert record.checks, f"{record.attack} checked nothing:\n{report}"
        assert not _held(record), f"{record.attack}: {_held(record)}\n{report}"
    # The records are strict JSON (no NaN), as --json prints them.
    json.dumps([r.as_json() for r in records], allow_nan=False)
    # The crafted plan was a live attack: plain torch.export.load ran its pickle.
    assert records[2].checks["control: torch.export.load runs it"], report
