"""The agent's frame window: the frames in flight, the queues they wait in, their one output
line each, and the wait primitive every loop of the agent waits with.

A frame moves through states, each a queue or a holder::

    admit -> pending -> computing -> ready -> sent -> (answered) -> emit + retire
                                        \\-> fallback (computed on the edge instead) -/

:class:`FrameWindow` holds them (``frames`` by seq, the ``pending``, ``ready`` and
``fallback`` queues); :meth:`FrameWindow.emit` writes a frame's line and retires it, exactly
once per seq. The window bounds what is in flight (``--window``); one more frame, the newest,
may wait for a place, and :meth:`FrameWindow.displaced` names the frame a new capture replaces.

The window never calls into the agent or the uplink: they change it and :meth:`wake` it, and
anything waiting on a condition over it (:meth:`wait`) looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from splitwire.edge.correction import Correction, SegmentationScore
from splitwire.edge.link_monitor import Unanswered
from splitwire.edge.policy import option_label
from splitwire.edge.records import FrameRecord, RecordWriter, RunStats
from splitwire.edge.results import summarise_outputs
from splitwire.edge.sources import FrameSource
from splitwire.partitioner.plan_file import PlanOption
from splitwire.protocol import EncodedTensor

logger = logging.getLogger("splitwire.edge")


@dataclass(eq=False)
class Frame:
    """One captured frame, from admission to its output line (and, with a corrector, to its
    remote answer)."""

    seq: int
    capture_ts_ns: int  # wall clock: echoed by the cloud, printed for correlation
    captured_ns: int  # perf_counter: latencies
    # The captured input, kept until the frame is answered (it may have to run locally).
    pixels: torch.Tensor | None = field(repr=False)
    state: str = "pending"  # pending -> computing -> ready -> sent; or fallback
    option: PlanOption | None = None
    encoded: list[EncodedTensor] = field(default_factory=list, repr=False)
    bytes_up: int = 0
    head_ms: float | None = None
    encode_ms: float | None = None
    sent_ns: int = 0
    epoch: int = 0  # the session it was sent on
    fallback: bool = False  # computed locally because the cloud was away
    deadline: asyncio.TimerHandle | None = None
    give_up: asyncio.TimerHandle | None = None  # when it stops waiting on the cloud
    fallback_reason: str | None = None  # why it is (being) computed on the edge instead
    emitted: bool = False  # its output line is out (a corrected frame awaiting its answer)
    emitted_ns: int = 0  # perf_counter when it was
    probe: PlanOption | None = None  # a local frame also sent with this option to measure


class FrameScorer:
    """Scores emitted segmentation outputs against a labelled source's labels."""

    def __init__(self, source: FrameSource, score: SegmentationScore) -> None:
        self.source, self.score = source, score

    def add(
        self,
        seq: int,
        source: str,
        outputs: tuple[torch.Tensor, ...],
        correction: Correction | None,
    ) -> None:
        """Count one frame's output (frame i of the source is seq i + 1)."""
        labels = self.source.labels(seq - 1)
        if labels is None:
            return
        if correction is not None:
            self.score.add_correction(correction, labels)
        elif outputs[0].dim() == 4:  # the segmentation logits come first
            self.score.add(source, outputs[0], labels)


class FrameWindow:
    """The frames in flight and their queues (see the module docstring).

    Args:
        size: the most frames computing or awaiting their output (``--window``).
        writer: where each frame's line goes.
        stats: the run's figures, fed by every line.
        scorer: scores outputs against labels, for a labelled source.
    """

    def __init__(
        self,
        *,
        size: int,
        writer: RecordWriter,
        stats: RunStats,
        scorer: FrameScorer | None = None,
        task: str | None = None,
    ) -> None:
        self.size = size
        self.stats = stats
        # The plan's task: what a frame's outputs mean in its line (edge/results.py).
        self._task = task
        self._writer = writer
        self._scorer = scorer
        self.frames: dict[int, Frame] = {}
        self.pending: deque[Frame] = deque()
        self.ready: deque[Frame] = deque()
        # Frames that stopped waiting on the cloud and are computed on the edge next.
        self.fallback: deque[Frame] = deque()
        self._next_seq = 1
        self._wake_event: asyncio.Event | None = None
        self._failed: BaseException | None = None

    # ---- admission and retirement -----------------------------------------------------------

    def capture(self, pixels: torch.Tensor) -> Frame:
        """A new frame of ``pixels`` (``(C, H, W)`` or ``(N, C, H, W)``), numbered, not yet
        admitted."""
        frame = Frame(
            seq=self._next_seq,
            capture_ts_ns=time.time_ns(),
            captured_ns=time.perf_counter_ns(),
            pixels=pixels.unsqueeze(0) if pixels.dim() == 3 else pixels,
        )
        self._next_seq += 1
        return frame

    def displaced(self) -> Frame | None:
        """The frame a new capture replaces: the newest one waiting for a place, or, when the
        window is full of frames the edge has not sent yet, the oldest of those."""
        if self.pending:
            return self.pending[0]
        if self.started() >= self.size and self.ready:
            return self.ready[0]
        return None

    def admit(self, frame: Frame) -> None:
        """``frame`` waits for the head (after :meth:`displaced` was dealt with)."""
        self.frames[frame.seq] = frame
        self.pending.append(frame)
        self.wake()

    def started(self) -> int:
        """Frames computing, or computed and waiting for their output: the window. A corrected
        frame whose output is out waits only for features and no longer holds a place."""
        waiting = sum(1 for f in self.frames.values() if not f.emitted)
        return waiting - len(self.pending)

    def has_room(self) -> bool:
        """Whether a new frame would start at once."""
        return not self.pending and self.started() < self.size

    def in_flight(self, frame: Frame) -> bool:
        """Whether ``frame`` is still in the window (not retired)."""
        return self.frames.get(frame.seq) is frame

    def awaiting_answer(self, seq: int, capture_ts_ns: int, epoch: int) -> Frame | None:
        """The frame an answer from session ``epoch`` is for, if it still awaits one; else the
        answer is a late or duplicate one, counted and ignored."""
        frame = self.frames.get(seq)
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
            self.fallback.remove(frame)
            frame.state = "sent"
        return frame

    def oldest_sent(self, epoch: int) -> Unanswered | None:
        """The oldest frame sent on session ``epoch`` and still awaiting its answer."""
        sent = [f for f in self.frames.values() if f.state == "sent" and f.epoch == epoch]
        oldest = min(sent, key=lambda f: f.sent_ns, default=None)
        return Unanswered(oldest.sent_ns, oldest.bytes_up) if oldest is not None else None

    def to_send(self, frame: Frame) -> None:
        """``frame`` (computed and encoded) waits to be sent, after those already waiting."""
        frame.state = "ready"
        self.ready.append(frame)
        self.wake()

    def fall_back(self, frame: Frame, reason: str) -> None:
        """Compute ``frame`` on the edge next (its remote answer, if any comes, is ignored)."""
        if frame in self.ready:
            self.ready.remove(frame)
        frame.state, frame.fallback_reason = "fallback", reason
        self.fallback.append(frame)
        self.wake()

    def retire(self, frame: Frame) -> None:
        """The frame is no longer in flight."""
        if self.frames.pop(frame.seq, None) is not None:
            for queue in (self.pending, self.ready):
                # Test first: a failed remove() would format the frame (tensors and all) into
                # its error message, milliseconds per frame.
                if frame in queue:
                    queue.remove(frame)
            if frame.deadline is not None:
                frame.deadline.cancel()
            if frame.give_up is not None:
                frame.give_up.cancel()
            if frame.state == "fallback" and frame in self.fallback:
                self.fallback.remove(frame)
        self.wake()

    # ---- output lines -----------------------------------------------------------------------

    def emit_dropped(self, frame: Frame, reason: str) -> None:
        """Retire ``frame`` with a ``dropped`` line saying why."""
        self.emit(frame, "dropped", reason)

    def emit(
        self,
        frame: Frame,
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
        self.retire(frame)
        if not frame.emitted:
            self.write(frame, source, reason, outputs=outputs, rtt_ms=rtt_ms,
                       cloud_ms=cloud_ms, batch_size=batch_size, server=server)  # fmt: skip
        frame.pixels, frame.encoded = None, []

    def emit_corrected(self, frame: Frame, correction: Correction) -> None:
        """Write a corrected frame's line now; the frame stays in flight for its answer."""
        self.write(frame, correction.source, correction.reason,
                   outputs=(correction.logits,), correction=correction)  # fmt: skip
        frame.pixels = None

    def write(
        self,
        frame: Frame,
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
        """Write the frame's line, leaving it in flight (a probe, a corrected frame)."""
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
            result=summarise_outputs(outputs, task=self._task) if outputs is not None else None,
            head_ms=frame.head_ms,
            encode_ms=frame.encode_ms,
            cloud_ms=cloud_ms,
            batch_size=batch_size,
            delay_frames=correction.delay_frames if correction else None,
            downlink_bytes=correction.downlink_bytes if correction else None,
            probe=option_label(frame.probe) if frame.probe is not None else None,
            server=server,
        )
        self._writer.write(record)
        self.stats.add(record)
        if self._scorer is not None and outputs is not None:
            self._scorer.add(frame.seq, source, outputs, correction)

    # ---- waiting ----------------------------------------------------------------------------

    def open(self) -> None:
        """Start the wait primitive (on the running event loop)."""
        self._wake_event = asyncio.Event()

    def wake(self) -> None:
        """Wake every waiter to look at the state again."""
        if self._wake_event is not None:
            self._wake_event.set()
            self._wake_event = asyncio.Event()

    def fail(self, exc: BaseException) -> None:
        """A task of the agent died: every waiter raises ``exc`` rather than wait forever."""
        if self._failed is None:
            self._failed = exc
            self.wake()

    async def wait(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()`` holds (looked at again on each :meth:`wake`).

        Raises:
            BaseException: what a task of the agent died of (see :meth:`fail`).
        """
        while not ready():
            if self._failed is not None:
                raise self._failed
            assert self._wake_event is not None, "FrameWindow.open() first"
            await self._wake_event.wait()

    async def sleep(self, seconds: float, *, unless: Callable[[], bool]) -> None:
        """Sleep, but wake early once ``unless()`` holds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wait(unless)
