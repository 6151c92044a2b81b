"""The agent's link to the tail: the Hello, sessions opened again with backoff, the frames sent,
and what the tail answers, yielded as events.

    uplink = Uplink(config, plan, window, token=token, limits=result_limits(...))
    first = await uplink.first_session()              # one attempt before any frame
    async for event in uplink.events(first):          # Connected, Answer, FrameRefusal, ...
        ...                                           # the agent decides what each means
    # meanwhile a task runs uplink.send_loop(): ready frames go out as the server allows

The uplink never calls into the agent: it takes frames from the window's ``ready`` queue, puts
those of a lost session back there, and yields what happened; the agent emits lines. Sessions:
a broken stream, a server restart or ``SessionEnd UNAVAILABLE`` starts a reconnect loop
(exponential backoff with jitter, capped at ``reconnect_max_s``, also for the server's
``retry_after_ms``). A session that answered nothing counts as a failed attempt, so a tail that
accepts and hangs up at once is retried with the same backoff as one that cannot be reached. A
reject that retrying cannot fix (``PLAN_MISMATCH``, ``UNAUTHENTICATED``, ...) ends the events
with :class:`SessionRefused`.

A session that stops answering (its frames unanswered for clearly longer than answers take,
:mod:`~splitwire.edge.silence`) is declared **unresponsive** and dropped
(:meth:`Uplink.watch_loop`), as is one that lost ``max_unanswered`` frames in a row without a
single answer (:meth:`Uplink.ran_out`). Either way the sessions after it are **on probation**
until one of them answers (:attr:`Uplink.trusted`): the agent answers frames with its own model
meanwhile and sends one frame at a time to see whether the new session answers, which has at
least the frame's whole budget to do so.

The tail is a peer, not a friend: each frame is sent with the exact outputs its answer must
carry, and the session's result limits come from the plan
(:func:`~splitwire.protocol.client.result_limits`), so a result that disagrees is refused from
its headers, before anything is buffered or decoded (:class:`BadResult`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from splitwire.edge.config import EdgeConfig
from splitwire.edge.errors import CloudRefused
from splitwire.edge.silence import AnswerClock, Silence
from splitwire.edge.window import Frame, FrameWindow
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import PROTOCOL_VERSION
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
from splitwire.protocol.peer_text import peer_text

logger = logging.getLogger("splitwire.edge")

# Rejects that retrying cannot fix: the agent stops with CloudRefused.
FATAL_REJECTS = frozenset(
    {pb.PLAN_MISMATCH, pb.UNAUTHENTICATED, pb.UNSUPPORTED_VERSION, pb.INVALID_ARGUMENT}
)
HELLO_TIMEOUT_S = 5.0
# The longest replica name kept from an Accept (it goes into every frame line and telemetry).
MAX_SERVER_ID_CHARS = 64

# How often the watchdog looks while nothing is to be judged, and at most between two looks.
WATCH_TICK_S = 0.05
# Before a session is declared unresponsive the watchdog yields this long and looks again:
# answers that reached gRPC while the agent's own loop was held up (a loaded device) are read
# first, so the agent's stall is not taken for the tail's.
CONFIRM_S = 0.02

Opened = tuple[SessionClient, Any, pb.Accept]


@dataclass(frozen=True)
class Connected:
    """A session is open (``epoch`` numbers it); ``after_s`` is the outage it ends, if any."""

    epoch: int
    accept: pb.Accept
    after_s: float | None


@dataclass(frozen=True)
class Answer:
    """The tail's result for a frame sent on session ``epoch``."""

    result: SessionResult
    epoch: int


@dataclass(frozen=True)
class FrameRefusal:
    """The tail refused a frame sent on session ``epoch`` (``error.code_name`` says why)."""

    error: SessionFrameError
    epoch: int


@dataclass(frozen=True)
class BadResult:
    """A result that broke the plan or the protocol (not decoded); the session is lost next."""

    refused: ResultRefused
    epoch: int


@dataclass(frozen=True)
class Lost:
    """Session ``epoch`` is over; its frames in flight are back in the window's ready queue.
    ``unresponsive``: it was dropped for not answering them (the next sessions are on
    probation)."""

    epoch: int
    why: str
    unresponsive: bool = False


@dataclass(frozen=True)
class SessionRefused:
    """The cloud refused the session for good: the last event."""

    error: CloudRefused


SessionEvent = Connected | Answer | FrameRefusal | BadResult | Lost | SessionRefused


class Uplink:
    """The sessions with the tail (see the module docstring).

    Args:
        config: the agent's settings (``cloud``, ``tls``, ``window``, backoff, ``edge_id``).
        plan: the plan (its model hash, and the outputs each answer must carry).
        window: where ready frames are taken from and lost ones go back to.
        token: the bearer token, if any.
    """

    def __init__(
        self,
        config: EdgeConfig,
        plan: RunnablePlan,
        window: FrameWindow,
        *,
        token: str | None,
    ) -> None:
        assert config.cloud is not None
        self.config = config
        self.cloud: str = config.cloud
        self.plan = plan
        self.window = window
        self._token = token
        # What a session may receive: the largest answer of any option the agent may send (it
        # switches cut mid-session), one partial result per frame in flight.
        batch = max(plan.plan.input_shape[0], 1)
        answers = [self.expected(o.cut, batch) for o in plan.options if not o.local]
        self._limits = result_limits(answers, in_flight=config.window)
        self.session: SessionClient | None = None
        self.accept: pb.Accept | None = None
        self.epoch = 0
        self.reconnects = 0
        self.connected_since: float | None = None
        # The option named in the Hello (the session's default route).
        self.hello_option = next(o for o in plan.options if not o.local)
        # The frames sent on the current session and not answered yet, and how long answers take.
        self._clock = AnswerClock(plan, config)
        # A session stopped answering: the next are not trusted with frames until one answers.
        self.on_probation = False
        self._lost_unresponsive = False
        # Whether the current session answered anything, and how many frames in a row were
        # lost to it since it last did; of the unanswered seqs, those that ran out of time.
        self._answered_any = False
        self._silent_frames = 0
        self._overdue: set[int] = set()
        self._server_id: str | None = None
        self._lost_why = ""
        self.closing = False

    # ---- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a session is open."""
        return self.session is not None

    @property
    def trusted(self) -> bool:
        """Whether a session is open and may be given frames to answer: it is not on probation
        (see the module docstring)."""
        return self.session is not None and not self.on_probation

    @property
    def unanswered(self) -> int:
        """Frames sent on the open session and not answered yet (including frames this side
        gave up on, which the server still holds)."""
        return self._clock.unanswered

    @property
    def server_id(self) -> str | None:
        """The tail replica of the open session (its ``Accept.server_id``), or None."""
        if self.session is None or self.accept is None:
            return None
        return self._server_id

    def served(self, option: PlanOption) -> bool:
        """Whether ``option`` runs now: local, or a cut the connected server serves."""
        return option.local or (self.accept is not None and option.cut in self.accept.cut_ids)

    def prefer(self, option: PlanOption) -> None:
        """Name ``option`` in the next Hello (a local option keeps the previous one)."""
        if not option.local:
            self.hello_option = option

    def expected(self, cut_id: str, batch: int) -> tuple[ExpectedTensor, ...]:
        """The outputs the tail of ``cut_id`` returns for a frame of ``batch``, as the plan's
        result codecs send them (a class map: uint8 indices below the plan's classes)."""
        return tuple(
            spec.result_codec.expect(spec.name, (batch, *spec.shape[1:]), spec.dtype)
            for spec in self.plan.outputs(cut_id)
        )

    # ---- opening sessions -------------------------------------------------------------------

    def _hello(self) -> pb.Hello:
        return pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            edge_id=self.config.edge_id,
            model_hash=self.plan.model_hash,
            cut_id=self.hello_option.cut,
            codec=self.hello_option.codec,
            max_in_flight=self.config.window,
        )

    async def _open(self) -> Opened:
        """Open a channel and a session on it.

        Raises:
            CloudRefused: a reject retrying cannot fix.
            SessionError: anything else (unreachable, overloaded, shutting down).
        """
        tls = self.config.tls
        channel = open_channel(
            self.cloud,
            tls_ca=tls.ca if tls else None,
            tls_cert=tls.cert if tls else None,
            tls_key=tls.key if tls else None,
        )
        session = SessionClient(channel, token=self._token, limits=self._limits)
        try:
            accept = await session.open(self._hello(), timeout_s=HELLO_TIMEOUT_S)
        except SessionRejected as exc:
            session.cancel()
            await channel.close()
            if exc.code in FATAL_REJECTS:
                raise CloudRefused(
                    f"{self.cloud} refused the session: {exc}", code=code_name(exc.code)
                ) from exc
            raise
        except SessionError as exc:
            session.cancel()
            await channel.close()
            if exc.status is not None and exc.status.name in (
                "UNAUTHENTICATED",
                "PERMISSION_DENIED",
            ):
                raise CloudRefused(
                    f"{self.cloud} refused the session: {exc}", code=exc.status.name
                ) from exc
            raise
        return session, channel, accept

    async def first_session(self) -> Opened | None:
        """One attempt before the source starts, so the first frames do not race the connect;
        a refusal stops the agent here, before any frame.

        Raises:
            CloudRefused: the cloud refused the session for good.
        """
        try:
            return await self._open()
        except SessionError as exc:
            logger.warning("cloud %s not reachable yet (%s); retrying", self.cloud, exc)
            return None

    async def events(self, first: Opened | None) -> AsyncIterator[SessionEvent]:
        """Sessions one after another until :meth:`close`, and what happens on each."""
        # Attempts in a row that failed: a session that could not be opened, or one that
        # answered nothing before it ended (a tail that accepts and hangs up at once must not
        # be retried at once, or it makes the agent reconnect a hundred times a second).
        failures = 0
        outage_started: float | None = None if first else time.monotonic()
        while not self.closing:
            if first is not None:
                opened, first = first, None
            else:
                try:
                    opened = await self._open()
                except CloudRefused as exc:
                    yield SessionRefused(exc)
                    return
                except SessionError as exc:
                    delay = _backoff(failures, self.config)
                    failures += 1
                    if failures == 1:
                        logger.warning("cannot open a session with %s: %s", self.cloud, exc)
                    else:
                        logger.debug("reconnect attempt %d failed: %s", failures, exc)
                    await self._sleep(delay)
                    continue
            session, channel, accept = opened
            names = (
                f"{peer_text(accept.session_id)} with {self.cloud} ({peer_text(accept.server_id)})"
            )
            after_s = None if outage_started is None else time.monotonic() - outage_started
            if after_s is not None:
                self.reconnects += 1
                logger.info("session %s after %.1f s without one", names, after_s)
            else:
                logger.info("session %s", names)
            epoch = self._install(session, accept)
            yield Connected(epoch, accept, after_s)
            retry_after_s = 0.0
            try:
                async for event in self._receive(session, epoch):
                    if isinstance(event, SessionClosed):
                        why = f"server ended it: {event.code_name}: {server_text(event.reason)}"
                        self.lose(epoch, why)
                        retry_after_s = event.retry_after_ms / 1000.0
                    else:
                        yield event
            finally:
                # Answers to frames the session did not have in flight: dropped unread.
                self.window.stats.duplicates_ignored += session.stray_results
            self.lose(epoch, "the stream ended")
            yield Lost(epoch, self._lost_why, self._lost_unresponsive)
            await channel.close()
            outage_started = time.monotonic()
            if self.closing:
                break
            if self._answered_any:
                failures = 0
            delay = _reconnect_delay(
                retry_after_s, failures=None if self._answered_any else failures,
                config=self.config,
            )  # fmt: skip
            if not self._answered_any:
                failures += 1
                logger.debug("the session answered nothing; reconnecting in %.2f s", delay)
            await self._sleep(delay)

    async def _receive(
        self, session: SessionClient, epoch: int
    ) -> AsyncIterator[Answer | FrameRefusal | BadResult | SessionClosed]:
        """The session's answers until it ends (a ``SessionClosed`` is its last)."""
        while True:
            try:
                event = await session.receive()
            except ResultRefused as exc:
                yield BadResult(exc, epoch)
                self.lose(epoch, str(exc))
                return
            except SessionError as exc:
                self.lose(epoch, str(exc))
                return
            if event is None:
                return
            if isinstance(event, SessionResult):
                self._answered(event.seq, epoch)
                yield Answer(event, epoch)
            elif isinstance(event, SessionFrameError):
                self._answered(event.seq, epoch)
                yield FrameRefusal(event, epoch)
            elif isinstance(event, SessionClosed):
                yield event
                return

    def _install(self, session: SessionClient, accept: pb.Accept) -> int:
        self.epoch += 1
        self._clock.new_session()
        self._lost_unresponsive = False
        self._answered_any, self._silent_frames = False, 0
        self._overdue.clear()
        self.session, self.accept = session, accept
        self._server_id = accept.server_id[:MAX_SERVER_ID_CHARS]
        self.connected_since = time.monotonic()
        self.window.wake()
        return self.epoch

    def lose(self, epoch: int, why: str) -> None:
        """The session of ``epoch`` is over: what was in flight goes back to be sent again."""
        if epoch != self.epoch or self.session is None:
            return
        session, self.session = self.session, None
        self.connected_since = None
        self._lost_why = why
        session.cancel()
        again = sorted(
            (f for f in self.window.frames.values() if f.state == "sent" and f.epoch == epoch),
            key=lambda f: f.seq,
        )
        for frame in reversed(again):
            frame.state = "ready"
            self.window.ready.appendleft(frame)
        if not self.closing:
            logger.warning("session lost (%s); %d frames were in flight", why, len(again))
        self.window.wake()

    def _answered(self, seq: int, epoch: int) -> None:
        """The server answered ``seq``: it no longer counts against Accept.max_in_flight, even
        when its frame was already emitted (its budget ran out while the server held it), and
        the session is answering. An answer to a frame it does not hold (an error for a seq
        never sent) says nothing: it must not make a tail that hangs up at once look healthy."""
        if epoch != self.epoch or not self._clock.answered(seq):
            return
        self._overdue.discard(seq)
        self._answered_any, self._silent_frames = True, 0
        if self.on_probation:
            logger.info("the session answers again: frames go to it")
            self.on_probation = False
        self.window.wake()

    def ran_out(self, frame: Frame) -> None:
        """``frame`` is lost to the open session: it ran out of time unanswered after being
        sent on it, or, while the session is blocked (the tail holds every in-flight slot with
        such frames, so nothing can be sent until it answers), it ran out of time or gave way
        waiting to be sent. Each counts as one more frame in a row the session left
        unanswered; at ``max_unanswered`` the session is dropped: the tail takes frames and
        does not answer them. Any answer resets the count."""
        if self.session is None:
            return
        if frame.state == "sent" and frame.epoch == self.epoch:
            self._overdue.add(frame.seq)
        elif (
            frame.emitted  # a corrected frame not sent: its output is out, nothing was lost
            or frame.state not in ("pending", "ready")
            or len(self._overdue) < self.send_limit()
        ):
            return
        self._silent_frames += 1
        if self._silent_frames >= self.config.max_unanswered:
            self._unresponsive(
                f"unresponsive: {self._silent_frames} frames in a row were lost without an "
                "answer: the tail takes frames and does not answer them"
            )

    # ---- sessions that stop answering -------------------------------------------------------

    def silence(self, *, now_ns: int | None = None) -> Silence | None:
        """How long the open session has left its frames unanswered, and how long it may (see
        :mod:`~splitwire.edge.silence`); None when nothing is unanswered on an open session."""
        if self.session is None:
            return None
        return self._clock.silence(probation=self.on_probation, now_ns=now_ns)

    async def watch_loop(self) -> None:
        """Drop the open session once it has been silent for longer than its limit (see
        :meth:`silence`); runs until cancelled."""
        while True:
            silence = self.silence()
            if silence is None or not silence.over:
                left = WATCH_TICK_S if silence is None else silence.limit_s - silence.quiet_s
                await asyncio.sleep(min(WATCH_TICK_S, max(left, 0.001)))
                continue
            epoch = self.epoch
            await asyncio.sleep(CONFIRM_S)
            silence = self.silence()
            if silence is not None and silence.over and epoch == self.epoch:
                config = self.config
                why = silence.describe(
                    factor=config.unresponsive_factor, floor_ms=config.unresponsive_floor_ms
                )
                self._unresponsive(why)

    def _unresponsive(self, why: str) -> None:
        """The open session does not answer: drop it, and trust none until one answers."""
        self.on_probation = True
        self._lost_unresponsive = True
        self.lose(self.epoch, why)

    # ---- sending ----------------------------------------------------------------------------

    async def send_loop(self) -> None:
        """Send ready frames, oldest first, as the session's in-flight limit allows."""
        while True:
            await self.window.wait(self._can_send)
            frame = self.window.ready.popleft()
            session, epoch = self.session, self.epoch
            assert session is not None and frame.option is not None
            remaining_ms = (
                self.config.budget_ms - (time.perf_counter_ns() - frame.captured_ns) / 1e6
            )
            frame.state, frame.epoch = "sent", epoch
            frame.sent_ns = time.perf_counter_ns()
            self._clock.sent(frame.seq, frame.sent_ns, frame.bytes_up, frame.option)
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
                    expect=self.expected(frame.option.cut, batch),
                )
            except SessionError as exc:
                self.lose(epoch, str(exc))

    def _can_send(self) -> bool:
        if not self.window.ready or self.session is None:
            return False
        # Counted as the server counts: sent and not answered, including frames this side
        # already gave up on (dropped stale), which the server still holds until it answers.
        return self._clock.unanswered < self.send_limit()

    def send_limit(self) -> int:
        """Frames the session may hold unanswered: what the server granted, but never more
        than the window the Hello asked for."""
        granted = (self.accept.max_in_flight if self.accept else 0) or self.config.window
        return min(granted, self.config.window)

    async def close(self) -> None:
        """No more sessions; the open one is told no more frames come, then abandoned."""
        self.closing = True
        self.window.wake()
        session = self.session
        if session is None:
            return
        await session.close()
        session.cancel()

    async def _sleep(self, seconds: float) -> None:
        await self.window.sleep(seconds, unless=lambda: self.closing)


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
