"""When a session's silence means it stopped answering: the limit, worked by hand on a clock the
test sets (no waiting)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from splitwire.edge.config import EdgeConfig
from splitwire.edge.silence import AnswerClock
from splitwire.partitioner.runtime import RunnablePlan

MS = 1_000_000  # ns


@pytest.fixture
def clock(plan_dir: Path, plan: RunnablePlan) -> AnswerClock:
    return AnswerClock(plan, EdgeConfig(plan=plan_dir, budget_ms=2000.0))


def _option(plan: RunnablePlan):  # type: ignore[no-untyped-def]
    return next(o for o in plan.options if not o.local)


def test_nothing_unanswered_is_nothing_to_judge(clock: AnswerClock) -> None:
    assert clock.silence(probation=False) is None


def test_before_any_answer_a_session_has_at_least_a_second(
    clock: AnswerClock, plan: RunnablePlan
) -> None:
    clock.sent(1, 0, 1000, _option(plan))
    silence = clock.silence(probation=False, now_ns=900 * MS)
    assert silence is not None and silence.answers == 0
    # The plan's prediction on its wifi link is a few ms: the 1 s floor decides.
    assert silence.expected_s < 0.1 and silence.limit_s == 1.0
    assert not silence.over
    assert clock.silence(probation=False, now_ns=1000 * MS).over  # type: ignore[union-attr]


def test_three_times_the_p95_of_the_answers_but_not_below_the_floor(
    clock: AnswerClock, plan: RunnablePlan
) -> None:
    option = _option(plan)
    for seq, took_ms in enumerate((12, 20, 41), start=1):
        clock.sent(seq, 0, 1000, option)
        assert clock.answered(seq, now_ns=took_ms * MS)
    clock.sent(4, 100 * MS, 1000, option)
    silence = clock.silence(probation=False, now_ns=300 * MS)
    assert silence is not None and silence.answers == 3
    # p95 of 12, 20, 41 ms: rank 0.95 x 2 = 1.9, so 20 + 0.9 x 21 = 38.9 ms; 3 x 38.9 < 250.
    assert silence.expected_s == pytest.approx(0.0389)
    assert silence.limit_s == 0.25 and silence.quiet_s == pytest.approx(0.2)
    assert not silence.over
    assert clock.silence(probation=False, now_ns=350 * MS).over  # type: ignore[union-attr]


def test_a_slow_link_that_keeps_answering_is_never_silent(
    clock: AnswerClock, plan: RunnablePlan
) -> None:
    option = _option(plan)
    clock.sent(1, 0, 1000, option)
    clock.sent(2, 100 * MS, 1000, option)
    assert clock.answered(1, now_ns=600 * MS)  # 0.6 s: the limit becomes 1.8 s
    clock.sent(3, 700 * MS, 1000, option)
    assert clock.answered(2, now_ns=2000 * MS)  # 1.9 s late, but an answer
    silence = clock.silence(probation=False, now_ns=3000 * MS)
    assert silence is not None
    # Frame 3 is 2.3 s old, but the session answered 1 s ago: silent for 1 s of its limit.
    assert silence.oldest_s == pytest.approx(2.3) and silence.quiet_s == pytest.approx(1.0)
    # Answers took 0.6 and 1.9 s: p95 0.6 + 0.95 x 1.3 = 1.835 s, the limit 3 x 1.835 s.
    assert silence.limit_s == pytest.approx(5.505) and not silence.over


def test_a_larger_frame_is_given_longer_and_probation_the_whole_budget(
    clock: AnswerClock, plan: RunnablePlan
) -> None:
    option = _option(plan)
    clock.sent(1, 0, 1000, option)
    assert clock.answered(1, now_ns=100 * MS)
    clock.sent(2, 0, 4000, option)  # four times the bytes of the frame timed
    silence = clock.silence(probation=False, now_ns=0)
    assert silence is not None and silence.expected_s == pytest.approx(0.4)
    assert silence.limit_s == pytest.approx(1.2)
    on_probation = clock.silence(probation=True, now_ns=0)
    assert on_probation is not None and on_probation.limit_s == 2.0  # the budget
    assert "on probation" in on_probation.describe(factor=3.0, floor_ms=250.0)
    # An answer to a frame the session does not hold says nothing.
    assert not clock.answered(99)


def test_without_a_link_to_predict_with_the_first_answer_has_the_whole_budget(
    plan_dir: Path, plan: RunnablePlan
) -> None:
    # A plan made for a trace that stayed on the planning machine: no prediction on the edge,
    # so a slow first answer (a raw frame on 3g takes ~2 s) is not taken for silence.
    unreadable = dataclasses.replace(plan.plan.choice, link="trace:/nonexistent/uplink.csv")
    blind = dataclasses.replace(plan.plan, choice=unreadable, links=(unreadable,))
    clock = AnswerClock(
        dataclasses.replace(plan, plan=blind), EdgeConfig(plan=plan_dir, budget_ms=2500.0)
    )
    clock.sent(1, 0, 1000, _option(plan))
    silence = clock.silence(probation=False, now_ns=2000 * MS)
    assert silence is not None and silence.expected_s == 0.0
    assert silence.limit_s == 2.5 and not silence.over
