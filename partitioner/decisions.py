"""Decisions: price measurements on every link, mark the Pareto front, pick.

The expensive part of planning (profiling, running tails on decoded activations) produces
link-independent :class:`~splitwire.partitioner.cost.Measurement`\\ s; this module prices them on
every link and decides, which is cheap enough to sweep many links and codecs interactively.

Picks:

* per link, for an objective (``latency`` by default): the best candidate whose accuracy cost is
  within the budget. When that best candidate is a baseline, the split lost: the plan says so
  and deploys the baseline.
* across links (a robust pick): the (cut, codec) whose worst ratio to each link's own best
  objective value is smallest — minimax regret — weighted states of a trace count once each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from splitwire.partitioner.cost import (
    DEFAULT_WINDOW,
    OBJECTIVES,
    Candidate,
    Measurement,
    evaluate,
)
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.pareto import pareto_front

Objective = Literal["latency", "throughput", "bytes", "edge"]
# objective name -> (candidate field, sense)
OBJECTIVE_FIELDS: dict[str, tuple[str, Literal["min", "max"]]] = {
    "latency": ("latency_ms", "min"),
    "throughput": ("throughput_fps", "max"),
    "bytes": ("bytes_wire", "min"),
    "edge": ("edge_ms", "min"),
}


@dataclass(frozen=True)
class LinkDecision:
    """The candidates of one link, marked on the front, and the pick among them."""

    link: LinkModel
    candidates: tuple[Candidate, ...]
    pick: Candidate
    split_wins: bool


def decide_link(
    measurements: Sequence[Measurement],
    link: LinkModel,
    *,
    objective: Objective,
    accuracy_budget: float,
    window: float = DEFAULT_WINDOW,
) -> LinkDecision:
    """Price every measurement on ``link`` with ``window`` frames in flight, mark the exact
    5-objective front, and pick.

    Raises:
        PartitionerError: no candidate meets the accuracy budget (lossless codecs always do, so
            this means the codec list had none; add ``fp32``).
    """
    priced = [evaluate(m, link, window=window) for m in measurements]
    points = [[c.objective(name) for name, _ in OBJECTIVES] for c in priced]
    front = set(pareto_front(points, [sense for _, sense in OBJECTIVES]))
    candidates = tuple(c.with_pareto(i in front) for i, c in enumerate(priced))
    pick = best(candidates, objective=objective, accuracy_budget=accuracy_budget)
    # Cut 0 with any codec still runs the whole model in the cloud: not a split.
    split_wins = pick.measurement.baseline is None and pick.measurement.cut_index > 0
    return LinkDecision(link, candidates, pick, split_wins)


def best(
    candidates: Sequence[Candidate], *, objective: Objective, accuracy_budget: float
) -> Candidate:
    """The candidate best on ``objective`` among those within ``accuracy_budget``.

    Ties go to fewer bytes on the wire, then lower latency.
    """
    field, sense = OBJECTIVE_FIELDS[objective]
    eligible = [c for c in candidates if c.measurement.accuracy_cost <= accuracy_budget]
    if not eligible:
        raise PartitionerError(
            f"no candidate has an accuracy cost within {accuracy_budget}; raise "
            "--accuracy-budget or add a lossless codec (fp32)"
        )
    sign = 1.0 if sense == "min" else -1.0
    return min(
        eligible,
        key=lambda c: (sign * c.objective(field), c.measurement.bytes_wire, c.latency_ms),
    )


def robust_pick(
    decisions: Sequence[LinkDecision], *, objective: Objective, accuracy_budget: float
) -> tuple[Measurement, float]:
    """The measurement with the smallest worst-case ratio to each link's best (minimax regret).

    Returns:
        The measurement and its worst ratio (1.0 means best on every link).
    """
    field, sense = OBJECTIVE_FIELDS[objective]
    per_link_best = [d.pick.objective(field) for d in decisions]
    by_key: dict[tuple[str, str], list[Candidate]] = {}
    for decision in decisions:
        for c in decision.candidates:
            if c.measurement.accuracy_cost <= accuracy_budget:
                by_key.setdefault((c.measurement.cut, c.measurement.codec), []).append(c)
    best_key, best_ratio = None, float("inf")
    for key, per_link in sorted(by_key.items()):
        if len(per_link) != len(decisions):
            continue
        ratios = []
        for c, reference in zip(per_link, per_link_best, strict=True):
            value = c.objective(field)
            # Guards first: a link's best may be 0 (no bytes sent, no edge ms).
            if value == reference:
                ratio = 1.0
            elif reference <= 0 or value <= 0:
                ratio = float("inf")
            else:
                ratio = value / reference if sense == "min" else reference / value
            ratios.append(ratio)
        worst = max(ratios)
        if worst < best_ratio:
            best_key, best_ratio = key, worst
    if best_key is None:
        raise PartitionerError("no candidate is within the accuracy budget on every link")
    return by_key[best_key][0].measurement, best_ratio
