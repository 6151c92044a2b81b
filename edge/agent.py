"""The edge agent: paces a camera, runs the head, streams the activations to the tail and
emits exactly one output line per frame, whatever the network does.

    agent = EdgeAgent(EdgeConfig(plan=Path("plans/r18"), cloud="10.0.0.2:8500", fps=15))
    summary = await agent.run()        # until --frames, the source's end, or request_stop()

The pipeline (asyncio; the head and the codec run in one worker thread, as on a one-core
device)::

    source -> admit -> [pending] -> preprocess + head + encode -> [ready] -> send
                                                      receive -> check -> emit (one line)

The agent is a few objects, and this module holds the loops that drive them and the policy
that picks each frame's option: the frame window (:mod:`~.window`: frames in flight, queues,
lines, waiting), the head runner (:mod:`~.head_runner`: heads, codec, warm-up, edge speed), the
uplink (:mod:`~.uplink`: sessions, sending, a session that stopped answering, events), the local
fallback (:mod:`~.fallback`: budgets, and when a frame is answered on the edge instead) and the
view (:mod:`~.view`: status, telemetry, desired plans, the summary; :mod:`~.control`'s shapes).

Every frame gets exactly one line: answered (``remote``, ``local``, ``fused``) or ``dropped``
with its reason (``stale``, ``window_full``, ``disconnected``, ...); :mod:`~.fallback` says when
a frame the cloud does not answer is computed on the edge instead.

With a delay corrector (``--corrector DIR``, :mod:`~splitwire.edge.correction`) a frame's output
does not wait for its remote answer: it is fused right after the head with the newest remote
features held, and its own answer, when it comes, feeds the frames after it.

Under the ``auto`` policy the agent prices the plan's options on the link it measures
(:mod:`~splitwire.edge.link_monitor`, :mod:`~splitwire.edge.policy`) and switches at a frame
boundary; while running all-on-edge with a session open, one frame a second goes to the cloud
so the link stays measured.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import IO, Any

import torch

from splitwire.edge.answers import Answers
from splitwire.edge.config import CloudRefused, EdgeConfig
from splitwire.edge.fallback import LocalFallback
from splitwire.edge.head_runner import AgentExecutors, Computed, CorrectedFrame, HeadRunner
from splitwire.edge.link_monitor import LinkMonitor
from splitwire.edge.policy import CutPolicy, CutSwitch, PolicySettings, option_label
from splitwire.edge.records import RecordWriter, RunStats
from splitwire.edge.sources import FrameSource
from splitwire.edge.startup import (
    open_corrector,
    open_edge_plan,
    open_plan_source,
    open_scorer,
    read_token,
    starting_option,
    starting_reason,
)
from splitwire.edge.uplink import (
    Answer,
    BadResult,
    Connected,
    FrameRefusal,
    Lost,
    Opened,
    SessionRefused,
    Uplink,
)
from splitwire.edge.view import AgentView
from splitwire.edge.window import Frame, FrameWindow
from splitwire.errors import SplitwireError
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol.peer_text import peer_text

__all__ = ["AgentExecutors", "EdgeAgent"]

logger = logging.getLogger("splitwire.edge")

# While running all-on-edge with a session open: how often a frame goes remote to keep the
# link measured (without samples, the policy could never move back off the edge).
PROBE_INTERVAL_S = 1.0
# How often the auto policy looks at the link between frames: when frames stop being answered
# the compute loop waits on the window, and the policy must still see the link go.
POLICY_TICK_S = 0.1


class EdgeAgent:
    """One edge agent run (see the module docstring).

    Args:
        config: the agent's settings.
        plan: the plan, if already open (default: ``config.plan``, checked against
            ``config.plan_public_key``).
        source: the frame source (default: ``config.source`` opened at the plan's input size).
        output: where frame lines go (None: nowhere).
        monitor: the link estimator (tests substitute one to drive the adaptive policy).
        executors: the compute and source threads (default: a pair of its own).
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        plan: RunnablePlan | None = None,
        source: FrameSource | None = None,
        output: IO[str] | None = None,
        monitor: LinkMonitor | None = None,
        executors: AgentExecutors | None = None,
    ) -> None:
        self.config = config
        self.plan = plan or open_edge_plan(config)
        self.edge_id = config.edge_id
        self.option = starting_option(config, self.plan)
        self.source = source or open_plan_source(config, self.plan)
        self.corrector = corrector = open_corrector(config, self.plan)
        self.scorer = open_scorer(self.source, self.plan)
        self.monitor = monitor or LinkMonitor()
        self.stats = RunStats()
        self.window = FrameWindow(
            size=config.window,
            writer=RecordWriter(output),
            stats=self.stats,
            scorer=self.scorer,
            task=self.plan.plan.task,
        )
        self.policy_mode = config.policy or ("auto" if len(self.plan.options) > 1 else "fixed")
        self._policy = CutPolicy(
            self.plan.options,
            objective=self.plan.plan.objective,
            accuracy_budget=self.plan.plan.accuracy_budget,
            demand_fps=config.fps,
            settings=PolicySettings(margin=config.margin, hold_s=config.hold_s),
            window=config.window,
        )
        token = read_token(config)
        self._owns_executors = executors is None
        self.runner = HeadRunner(
            self.plan,
            threads=config.threads,
            edge_slowdown=config.edge_slowdown,
            executors=executors or AgentExecutors.new(),
            corrector=corrector,
            scoring=self.scorer is not None,
        )
        # A plan that only runs on the edge has nothing to send: no session, even with --cloud.
        remote = [o for o in self.plan.options if not o.local]
        self.uplink: Uplink | None = None
        if config.cloud is not None and remote:
            self.uplink = Uplink(config, self.plan, self.window, token=token)
            self.uplink.prefer(self.option)
        self.fallback = LocalFallback(
            running=self.option,
            local=next((o for o in self.plan.options if o.local), None),
            corrector=corrector is not None,
            budget_ms=config.budget_ms,
            window=self.window,
            runner=self.runner,
            uplink=self.uplink,
        )
        self.view = AgentView(self)
        self._stopping = False
        self._fatal: CloudRefused | None = None
        self._prepared = False
        self._last_remote_s = -math.inf
        self.started_s = time.monotonic()
        self.switches: list[CutSwitch] = []

    def _connected(self) -> bool:
        return self.uplink is not None and self.uplink.connected

    def _trusted(self) -> bool:
        """Whether a session is open and trusted with frames (not on probation after a session
        stopped answering)."""
        return self.uplink is not None and self.uplink.trusted

    async def prepare(self) -> None:
        """Load every head the agent may run and call each once (first calls are slow), on its
        compute thread. :meth:`run` does it first unless it was done: agents that share a
        thread warm up before any of them streams, so no warm-up delays another's frames."""
        if not self._prepared:
            runs = [o for o in self.plan.options if o.local or self.config.cloud is not None]
            started = time.monotonic()
            logger.info("warming up %d option%s (%s)", len(runs), "" if len(runs) == 1 else "s",
                        ", ".join(option_label(o) for o in runs))  # fmt: skip
            await self.runner.prepare(runs)
            logger.debug("warmed up in %.1f s", time.monotonic() - started)
            self._prepared = True

    # ---- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run until ``--frames`` frames, the end of the source, or :meth:`request_stop`; then
        drain the frames in flight (within ``grace_s``) and return the run's summary.

        Raises:
            CloudRefused: the cloud refused the session for good (every frame was still
                emitted, as ``dropped`` with the reject's code).
        """
        self.window.open()
        await self.prepare()
        self.started_s = time.monotonic()
        workers = [asyncio.create_task(self._compute_loop(), name="edge-compute")]
        try:
            if self.uplink is not None:
                logger.info("connecting to %s", self.uplink.cloud)
                first = await self.uplink.first_session()
                workers.append(asyncio.create_task(self.uplink.send_loop(), name="edge-send"))
                workers.append(asyncio.create_task(self.uplink.watch_loop(), name="edge-watch"))
                workers.append(asyncio.create_task(self._session_loop(first), name="edge-session"))
                workers.append(asyncio.create_task(self._policy_loop(), name="edge-policy"))
            for task in workers:
                task.add_done_callback(self._worker_done)
            why = starting_reason(self.config, self.plan, self.option, policy=self.policy_mode,
                                  fallback=self.fallback.option)  # fmt: skip
            logger.info("starting on %s: %s", option_label(self.option), why)
            await self._source_loop()
            await self._drain()
        finally:
            if self.uplink is not None:
                await self.uplink.close()
            for task in workers:
                task.cancel()
            # A worker's own failure is already on its way up (through wait); here it must
            # not cut the clean-up short.
            await asyncio.gather(*workers, return_exceptions=True)
            if self._owns_executors:
                self.runner.executors.shutdown()
        summary = self.summary()
        if self._fatal is not None:
            raise self._fatal
        return summary

    def request_stop(self) -> None:
        """Stop reading the source; :meth:`run` drains what is in flight and returns."""
        if not self._stopping:
            logger.info("stopping: no new frames; draining %d in flight", len(self.window.frames))
        self._stopping = True
        self.window.wake()

    def summary(self) -> dict[str, Any]:
        """The run's figures so far (the summary ``run`` returns)."""
        return self.view.summary()

    async def _source_loop(self) -> None:
        loop = asyncio.get_running_loop()
        frames = iter(self.source)
        interval = 1.0 / self.config.fps if self.config.fps else None
        next_at = time.monotonic()
        count = 0
        while not self._stopping and (self.config.frames is None or count < self.config.frames):
            if interval is None:
                await self.window.wait(lambda: self.window.has_room() or self._stopping)
            else:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await self.window.sleep(delay, unless=lambda: self._stopping)
                # A camera that fell behind does not catch up with a burst of old frames.
                next_at = max(next_at + interval, time.monotonic())
            if self._stopping:
                break
            source = self.runner.executors.source
            pixels = await loop.run_in_executor(source, next, frames, None)
            if pixels is None:
                logger.info("source %s ended after %d frames", self.source.description, count)
                break
            self._admit(pixels)
            count += 1

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.config.grace_s):
                await self.window.wait(lambda: not self.window.frames)
        except TimeoutError:
            logger.warning(
                "%d frames still unanswered after the %g s grace period",
                len(self.window.frames),
                self.config.grace_s,
            )
            for frame in list(self.window.frames.values()):
                self.window.emit_dropped(frame, "shutdown")

    def _admit(self, pixels: torch.Tensor) -> None:
        frame = self.window.capture(pixels)
        if self._fatal is not None:
            self.window.emit_dropped(frame, f"error:{self._fatal.code}")
            return
        replaced = self.window.displaced()
        if replaced is not None:
            self.fallback.displaced(replaced)
        self.window.admit(frame)
        self.fallback.arm(frame)

    # ---- edge compute ----------------------------------------------------------------------

    async def _compute_loop(self) -> None:
        window = self.window
        while True:
            # A frame the edge answers alone needs no place in the window: after a switch to
            # all-on-edge it must not wait for frames stuck on a link that just slowed down.
            await window.wait(lambda: bool(window.fallback) or (bool(window.pending) and (
                window.started() < window.size or self.option.local)))  # fmt: skip
            if window.fallback:
                # Already late: these go before new frames.
                await self._compute_fallback(window.fallback.popleft())
                continue
            frame = window.pending.popleft()
            self._consider_switch()
            option, fallback, probe = self._route()
            if probe is not None:
                why = "disconnected" if fallback else "all-on-edge"
                await self._compute_probe(frame, option, probe, reason=why)
                continue
            frame.state, frame.option, frame.fallback = "computing", option, fallback
            # With a corrector, a frame the cloud cannot take (no session) needs no head.
            correct = self.corrector is not None and not option.local
            remote = not correct or self._connected()
            corrected = CorrectedFrame(frame.seq, frame.captured_ns) if correct else None
            computed = await self._compute(frame, option, corrected=corrected, remote=remote)
            if computed is None:
                continue
            if option is self.option and remote:
                self.runner.observe(option, computed)
            if option.local:
                reason = "disconnected" if fallback else "all-on-edge"
                window.emit(frame, "local", reason, outputs=computed.outputs)
                continue
            if computed.correction is not None:
                frame.bytes_up = computed.bytes_up
                window.emit_corrected(frame, computed.correction)
                if not remote:
                    window.retire(frame)
                    continue
                if len(window.ready) >= window.size:
                    # The uplink is behind: the newest frame's features are worth more than
                    # the oldest unsent one's (whose output is out already).
                    window.retire(window.ready[0])
                    self.stats.uplink_skipped += 1
            frame.encoded, frame.bytes_up = computed.encoded, computed.bytes_up
            if not self._trusted() and self.fallback.can:
                # The session went (or stopped answering) while the head ran: no waiting.
                self.fallback.in_time(frame, "disconnected")
                continue
            window.to_send(frame)

    async def _compute(self, frame: Frame, option: PlanOption, **how: Any) -> Computed | None:
        """``frame`` under ``option`` on the compute thread; None when it failed (emitted as
        ``error:EDGE``) or its budget ran out meanwhile."""
        assert frame.pixels is not None
        try:
            computed = await self.runner.run(option, frame.pixels, **how)
        except SplitwireError as exc:
            logger.error("frame %d: %s", frame.seq, exc)
            self.window.emit_dropped(frame, "error:EDGE")
            return None
        if not self.window.in_flight(frame):
            return None  # its budget ran out while the head ran
        frame.head_ms, frame.encode_ms = computed.head_ms, computed.encode_ms
        return computed

    async def _compute_fallback(self, frame: Frame) -> None:
        """A frame the cloud did not answer in time (or answered wrongly), computed with the
        all-on-edge option and emitted ``local`` with the reason it fell back."""
        option = self.fallback.option
        assert option is not None and frame.fallback_reason is not None
        frame.state, frame.option, frame.fallback = "computing", option, True
        computed = await self._compute(frame, option)
        if computed is not None:
            self.window.emit(frame, "local", frame.fallback_reason, outputs=computed.outputs)

    async def _compute_probe(
        self, frame: Frame, local: PlanOption, probe: PlanOption, *, reason: str
    ) -> None:
        """A frame answered on the edge (with ``local``, emitted at once as ``local`` for
        ``reason``) whose copy sent with ``probe`` only feeds the link monitor, or shows that
        a session on probation answers."""
        frame.state, frame.option = "computing", local
        here = await self._compute(frame, local)
        if here is None:
            return
        sent = await self._compute(frame, probe)
        if sent is None:
            return
        frame.head_ms, frame.encode_ms, frame.probe = here.head_ms, here.encode_ms, probe
        self.window.write(frame, "local", reason, outputs=here.outputs)
        frame.option, frame.encoded, frame.pixels = probe, sent.encoded, None
        frame.bytes_up = sent.bytes_up
        self.window.to_send(frame)

    # ---- the policy ------------------------------------------------------------------------

    def _route(self) -> tuple[PlanOption, bool, PlanOption | None]:
        """The option the next frame runs, whether it is the local fallback, and the option a
        copy of it is also sent with, if any: a probe that keeps the link measured while the
        agent runs all-on-edge, or shows whether a session on probation answers."""
        option = self.option
        if option.local:
            return option, False, self._probe_option()
        local = self.fallback.option
        if not self._trusted() and local is not None:
            return local, True, self.fallback.probation_probe(option)
        return option, False, None

    def _probe_option(self) -> PlanOption | None:
        if self.uplink is None or not self.uplink.connected or self.policy_mode != "auto":
            return None
        if time.monotonic() - self._last_remote_s < PROBE_INTERVAL_S:
            return None
        usable = [o for o in self.plan.options if not o.local and self.uplink.served(o)]
        if not usable:
            return None
        self._last_remote_s = time.monotonic()  # one probe in flight at a time, at most
        link = self.measured_link()
        if link is None:
            return min(usable, key=lambda o: o.bytes_up)
        prices = self._policy.prices(link, edge_scale=self.runner.edge_scale)
        return min(usable, key=lambda o: self._policy.score(prices[o]))

    def _served(self, option: PlanOption) -> bool:
        return option.local or (self.uplink is not None and self.uplink.served(option))

    def measured_link(self) -> LinkModel | None:
        """The link monitor's estimate, bounded by how long the oldest frame in flight has
        gone unanswered."""
        epoch = self.uplink.epoch if self.uplink is not None else 0
        return self.monitor.link(oldest=self.window.oldest_sent(epoch))

    async def _policy_loop(self) -> None:
        while True:
            await asyncio.sleep(POLICY_TICK_S)
            self._consider_switch()

    def _consider_switch(self) -> None:
        if self.policy_mode != "auto" or not self._trusted():
            return
        link = self.measured_link()
        if link is None:
            return
        scale = self.runner.edge_scale
        switch = self._policy.consider(
            self.option, link, now_s=time.monotonic(), edge_scale=scale, usable=self._served
        )
        if switch is not None:
            self._switch(switch)

    def _switch(self, switch: CutSwitch) -> None:
        logger.info("switching %s -> %s: %s", option_label(switch.old), option_label(switch.new),
                    switch.reason)  # fmt: skip
        self.switches.append(switch)
        self.option = self.fallback.running = switch.new
        if self.uplink is not None:
            self.uplink.prefer(switch.new)
        self.runner.new_option()

    def set_option(self, option: PlanOption, *, reason: str, policy: str = "fixed") -> None:
        """Run ``option`` from the next frame on, under ``policy`` (what a desired plan does)."""
        self.policy_mode = policy
        if option != self.option:
            self._switch(CutSwitch(time.monotonic(), self.option, option, reason))

    # ---- what the tail answers (edge/answers.py) -------------------------------------------

    async def _session_loop(self, first: Opened | None) -> None:
        assert self.uplink is not None
        answers = Answers(window=self.window, monitor=self.monitor, corrector=self.corrector,
                          uplink=self.uplink)  # fmt: skip
        async for event in self.uplink.events(first):
            if isinstance(event, Answer):
                if answers.result(event):
                    self._last_remote_s = time.monotonic()
            elif isinstance(event, FrameRefusal):
                answers.refusal(event)
            elif isinstance(event, BadResult):
                self.fallback.bad_result(event)
            elif isinstance(event, Connected):
                if not self.uplink.served(self.option):
                    served = peer_text(", ".join(event.accept.cut_ids[:8]))
                    logger.warning(
                        "the server does not serve cut %s (it serves %s)", self.option.cut, served
                    )
            elif isinstance(event, Lost):
                self.fallback.session_lost(event)
            elif isinstance(event, SessionRefused):
                self._refused(event.error)

    def _refused(self, exc: CloudRefused) -> None:
        logger.error("%s", exc)
        self._fatal = exc
        for frame in list(self.window.frames.values()):
            self.window.emit_dropped(frame, f"error:{exc.code}")
        self.request_stop()

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        # A pipeline task that raises (a bug, or the output closed under us) must end the run,
        # not leave every other loop waiting forever for it.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.window.fail(exc)
