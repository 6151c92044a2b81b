"""The edge's compute: the heads (and the whole model, for the all-on-edge option), the codec,
and the delay corrector's local model, run on one worker thread as on a one-core device.

    runner = HeadRunner(plan, threads=1, edge_slowdown=1.0, executors=AgentExecutors.new())
    await runner.prepare(plan.options)            # load and call each once: first calls are slow
    computed = await runner.run(option, pixels)   # preprocess, head, encode (or the whole model)

What crosses for an option, and who preprocesses a camera frame, is the option's
:class:`~splitwire.protocol.crossing.Crossing` (built once per option). With ``--edge-slowdown K``
every step sleeps until it took K times its measured time (the worker thread is busy, the CPU
is free for the cloud on this machine), and the runner keeps an estimate of how much slower
than planned this edge runs (:attr:`HeadRunner.edge_scale`), which the policy prices with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from splitwire.edge.correction import Correction, FrameCorrector
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import EncodedTensor
from splitwire.protocol.crossing import Crossing

# Frames of a new option the edge-speed estimate waits for (the first calls are slow).
EDGE_SCALE_WARMUP = 3
# Heads planned faster than this say little about the edge's speed (fixed costs dominate:
# preprocessing, the codec's per-call cost), and the scale stays within these bounds.
EDGE_SCALE_MIN_PLANNED_MS = 5.0
EDGE_SCALE_BOUNDS = (0.2, 5.0)


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


@dataclass(frozen=True)
class Computed:
    """One frame through the edge: what it sends (``encoded``), or, for the local option, its
    ``outputs``; the step times; and its corrected output, with a corrector."""

    encoded: list[EncodedTensor]
    outputs: tuple[torch.Tensor, ...]
    head_ms: float
    encode_ms: float
    correction: Correction | None = None

    @property
    def bytes_up(self) -> int:
        """What the frame puts on the wire (payloads)."""
        return sum(e.header.payload_size for e in self.encoded)


@dataclass(frozen=True)
class CorrectedFrame:
    """Which frame a corrector's output is for (its delay is counted from its capture)."""

    seq: int
    captured_ns: int


class HeadRunner:
    """Runs a plan's heads on the agent's compute thread (see the module docstring).

    Args:
        plan: the plan.
        threads: torch threads of the compute thread (``--threads``).
        edge_slowdown: K >= 1, every step takes K times its measured time.
        executors: the compute and source threads.
        corrector: the delay corrector, if any.
        scoring: whether corrected outputs are scored (a labelled source).
    """

    def __init__(
        self,
        plan: RunnablePlan,
        *,
        threads: int,
        edge_slowdown: float,
        executors: AgentExecutors,
        corrector: FrameCorrector | None = None,
        scoring: bool = False,
    ) -> None:
        self.plan = plan
        self.threads = threads
        self.edge_slowdown = edge_slowdown
        self.executors = executors
        self.corrector = corrector
        self.scoring = scoring
        self.edge_scale = 1.0
        self._scale_frames = 0
        self._crossings = {
            o: Crossing(o.spec, tuple(t.name for t in plan.crossing(o.cut, o.spec)))
            for o in plan.options
            if not o.local
        }

    def crossing(self, option: PlanOption) -> Crossing:
        """What crosses for a remote ``option``."""
        return self._crossings[option]

    async def prepare(self, options: Iterable[PlanOption]) -> None:
        """Load the heads of ``options`` and call each once (first calls are slow), on the
        compute thread."""
        chosen = list(options)
        await asyncio.get_running_loop().run_in_executor(
            self.executors.compute, self._prepare, chosen
        )

    def _prepare(self, options: list[PlanOption]) -> None:
        torch.set_num_threads(self.threads)
        frame = torch.zeros(self.plan.camera_frame().shape, dtype=torch.uint8)
        for option in options:
            self._compute(option, frame)
        if self.corrector is not None:
            self.corrector.correct(frame, seq=0, captured_ns=0)

    async def run(
        self,
        option: PlanOption,
        pixels: torch.Tensor,
        *,
        corrected: CorrectedFrame | None = None,
        remote: bool = True,
    ) -> Computed:
        """One frame under ``option`` on the compute thread: for a ``corrected`` frame also its
        corrected output, and only that when it will not be sent (``remote`` false).

        Raises:
            SplitwireError: the head or the codec failed on it.
        """
        return await asyncio.get_running_loop().run_in_executor(
            self.executors.compute, self._compute, option, pixels, corrected, remote
        )

    def _compute(
        self,
        option: PlanOption,
        pixels: torch.Tensor,
        corrected: CorrectedFrame | None = None,
        remote: bool = True,
    ) -> Computed:
        correction = None
        if corrected is not None:
            assert self.corrector is not None
            start = time.perf_counter_ns()
            correction = self.corrector.correct(
                pixels, seq=corrected.seq, captured_ns=corrected.captured_ns, scoring=self.scoring
            )
            self._emulate_slower_edge(start)
            if not remote:
                return Computed([], (), 0.0, 0.0, correction)
        start = time.perf_counter_ns()
        if option.local:
            with torch.inference_mode():
                out = self.plan.head(option.cut)(self.plan.preprocess(pixels))
            done = self._emulate_slower_edge(start)
            outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
            return Computed([], outputs, (done - start) / 1e6, 0.0)
        crossing = self._crossings[option]
        with torch.inference_mode():
            sent = crossing.sent(
                pixels, preprocess=self.plan.preprocess, head=self.plan.head(option.cut)
            )
        head_done = self._emulate_slower_edge(start)
        encoded = crossing.encode(sent)
        encode_done = self._emulate_slower_edge(head_done)
        return Computed(
            encoded,
            (),
            (head_done - start) / 1e6,
            (encode_done - head_done) / 1e6,
            correction,
        )

    def _emulate_slower_edge(self, start_ns: int) -> int:
        """With ``--edge-slowdown K``, make the step begun at ``start_ns`` take K times as long
        by sleeping; returns the step's end (``perf_counter_ns``)."""
        now = time.perf_counter_ns()
        if self.edge_slowdown > 1.0:
            time.sleep((self.edge_slowdown - 1.0) * (now - start_ns) / 1e9)
            now = time.perf_counter_ns()
        return now

    def observe(self, option: PlanOption, computed: Computed) -> None:
        """Update :attr:`edge_scale` (measured / planned edge time) with a frame of the current
        option."""
        self._scale_frames += 1
        if self._scale_frames <= EDGE_SCALE_WARMUP or option.edge_ms < EDGE_SCALE_MIN_PLANNED_MS:
            return
        low, high = EDGE_SCALE_BOUNDS
        ratio = min(max((computed.head_ms + computed.encode_ms) / option.edge_ms, low), high)
        self.edge_scale += 0.1 * (ratio - self.edge_scale)

    def new_option(self) -> None:
        """The option changed: its first frames are slow again, and not counted."""
        self._scale_frames = 0
