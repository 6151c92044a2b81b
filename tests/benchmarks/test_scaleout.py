"""Two real tail replicas behind real nginx (the shipped deploy/nginx/grpc-balancer.conf) with a
fleet of real agents: sessions spread over both, a SIGKILL'd replica's sessions move to the
other with every frame accounted for, a rolling restart loses no frame. Reduced in size (8
sessions, seconds); `splitwire bench scaleout` runs the full-size versions (README)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from splitwire.benchmarks.scaleout import (
    RECOVERY_TARGET_S,
    ScaleoutLoad,
    ScaleoutRun,
    run_scaleout,
    targets,
)
from splitwire.partitioner.runtime import RunnablePlan

pytestmark = pytest.mark.slow


def _load(plan_dir: Path, plan: RunnablePlan, scenario: str, duration_s: float) -> ScaleoutLoad:
    split = next(o for o in plan.options if o.cut != "c0000" and o.codec.startswith("int8"))
    # A window of 16 frames at 4 fps: 4 s before a camera frame must be dropped for room. On a
    # 2-core machine the restarting replica's start-up competes with the fleet and the other
    # replica, and this test's process also holds the rest of the suite's fixtures: a window of
    # 1.6 s lost 2 of 960 frames once in CI (never in runs of the scenario alone).
    return ScaleoutLoad(
        plan_dir=plan_dir, scenario=scenario, sessions=8, fps=4.0, duration_s=duration_s,
        window=16, budget_ms=6000.0, cut=split.cut, codec=split.codec,
    )  # fmt: skip


def _not_remote(run: ScaleoutRun) -> list[tuple[str, float, str]]:
    """(agent, capture time after the start in s, reason) of every frame not answered remotely,
    with the run's events, for a failure message that says when things went wrong."""
    start = min(r["capture_ts_ns"] for a in run.agents for r in a.records)
    return [
        (a.edge_id, round((r["capture_ts_ns"] - start) / 1e9, 2), r["reason"])
        for a in run.agents
        for r in a.records
        if r["source"] != "remote"
    ]


def _assert_accounted(run: ScaleoutRun) -> None:
    """Every frame of every agent has exactly one line; every line not from a tail says why."""
    for agent in run.agents:
        seqs = Counter(r["seq"] for r in agent.records)
        assert sorted(seqs) == list(range(1, agent.frames + 1)), agent.edge_id
        assert set(seqs.values()) == {1}, agent.edge_id
        for r in agent.records:
            assert (r["source"] == "remote") == (r["reason"] is None), r
            assert (r["source"] == "remote") == (r["server"] is not None), r


def test_a_killed_replicas_sessions_move_to_the_other(plan_dir: Path, plan: RunnablePlan) -> None:
    run = run_scaleout(_load(plan_dir, plan, "kill", 12.0))
    _assert_accounted(run)
    # nginx spread the sessions over both replicas (round robin: half each).
    assert run.sessions_at_fault == {"tail-1": 4, "tail-2": 4}, run.sessions_at_fault
    # The killed replica's four sessions each got a remote answer from the other within 5 s.
    assert len(run.recovery_s) == 4, run.recovery_s
    assert max(run.recovery_s.values()) <= RECOVERY_TARGET_S, run.recovery_s
    kill_ns = next(e["kill_ts_ns"] for e in run.events if "kill_ts_ns" in e)
    after = Counter(
        r["server"]
        for a in run.agents
        for r in a.records
        if r["source"] == "remote" and r["capture_ts_ns"] > kill_ns + int(0.5e9)
    )
    assert set(after) == {"tail-2"}, after
    assert all(check["met"] for check in targets(run)), targets(run)


def test_a_rolling_restart_loses_no_frame(plan_dir: Path, plan: RunnablePlan) -> None:
    run = run_scaleout(_load(plan_dir, plan, "rolling", 24.0))
    _assert_accounted(run)
    assert run.exit_codes == {"tail-1": [0], "tail-2": [0]}, run.exit_codes
    # Every frame is answered: by a tail, or, while its session moves to the other replica, by
    # the edge's own model (the plan ships the local fallback and the agent uses it in every
    # policy); none is dropped.
    sources = run.by_source()
    assert set(sources) <= {"remote", "local"}, (_not_remote(run), run.events)
    assert sources["remote"] >= 0.9 * run.frames, (_not_remote(run), run.events)
    # Both replicas served, and the restarted first one took sessions back.
    served = run.answered_by()
    assert served["tail-1"] > 0 and served["tail-2"] > 0, served
    assert sum(a.reconnects for a in run.agents) >= 8
    assert all(check["met"] for check in targets(run)), targets(run)
