"""The edge agent: paces a camera, runs the head, streams the activations to the tail and
emits exactly one output line per frame, whatever the network does.

    agent = EdgeAgent(EdgeConfig(plan=Path("plans/r18"), cloud="10.0.0.2:8500", fps=15))
    summary = await agent.run()        # until --frames, the source's end, or request_stop()

The pipeline (asyncio; the head and the codec run in one worker thread, as on a one-core
device)::

    source -> admit -> [pending] -> preprocess + head + encode -> [ready] -> send
                                                      receive -> check -> emit (one line)

The window bounds the frames in flight (computing, encoded, or sent and unanswered). One more
frame, the newest, may wait for a place: a camera wants its latest frame, so a newer capture
replaces it, and when the window is full of frames the edge has not sent yet (the network is
slower than the head), the newest frame replaces the oldest of those. A replaced frame is
emitted as ``dropped``. Every frame has a budget (``--budget-ms`` from capture): the cloud is
told the rest of it as the frame's queue budget, and a frame unanswered when it runs out is
emitted as ``dropped`` (``stale``, or ``disconnected`` while there is no session), so no frame
waits forever and none vanishes.

Sessions: a broken stream, a server restart or ``SessionEnd UNAVAILABLE`` starts a reconnect
loop (exponential backoff with jitter, capped); frames that were in flight go back to the
ready queue and are sent again on the new session if their budget allows. A result for a frame
already emitted (a late duplicate) is ignored and counted. A reject that retrying cannot fix
(``PLAN_MISMATCH``, ``UNAUTHENTICATED``, ...) ends the run with :class:`CloudRefused`.

The tail is a peer, not a friend. Each frame is sent with the exact outputs its answer must
carry (the plan's, at the frame's batch), and the session's result limits come from the plan
(:func:`~splitwire.protocol.client.result_limits`), so a result that disagrees is refused from
its headers, before anything is buffered or decoded: the frame fails (``error:BAD_RESULT``) and
the session is dropped. A session that answered nothing counts as a failed attempt, so a tail
that accepts and hangs up at once is retried with the same capped backoff as one that cannot
be reached, and its ``retry_after_ms`` never waits longer than the cap (``reconnect_max_s``).
A tail that accepts frames and never answers costs each frame its budget at most, and after
``max_unanswered`` frames in a row were lost to it without a single answer (sent and run out
of time; or, once it holds every slot with such frames, run out or replaced while waiting to be
sent) the session is dropped.

With a delay corrector (``--corrector DIR``, :mod:`~splitwire.edge.correction`) a frame's output
does not wait for its remote answer: right after the head, the local model's features of the
frame are fused with the newest remote features the agent holds and emitted (``fused``, or
``local`` when there are none fresh enough); the frame stays in flight only for its remote
answer, which feeds the frames after it. While there is no session such frames skip the head.

Under the ``auto`` policy the agent prices the plan's options on the link it measures
(:mod:`~splitwire.edge.link_monitor`, :mod:`~splitwire.edge.policy`) and switches at a frame
boundary; while the cloud is unreachable and the plan ships an all-on-edge option, frames are
computed locally (``local``, reason ``disconnected``) instead of waiting, and a frame still
unanswered (or refused) when only the time to compute it on the edge is left of its budget is
computed locally too (``local``, reason ``unanswered`` or ``error:BAD_RESULT``); while running
all-on-edge with a session open, one frame a second goes to the cloud so the link stays
measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import torch

from splitwire.edge.config import CloudRefused, EdgeConfig, EdgeConfigError
from splitwire.edge.correction import Correction, FrameCorrector, SegmentationScore
from splitwire.edge.link_monitor import FrameTiming, LinkMonitor, Unanswered
from splitwire.edge.policy import CutPolicy, CutSwitch, PolicySettings, option_label
from splitwire.edge.records import FrameRecord, RecordWriter, RunStats
from splitwire.edge.results import summarise_outputs
from splitwire.edge.sources import FrameSource, open_source
from splitwire.errors import SplitwireError
from splitwire.partitioner.errors import PlanError, PlanSignatureError, SigningKeyError
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.partitioner.signing import PlanTrust, log_trust
from splitwire.protocol import PROTOCOL_VERSION, CodecSpec, EncodedTensor, encode
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import (
    ExpectedTensor,
    ResultRefused,
    SessionClient,
    SessionClosed,
    SessionError,
    SessionFrameError,
    SessionRejected,
    SessionResult,
    code_name,
    open_channel,
    result_limits,
    server_text,
)
from splitwire.protocol.framing import FrameLimits
from splitwire.protocol.peer_text import peer_text

logger = logging.getLogger("splitwire.edge")

# Rejects that retrying cannot fix: the agent stops with CloudRefused.
FATAL_REJECTS = frozenset(
    {pb.PLAN_MISMATCH, pb.UNAUTHENTICATED, pb.UNSUPPORTED_VERSION, pb.INVALID_ARGUMENT}
)
# While running all-on-edge with a session open: how often a frame goes remote to keep the
# link measured (without samples, the policy could never move back off the edge).
PROBE_INTERVAL_S = 1.0
# How often the auto policy looks at the link between frames: when frames stop being answered
# the compute loop waits on the window, and the policy must still see the link go.
POLICY_TICK_S = 0.1
# Frames of a new option the edge-speed estimate waits for (the first calls are slow).
EDGE_SCALE_WARMUP = 3
# Heads planned faster than this say little about the edge's speed (fixed costs dominate:
# preprocessing, the codec's per-call cost), and the scale stays within these bounds.
EDGE_SCALE_MIN_PLANNED_MS = 5.0
EDGE_SCALE_BOUNDS = (0.2, 5.0)
HELLO_TIMEOUT_S = 5.0
# A frame waiting on the cloud falls back to the edge when only this many times the plan's
# all-on-edge time (scaled by the measured edge speed) is left of its budget: the whole model
# once, a head that may already hold the compute thread, and as much again for a loaded device.
FALLBACK_RESERVE = 3.0
# The longest replica name kept from an Accept (it goes into every frame line and telemetry).
MAX_SERVER_ID_CHARS = 64


@dataclass(eq=False)
class _Frame:
    seq: int
    capture_ts_ns: int  # wall clock: echoed by the cloud, printed for correlation
    captured_ns: int  # perf_counter: latencies
    pixels: torch.Tensor | None = field(repr=False)
    state: str = "pending"  # pending -> computing -> ready -> sent
    option: PlanOption | None = None
    encoded: list[EncodedTensor] = field(default_factory=list, repr=False)
    bytes_up: int = 0
    head_ms: float | None = None
    encode_ms: float | None = None
    sent_ns: int = 0
    epoch: int = 0
    fallback: bool = False  # computed locally because the cloud was away
    deadline: asyncio.TimerHandle | None = None
    give_up: asyncio.TimerHandle | None = None  # when it stops waiting on the cloud
    fallback_reason: str | None = None  # why it is (being) computed on the edge instead
    emitted: bool = False  # its output line is out (a corrected frame awaiting its answer)
    emitted_ns: int = 0  # perf_counter when it was
    probe: PlanOption | None = None  # a local frame also sent with this option to measure


@dataclass(frozen=True)
class _Computed:
    encoded: list[EncodedTensor]
    outputs: tuple[torch.Tensor, ...]
    head_ms: float
    encode_ms: float
    correction: Correction | None = None


@dataclass(frozen=True)
class AgentExecutors:
    """The threads an agent runs its heads and reads its source on: one each. Agents that
    emulate a fleet inside one process share one pair; a pair per agent would be hundreds of
    threads contending for the interpreter lock, starving the event loop that carries every
    session."""

    compute: ThreadPoolExecutor
    source: ThreadPoolExecutor

    @classmethod
    def new(cls) -> AgentExecutors:
        return cls(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="splitwire-head"),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="splitwire-source"),
        )

    def shutdown(self) -> None:
        self.compute.shutdown(wait=True)
        self.source.shutdown(wait=False, cancel_futures=True)


def _open_plan(config: EdgeConfig) -> RunnablePlan:
    """``config.plan``, refused unless signed by ``--plan-public-key`` when one is given."""
    try:
        trust = PlanTrust.from_public_key(config.plan_public_key)
    except SigningKeyError as exc:
        raise EdgeConfigError(f"--plan-public-key: {exc}") from exc
    log_trust(trust, [config.plan])
    try:
        return open_plan(config.plan, trust=trust)
    except PlanSignatureError as exc:
        raise EdgeConfigError(f"--plan {config.plan}: {exc}") from exc


class EdgeAgent:
    """One edge agent run (see the module docstring).

    Args:
        config: the agent's settings.
        plan: the plan, if already open (default: ``config.plan``, checked against
            ``config.plan_public_key``).
        source: the frame source (default: ``config.source`` opened at the plan's input size).
        output: where frame lines go (None: nowhere).
        monitor: the link estimator (tests substitute one to drive the adaptive policy).
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
        self.plan = plan or _open_plan(config)
        self.edge_id = config.edge_id
        self._source = source or self._open_source()
        self._writer = RecordWriter(output)
        self._corrector = self._open_corrector()
        self._score = self._open_score()
        self.monitor = monitor or LinkMonitor()
        self.stats = RunStats()
        self._local_option = next((o for o in self.plan.options if o.codec == "none"), None)
        self.option = self._starting_option()
        self.policy_mode = config.policy or ("auto" if len(self.plan.options) > 1 else "fixed")
        self._policy = CutPolicy(
            self.plan.options,
            objective=self.plan.plan.objective,
            accuracy_budget=self.plan.plan.accuracy_budget,
            demand_fps=config.fps,
            settings=PolicySettings(margin=config.margin, hold_s=config.hold_s),
            window=config.window,
        )
        if self._needs_cloud() and config.cloud is None:
            raise EdgeConfigError(
                f"option {option_label(self.option)} runs its tail in the cloud: give --cloud "
                "HOST:PORT (only an all-on-edge plan runs without one)"
            )
        self._token = config.read_token()
        if self._token is not None and config.tls is None and config.cloud is not None:
            logger.warning(
                "the bearer token goes to %s without TLS: anyone on the path can read it and "
                "use it; give --tls-ca (the tail's CA) to encrypt the session",
                config.cloud,
            )
        self._result_limits = self._limits_of_results()
        self._frames: dict[int, _Frame] = {}
        self._pending: deque[_Frame] = deque()
        self._ready: deque[_Frame] = deque()
        # Frames that stopped waiting on the cloud and are computed on the edge next.
        self._fallback: deque[_Frame] = deque()
        self._next_seq = 1
        self._session: SessionClient | None = None
        self._accept: pb.Accept | None = None
        self._epoch = 0
        # Seqs sent on the current session that the server has not answered yet.
        self._unanswered: set[int] = set()
        # Whether the current session answered anything, and how many frames in a row ran out
        # of time waiting on it since it last did.
        self._session_answered = False
        self._silent_frames = 0
        # Of those unanswered seqs, the ones whose frames ran out of time.
        self._overdue: set[int] = set()
        self._server_id: str | None = None
        self._stopping = False
        self._closing = False
        self._fatal: CloudRefused | None = None
        self._failed: BaseException | None = None  # a pipeline task died (see _worker_done)
        self._wake_event: asyncio.Event | None = None
        self._prepared = False
        self._owns_executors = executors is None
        self._executors = executors or AgentExecutors.new()
        self._edge_scale = 1.0
        self._scale_frames = 0
        self._last_remote_s = -math.inf
        self._started_s = time.monotonic()
        self.switches: list[CutSwitch] = []
        self.reconnects = 0
        self.connected_since: float | None = None

    # ---- setup -----------------------------------------------------------------------------

    def _open_source(self) -> FrameSource:
        frame = self.plan.camera_frame()
        _, channels, height, width = frame.shape
        return open_source(
            self.config.source,
            channels=channels,
            height=height,
            width=width,
            seed=self.config.seed,
            loop=self.config.loop,
        )

    def _open_corrector(self) -> FrameCorrector | None:
        if self.config.corrector is None:
            return None
        from splitwire.corrector import CorrectorError, load_corrector

        split = next((o for o in self.plan.options if o.codec != "none"), None)
        if split is None:
            raise EdgeConfigError(
                "--corrector: the plan runs everything on the edge, so there are no remote "
                "features to fuse; plan a split of the corrector's heavy model"
            )
        try:
            corrector = load_corrector(self.config.corrector, fusion=self.config.corrector_fusion)
            interval = round(1e9 / self.config.fps) if self.config.fps else None
            frame_corrector = FrameCorrector(
                corrector, outputs=self.plan.outputs(split.cut), frame_interval_ns=interval
            )
        except (CorrectorError, ValueError) as exc:
            raise EdgeConfigError(f"--corrector {self.config.corrector}: {exc}") from exc
        logger.info(
            "delay corrector %s (fusion %s): remote features up to %d frames old are fused",
            self.config.corrector,
            corrector.fusion,
            corrector.tau_max,
        )
        return frame_corrector

    def _open_score(self) -> SegmentationScore | None:
        if not self._source.labelled:
            return None
        outputs = self.plan.outputs(self.plan.options[0].cut)
        return SegmentationScore(int(outputs[0].shape[1]))

    def _starting_option(self) -> PlanOption:
        if not self.plan.options:
            raise EdgeConfigError(f"plan {self.plan.directory} ships no options to run")
        c = self.config
        if c.cut is not None or c.codec is not None:
            cut = c.cut or self.plan.plan.choice.cut
            codec = c.codec or next(o.codec for o in self.plan.options if o.cut == cut)
            try:
                return self.plan.option(cut, codec)
            except PlanError as exc:
                raise EdgeConfigError(f"--cut/--codec: {exc}") from exc
        choice = self.plan.plan.choice
        for option in self.plan.options:
            chosen = (option.cut, option.codec) == (choice.cut, choice.codec)
            if chosen and (option.codec == "none" or c.cloud is not None):
                return option
        if c.cloud is None and self._local_option is not None:
            return self._local_option
        return self.plan.options[0]

    def _needs_cloud(self) -> bool:
        return self.option.codec != "none"

    def _limits_of_results(self) -> FrameLimits | None:
        """What a session may receive: the largest answer of any option the agent may send
        (it switches cut mid-session), one partial result per frame in flight."""
        batch = max(self.plan.plan.input_shape[0], 1)
        answers = [
            self._expected(option.cut, batch)
            for option in self.plan.options
            if option.codec != "none"
        ]
        return result_limits(answers, in_flight=self.config.window) if answers else None

    def _expected(self, cut_id: str, batch: int) -> tuple[ExpectedTensor, ...]:
        """The outputs the tail of ``cut_id`` returns for a frame of ``batch``."""
        return tuple(
            ExpectedTensor(spec.name, (batch, *spec.shape[1:]), spec.dtype)
            for spec in self.plan.outputs(cut_id)
        )

    def _can_fall_back(self) -> bool:
        """Whether a frame the cloud does not answer may be computed on the edge instead: under
        the auto policy, with an all-on-edge option shipped (a fixed policy stays on its
        option; with a corrector, its local model is the fallback)."""
        return (
            self.policy_mode == "auto"
            and self._local_option is not None
            and self._corrector is None
        )

    async def prepare(self) -> None:
        """Load every head the agent may run and call each once (first calls are slow), on its
        compute thread. :meth:`run` does it first unless it was done: agents that share a
        thread warm up before any of them streams, so no warm-up delays another's frames."""
        if not self._prepared:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executors.compute, self._prepare)
            self._prepared = True

    def _prepare(self) -> None:
        torch.set_num_threads(self.config.threads)
        frame = torch.zeros(self.plan.camera_frame().shape, dtype=torch.uint8)
        for option in self.plan.options:
            if self.config.cloud is None and option.codec != "none":
                continue
            self._compute(option, frame)
        if self._corrector is not None:
            self._corrector.correct(frame, seq=0, captured_ns=0)

    # ---- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run until ``--frames`` frames, the end of the source, or :meth:`request_stop`; then
        drain the frames in flight (within ``grace_s``) and return the run's summary.

        Raises:
            CloudRefused: the cloud refused the session for good (every frame was still
                emitted, as ``dropped`` with the reject's code).
        """
        self._wake_event = asyncio.Event()
        await self.prepare()
        self._started_s = time.monotonic()
        workers = [asyncio.create_task(self._compute_loop(), name="edge-compute")]
        try:
            # A plan that only runs on the edge has nothing to send: no session, even with --cloud.
            if self.config.cloud is not None and any(o.codec != "none" for o in self.plan.options):
                first = await self._first_session()
                workers.append(asyncio.create_task(self._send_loop(), name="edge-send"))
                workers.append(asyncio.create_task(self._session_loop(first), name="edge-session"))
                workers.append(asyncio.create_task(self._policy_loop(), name="edge-policy"))
            for task in workers:
                task.add_done_callback(self._worker_done)
            await self._source_loop()
            await self._drain()
        finally:
            self._closing = True
            await self._close_session()
            for task in workers:
                task.cancel()
            # A worker's own failure is already on its way up (through _wait); here it must
            # not cut the clean-up short.
            await asyncio.gather(*workers, return_exceptions=True)
            if self._owns_executors:
                self._executors.shutdown()
        summary = self.summary()
        if self._fatal is not None:
            raise self._fatal
        return summary

    def request_stop(self) -> None:
        """Stop reading the source; :meth:`run` drains what is in flight and returns."""
        if not self._stopping:
            logger.info("stopping: no new frames; draining %d in flight", len(self._frames))
        self._stopping = True
        self._wake()

    def summary(self) -> dict[str, Any]:
        """The run's figures so far (the summary ``run`` returns)."""
        return (
            self.stats.summary(time.monotonic() - self._started_s)
            | {
                "cut": self.option.cut,
                "codec": self.option.codec,
                "policy": self.policy_mode,
                "switches": [s.as_json() for s in self.switches],
                "reconnects": self.reconnects,
                # Inputs the source passed over as unreadable (a bad file in a dir: source).
                "source_skipped": self._source.skipped,
                # Stated in every summary: figures from an emulated device are not a device's.
                "edge_slowdown": self.config.edge_slowdown,
            }
            | self._correction_summary()
        )

    def _correction_summary(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self._corrector is not None:
            corrector = self._corrector.corrector
            extra["corrector"] = {"fusion": corrector.fusion, "tau_max": corrector.tau_max}
        if self._score is not None:
            extra["segmentation"] = self._score.summary()
        return extra

    async def _source_loop(self) -> None:
        loop = asyncio.get_running_loop()
        frames = iter(self._source)
        interval = 1.0 / self.config.fps if self.config.fps else None
        next_at = time.monotonic()
        count = 0
        while not self._stopping and (self.config.frames is None or count < self.config.frames):
            if interval is None:
                await self._wait(lambda: self._has_room() or self._stopping)
            else:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await self._sleep(delay, unless=lambda: self._stopping)
                # A camera that fell behind does not catch up with a burst of old frames.
                next_at = max(next_at + interval, time.monotonic())
            if self._stopping:
                break
            pixels = await loop.run_in_executor(self._executors.source, next, frames, None)
            if pixels is None:
                logger.info("source %s ended after %d frames", self._source.description, count)
                break
            self._admit(pixels)
            count += 1

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.config.grace_s):
                await self._wait(lambda: not self._frames)
        except TimeoutError:
            logger.warning(
                "%d frames still unanswered after the %g s grace period",
                len(self._frames),
                self.config.grace_s,
            )
            for frame in list(self._frames.values()):
                self._emit_dropped(frame, "shutdown")

    # ---- admission, deadlines, emission ----------------------------------------------------

    def _admit(self, pixels: torch.Tensor) -> None:
        frame = _Frame(
            seq=self._next_seq,
            capture_ts_ns=time.time_ns(),
            captured_ns=time.perf_counter_ns(),
            pixels=pixels.unsqueeze(0) if pixels.dim() == 3 else pixels,
        )
        self._next_seq += 1
        if self._fatal is not None:
            self._emit_dropped(frame, f"error:{_code_name(self._fatal)}")
            return
        reason = "window_full" if self._session is not None or not self._needs_cloud() else (
            "disconnected"
        )  # fmt: skip
        replaced = self._pending[0] if self._pending else None
        if replaced is None and self._started() >= self.config.window and self._ready:
            replaced = self._ready[0]
        if replaced is not None:
            self._ran_out(replaced)
            self._emit_dropped(replaced, reason)
        self._frames[frame.seq] = frame
        self._pending.append(frame)
        assert self._wake_event is not None
        loop = asyncio.get_running_loop()
        frame.deadline = loop.call_later(self.config.budget_ms / 1000.0, self._expire, frame)
        give_up_s = self._give_up_after_s()
        if give_up_s is not None:
            frame.give_up = loop.call_later(give_up_s, self._give_up, frame)
        self._wake()

    def _give_up_after_s(self) -> float | None:
        """How long after its capture a frame stops waiting on the cloud so that it can still be
        computed on the edge within its budget (None: the budget leaves no time for that)."""
        if self._local_option is None or self._corrector is not None:
            return None
        reserve_ms = FALLBACK_RESERVE * self._local_option.edge_ms * max(self._edge_scale, 1.0)
        left_ms = self.config.budget_ms - reserve_ms
        return left_ms / 1000.0 if left_ms > 0 else None

    def _started(self) -> int:
        """Frames computing, or computed and waiting for their output: the window. A corrected
        frame whose output is out waits only for features and no longer holds a place."""
        waiting = sum(1 for f in self._frames.values() if not f.emitted)
        return waiting - len(self._pending)

    def _has_room(self) -> bool:
        return not self._pending and self._started() < self.config.window

    def _expire(self, frame: _Frame) -> None:
        if frame.seq in self._frames:
            self._ran_out(frame)
            sent = frame.state == "sent" and frame.epoch == self._epoch
            connected = self._session is not None or not self._needs_cloud()
            self._emit_dropped(frame, "stale" if sent or connected else "disconnected")

    def _give_up(self, frame: _Frame) -> None:
        """Only the time to compute ``frame`` on the edge is left of its budget: if it is still
        waiting on the cloud, compute it here instead (when the agent may fall back)."""
        if frame.seq not in self._frames or frame.emitted or frame.state not in ("ready", "sent"):
            return
        if not self._can_fall_back():
            return  # it waits for its answer until its budget runs out (then stale)
        reason = "unanswered" if self._session is not None else "disconnected"
        self._ran_out(frame)
        self._fall_back(frame, reason)

    def _fall_back(self, frame: _Frame, reason: str) -> None:
        """Compute ``frame`` on the edge next (its remote answer, if any comes, is ignored)."""
        if frame in self._ready:
            self._ready.remove(frame)
        frame.state, frame.fallback_reason = "fallback", reason
        self._fallback.append(frame)
        self._wake()

    def _ran_out(self, frame: _Frame) -> None:
        """``frame`` is lost to the open session: it ran out of time unanswered after being
        sent on it, or, while the session is blocked (the tail holds every in-flight slot with
        such frames, so nothing can be sent until it answers), it ran out of time or gave way
        waiting to be sent. Each counts as one more frame in a row the session left
        unanswered; at ``max_unanswered`` the session is dropped: the tail takes frames and
        does not answer them. Any answer resets the count (see :meth:`_answered`)."""
        if self._session is None:
            return
        if frame.state == "sent" and frame.epoch == self._epoch:
            self._overdue.add(frame.seq)
        elif (
            frame.emitted  # a corrected frame not sent: its output is out, nothing was lost
            or frame.state not in ("pending", "ready")
            or len(self._overdue) < self._send_limit()
        ):
            return
        self._silent_frames += 1
        if self._silent_frames >= self.config.max_unanswered:
            self._lose(
                self._epoch,
                f"{self._silent_frames} frames in a row were lost without an answer: the tail "
                "takes frames and does not answer them",
            )

    def _emit_dropped(self, frame: _Frame, reason: str) -> None:
        self._emit(frame, "dropped", reason)

    def _emit(
        self,
        frame: _Frame,
        source: str,
        reason: str | None,
        *,
        outputs: tuple[torch.Tensor, ...] | None = None,
        rtt_ms: float | None = None,
        cloud_ms: float | None = None,
        batch_size: int | None = None,
        server: str | None = None,
    ) -> None:
        """Write the frame's line (unless a corrected output already went out) and retire it."""
        self._retire(frame)
        if not frame.emitted:
            self._write(frame, source, reason, outputs=outputs, rtt_ms=rtt_ms,
                        cloud_ms=cloud_ms, batch_size=batch_size, server=server)  # fmt: skip
        frame.pixels, frame.encoded = None, []

    def _retire(self, frame: _Frame) -> None:
        """The frame is no longer in flight."""
        if self._frames.pop(frame.seq, None) is not None:
            for queue in (self._pending, self._ready):
                # Test first: a failed remove() would format the frame (tensors and all) into
                # its error message, milliseconds per frame.
                if frame in queue:
                    queue.remove(frame)
            if frame.deadline is not None:
                frame.deadline.cancel()
            if frame.give_up is not None:
                frame.give_up.cancel()
            if frame.state == "fallback" and frame in self._fallback:
                self._fallback.remove(frame)
        self._wake()

    def _emit_corrected(self, frame: _Frame, correction: Correction) -> None:
        """Write a corrected frame's line now; the frame stays in flight for its answer."""
        self._write(frame, correction.source, correction.reason,
                    outputs=(correction.logits,), correction=correction)  # fmt: skip
        frame.pixels = None

    def _write(
        self,
        frame: _Frame,
        source: str,
        reason: str | None,
        *,
        outputs: tuple[torch.Tensor, ...] | None = None,
        rtt_ms: float | None = None,
        cloud_ms: float | None = None,
        batch_size: int | None = None,
        correction: Correction | None = None,
        server: str | None = None,
    ) -> None:
        frame.emitted, frame.emitted_ns = True, time.perf_counter_ns()
        option = frame.option
        record = FrameRecord(
            seq=frame.seq,
            capture_ts_ns=frame.capture_ts_ns,
            emit_ts_ns=time.time_ns(),
            latency_ms=(time.perf_counter_ns() - frame.captured_ns) / 1e6,
            source=source,
            reason=reason,
            cut=option.cut if option else None,
            codec=option.codec if option else None,
            bytes_up=frame.bytes_up if frame.state == "sent" or correction else 0,
            rtt_ms=rtt_ms,
            result=(
                summarise_outputs(outputs, task=self.plan.plan.task)
                if outputs is not None
                else None
            ),
            head_ms=frame.head_ms,
            encode_ms=frame.encode_ms,
            cloud_ms=cloud_ms,
            batch_size=batch_size,
            delay_frames=correction.delay_frames if correction else None,
            probe=option_label(frame.probe) if frame.probe is not None else None,
            server=server,
        )
        self._writer.write(record)
        self.stats.add(record)
        if self._score is not None and outputs is not None:
            self._score_frame(frame.seq, source, outputs, correction)

    def _score_frame(
        self,
        seq: int,
        source: str,
        outputs: tuple[torch.Tensor, ...],
        correction: Correction | None,
    ) -> None:
        assert self._score is not None
        labels = self._source.labels(seq - 1)  # frame i of the source is seq i + 1
        if labels is None:
            return
        if correction is not None:
            self._score.add_correction(correction, labels)
        elif outputs[0].dim() == 4:  # the segmentation logits come first
            self._score.add(source, outputs[0], labels)

    # ---- edge compute ----------------------------------------------------------------------

    async def _compute_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A frame the edge answers alone needs no place in the window: after a switch to
            # all-on-edge it must not wait for frames stuck on a link that just slowed down.
            await self._wait(lambda: bool(self._fallback) or (bool(self._pending) and (
                self._started() < self.config.window or self.option.codec == "none")))  # fmt: skip
            if self._fallback:
                # Already late: these go before new frames.
                await self._compute_fallback(self._fallback.popleft())
                continue
            frame = self._pending.popleft()
            self._consider_switch()
            option, fallback = self._option_for_frame()
            if option is not self.option and self.option.codec == "none":
                await self._compute_probe(frame, option)
                continue
            frame.state, frame.option, frame.fallback = "computing", option, fallback
            pixels = frame.pixels
            assert pixels is not None
            # With a corrector, a frame the cloud cannot take (no session) needs no head.
            correct = self._corrector is not None and option.codec != "none"
            remote = not correct or self._session is not None
            try:
                computed = await loop.run_in_executor(
                    self._executors.compute, self._compute, option, pixels,
                    frame if correct else None, remote,
                )  # fmt: skip
            except SplitwireError as exc:
                logger.error("frame %d: %s", frame.seq, exc)
                self._emit_dropped(frame, "error:EDGE")
                continue
            if frame.seq not in self._frames:
                continue  # its budget ran out while the head ran
            frame.head_ms, frame.encode_ms = computed.head_ms, computed.encode_ms
            if option is self.option and remote:
                self._observe_edge_speed(option, computed)
            if option.codec == "none":
                reason = "disconnected" if fallback else "all-on-edge"
                self._emit(frame, "local", reason, outputs=computed.outputs)
                continue
            if computed.correction is not None:
                frame.bytes_up = sum(e.header.payload_size for e in computed.encoded)
                self._emit_corrected(frame, computed.correction)
                if not remote:
                    self._retire(frame)
                    continue
                if len(self._ready) >= self.config.window:
                    # The uplink is behind: the newest frame's features are worth more than
                    # the oldest unsent one's (whose output is out already).
                    self._retire(self._ready[0])
                    self.stats.uplink_skipped += 1
            frame.encoded = computed.encoded
            frame.bytes_up = sum(e.header.payload_size for e in computed.encoded)
            frame.state = "ready"
            self._ready.append(frame)
            self._wake()

    async def _compute_fallback(self, frame: _Frame) -> None:
        """A frame the cloud did not answer in time (or answered wrongly), computed with the
        all-on-edge option and emitted ``local`` with the reason it fell back."""
        option, pixels = self._local_option, frame.pixels
        assert option is not None and pixels is not None and frame.fallback_reason is not None
        frame.state, frame.option, frame.fallback = "computing", option, True
        try:
            computed = await asyncio.get_running_loop().run_in_executor(
                self._executors.compute, self._compute, option, pixels
            )
        except SplitwireError as exc:
            logger.error("frame %d: %s", frame.seq, exc)
            self._emit_dropped(frame, "error:EDGE")
            return
        if frame.seq not in self._frames:
            return  # its budget ran out while the model ran
        frame.head_ms, frame.encode_ms = computed.head_ms, computed.encode_ms
        self._emit(frame, "local", frame.fallback_reason, outputs=computed.outputs)

    async def _compute_probe(self, frame: _Frame, probe: PlanOption) -> None:
        """A frame of an all-on-edge run that also measures the link: its output is computed
        here and emitted at once; the copy sent with ``probe`` only feeds the link monitor."""
        loop = asyncio.get_running_loop()
        frame.state, frame.option = "computing", self.option
        pixels = frame.pixels
        assert pixels is not None
        try:
            compute = self._executors.compute
            local = await loop.run_in_executor(compute, self._compute, self.option, pixels)
            sent = await loop.run_in_executor(compute, self._compute, probe, pixels)
        except SplitwireError as exc:
            logger.error("frame %d: %s", frame.seq, exc)
            self._emit_dropped(frame, "error:EDGE")
            return
        if frame.seq not in self._frames:
            return  # its budget ran out while the head ran
        frame.head_ms, frame.encode_ms, frame.probe = local.head_ms, local.encode_ms, probe
        self._write(frame, "local", "all-on-edge", outputs=local.outputs)
        frame.option, frame.encoded, frame.pixels = probe, sent.encoded, None
        frame.bytes_up = sum(e.header.payload_size for e in sent.encoded)
        frame.state = "ready"
        self._ready.append(frame)
        self._wake()

    def _option_for_frame(self) -> tuple[PlanOption, bool]:
        """The option this frame runs, and whether it is the local fallback."""
        option = self.option
        if option.codec == "none":
            probe = self._probe_option()
            return (probe, False) if probe is not None else (option, False)
        if self._session is None and self._can_fall_back():
            assert self._local_option is not None
            return self._local_option, True
        return option, False

    def _probe_option(self) -> PlanOption | None:
        if self._session is None or self.policy_mode != "auto":
            return None
        if time.monotonic() - self._last_remote_s < PROBE_INTERVAL_S:
            return None
        usable = [o for o in self.plan.options if o.codec != "none" and self._served(o)]
        if not usable:
            return None
        self._last_remote_s = time.monotonic()  # one probe in flight at a time, at most
        link = self._measured_link()
        if link is None:
            return min(usable, key=lambda o: o.bytes_up)
        prices = self._policy.prices(link, edge_scale=self._edge_scale)
        return min(usable, key=lambda o: self._policy.score(prices[o]))

    def _compute(
        self,
        option: PlanOption,
        pixels: torch.Tensor,
        corrected: _Frame | None = None,
        remote: bool = True,
    ) -> _Computed:
        """Preprocess, head and encode one frame (in the worker thread); for a ``corrected``
        frame also its corrected output, and only that when it will not be sent (``remote``
        false)."""
        correction = None
        if corrected is not None:
            assert self._corrector is not None
            start = time.perf_counter_ns()
            correction = self._corrector.correct(
                pixels,
                seq=corrected.seq,
                captured_ns=corrected.captured_ns,
                scoring=self._score is not None,
            )
            self._emulate_slower_edge(start)
            if not remote:
                return _Computed([], (), 0.0, 0.0, correction)
        start = time.perf_counter_ns()
        with torch.inference_mode():
            if CodecSpec.parse(option.codec).camera:  # the frame as captured: cloud preprocesses
                tensors: tuple[torch.Tensor, ...] = (pixels,)
            else:
                out = self.plan.head(option.cut)(self.plan.preprocess(pixels))
                tensors = tuple(out) if isinstance(out, tuple | list) else (out,)
        head_done = self._emulate_slower_edge(start)
        if option.codec == "none":
            return _Computed([], tensors, (head_done - start) / 1e6, 0.0)
        specs = self.plan.crossing(option.cut, option.codec)
        encoded = [
            encode(t, option.codec, name=s.name) for t, s in zip(tensors, specs, strict=True)
        ]
        encode_done = self._emulate_slower_edge(head_done)
        return _Computed(
            encoded,
            (),
            (head_done - start) / 1e6,
            (encode_done - head_done) / 1e6,
            correction,
        )

    def _emulate_slower_edge(self, start_ns: int) -> int:
        """With ``--edge-slowdown K``, make the step begun at ``start_ns`` take K times as long
        by sleeping (the worker thread is busy, the CPU is free for the cloud on this machine);
        returns the step's end (``perf_counter_ns``)."""
        now = time.perf_counter_ns()
        if self.config.edge_slowdown > 1.0:
            time.sleep((self.config.edge_slowdown - 1.0) * (now - start_ns) / 1e9)
            now = time.perf_counter_ns()
        return now

    def _observe_edge_speed(self, option: PlanOption, computed: _Computed) -> None:
        self._scale_frames += 1
        if self._scale_frames <= EDGE_SCALE_WARMUP or option.edge_ms < EDGE_SCALE_MIN_PLANNED_MS:
            return
        low, high = EDGE_SCALE_BOUNDS
        ratio = min(max((computed.head_ms + computed.encode_ms) / option.edge_ms, low), high)
        self._edge_scale += 0.1 * (ratio - self._edge_scale)

    # ---- the policy ------------------------------------------------------------------------

    def _served(self, option: PlanOption) -> bool:
        return option.codec == "none" or (
            self._accept is not None and option.cut in self._accept.cut_ids
        )

    def _measured_link(self) -> LinkModel | None:
        """The link monitor's estimate, bounded by how long the oldest frame in flight has
        gone unanswered."""
        sent = [f for f in self._frames.values() if f.state == "sent" and f.epoch == self._epoch]
        oldest = min(sent, key=lambda f: f.sent_ns, default=None)
        return self.monitor.link(
            oldest=Unanswered(oldest.sent_ns, oldest.bytes_up) if oldest is not None else None
        )

    async def _policy_loop(self) -> None:
        while True:
            await asyncio.sleep(POLICY_TICK_S)
            self._consider_switch()

    def _consider_switch(self) -> None:
        if self.policy_mode != "auto" or self._session is None:
            return
        link = self._measured_link()
        if link is None:
            return
        switch = self._policy.consider(
            self.option,
            link,
            now_s=time.monotonic(),
            edge_scale=self._edge_scale,
            usable=self._served,
        )
        if switch is not None:
            self._switch(switch)

    def _switch(self, switch: CutSwitch) -> None:
        logger.info(
            "switching %s -> %s: %s",
            option_label(switch.old),
            option_label(switch.new),
            switch.reason,
        )
        self.switches.append(switch)
        self.option = switch.new
        self._scale_frames = 0

    def set_option(self, option: PlanOption, *, reason: str, policy: str = "fixed") -> None:
        """Run ``option`` from the next frame on, under ``policy`` (what a desired plan does)."""
        self.policy_mode = policy
        if option != self.option:
            self._switch(CutSwitch(time.monotonic(), self.option, option, reason))

    # ---- the cloud session -----------------------------------------------------------------

    def _hello(self) -> pb.Hello:
        option = self.option
        if option.codec == "none":
            option = next(o for o in self.plan.options if o.codec != "none")
        return pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            edge_id=self.edge_id,
            model_hash=self.plan.model_hash,
            cut_id=option.cut,
            codec=option.codec,
            max_in_flight=self.config.window,
        )

    async def _open_session(self) -> tuple[SessionClient, Any, pb.Accept]:
        """Open a channel and a session on it.

        Raises:
            CloudRefused: a reject retrying cannot fix.
            SessionError: anything else (unreachable, overloaded, shutting down).
        """
        assert self.config.cloud is not None
        tls = self.config.tls
        channel = open_channel(
            self.config.cloud,
            tls_ca=tls.ca if tls else None,
            tls_cert=tls.cert if tls else None,
            tls_key=tls.key if tls else None,
        )
        session = SessionClient(channel, token=self._token, limits=self._result_limits)
        try:
            accept = await session.open(self._hello(), timeout_s=HELLO_TIMEOUT_S)
        except SessionRejected as exc:
            session.cancel()
            await channel.close()
            if exc.code in FATAL_REJECTS:
                raise CloudRefused(f"{self.config.cloud} refused the session: {exc}") from exc
            raise
        except SessionError as exc:
            session.cancel()
            await channel.close()
            if exc.status is not None and exc.status.name in (
                "UNAUTHENTICATED",
                "PERMISSION_DENIED",
            ):
                raise CloudRefused(f"{self.config.cloud} refused the session: {exc}") from exc
            raise
        return session, channel, accept

    async def _first_session(self) -> tuple[SessionClient, Any, pb.Accept] | None:
        """One attempt before the source starts, so the first frames do not race the connect;
        a refusal stops the agent here, before any frame."""
        try:
            return await self._open_session()
        except SessionError as exc:
            logger.warning("cloud %s not reachable yet (%s); retrying", self.config.cloud, exc)
            return None

    async def _session_loop(self, first: tuple[SessionClient, Any, pb.Accept] | None) -> None:
        # Attempts in a row that failed: a session that could not be opened, or one that
        # answered nothing before it ended (a tail that accepts and hangs up at once must not
        # be retried at once, or it makes the agent reconnect a hundred times a second).
        failures = 0
        outage_started: float | None = None if first else time.monotonic()
        while not self._closing:
            if first is not None:
                opened, first = first, None
            else:
                try:
                    opened = await self._open_session()
                except CloudRefused as exc:
                    self._refused(exc)
                    return
                except SessionError as exc:
                    delay = _backoff(failures, self.config)
                    failures += 1
                    if failures == 1:
                        logger.warning("cannot open a session with %s: %s", self.config.cloud, exc)
                    else:
                        logger.debug("reconnect attempt %d failed: %s", failures, exc)
                    await self._sleep(delay)
                    continue
            session, channel, accept = opened
            names = (
                f"{peer_text(accept.session_id)} with {self.config.cloud} "
                f"({peer_text(accept.server_id)})"
            )
            if outage_started is not None:
                self.reconnects += 1
                logger.info(
                    "session %s after %.1f s without one", names, time.monotonic() - outage_started
                )
            else:
                logger.info("session %s", names)
            epoch = self._install(session, accept)
            retry_after_s = await self._receive(session, epoch)
            self._lose(epoch, "the stream ended")
            await channel.close()
            outage_started = time.monotonic()
            if self._closing:
                break
            if self._session_answered:
                failures = 0
            delay = _reconnect_delay(
                retry_after_s, failures=None if self._session_answered else failures,
                config=self.config,
            )  # fmt: skip
            if not self._session_answered:
                failures += 1
                logger.debug("the session answered nothing; reconnecting in %.2f s", delay)
            await self._sleep(delay)

    def _install(self, session: SessionClient, accept: pb.Accept) -> int:
        self._epoch += 1
        self._unanswered.clear()
        self._session_answered, self._silent_frames = False, 0
        self._overdue.clear()
        self._session, self._accept = session, accept
        self._server_id = accept.server_id[:MAX_SERVER_ID_CHARS]
        self.connected_since = time.monotonic()
        if not self._served(self.option):
            logger.warning(
                "the server does not serve cut %s (it serves %s)",
                self.option.cut,
                peer_text(", ".join(accept.cut_ids[:8])),
            )
        self._wake()
        return self._epoch

    def _lose(self, epoch: int, why: str) -> None:
        """The session of ``epoch`` is over: what was in flight goes back to be sent again."""
        if epoch != self._epoch or self._session is None:
            return
        session, self._session = self._session, None
        self.connected_since = None
        session.cancel()
        again = sorted(
            (f for f in self._frames.values() if f.state == "sent" and f.epoch == epoch),
            key=lambda f: f.seq,
        )
        for frame in reversed(again):
            frame.state = "ready"
            self._ready.appendleft(frame)
        if not self._closing:
            logger.warning(
                "session lost (%s); %d frames in flight will be sent again within their budget",
                why,
                len(again),
            )
        self._wake()

    async def _receive(self, session: SessionClient, epoch: int) -> float:
        """Read the session's answers until it ends; returns the server's retry hint (s)."""
        try:
            while True:
                try:
                    event = await session.receive()
                except ResultRefused as exc:
                    self._on_refused(exc, epoch)
                    self._lose(epoch, str(exc))
                    return 0.0
                except SessionError as exc:
                    self._lose(epoch, str(exc))
                    return 0.0
                if event is None:
                    return 0.0
                if isinstance(event, SessionResult):
                    self._on_result(event, epoch)
                elif isinstance(event, SessionFrameError):
                    self._on_frame_error(event, epoch)
                elif isinstance(event, SessionClosed):
                    why = f"server ended it: {event.code_name}: {server_text(event.reason)}"
                    self._lose(epoch, why)
                    return event.retry_after_ms / 1000.0
        finally:
            # Answers to frames the session did not have in flight: dropped unread.
            self.stats.duplicates_ignored += session.stray_results

    def _answerable(self, seq: int, capture_ts_ns: int, epoch: int) -> _Frame | None:
        frame = self._frames.get(seq)
        # A frame queued to fall back but not begun takes its answer after all.
        waiting = frame is not None and frame.state in ("sent", "fallback")
        if frame is None or not waiting or frame.epoch != epoch:
            self.stats.duplicates_ignored += 1
            logger.debug("ignoring a late or duplicate answer for frame %d", seq)
            return None
        if frame.capture_ts_ns != capture_ts_ns:
            self.stats.duplicates_ignored += 1
            logger.warning("answer for frame %d echoes another capture time; ignored", seq)
            return None
        if frame.state == "fallback":
            self._fallback.remove(frame)
            frame.state = "sent"
        return frame

    def _answered(self, seq: int, epoch: int) -> None:
        """The server answered ``seq``: it no longer counts against Accept.max_in_flight, even
        when its frame was already emitted (its budget ran out while the server held it), and
        the session is answering. An answer to a frame it does not hold (an error for a seq
        never sent) says nothing: it must not make a tail that hangs up at once look healthy."""
        if epoch == self._epoch and seq in self._unanswered:
            self._unanswered.discard(seq)
            self._overdue.discard(seq)
            self._session_answered, self._silent_frames = True, 0
            self._wake()

    def _on_refused(self, refused: ResultRefused, epoch: int) -> None:
        """The tail answered ``refused.seq`` with a result that breaks the plan or the
        protocol: the frame is computed on the edge if it may be, else dropped (the session is
        dropped next, with the refusal as the reason in its log line)."""
        frame = self._frames.get(refused.seq)
        sent_here = frame is not None and frame.state == "sent" and frame.epoch == epoch
        if frame is None or not sent_here or frame.capture_ts_ns != refused.capture_ts_ns:
            return
        if self._can_fall_back() and not frame.emitted:
            self._fall_back(frame, "error:BAD_RESULT")
        else:
            self._emit_dropped(frame, "error:BAD_RESULT")

    def _on_result(self, result: SessionResult, epoch: int) -> None:
        self._answered(result.seq, epoch)
        frame = self._answerable(result.seq, result.capture_ts_ns, epoch)
        if frame is None:
            return
        # The client checked its headers against the plan's outputs before decoding it.
        t = result.timings
        cloud_ns = t.queue_ns + t.decode_ns + t.compute_ns + t.encode_ns
        timing = FrameTiming(frame.sent_ns, result.received_ns, cloud_ns, frame.bytes_up,
                             result.wire_bytes)  # fmt: skip
        self.monitor.observe(timing)
        self._last_remote_s = time.monotonic()
        if self._corrector is not None and frame.emitted:
            # Its output went out long ago; its features serve the frames after it.
            self._corrector.remember(frame.seq, frame.captured_ns, result.outputs)
            self.stats.answers_after_output += 1
            self.stats.answer_lags_ms.append((result.received_ns - frame.emitted_ns) / 1e6)
            self.stats.rtts_ms.append(timing.network_s * 1000.0)
            self._retire(frame)
            return
        self._emit(
            frame,
            "remote",
            None,
            outputs=result.outputs,
            rtt_ms=timing.network_s * 1000.0,
            cloud_ms=cloud_ns / 1e6,
            batch_size=result.batch_size,
            server=self.server_id,
        )

    def _on_frame_error(self, error: SessionFrameError, epoch: int) -> None:
        self._answered(error.seq, epoch)
        frame = self._answerable(error.seq, error.capture_ts_ns, epoch)
        if frame is None:
            return
        if error.code_name != "STALE":
            logger.warning(
                "frame %d refused: %s: %s", frame.seq, error.code_name, server_text(error.message)
            )
        self._emit_dropped(
            frame, "stale" if error.code_name == "STALE" else f"error:{error.code_name}"
        )

    def _refused(self, exc: CloudRefused) -> None:
        logger.error("%s", exc)
        self._fatal = exc
        for frame in list(self._frames.values()):
            self._emit_dropped(frame, f"error:{_code_name(exc)}")
        self.request_stop()

    async def _send_loop(self) -> None:
        while True:
            await self._wait(self._can_send)
            frame = self._ready.popleft()
            session, epoch = self._session, self._epoch
            assert session is not None and frame.option is not None
            remaining_ms = (
                self.config.budget_ms - (time.perf_counter_ns() - frame.captured_ns) / 1e6
            )
            frame.state, frame.epoch = "sent", epoch
            frame.sent_ns = time.perf_counter_ns()
            self._unanswered.add(frame.seq)
            # Dim 0 of what crosses the cut is the frame's batch; its answer has the same.
            batch = frame.encoded[0].header.shape[0] if frame.encoded else 1
            try:
                await session.send(
                    frame.seq,
                    frame.capture_ts_ns,
                    frame.encoded,
                    cut_id=frame.option.cut,
                    codec=frame.option.codec,
                    queue_budget_ms=max(1, int(remaining_ms)),
                    expect=self._expected(frame.option.cut, batch),
                )
            except SessionError as exc:
                self._lose(epoch, str(exc))

    def _can_send(self) -> bool:
        if not self._ready or self._session is None:
            return False
        # Counted as the server counts: sent and not answered, including frames this side
        # already gave up on (dropped stale), which the server still holds until it answers.
        return len(self._unanswered) < self._send_limit()

    def _send_limit(self) -> int:
        """Frames the session may hold unanswered: what the server granted, but never more
        than the window the Hello asked for."""
        granted = (self._accept.max_in_flight if self._accept else 0) or self.config.window
        return min(granted, self.config.window)

    async def _close_session(self) -> None:
        session = self._session
        if session is None:
            return
        await session.close()
        session.cancel()

    # ---- the control plane's view ----------------------------------------------------------

    @property
    def server_id(self) -> str | None:
        """The tail replica of the open session (its ``Accept.server_id``), or None."""
        if self._session is None or self._accept is None:
            return None
        return self._server_id

    def status(self) -> dict[str, Any]:
        """Fields of the retained ``online`` status."""
        return {
            "model_hash": self.plan.model_hash,
            "model": self.plan.plan.model_spec,
            "cut": self.option.cut,
            "codec": self.option.codec,
            "policy": self.policy_mode,
            "cloud": self.config.cloud,
            "options": [{"cut": o.cut, "codec": o.codec} for o in self.plan.options],
        }

    def telemetry(self) -> dict[str, Any]:
        """A snapshot of the link, the frames and the plan (published every few seconds)."""
        link = self._measured_link()
        uplink = self.monitor.uplink_bps
        elapsed = max(time.monotonic() - self._started_s, 1e-9)
        rtt = self.monitor.smoothed_rtt_s
        latencies = self.stats.latencies_ms
        return {
            "connected": self._session is not None,
            "server_id": self.server_id,
            "cut": self.option.cut,
            "codec": self.option.codec,
            "policy": self.policy_mode,
            "rtt_ms": round(rtt * 1000.0, 3) if rtt is not None else None,
            "result_delay_ms": round(latencies[-1], 3) if latencies else None,
            "uplink_bps": round(uplink) if uplink is not None else None,
            "link": str(link) if link is not None else None,
            "fps": round((self.stats.frames - self.stats.by_source["dropped"]) / elapsed, 3),
            "frames": self.stats.frames,
            "by_source": dict(self.stats.by_source),
            "drops": dict(self.stats.by_reason),
            "bytes_up": self.stats.bytes_up,
            "in_flight": len(self._frames),
            "reconnects": self.reconnects,
            "edge_scale": round(self._edge_scale, 3),
            "last_switch": self.switches[-1].as_json() if self.switches else None,
            "switches": len(self.switches),
        }

    def apply_desired(self, desired: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a desired plan ``{"cut", "codec"}`` or ``{"policy": "auto"|"fixed"}``;
        returns the ``plan/reported`` answer (applied, or refused with the reason)."""

        def refused(reason: str) -> dict[str, Any]:
            logger.warning("desired plan %s refused: %s", dict(desired), reason)
            return {"applied": False, "reason": reason, **self._current()}

        keys = set(desired)
        if keys == {"policy"}:
            policy = desired["policy"]
            if policy not in ("auto", "fixed"):
                return refused(f"policy {policy!r}: expected 'auto' or 'fixed'")
            self.policy_mode = policy
            logger.info("policy set to %s over the control plane", policy)
            return {"applied": True, **self._current()}
        if keys - {"cut", "codec", "policy"} or "cut" not in keys or "codec" not in keys:
            return refused(
                'expected {"cut": ID, "codec": SPEC} (one of the plan\'s shipped pairs) or '
                f'{{"policy": "auto"|"fixed"}}; got keys {sorted(keys)}'
            )
        cut, codec = desired["cut"], desired["codec"]
        if not isinstance(cut, str) or not isinstance(codec, str):
            return refused("cut and codec must be strings")
        try:
            option = self.plan.option(cut, codec)
        except PlanError as exc:
            return refused(str(exc))
        if option.codec != "none" and self.config.cloud is None:
            return refused(f"{option_label(option)} needs the cloud and this agent has no --cloud")
        if self._accept is not None and not self._served(option):
            return refused(
                f"the connected server does not serve cut {cut} (it serves "
                f"{peer_text(', '.join(self._accept.cut_ids[:8]))})"
            )
        policy = desired.get("policy", "fixed")
        if policy not in ("auto", "fixed"):
            return refused(f"policy {policy!r}: expected 'auto' or 'fixed'")
        self.set_option(option, reason="desired plan from the control plane", policy=policy)
        return {"applied": True, **self._current()}

    def _current(self) -> dict[str, Any]:
        return {"cut": self.option.cut, "codec": self.option.codec, "policy": self.policy_mode}

    # ---- waiting ---------------------------------------------------------------------------

    def _wake(self) -> None:
        """Wake every waiter to look at the state again."""
        if self._wake_event is not None:
            self._wake_event.set()
            self._wake_event = asyncio.Event()

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        # A pipeline task that raises (a bug, or the output closed under us) must end the run,
        # not leave every other loop waiting forever for it.
        if not task.cancelled() and task.exception() is not None and self._failed is None:
            self._failed = task.exception()
            self._wake()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while not ready():
            if self._failed is not None:
                raise self._failed
            assert self._wake_event is not None
            await self._wake_event.wait()

    async def _sleep(self, seconds: float, *, unless: Callable[[], bool] | None = None) -> None:
        """Sleep, but wake early once ``unless()`` holds (default: the agent is closing)."""
        done = unless or (lambda: self._closing)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wait(done)


def _backoff(attempt: int, config: EdgeConfig) -> float:
    """Exponential backoff with jitter: between half and all of initial * 2^attempt, capped."""
    ceiling = min(config.reconnect_max_s, config.reconnect_initial_s * 2.0 ** min(attempt, 64))
    return ceiling * random.uniform(0.5, 1.0)


def _reconnect_delay(retry_after_s: float, *, failures: int | None, config: EdgeConfig) -> float:
    """How long to wait after a session ended: the server's retry hint, capped by the backoff
    cap and jittered (so that the sessions of a drained replica do not come back as a herd);
    after a session that answered nothing (``failures`` attempts in a row failed before it),
    at least the backoff of one more failed attempt. ``retry_after_ms = 2^32 - 1`` from a
    healthy session waits between half the cap and the cap; ``0`` from a session that answered
    nothing after 3 failures waits between 4 and 8 times ``reconnect_initial_s`` (capped).
    """
    delay = min(retry_after_s, config.reconnect_max_s) * random.uniform(0.5, 1.0)
    if failures is not None:
        delay = max(delay, _backoff(failures, config))
    return delay


def _code_name(exc: CloudRefused) -> str:
    cause = exc.__cause__
    if isinstance(cause, SessionRejected):
        return code_name(cause.code)
    if isinstance(cause, SessionError) and cause.status is not None:
        return cause.status.name
    return "REFUSED"
