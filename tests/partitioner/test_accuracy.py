"""Accuracy in task terms, on outputs made by hand so every figure is known."""

from __future__ import annotations

import math

import pytest
import torch

from splitwire.partitioner.accuracy import (
    AccuracyBudget,
    TaskMetrics,
    default_budget,
    parse_budget,
    task_metrics,
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
