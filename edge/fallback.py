"""When a frame stops waiting for the cloud and is answered on the edge instead.

No frame is lost to the link while the plan ships the all-on-edge option (every plan does,
unless planned with ``--no-local``), whatever the policy: each frame keeps its input until it is
answered, and :class:`LocalFallback` decides, frame by frame, when it is computed with that
option instead:

* while there is no trusted session (none open, or one on probation after a session stopped
  answering: see :mod:`~splitwire.edge.uplink`) frames run locally (``local``, reason
  ``disconnected``), one of them also sent to see whether the session answers;
* when a session is lost (the tail died, the link dropped) the frames it held and those waiting
  to be sent are computed locally when the edge can still make their budget, else dropped
  ``stale`` (:meth:`LocalFallback.in_time`); those a session declared unresponsive held go
  ``unanswered``;
* a frame still unanswered when only the time to compute it on the edge is left of its budget
  (``FALLBACK_RESERVE`` times the plan's all-on-edge time, scaled by the edge's measured speed)
  is computed locally (``unanswered``), and one whose answer broke the plan too
  (``error:BAD_RESULT``).

Without that option (or with a delay corrector, whose local model answers every frame anyway)
such frames wait for the next session and are dropped ``disconnected`` when their budget runs
out, or ``stale`` when it ran out while a session held them.

:class:`LocalFallback` also owns each frame's two timers, set at admission: the budget
(``--budget-ms`` from capture: an unanswered frame is dropped) and the give-up time. It changes
the window and tells the uplink what ran out; the agent's compute loop computes what it queues.
"""

from __future__ import annotations

import asyncio
import logging
import time

from splitwire.edge.head_runner import HeadRunner
from splitwire.edge.uplink import BadResult, Lost, Uplink
from splitwire.edge.window import Frame, FrameWindow
from splitwire.partitioner.plan_file import PlanOption

logger = logging.getLogger("splitwire.edge")

# A frame waiting on the cloud falls back to the edge when only this many times the plan's
# all-on-edge time (scaled by the measured edge speed) is left of its budget: the whole model
# once, a head that may already hold the compute thread, and as much again for a loaded device.
FALLBACK_RESERVE = 3.0


class LocalFallback:
    """The local fallback's rules and each frame's deadlines (see the module docstring).

    The agent sets :attr:`running` to the option it runs whenever it switches.

    Args:
        running: the option the agent starts on.
        local: the plan's all-on-edge option, if it ships one.
        corrector: whether a delay corrector answers frames (then nothing falls back).
        budget_ms: each frame's budget from capture.
        window: the frames in flight.
        runner: the head runner (its measured edge speed).
        uplink: the sessions with the tail, if any.
    """

    def __init__(
        self,
        *,
        running: PlanOption,
        local: PlanOption | None,
        corrector: bool,
        budget_ms: float,
        window: FrameWindow,
        runner: HeadRunner,
        uplink: Uplink | None,
    ) -> None:
        self.running = running
        self.local = local
        self.can = local is not None and not corrector
        self._budget_ms = budget_ms
        self._window = window
        self._runner = runner
        self._uplink = uplink

    @property
    def option(self) -> PlanOption | None:
        """The option frames fall back to (None: they do not)."""
        return self.local if self.can else None

    def _connected(self) -> bool:
        return self._uplink is not None and self._uplink.connected

    def answered_here(self) -> bool:
        """Whether a frame without a session still gets an output: the option the agent runs
        is on the edge, or the agent falls back to one."""
        return self._connected() or self.running.local or self.can

    # ---- deadlines ---------------------------------------------------------------------------

    def arm(self, frame: Frame) -> None:
        """Start ``frame``'s budget, and the time it stops waiting on the cloud."""
        loop = asyncio.get_running_loop()
        frame.deadline = loop.call_later(self._budget_ms / 1000.0, self._expire, frame)
        give_up_s = self.give_up_after_s()
        if give_up_s is not None:
            frame.give_up = loop.call_later(give_up_s, self._give_up, frame)

    def give_up_after_s(self) -> float | None:
        """How long after its capture a frame stops waiting on the cloud so that it can still be
        computed on the edge within its budget (None: no fallback, or no time for it)."""
        if not self.can:
            return None
        assert self.local is not None
        scale = max(self._runner.edge_scale, 1.0)
        left_ms = self._budget_ms - FALLBACK_RESERVE * self.local.edge_ms * scale
        return left_ms / 1000.0 if left_ms > 0 else None

    def ran_out(self, frame: Frame) -> None:
        """``frame`` is lost to the open session, if any (it counts towards dropping it)."""
        if self._uplink is not None:
            self._uplink.ran_out(frame)

    def displaced(self, frame: Frame) -> None:
        """A newer capture takes ``frame``'s place."""
        self.ran_out(frame)
        reason = "window_full" if self.answered_here() else "disconnected"
        self._window.emit_dropped(frame, reason)

    def _expire(self, frame: Frame) -> None:
        if self._window.in_flight(frame):
            self.ran_out(frame)
            epoch = self._uplink.epoch if self._uplink is not None else 0
            sent = frame.state == "sent" and frame.epoch == epoch
            answered_here = self.answered_here()
            self._window.emit_dropped(frame, "stale" if sent or answered_here else "disconnected")

    def _give_up(self, frame: Frame) -> None:
        """Only the time to compute ``frame`` on the edge is left of its budget: if it is still
        waiting on the cloud, compute it here instead (when the agent may fall back)."""
        window = self._window
        if not window.in_flight(frame) or frame.emitted or frame.state not in ("ready", "sent"):
            return
        if not self.can:
            return  # it waits for its answer until its budget runs out (then stale)
        self.ran_out(frame)
        window.fall_back(frame, "unanswered" if self._connected() else "disconnected")

    # ---- falling back ------------------------------------------------------------------------

    def in_time(self, frame: Frame, reason: str) -> None:
        """Compute ``frame`` on the edge when the local path can still make its budget (behind
        the frames already waiting for it); else drop it ``stale``, its budget would be
        missed."""
        assert self.local is not None
        scale = max(self._runner.edge_scale, 1.0)
        needed_ms = self.local.edge_ms * scale * (len(self._window.fallback) + 1)
        left_ms = self._budget_ms - (time.perf_counter_ns() - frame.captured_ns) / 1e6
        if left_ms >= needed_ms and frame.pixels is not None:
            self._window.fall_back(frame, reason)
        else:
            self._window.emit_dropped(frame, "stale")

    def session_lost(self, lost: Lost) -> None:
        """The session is gone (the tail died, the link dropped, it stopped answering): the
        frames it held, and those waiting to be sent, are answered on the edge when they can
        be (else they wait for the next session, or their budget). Those an unresponsive
        session held go ``unanswered``, the others ``disconnected``."""
        if not self.can:
            return
        waiting = list(self._window.ready)
        for frame in waiting:
            held = lost.unresponsive and frame.epoch == lost.epoch
            self.in_time(frame, "unanswered" if held else "disconnected")
        if waiting:
            logger.info("%d frames in flight go to the edge's own model", len(waiting))

    def bad_result(self, event: BadResult) -> None:
        """The tail answered a frame with a result that breaks the plan or the protocol: the
        frame is computed on the edge if it may be, else dropped (the session is dropped next,
        with the refusal as the reason in its log line)."""
        refused = event.refused
        frame = self._window.frames.get(refused.seq)
        sent_here = frame is not None and frame.state == "sent" and frame.epoch == event.epoch
        if frame is None or not sent_here or frame.capture_ts_ns != refused.capture_ts_ns:
            return
        if self.can and not frame.emitted:
            self._window.fall_back(frame, "error:BAD_RESULT")
        else:
            self._window.emit_dropped(frame, "error:BAD_RESULT")

    def probation_probe(self, option: PlanOption) -> PlanOption | None:
        """While the open session is on probation, the option to send a frame answered here
        with as well (one at a time: the session is trusted again once it answers one); None
        when no frame should go."""
        uplink = self._uplink
        if uplink is None or not uplink.connected or uplink.trusted or uplink.unanswered:
            return None
        if any(f.probe is not None for f in self._window.ready):
            return None  # one is on its way out already
        return option if uplink.served(option) else None
