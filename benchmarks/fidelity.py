"""Fidelity of the planner's compute predictions against the real exported halves.

    splitwire bench fidelity --model zoo:resnet50 --input-shape 1,3,224,224 --every 3

For every ``every``-th cut the halves are exported with ``torch.export`` (as ``splitwire plan``
writes them) and timed; the prediction is the profile's ``sum(node ms) + call overhead`` per
side. A busy machine changes speed between the profile and the measurement, so each half is
timed interleaved with the whole graph and divided by how much the whole graph's time moved
since the profile (``drift``); both the raw and the drift-corrected errors are reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from splitwire.partitioner.capture import capture, example_input
from splitwire.partitioner.cuts import compute_nodes, enumerate_cuts
from splitwire.partitioner.device import torch_threads
from splitwire.partitioner.models import load_model, model_hash
from splitwire.partitioner.profiling import profile_graph
from splitwire.partitioner.split import split


@dataclass(frozen=True)
class FidelityRecord:
    """Predicted and measured compute of one cut's halves (ms at the plan's batch)."""

    cut: str
    name: str
    predicted_head_ms: float
    predicted_tail_ms: float
    head_ms: float
    tail_ms: float
    drift: float

    def error(self, *, corrected: bool) -> float:
        """Relative error of predicted head + tail against measured head + tail."""
        scale = self.drift if corrected else 1.0
        measured = (self.head_ms + self.tail_ms) / scale
        predicted = self.predicted_head_ms + self.predicted_tail_ms
        return abs(predicted - measured) / measured

    def halves_within(self, tolerance: float) -> bool:
        """Whether each half, drift-corrected, is within ``tolerance`` of its prediction."""
        return all(
            abs(p - m / self.drift) <= tolerance * (m / self.drift)
            for p, m in ((self.predicted_head_ms, self.head_ms),
                         (self.predicted_tail_ms, self.tail_ms))
            if m > 0
        )  # fmt: skip


def run_fidelity(
    model: str,
    input_shape: Sequence[int],
    *,
    every: int,
    threads: int,
    repeats: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[FidelityRecord]:
    """Profile ``model`` and time the exported halves of every ``every``-th cut."""
    loaded = load_model(model)
    graph = capture(loaded.module, tuple(input_shape))
    nodes = compute_nodes(graph)
    profile = profile_graph(
        graph, model_spec=model, model_hash=model_hash(graph), threads=threads,
        repeats=repeats, codecs=("fp32",),
    )  # fmt: skip
    cuts = enumerate_cuts(graph)
    chosen = [c for c in cuts[1:-1] if c.index % every == 0]
    x = example_input(input_shape)
    records = []
    with torch_threads(threads), torch.no_grad():
        for i, cut in enumerate(chosen):
            halves = split(graph, cut)
            head = _exported(halves.head, graph.example_inputs)
            sent = tuple(halves.head(*graph.example_inputs))
            tail = _exported(halves.tail, sent)
            crossing = tuple(head(x))
            head_s, tail_s, whole_s = _interleaved(
                [partial(head, x), partial(tail, *crossing), partial(graph.module, x)], repeats
            )
            edge = set(cut.edge_nodes)
            records.append(
                FidelityRecord(
                    cut=cut.id,
                    name=cut.name,
                    predicted_head_ms=sum(profile.node_ms(n) for n in cut.edge_nodes)
                    + profile.call_overhead_ms,
                    predicted_tail_ms=sum(profile.node_ms(n) for n in nodes if n not in edge)
                    + profile.call_overhead_ms,
                    head_ms=head_s * 1e3,
                    tail_ms=tail_s * 1e3,
                    drift=whole_s * 1e3 / profile.total_ms,
                )
            )
            if progress:
                progress(i + 1, len(chosen))
    return records


def _exported(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} for _ in args))
    return program.module()


def _interleaved(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, run round-robin so load hits them alike."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]
