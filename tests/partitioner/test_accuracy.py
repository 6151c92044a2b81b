"""Accuracy in task terms, on outputs made by hand so every figure is known."""

from __future__ import annotations

import math

import pytest
import torch

from splitwire.partitioner.accuracy import (
    AccuracyBudget,
    Evidence,
    TaskMetrics,
    default_budget,
    parse_budget,
    task_metrics,
    task_samples,
    wilson,
)
from splitwire.partitioner.errors import PartitionerError


def test_classification_metrics_by_hand() -> None:
    ref = torch.tensor([[4.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    # Input 0 keeps its top class; input 1 loses it to class 2, but class 1 stays in the top 5.
    out = torch.tensor([[4.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 3.5, 0.0, 0.0, 0.0]])
    m = task_metrics([ref], [out], task="classification")
    assert m.top1 == 0.5 and m.top5 == 1.0
    p = torch.softmax(ref[1], 0)
    q = torch.softmax(out[1], 0)
    expected_kl = float((p * (p.log() - q.log())).sum()) / 2  # input 0 contributes 0
    assert m.kl == pytest.approx(expected_kl, rel=1e-5)
    assert m.rel == pytest.approx(3.5 / math.sqrt(16 + 1 + 9), rel=1e-6)
    # The reference's top class pushed out of the top 5.
    far = torch.tensor([[0.0, 9.0, 9.0, 9.0, 9.0, 9.0], [0.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    assert task_metrics([ref], [far], task="classification").top5 == 0.5


def test_identical_outputs_cost_nothing() -> None:
    ref = torch.randn(8, 10)
    m = task_metrics([ref], [ref.clone()], task="classification")
    assert m == TaskMetrics(rel=0.0, kl=0.0, top1=1.0, top5=1.0)
    assert m == TaskMetrics.exact("classification")


def test_segmentation_metrics_by_hand() -> None:
    ref = torch.zeros(1, 2, 2, 2)
    ref[0, 1, 0, :] = 1.0  # top row class 1, bottom row class 0
    out = ref.clone()
    out[0, 1, 1, 0] = 2.0  # one bottom pixel flips to class 1
    m = task_metrics([ref], [out], task="segmentation")
    assert m.pixel == 0.75
    # class 0: |{(1,1)} ∩ {(1,0),(1,1)}| / |union| = 1/2; class 1: 2/3.
    assert m.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.kl is None and m.top1 is None


def test_budgets_parse_and_turn_metrics_into_costs() -> None:
    assert parse_budget("0.01") == AccuracyBudget("rel", 0.01)
    assert parse_budget(0.02) == AccuracyBudget("rel", 0.02)
    kl = parse_budget("kl=1e-3")
    assert (kl.metric, kl.limit, kl.max_cost, kl.text) == ("kl", 1e-3, 1e-3, "kl=0.001")
    top1 = parse_budget("TOP1 = 0.99")
    assert top1.metric == "top1" and top1.max_cost == pytest.approx(0.01)
    m = TaskMetrics(rel=0.02, kl=2e-4, top1=0.995, top5=1.0)
    assert kl.cost(m) == 2e-4 and top1.cost(m) == pytest.approx(0.005)
    assert parse_budget("rel=0.01").cost(m) == 0.02


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accuracy=0.9", "expected one of rel, kl"),
        ("kl=lots", "expected METRIC=VALUE"),
        ("top1=1.5", "at most 1"),
        ("kl=-1", ">= 0"),
    ],
)
def test_bad_budgets_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(PartitionerError, match=message):
        parse_budget(text)


def test_a_metric_the_task_does_not_have_is_refused() -> None:
    with pytest.raises(PartitionerError, match=r"does not apply.*rel"):
        parse_budget("kl=1e-3").cost(TaskMetrics(rel=0.1))


def test_defaults_use_task_metrics_only_for_trained_models() -> None:
    assert default_budget("classification", trained=True) == AccuracyBudget("kl", 1e-3)
    assert default_budget("segmentation", trained=True) == AccuracyBudget("pixel", 0.99)
    assert default_budget("classification", trained=False) == AccuracyBudget("rel", 0.01)


def test_wilson_interval_by_hand() -> None:
    # 32 of 32: centre (1 + z²/64) / (1 + z²/32), half-width z·sqrt(z²/4096) / (1 + z²/32).
    low, high = wilson(32, 32)
    assert high == 1.0 and low == pytest.approx(0.8928, abs=1e-4)
    low, high = wilson(16, 32)
    assert (low, high) == (pytest.approx(0.3363, abs=1e-4), pytest.approx(0.6637, abs=1e-4))
    assert wilson(0, 0) == (0.0, 1.0)


def test_samples_measured_in_two_steps_equal_one_step() -> None:
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(12, 10, generator=gen)
    out = ref + 0.8 * torch.randn(12, 10, generator=gen)
    whole = task_samples([ref], [out], task="classification")
    parts = task_samples([ref[:4]], [out[:4]], task="classification").joined(
        task_samples([ref[4:]], [out[4:]], task="classification")
    )
    assert whole.inputs == parts.inputs == 12
    a, b = whole.metrics(), parts.metrics()
    for metric in ("rel", "kl", "top1", "top5"):
        assert a.value(metric) == pytest.approx(b.value(metric), rel=1e-9)
    assert a == task_metrics([ref], [out], task="classification")
    evidence = parts.evidence()
    assert evidence.inputs == 12
    for metric in ("rel", "kl", "top1", "top5"):
        interval = evidence.interval(metric)
        assert interval is not None
        assert interval[0] <= a.value(metric) <= interval[1]
    # Agreements use Wilson's interval on the count of agreeing inputs.
    assert evidence.interval("top1") == wilson(round(a.value("top1") * 12), 12)
    # The bootstrap is seeded: the same figures give the same interval.
    assert parts.evidence() == evidence
    assert Evidence.from_json(evidence.as_json()) == evidence


def test_bootstrap_interval_narrows_with_more_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(64, 10, generator=gen)
    out = ref + 0.5 * torch.randn(64, 10, generator=gen)
    few = task_samples([ref[:8]], [out[:8]], task="classification").evidence().interval("kl")
    many = task_samples([ref], [out], task="classification").evidence().interval("kl")
    assert few is not None and many is not None
    assert many[1] - many[0] < few[1] - few[0]
    assert many[0] >= 0.0  # a KL interval never reaches below 0


def test_cost_floor_over_all_inputs_from_a_screen() -> None:
    ref = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0]])
    out = ref.clone()
    out[0] = torch.tensor([0.0, 4.0, 0.0])  # input 0 changes class; the others agree
    screen = task_samples([ref], [out], task="classification")
    # KL: the screen's sum spread over all 32 inputs (the other 28 could all be 0).
    kl_sum = float(screen.kl.sum()) if screen.kl is not None else math.nan
    floor = screen.cost_floor(parse_budget("kl=1e-3"), inputs=32, sq_reference=1.0)
    assert floor == pytest.approx(kl_sum / 32)
    # top1: one disagreement among 32 inputs is a cost of at least 1/32.
    top1 = parse_budget("top1=0.99")
    assert screen.cost_floor(top1, inputs=32, sq_reference=1.0) == pytest.approx(1 / 32)
    assert screen.cost_floor(top1, inputs=32, sq_reference=1.0) > top1.max_cost
    # rel: the screen's error over the reference's total norm (16 per input here).
    rel = screen.cost_floor(parse_budget("0.01"), inputs=32, sq_reference=32 * 16.0)
    assert rel == pytest.approx(math.sqrt(32.0 / (32 * 16.0)))
    # A floor never exceeds the cost the screen itself shows.
    assert floor <= parse_budget("kl=1").cost(screen.metrics())


def test_segmentation_samples_match_the_metrics_and_join() -> None:
    gen = torch.Generator().manual_seed(2)
    ref = torch.randn(6, 3, 4, 4, generator=gen)
    out = ref + 0.7 * torch.randn(6, 3, 4, 4, generator=gen)
    whole = task_samples([ref], [out], task="segmentation")
    parts = task_samples([ref[:2]], [out[:2]], task="segmentation").joined(
        task_samples([ref[2:]], [out[2:]], task="segmentation")
    )
    expected = task_metrics([ref], [out], task="segmentation")
    for samples in (whole, parts):
        got = samples.metrics()
        assert got.pixel == pytest.approx(expected.pixel)
        assert got.miou == pytest.approx(expected.miou)
    interval = parts.evidence().interval("miou")
    assert interval is not None and 0.0 <= interval[0] <= interval[1] <= 1.0
