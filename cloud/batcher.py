"""Dynamic batching across sessions: frames for the same tail are computed in one call.

Each (model, cut) has a *lane*: a queue of decoded frames and a worker task. The worker takes
the frames waiting, and while fewer than ``max_batch`` are there it waits for more — but only
for frames already on their way (announced by :meth:`TailBatcher.expect` when a frame has
arrived and is being decoded), and never past ``max_wait_ms`` after the first. A lone session
therefore pays no batching delay, while under load the batch fills up::

    t=0.0 ms  frame A (session 1) queued, frames B, C (sessions 2, 3) being decoded
    t=0.4 ms  B queued                                   lane waits: C is still expected
    t=0.7 ms  C queued, nothing else expected            → tail(A, B, C) in one call

A call takes one frame of each session waiting before a second of any, sessions served longest
ago first (round robin): a session with one frame waiting is never queued behind the frames in
flight of sessions that send as fast as they may.

The tail runs in a worker thread (one, with a fixed torch thread count), never on the event
loop. Before computing, frames that waited longer than their queue budget are answered
``STALE``; when ``max_queued_frames`` frames are waiting, the next is refused
``RESOURCE_EXHAUSTED``: the queue is bounded. So is one call: at most ``max_batch`` frames and
``max_samples`` samples (a frame larger than that, which the sessions' batch check prevents,
would run alone), so no frame waits behind a call of unbounded size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from splitwire.cloud.errors import FrameRefused
from splitwire.cloud.metrics import CloudMetrics
from splitwire.cloud.registry import Route, short_hash
from splitwire.partitioner.capture import MAX_BATCH
from splitwire.protocol import splitwire_pb2 as pb

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailResult:
    """One frame's outputs and what the cloud spent on it (nanoseconds, its own clock)."""

    outputs: tuple[torch.Tensor, ...]
    queue_ns: int
    compute_ns: int
    batch_size: int


@dataclass
class _Job:
    inputs: list[torch.Tensor]
    batch: int
    arrival_ns: int
    budget_ns: int
    future: asyncio.Future[TailResult]
    queued_ns: int = 0
    owner: str = ""


@dataclass
class _Lane:
    route: Route
    jobs: deque[_Job] = field(default_factory=deque)
    expected: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The call number in which each session (owner) last had a frame computed, for fairness;
    # bounded by the sessions with frames queued (forgotten once a session has none).
    served: dict[str, int] = field(default_factory=dict)
    calls: int = 0


class TailBatcher:
    """Batches frames per (model, cut) and runs the tails off the event loop.

    Use as an async context manager; leaving it stops the lanes' workers and answers frames
    still queued ``UNAVAILABLE``.

    Args:
        executor: where tails run (one thread: the tail's torch threads do the parallel work).
        max_batch: most frames per call.
        max_samples: most samples per call (frames of several samples fill it faster).
        max_wait_ms: longest a frame waits for company.
        max_queued_frames: bound on frames waiting over all lanes.
        metrics: where batch sizes, queue and compute times are recorded.
    """

    def __init__(
        self,
        *,
        executor: Executor,
        max_batch: int,
        max_samples: int,
        max_wait_ms: float,
        max_queued_frames: int,
        metrics: CloudMetrics,
    ) -> None:
        self._executor = executor
        self._max_batch = max_batch
        self._max_samples = min(max_samples, MAX_BATCH)  # exported tails take no more
        self._max_wait_s = max_wait_ms / 1000
        self._max_queued = max_queued_frames
        self._metrics = metrics
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._queued = 0
        self._tasks: asyncio.TaskGroup | None = None
        self._worker_tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TailBatcher:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._tasks is None:  # never entered (the server failed to start)
            return
        for task in list(self._worker_tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks.__aexit__(None, None, None)
        for lane in self._lanes.values():
            while lane.jobs:
                job = lane.jobs.popleft()
                self._queued -= 1
                if not job.future.done():
                    job.future.set_exception(
                        FrameRefused(pb.UNAVAILABLE, "the server stopped before computing it")
                    )
        self._metrics.queued.set(self._queued)

    @contextlib.contextmanager
    def expect(self, route: Route) -> Iterator[None]:
        """Announce a frame for ``route`` that is being decoded: its lane may wait for it."""
        lane = self._lane(route)
        lane.expected += 1
        try:
            yield
        finally:
            lane.expected -= 1
            lane.changed.set()

    def submit(
        self,
        route: Route,
        inputs: Sequence[torch.Tensor],
        *,
        arrival_ns: int,
        budget_ns: int = 0,
        owner: str = "",
    ) -> asyncio.Future[TailResult]:
        """Queue one frame's inputs for ``route``'s tail; the future completes with its result.

        Args:
            route: what serves the frame.
            inputs: the tail's inputs, batch on dim 0 (checked against the plan already).
            arrival_ns: ``time.perf_counter_ns()`` when the frame's last chunk arrived.
            budget_ns: longest the frame may wait from ``arrival_ns``; 0 = no limit.
            owner: the session it comes from: each call takes one frame of each session
                waiting, those served longest ago first, before a second of any (round robin),
                so sessions with many frames queued cannot keep one with a single frame out.

        Raises:
            FrameRefused: ``RESOURCE_EXHAUSTED`` when the queue is full (at once); through the
                future, ``STALE`` when the frame outwaited its budget, ``INTERNAL`` when the
                tail failed on it, ``UNAVAILABLE`` when the server stopped first.
        """
        if self._queued >= self._max_queued:
            raise FrameRefused(
                pb.RESOURCE_EXHAUSTED,
                f"{self._queued} frames are waiting for the tail (the limit); send fewer "
                "frames or retry later",
            )
        lane = self._lane(route)
        job = _Job(
            inputs=list(inputs),
            batch=int(inputs[0].shape[0]),
            arrival_ns=arrival_ns,
            budget_ns=budget_ns,
            future=asyncio.get_running_loop().create_future(),
            queued_ns=time.perf_counter_ns(),
            owner=owner,
        )
        lane.jobs.append(job)
        self._queued += 1
        self._metrics.queued.set(self._queued)
        lane.changed.set()
        return job.future

    def _lane(self, route: Route) -> _Lane:
        lane = self._lanes.get(route.key)
        if lane is None:
            if self._tasks is None:
                raise RuntimeError("TailBatcher used outside 'async with'")
            lane = self._lanes[route.key] = _Lane(route)
            task = self._tasks.create_task(
                self._work(lane), name=f"lane {short_hash(route.model_hash)} {route.cut}"
            )
            self._worker_tasks.add(task)
            task.add_done_callback(self._worker_tasks.discard)
        return lane

    async def _work(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not lane.jobs:
                lane.changed.clear()
                await lane.changed.wait()
            deadline = loop.time() + self._max_wait_s
            while len(lane.jobs) < self._max_batch and lane.expected > 0:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                lane.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.changed.wait(), remaining)
            batch = self._take(lane)
            if batch:
                await self._compute(lane.route, batch)

    def _take(self, lane: _Lane) -> list[_Job]:
        """Up to ``max_batch`` live frames (≤ ``max_samples`` samples), round robin across
        sessions (see :meth:`submit`); stale ones are answered."""
        now = time.perf_counter_ns()
        # The oldest frame of each session, sessions served longest ago first, then every
        # other frame in arrival order: e.g. sessions A (5 frames queued, served in the last
        # call) and B (1 frame, never served) give B's frame, A's first, then A's others.
        firsts: dict[str, int] = {}
        for index, job in enumerate(lane.jobs):
            firsts.setdefault(job.owner, index)
        order = sorted(firsts.values(), key=lambda i: (lane.served.get(lane.jobs[i].owner, -1), i))
        chosen = set(order)
        order += [i for i in range(len(lane.jobs)) if i not in chosen]
        batch: list[_Job] = []
        taken: set[int] = set()
        samples = 0
        for index in order:
            if len(batch) >= self._max_batch:
                break
            job = lane.jobs[index]
            if batch and samples + job.batch > self._max_samples:
                continue
            taken.add(index)
            if job.future.done():  # the session went away
                continue
            waited = now - job.arrival_ns
            if job.budget_ns and waited > job.budget_ns:
                self._metrics.stale.inc()
                job.future.set_exception(
                    FrameRefused(
                        pb.STALE,
                        f"waited {waited / 1e6:.1f} ms for the tail; its budget was "
                        f"{job.budget_ns / 1e6:.1f} ms",
                        field="queue_budget_ms",
                    )
                )
                continue
            batch.append(job)
            samples += job.batch
        lane.jobs = deque(job for i, job in enumerate(lane.jobs) if i not in taken)
        self._queued -= len(taken)
        lane.calls += 1
        for job in batch:
            lane.served[job.owner] = lane.calls
        waiting = {job.owner for job in lane.jobs}
        for owner in [o for o in lane.served if o not in waiting]:
            del lane.served[owner]
        self._metrics.queued.set(self._queued)
        return batch

    async def _compute(self, route: Route, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter_ns()
        labels = (short_hash(route.model_hash), route.cut)
        self._metrics.batch_size.labels(*labels).observe(len(batch))
        for job in batch:
            self._metrics.queue_wait.observe((start - job.queued_ns) / 1e9)
        try:
            outputs = await loop.run_in_executor(self._executor, _run_batch, route, batch)
        except Exception:
            if len(batch) == 1:
                logger.exception("tail %s failed on a frame", route.cut)
                _fail(batch[0], "the tail failed on this frame (the server logged why)")
                return
            # One frame must not sink the others: run them one by one to find the culprit.
            for job in batch:
                await self._compute(route, [job])
            return
        compute_ns = time.perf_counter_ns() - start
        self._metrics.compute_time.labels(*labels).observe(compute_ns / 1e9)
        for job, result in zip(batch, outputs, strict=True):
            if not job.future.done():
                job.future.set_result(
                    TailResult(
                        outputs=result,
                        queue_ns=start - job.queued_ns,
                        compute_ns=compute_ns,
                        batch_size=len(batch),
                    )
                )


def _fail(job: _Job, message: str) -> None:
    if not job.future.done():
        job.future.set_exception(FrameRefused(pb.INTERNAL, message))


def _run_batch(route: Route, batch: Sequence[_Job]) -> list[tuple[torch.Tensor, ...]]:
    """In the tail's thread: concatenate, run, and split the outputs back per frame."""
    if len(batch) == 1:
        inputs = batch[0].inputs
    else:
        inputs = [torch.cat([job.inputs[i] for job in batch]) for i in range(len(batch[0].inputs))]
    with torch.inference_mode():
        out = route.tail(*inputs)
    outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
    if len(batch) == 1:
        return [tuple(t.contiguous() for t in outputs)]
    sizes = [job.batch for job in batch]
    pieces = [torch.split(t, sizes) for t in outputs]
    return [tuple(p[i].contiguous() for p in pieces) for i in range(len(batch))]
