"""Whether a session still answers: the frames sent on it and not answered yet, how long answers
take, and the limit past which its silence means it stopped answering.

A session that stops answering is declared **unresponsive** and dropped (by
:meth:`~splitwire.edge.uplink.Uplink.watch_loop`) when its frames have gone unanswered, since
the oldest was sent and since its last answer, for longer than its limit
(:meth:`AnswerClock.silence`): ``--unresponsive-factor`` (3) times the expected answer time, but
never less than ``--unresponsive-floor-ms`` (250). The expected time is the 95th percentile of
the last :data:`ANSWER_HISTORY` answers the agent timed (send to answer, over sessions, each
scaled up to the oldest frame's bytes when it is larger); before the first, it is what the plan
predicts for the frame's option on the slowest of the plan's links (transfer and tail), and
the limit is at least ``--unresponsive-first-ms`` (1000), as the prediction may be far off (the
whole frame budget when the edge can read none of the plan's links, say a trace file that
stayed on the planning machine). A session on
probation (after one stopped answering) has at least the frame budget. A worked example:
answers on a loopback took 12..41 ms (p95 38 ms), so the limit is max(250, 3 x 38) = 250 ms,
and a tail that goes silent is dropped 250 ms after its oldest frame left, not when that
frame's 2 s budget runs out; answers of a slow link that take 0.6 s set the limit to 1.8 s, and
a link whose answers keep coming, however late each one, is never silent (the silence counts
from the last).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from splitwire.edge.config import EdgeConfig
from splitwire.partitioner.cost import price_option
from splitwire.partitioner.errors import LinkError
from splitwire.partitioner.link import LinkModel, LinkTrace, parse_link
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.stats import percentile

# The answers that judge whether a session still answers: the last 64, a few seconds at camera
# rates, and their 95th percentile, so that a link's slow answers set its pace (one in twenty is
# enough) but a single outlier (a tail's first call, a hiccup) does not for seconds on end.
ANSWER_HISTORY = 64
ANSWER_PERCENTILE = 95.0


@dataclass(frozen=True)
class _Sent:
    """A frame sent on the open session and not answered yet."""

    sent_ns: int  # perf_counter
    bytes_up: int
    predicted_s: float  # the plan's answer time for its option (transfer and tail)


@dataclass(frozen=True)
class Silence:
    """How long the open session has left its frames unanswered, against its limit."""

    frames: int  # frames sent and not answered
    oldest_s: float  # since the oldest of them was sent
    quiet_s: float  # since the later of that and the session's last answer
    limit_s: float
    # The p95 of the answers timed recently, each scaled to the oldest frame's bytes; before the
    # first, the plan's prediction for it.
    expected_s: float
    answers: int  # answers timed (of the last ANSWER_HISTORY)
    probation: bool

    @property
    def over(self) -> bool:
        """Whether the session has been silent for longer than its limit."""
        return self.quiet_s >= self.limit_s

    def describe(self, *, factor: float, floor_ms: float) -> str:
        """The figures that decided, for the one log line that drops the session."""
        ms = 1000.0
        expected = (
            f"the p95 of the last {self.answers} answers"
            if self.answers
            else "the plan's prediction, no answer timed yet"
        )
        why = [
            f"the limit {self.limit_s * ms:.0f} ms is the largest of the floor {floor_ms:g} ms",
            f"{factor:g} x {self.expected_s * ms:.0f} ms ({expected})",
        ]
        if self.probation:
            why.append("the frame budget (the session is on probation)")
        return (
            f"unresponsive: {self.frames} frame{'' if self.frames == 1 else 's'} unanswered, the "
            f"oldest sent {self.oldest_s * ms:.0f} ms ago, nothing answered for "
            f"{self.quiet_s * ms:.0f} ms; {', '.join(why)}"
        )


class AnswerClock:
    """The frames sent on the open session and not answered yet, and how long answers took
    (over sessions): what :meth:`silence` judges.

    Args:
        plan: the plan (its predicted answer times, before any answer is timed).
        config: the agent's settings (``unresponsive_*``, ``budget_ms``, ``window``).
    """

    def __init__(self, plan: RunnablePlan, config: EdgeConfig) -> None:
        self._config = config
        self._unanswered: dict[int, _Sent] = {}
        # How long answers took (send to answer, s) and the bytes of their frames, over sessions.
        self._answer_times: deque[tuple[float, int]] = deque(maxlen=ANSWER_HISTORY)
        self._last_answer_ns = 0  # perf_counter of the open session's last answer (0: none)
        # The plan's predicted answer time per option, before any answer is timed.
        specs = dict.fromkeys([plan.plan.choice.link, *(c.link for c in plan.plan.links)])
        self._plan_links = [state for spec in specs for state in _plan_links(spec)]
        self._predicted: dict[PlanOption, float] = {}

    @property
    def unanswered(self) -> int:
        """Frames sent on the open session and not answered yet."""
        return len(self._unanswered)

    def new_session(self) -> None:
        """A new session: nothing is in flight on it, nothing answered yet."""
        self._unanswered.clear()
        self._last_answer_ns = 0

    def sent(self, seq: int, sent_ns: int, bytes_up: int, option: PlanOption) -> None:
        """Frame ``seq`` (``bytes_up`` of ``option``) went out at ``sent_ns`` (perf_counter)."""
        self._unanswered[seq] = _Sent(sent_ns, bytes_up, self._predicted_s(option))

    def answered(self, seq: int, *, now_ns: int | None = None) -> bool:
        """The session answered ``seq``; False when it was not a frame it held."""
        sent = self._unanswered.pop(seq, None)
        if sent is None:
            return False
        now = time.perf_counter_ns() if now_ns is None else now_ns
        self._answer_times.append(((now - sent.sent_ns) / 1e9, sent.bytes_up))
        self._last_answer_ns = now
        return True

    def silence(self, *, probation: bool, now_ns: int | None = None) -> Silence | None:
        """How long the session has left its frames unanswered, and how long it may (see the
        module docstring); None when nothing is unanswered."""
        if not self._unanswered:
            return None
        config = self._config
        now = time.perf_counter_ns() if now_ns is None else now_ns
        oldest = min(self._unanswered.values(), key=lambda s: s.sent_ns)
        if self._answer_times:
            # A larger frame than the one timed takes longer on a slow link: scaled by its
            # bytes (an over-estimate on a link whose round trip is mostly latency: safe).
            scaled = [took * max(1.0, oldest.bytes_up / max(size, 1))
                      for took, size in self._answer_times]  # fmt: skip
            expected = percentile(scaled, ANSWER_PERCENTILE)
        else:
            expected = oldest.predicted_s
        limit = max(config.unresponsive_floor_ms / 1000.0, config.unresponsive_factor * expected)
        if not self._answer_times:
            limit = max(limit, config.unresponsive_first_ms / 1000.0)
            if expected <= 0.0:
                # No link of the plan to predict with: only the frame's budget is known.
                limit = max(limit, config.budget_ms / 1000.0)
        if probation:
            limit = max(limit, config.budget_ms / 1000.0)
        return Silence(
            frames=len(self._unanswered),
            oldest_s=(now - oldest.sent_ns) / 1e9,
            quiet_s=(now - max(oldest.sent_ns, self._last_answer_ns)) / 1e9,
            limit_s=limit,
            expected_s=expected,
            answers=len(self._answer_times),
            probation=probation,
        )

    def _predicted_s(self, option: PlanOption) -> float:
        """What the plan predicts a frame of ``option`` takes from send to answer on the plan's
        link: its transfer both ways and the tail."""
        predicted = self._predicted.get(option)
        if predicted is None:
            predicted = 0.0  # no link the edge can read: the frame budget decides
            for link in self._plan_links:
                price = price_option(option, link, window=self._config.window)
                predicted = max(predicted, (price.transfer_ms + price.cloud_ms) / 1000.0)
            self._predicted[option] = predicted
        return predicted


def _plan_links(spec: str) -> list[LinkModel]:
    """The link the plan was made for (each state of a trace); none when the edge cannot read
    its spec (a trace file that stayed on the planning machine, say)."""
    try:
        link = parse_link(spec)
    except (LinkError, ValueError, OSError):
        return []
    return link.states() if isinstance(link, LinkTrace) else [link]
