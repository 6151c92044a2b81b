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

Every measured figure comes with how many inputs it rests on and a 95 % interval
(:class:`Evidence`, from the per-input figures in :class:`MetricSamples`): the Wilson score
interval for ``top1`` and ``top5`` (a share of inputs: unlike the normal approximation it
stays inside [0, 1] and does not shrink to a point at 32 of 32, where it gives [0.89, 1]),
and a percentile bootstrap over the inputs for ``rel``, ``kl``, ``pixel`` and ``miou`` (means
or ratios of sums of skewed, non-negative per-input figures: a t-interval would assume the
mean normal and can reach below 0; resampling whole inputs keeps the pixels of one image
together, since they are not independent). E.g. 32 inputs whose top-1 all agree give
``top1`` 1.0 in [0.893, 1.0]: a ``top1=0.99`` budget cannot be shown on 32 inputs, only not
refuted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
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
    return task_samples(reference, outputs, task=task).metrics()


# A two-sided 95 % interval: the normal quantile for Wilson, the tails cut off the bootstrap.
CONFIDENCE = 0.95
_Z = 1.959963984540054
# Resamples of the percentile bootstrap, drawn with a fixed seed: the same samples give the
# same interval in every run (2 000 resamples of 32 inputs take well under a millisecond).
BOOTSTRAP_RESAMPLES = 2000
_BOOTSTRAP_SEED = 1234


@dataclass(frozen=True, eq=False)
class MetricSamples:
    """The per-input figures behind :class:`TaskMetrics`, so that inputs measured in two steps
    (screened on a few, confirmed on the rest) combine exactly and every metric gets an
    interval. Arrays have one row per input (``n`` = :attr:`inputs`); a metric that does not
    apply to the task is None.

    Attributes:
        sq_error / sq_reference: ``||out_i - ref_i||²`` and ``||ref_i||²`` summed over every
            output (``rel`` is the square root of their sums' ratio).
        kl: per-input KL divergence (nats); ``top1`` / ``top5``: 1.0 where the input agrees.
        pixel: per-input share of pixels whose class is unchanged.
        intersection / union: ``(n, K)`` per-input, per-class pixel counts (``miou``).
    """

    task: str | None
    sq_error: np.ndarray
    sq_reference: np.ndarray
    kl: np.ndarray | None = None
    top1: np.ndarray | None = None
    top5: np.ndarray | None = None
    pixel: np.ndarray | None = None
    intersection: np.ndarray | None = None
    union: np.ndarray | None = None

    @property
    def inputs(self) -> int:
        """How many inputs these figures were measured on."""
        return len(self.sq_error)

    def metrics(self) -> TaskMetrics:
        """The metrics over every input (what :func:`task_metrics` returns)."""
        values = self._values(np.ones((1, self.inputs)))
        return TaskMetrics(**{metric: float(v[0]) for metric, v in values.items()})

    def evidence(self) -> Evidence:
        """How many inputs, and each applicable metric's 95 % interval (see the module
        docstring for the methods)."""
        n = self.inputs
        resampled = self._values(_bootstrap_weights(n))
        tail = (1.0 - CONFIDENCE) / 2 * 100
        intervals = []
        for metric in METRICS:
            if metric not in resampled:
                continue
            if metric in ("top1", "top5"):
                agree = getattr(self, metric)
                lo, hi = wilson(round(float(agree.sum())), n)
            else:
                lo, hi = (float(v) for v in np.percentile(resampled[metric], [tail, 100 - tail]))
            intervals.append((metric, lo, hi))
        return Evidence(n, tuple(intervals))

    def cost_floor(self, budget: AccuracyBudget, *, inputs: int, sq_reference: float) -> float:
        """The least cost in ``budget``'s metric these figures allow over ``inputs`` inputs,
        of which these are the first, whatever the others show: every per-input cost is
        >= 0, so the mean over all is at least their sum / ``inputs``; ``rel`` adds the
        others' errors (>= 0) to their ``sq_reference`` (the reference's total, known without
        running anything). ``miou`` (no per-input cost) gives 0: no floor.

        Used to skip confirming a screened candidate that no further input can bring within
        the budget.
        """
        metric = budget.metric
        if metric == "rel":
            return math.sqrt(float(self.sq_error.sum()) / (sq_reference or 1.0))
        if metric == "miou" or getattr(self, metric) is None:
            return 0.0
        per_input = getattr(self, metric)
        costs = per_input if metric == "kl" else 1.0 - per_input
        return float(costs.sum()) / inputs

    def joined(self, other: MetricSamples) -> MetricSamples:
        """These inputs' figures followed by ``other``'s (the same candidate, other inputs)."""

        arrays: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name != "task":
                arrays[f.name] = None if a is None or b is None else np.concatenate([a, b])
        return replace(self, **arrays)

    def _values(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each applicable metric for each row of ``weights`` ``(R, n)``: how often each input
        counts (all ones: the sample itself; multinomial counts: a bootstrap resample)."""
        total = weights.sum(axis=1)
        den = weights @ self.sq_reference
        out = {"rel": np.sqrt(weights @ self.sq_error / np.where(den > 0, den, 1.0))}
        for metric in ("kl", "top1", "top5", "pixel"):
            per_input = getattr(self, metric)
            if per_input is not None:
                out[metric] = weights @ per_input / total
        if self.intersection is not None and self.union is not None:
            inter, union = weights @ self.intersection, weights @ self.union  # (R, K)
            present = union > 0
            ious = np.where(present, inter / np.where(present, union, 1.0), 0.0).sum(axis=1)
            count = present.sum(axis=1)
            # No class present at all: nothing could disagree (as TaskMetrics.exact).
            out["miou"] = np.where(count > 0, ious / np.maximum(count, 1), 1.0)
        return out


@dataclass(frozen=True)
class Evidence:
    """What a measured accuracy rests on: ``inputs`` (calibration inputs whose tails ran) and a
    95 % interval per applicable metric, ``(metric, low, high)``, in the metric's own units
    (an agreement, not its cost)."""

    inputs: int
    intervals: tuple[tuple[str, float, float], ...]

    def interval(self, metric: str) -> tuple[float, float] | None:
        """``metric``'s interval, or None when it does not apply."""
        return next(((lo, hi) for m, lo, hi in self.intervals if m == metric), None)

    def as_json(self) -> dict[str, object]:
        """``{"inputs": 32, "intervals": {"kl": [lo, hi], ...}}``."""
        return {"inputs": self.inputs, "intervals": {m: [lo, hi] for m, lo, hi in self.intervals}}

    @staticmethod
    def from_json(data: object) -> Evidence:
        """The inverse of :meth:`as_json`.

        Raises:
            ValueError: not such a mapping.
        """
        if not isinstance(data, dict) or not isinstance(data.get("intervals"), dict):
            raise ValueError(f"evidence {data!r}: expected {{inputs, intervals}}")
        inputs = int(data["inputs"])
        intervals = tuple((str(m), float(v[0]), float(v[1])) for m, v in data["intervals"].items())
        return Evidence(inputs, intervals)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a share ``successes / n`` (``(0, 1)`` for n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = _Z * _Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@functools.lru_cache(maxsize=8)
def _bootstrap_weights(n: int) -> np.ndarray:
    """``(BOOTSTRAP_RESAMPLES, n)`` counts: how often each input is drawn in each resample
    (the same for every candidate measured on ``n`` inputs; read-only)."""
    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    draws = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    rows = np.repeat(np.arange(BOOTSTRAP_RESAMPLES), n)
    weights = np.bincount(rows * n + draws.reshape(-1), minlength=BOOTSTRAP_RESAMPLES * n).reshape(
        BOOTSTRAP_RESAMPLES, n
    )
    weights = weights.astype(np.float64)
    weights.flags.writeable = False
    return weights


def task_samples(
    reference: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], *, task: str | None
) -> MetricSamples:
    """The per-input figures of ``outputs`` against ``reference`` (same inputs, batch first);
    ``task`` as :func:`task_metrics`."""

    def per_input(t: torch.Tensor) -> np.ndarray:
        return t.reshape(len(t), -1).double().pow(2).sum(dim=1).numpy()

    sq_error = sum(
        (per_input(o.float() - r.float()) for o, r in zip(outputs, reference, strict=True)),
        start=np.zeros(len(reference[0])),
    )
    sq_reference = sum((per_input(r.float()) for r in reference), start=np.zeros(len(reference[0])))
    ref, out = reference[0].float(), outputs[0].float()
    if task == "classification" and ref.dim() == 2:
        log_ref, log_out = torch.log_softmax(ref, dim=1), torch.log_softmax(out, dim=1)
        kl = (log_ref.exp() * (log_ref - log_out)).sum(dim=1).clamp_min(0)
        top1_ref = ref.argmax(dim=1)
        top1 = out.argmax(dim=1) == top1_ref
        k = min(5, out.shape[1])
        top5 = (out.topk(k, dim=1).indices == top1_ref[:, None]).any(dim=1)
        return MetricSamples(
            task, sq_error, sq_reference, kl=kl.double().numpy(),
            top1=top1.double().numpy(), top5=top5.double().numpy(),
        )  # fmt: skip
    if task == "segmentation" and ref.dim() == 4:
        classes = ref.shape[1]
        want, got = ref.argmax(dim=1), out.argmax(dim=1)  # (N, H, W)
        pixel = (want == got).double().flatten(1).mean(dim=1)
        inter = np.zeros((len(want), classes))
        union = np.zeros((len(want), classes))
        for c in range(classes):
            a, b = want == c, got == c
            inter[:, c] = (a & b).flatten(1).sum(dim=1).numpy()
            union[:, c] = (a | b).flatten(1).sum(dim=1).numpy()
        return MetricSamples(
            task, sq_error, sq_reference, pixel=pixel.numpy(), intersection=inter, union=union
        )
    return MetricSamples(task, sq_error, sq_reference)
