"""Which shipped (cut, codec) the agent runs, and when it moves to another.

Under ``auto`` the agent prices every shipped option on the link it measures with the
partitioner's own cost model (:func:`~splitwire.partitioner.cost.price_option`), with the
plan's edge times scaled by how fast this edge actually runs the current head. It switches
only when another option has been predicted better by ``margin`` (and by ``min_gain_ms``) for
``hold_s`` without interruption, so estimates that wobble around a crossover do not make the
cut flap. Options over the plan's accuracy budget are never chosen automatically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from splitwire.edge.link_monitor import describe_link
from splitwire.partitioner.cost import DEFAULT_WINDOW, Price, price_option
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.plan_file import PlanOption


@dataclass(frozen=True)
class PolicySettings:
    """Hysteresis of the automatic policy.

    Attributes:
        margin: relative improvement a candidate needs (0.15 = 15 % better).
        min_gain_ms: and absolute, for the latency objective, so sub-millisecond noise on a
            loopback never counts as a gain.
        hold_s: how long the same candidate must stay better before the switch.
    """

    margin: float = 0.15
    min_gain_ms: float = 2.0
    hold_s: float = 3.0


@dataclass(frozen=True)
class CutSwitch:
    """A change of option: when (monotonic seconds), from what, to what, and why."""

    at_s: float
    old: PlanOption
    new: PlanOption
    reason: str

    def as_json(self) -> dict[str, object]:
        """The switch as telemetry and logs report it."""
        return {
            "from": {"cut": self.old.cut, "codec": self.old.codec},
            "to": {"cut": self.new.cut, "codec": self.new.codec},
            "reason": self.reason,
        }


def option_label(option: PlanOption) -> str:
    """``c0017 int8+zstd1``, how logs name an option."""
    return f"{option.cut} {option.codec}"


class CutPolicy:
    """The automatic choice among a plan's options (see the module docstring).

    Args:
        options: the plan's shipped options.
        objective: the plan's objective, ``latency`` or ``throughput`` (others rank by latency).
        accuracy_budget: the plan's budget on ``accuracy_cost``.
        demand_fps: the frame rate the source asks for, if paced: options that cannot keep up
            rank after every option that can.
        settings: the hysteresis.
        window: the agent's frames in flight at most (``--window``), which bounds each
            option's throughput (see :mod:`splitwire.partitioner.cost`).
    """

    def __init__(
        self,
        options: Sequence[PlanOption],
        *,
        objective: str,
        accuracy_budget: float,
        demand_fps: float | None = None,
        settings: PolicySettings | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.options = tuple(options)
        self.objective = objective
        self.accuracy_budget = accuracy_budget
        self.demand_fps = demand_fps
        self.settings = settings or PolicySettings()
        self.window = window
        self._candidate: PlanOption | None = None
        self._since_s = 0.0

    def prices(self, link: LinkModel, *, edge_scale: float = 1.0) -> dict[PlanOption, Price]:
        """Every option priced on ``link``, edge times multiplied by ``edge_scale``, with
        :attr:`window` frames in flight at most."""
        return {
            o: price_option(replace(o, edge_ms=o.edge_ms * edge_scale), link, window=self.window)
            for o in self.options
        }

    def score(self, p: Price) -> tuple[bool, float]:
        """Lower is better: options too slow for the demanded rate lose, then the objective."""
        slow = self.demand_fps is not None and p.throughput_fps < self.demand_fps
        if self.objective == "throughput":
            return slow, -p.throughput_fps
        return slow, p.latency_ms

    def consider(
        self,
        current: PlanOption,
        link: LinkModel,
        *,
        now_s: float,
        edge_scale: float = 1.0,
        usable: Callable[[PlanOption], bool] = lambda o: True,
    ) -> CutSwitch | None:
        """Called at a frame boundary: the switch to make now, if one is due.

        Args:
            current: the option running now.
            link: the measured link.
            now_s: monotonic time, for the hold.
            edge_scale: measured / planned edge time of the current option.
            usable: options the agent can run now (e.g. cuts the connected server serves).
        """
        prices = self.prices(link, edge_scale=edge_scale)
        allowed = [
            o
            for o in self.options
            if usable(o) and (o.accuracy_cost <= self.accuracy_budget or o == current)
        ]
        if not allowed:
            return None
        best = min(allowed, key=lambda o: self.score(prices[o]))
        if (
            best == current
            or current not in prices
            or not self._better(prices[best], prices[current])
        ):
            self._candidate = None
            return None
        if best != self._candidate:
            self._candidate, self._since_s = best, now_s
            return None
        if now_s - self._since_s < self.settings.hold_s:
            return None
        self._candidate = None
        return CutSwitch(now_s, current, best, self._reason(prices[best], prices[current], link))

    def _better(self, new: Price, old: Price) -> bool:
        new_score, old_score = self.score(new), self.score(old)
        if new_score[0] != old_score[0]:
            return new_score[0] < old_score[0]
        if self.objective == "throughput":
            return new.throughput_fps > old.throughput_fps * (1.0 + self.settings.margin)
        gain = old.latency_ms - new.latency_ms
        return gain > max(self.settings.margin * old.latency_ms, self.settings.min_gain_ms)

    def _reason(self, new: Price, old: Price, link: LinkModel) -> str:
        def figures(p: Price) -> str:
            fps = "inf" if math.isinf(p.throughput_fps) else f"{p.throughput_fps:.1f}"
            return f"{p.latency_ms:.1f} ms, {fps} fps"

        return (
            f"predicted {figures(new)} against {figures(old)} for "
            f"{self.settings.hold_s:g} s on the measured link ({describe_link(link)})"
        )
