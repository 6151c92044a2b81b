"""What a codec costs in task terms: the model's answers with compressed activations against its
own uncompressed answers on the same inputs.

====================  =================================================================
metric                meaning (over the calibration inputs)
====================  =================================================================
``rel``               relative L2 error of all outputs: ||out - ref|| / ||ref||
``kl``                classifiers: mean KL(softmax(ref) || softmax(out)), in nats
``top1``              classifiers: share of inputs whose top-1 class is unchanged
``top5``              classifiers: share of inputs whose reference top-1 class is still among
                      the top 5
``pixel``             segmentation: share of pixels whose arg-max class is unchanged
``miou``              segmentation: mean IoU of the arg-max map against the reference's
====================  =================================================================

A budget names one metric: ``kl=1e-3`` (at most), ``top1=0.99`` (at least), or a bare number,
which is ``rel`` (what plans used before task metrics). The planner turns every measurement into
a *cost* in the budget's metric, lower is better (``1 - top1`` for agreements), which is what
the Pareto front's accuracy objective and the plan's options carry.

These are agreements with the uncompressed model, not accuracy against labels: on a model with
random weights they measure output distortion, nothing about a task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from splitwire.partitioner.errors import PartitionerError

# Metrics whose value is an agreement (higher is better): the cost is 1 - value.
AGREEMENTS = ("top1", "top5", "pixel", "miou")
ERRORS = ("rel", "kl")
METRICS = ERRORS + AGREEMENTS
CLASSIFIER_METRICS = ("rel", "kl", "top1", "top5")
SEGMENTATION_METRICS = ("rel", "pixel", "miou")


@dataclass(frozen=True)
class TaskMetrics:
    """Every metric that applies to the model's task (None where it does not)."""

    rel: float
    kl: float | None = None
    top1: float | None = None
    top5: float | None = None
    pixel: float | None = None
    miou: float | None = None

    def value(self, metric: str) -> float:
        """The metric's value.

        Raises:
            PartitionerError: the metric does not apply to this model's task.
        """
        value = getattr(self, metric, None)
        if value is None:
            applicable = [m for m in METRICS if getattr(self, m) is not None]
            raise PartitionerError(
                f"accuracy metric {metric!r} does not apply to this model's outputs; "
                f"expected one of {', '.join(applicable)}"
            )
        return float(value)

    @staticmethod
    def exact(task: str | None) -> TaskMetrics:
        """What a lossless codec scores: no change at all."""
        if task == "classification":
            return TaskMetrics(rel=0.0, kl=0.0, top1=1.0, top5=1.0)
        if task == "segmentation":
            return TaskMetrics(rel=0.0, pixel=1.0, miou=1.0)
        return TaskMetrics(rel=0.0)


@dataclass(frozen=True)
class AccuracyBudget:
    """A limit on one metric (see the module docstring); ``text`` is its canonical spelling."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise PartitionerError(
                f"accuracy metric {self.metric!r}: expected one of {', '.join(METRICS)}"
            )
        if not math.isfinite(self.limit) or self.limit < 0:
            raise PartitionerError(f"accuracy budget {self.text}: expected a finite value >= 0")
        if self.metric in AGREEMENTS and self.limit > 1:
            raise PartitionerError(f"accuracy budget {self.text}: an agreement is at most 1")

    @property
    def text(self) -> str:
        """``kl=0.001``: what ``--accuracy-budget`` takes."""
        return f"{self.metric}={self.limit:g}"

    @property
    def max_cost(self) -> float:
        """The largest cost (:meth:`cost`) within the budget."""
        return 1.0 - self.limit if self.metric in AGREEMENTS else self.limit

    def cost(self, metrics: TaskMetrics) -> float:
        """``metrics`` as a cost in this budget's metric (lower is better, 0 = unchanged)."""
        value = metrics.value(self.metric)
        return max(1.0 - value, 0.0) if self.metric in AGREEMENTS else value


def parse_budget(text: str | float) -> AccuracyBudget:
    """``"kl=1e-3"``, ``"top1=0.99"``, ``"0.01"`` (relative error) or a number.

    Raises:
        PartitionerError: an unknown metric or a value that is not a number in range.
    """
    if isinstance(text, int | float):
        return AccuracyBudget("rel", float(text))
    metric, sep, value = text.strip().partition("=")
    if not sep:
        metric, value = "rel", text
    try:
        limit = float(value)
    except ValueError:
        raise PartitionerError(
            f"accuracy budget {text!r}: expected METRIC=VALUE (e.g. kl=1e-3, top1=0.99) or a "
            "relative error such as 0.01"
        ) from None
    return AccuracyBudget(metric.strip().lower(), limit)


def default_budget(task: str | None, *, trained: bool) -> AccuracyBudget:
    """The budget when none is given: task metrics for trained models, the relative output
    error (1 %) for random weights, where no task metric means anything."""
    if trained and task == "classification":
        return AccuracyBudget("kl", 1e-3)
    if trained and task == "segmentation":
        return AccuracyBudget("pixel", 0.99)
    return AccuracyBudget("rel", 0.01)


def task_metrics(
    reference: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], *, task: str | None
) -> TaskMetrics:
    """Compare ``outputs`` with ``reference`` (same inputs, batch first) in task terms.

    ``task`` is ``classification`` (the first output is ``(N, K)`` logits), ``segmentation``
    (``(N, K, H, W)`` logits) or None (only ``rel``).
    """
    num = sum(
        float((o.float() - r.float()).pow(2).sum()) for o, r in zip(outputs, reference, strict=True)
    )
    den = sum(float(r.float().pow(2).sum()) for r in reference) or 1.0
    rel = (num / den) ** 0.5
    ref, out = reference[0].float(), outputs[0].float()
    if task == "classification" and ref.dim() == 2:
        log_ref, log_out = torch.log_softmax(ref, dim=1), torch.log_softmax(out, dim=1)
        kl = float((log_ref.exp() * (log_ref - log_out)).sum(dim=1).clamp_min(0).mean())
        top1_ref = ref.argmax(dim=1)
        top1 = float((out.argmax(dim=1) == top1_ref).float().mean())
        k = min(5, out.shape[1])
        top5 = float((out.topk(k, dim=1).indices == top1_ref[:, None]).any(dim=1).float().mean())
        return TaskMetrics(rel=rel, kl=kl, top1=top1, top5=top5)
    if task == "segmentation" and ref.dim() == 4:
        want, got = ref.argmax(dim=1), out.argmax(dim=1)
        pixel = float((want == got).float().mean())
        return TaskMetrics(rel=rel, pixel=pixel, miou=_miou(want, got, ref.shape[1]))
    return TaskMetrics(rel=rel)


def _miou(want: torch.Tensor, got: torch.Tensor, classes: int) -> float:
    ious = []
    for c in range(classes):
        a, b = want == c, got == c
        union = int((a | b).sum())
        if union:
            ious.append(int((a & b).sum()) / union)
    return sum(ious) / len(ious) if ious else 1.0
