"""Fidelity of the profile, half by half: predicted vs measured compute of the exported halves.

    splitwire bench fidelity --model zoo:resnet50 --every 6
    splitwire bench fidelity --model zoo:efficientnet_lite0@pretrained --every 8

The model is profiled (as ``splitwire profile`` does), then for every ``every``-th cut (cut 0
and the last cut left out: one of their halves is empty) both halves are exported and saved
exactly as ``splitwire plan`` writes them (:func:`splitwire.partitioner.split.export_split`),
loaded back once as the runtimes load them
(:func:`splitwire.partitioner.archive.load_program`) and timed. Each half is compared
with its own prediction, computed as the planner computes it
(:func:`splitwire.partitioner.measure.reprice`): the profile's times of that half's nodes plus
one ``call_overhead_ms``.

Why per half: the profile's node times are calibrated so that ``sum(all nodes) + overhead``
equals the whole graph, so ``predicted head + predicted tail`` is the whole graph plus one call
at every cut and a comparison of sums cannot fail. Per half it can: it tests how the profile
shares the time out among the nodes, and what one call of an exported half costs.

Timing: the head, the tail and the whole captured graph run round-robin, ``repeats`` rounds
after two warm-up rounds; raw figures are medians. Each round's whole-graph time against the
profile's ``total_ms`` (the same module, timed while profiling) is that round's *drift*: how
much the machine's speed has moved since the profile (another process's load, frequency
scaling on a shared 2-core machine). The drift-corrected time of a half is the median over
rounds of ``half time / that round's drift``: it corrects for the machine, not for the
profile, so the corrected figures isolate the profile's error (they are the headline). Both
are reported; the record's ``drift`` is the median of the rounds'.

Halves predicted under :data:`TINY_MS` are mostly call overhead (~0.1-0.3 ms of pytree
flattening and guards, noisy at the 10 % scale); they are reported, and every fraction is also
given without them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from splitwire.partitioner.archive import load_program
from splitwire.partitioner.calibration import synthetic_images
from splitwire.partitioner.capture import capture, example_input
from splitwire.partitioner.cuts import compute_nodes, enumerate_cuts
from splitwire.partitioner.device import torch_threads
from splitwire.partitioner.measure import _compute_ms  # the planner's own prediction
from splitwire.partitioner.models import load_model, model_hash
from splitwire.partitioner.profiling import profile_graph
from splitwire.partitioner.split import export_split, split

TOLERANCE = 0.10
TINY_MS = 1.0
_WARMUP_ROUNDS = 2


@dataclass(frozen=True)
class FidelityRecord:
    """One cut: each half's predicted and measured compute (ms at the profile's batch)."""

    cut: str
    name: str
    index: int
    predicted_head_ms: float
    predicted_tail_ms: float
    head_ms: float
    tail_ms: float
    corrected_head_ms: float
    corrected_tail_ms: float
    whole_ms: float
    drift: float

    def measured(self, half: str, *, corrected: bool = True) -> float:
        """The measured ms of ``half`` (``"head"`` or ``"tail"``), drift-corrected or raw."""
        if half not in ("head", "tail"):
            raise ValueError(f"half {half!r}: expected 'head' or 'tail'")
        return getattr(self, f"corrected_{half}_ms" if corrected else f"{half}_ms")

    def predicted(self, half: str) -> float:
        """The profile's prediction for ``half`` in ms (its nodes + one call overhead)."""
        if half not in ("head", "tail"):
            raise ValueError(f"half {half!r}: expected 'head' or 'tail'")
        return getattr(self, f"predicted_{half}_ms")

    def ratio(self, half: str, *, corrected: bool = True) -> float:
        """``predicted / measured`` of ``half``; 1 is exact."""
        return self.predicted(half) / self.measured(half, corrected=corrected)

    def within(self, half: str, *, corrected: bool = True, tolerance: float = TOLERANCE) -> bool:
        """Whether ``half``'s prediction is within ``tolerance`` of its measured time."""
        return abs(self.ratio(half, corrected=corrected) - 1.0) <= tolerance

    def tiny(self, half: str) -> bool:
        """Whether ``half`` is predicted under :data:`TINY_MS` (mostly call overhead)."""
        return self.predicted(half) < TINY_MS

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for half in ("head", "tail"):
            data[f"{half}_ratio"] = self.ratio(half)
            data[f"{half}_ratio_raw"] = self.ratio(half, corrected=False)
            data[f"{half}_within"] = self.within(half)
            data[f"{half}_within_raw"] = self.within(half, corrected=False)
            data[f"{half}_tiny"] = self.tiny(half)
        return data


@dataclass(frozen=True)
class Fraction:
    """``within`` of ``total`` (cuts or halves)."""

    within: int
    total: int

    @property
    def value(self) -> float | None:
        return self.within / self.total if self.total else None

    def __str__(self) -> str:
        value = self.value
        percent = f"{100 * value:.0f} %" if value is not None else "n/a"
        return f"{self.within}/{self.total} ({percent})"


def summarize(records: Sequence[FidelityRecord], *, corrected: bool) -> dict[str, Fraction]:
    """The fractions within :data:`TOLERANCE`: cuts (both halves within), heads, tails; each
    also without tiny halves (a cut then counts on its non-tiny halves, if it has any)."""

    def fraction(rs: Sequence[FidelityRecord], halves: Sequence[str], skip_tiny: bool) -> Fraction:
        within = total = 0
        for r in rs:
            kept = [h for h in halves if not (skip_tiny and r.tiny(h))]
            if kept:
                total += 1
                within += all(r.within(h, corrected=corrected) for h in kept)
        return Fraction(within, total)

    both = ("head", "tail")
    return {
        "cuts": fraction(records, both, False),
        "heads": fraction(records, ("head",), False),
        "tails": fraction(records, ("tail",), False),
        "cuts_without_tiny": fraction(records, both, True),
        "heads_without_tiny": fraction(records, ("head",), True),
        "tails_without_tiny": fraction(records, ("tail",), True),
    }


def run_fidelity(
    model: str,
    input_shape: Sequence[int],
    *,
    every: int,
    threads: int,
    repeats: int,
    progress: Callable[[int, int], None] | None = None,
    max_cuts: int | None = None,
) -> list[FidelityRecord]:
    """Profile ``model``, then time the exported halves of every ``every``-th cut.

    Args:
        every: take cuts whose index is a multiple of this (cut 0 and the last cut excluded).
        threads: torch threads for the profile and the timings.
        repeats: profile passes, and timed rounds per cut (medians).
        max_cuts: take at most this many of those cuts, spread evenly (None: all).
    """
    shape = tuple(int(d) for d in input_shape)
    loaded = load_model(model)
    graph = capture(loaded.module, shape)
    nodes = compute_nodes(graph)
    profile = profile_graph(
        graph, model_spec=model, model_hash=model_hash(graph), threads=threads,
        repeats=repeats, codecs=("fp32",),
    )  # fmt: skip
    cuts = enumerate_cuts(graph)
    chosen = [c for c in cuts[1:-1] if c.index % every == 0]
    if max_cuts is not None and len(chosen) > max_cuts:
        step = len(chosen) / max_cuts
        chosen = [chosen[int(i * step)] for i in range(max_cuts)]
    # The profile times an image-like input as a synthetic image; the halves get the same.
    x = synthetic_images(shape[0], shape[1:]) if len(shape) == 4 else example_input(shape)
    records = []
    with torch_threads(threads), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for i, cut in enumerate(chosen):
            head_path, tail_path = export_split(split(graph, cut), graph, Path(tmp) / cut.id)
            head = load_program(head_path, sha256=None)  # exported just now, by us
            tail = load_program(tail_path, sha256=None)
            crossing = tuple(head(x))
            head_s, tail_s, whole_s = _interleaved(
                [partial(head, x), partial(tail, *crossing), partial(graph.module, x)], repeats
            )
            drift = [w * 1e3 / profile.total_ms for w in whole_s]
            edge = set(cut.edge_nodes)
            records.append(
                FidelityRecord(
                    cut=cut.id,
                    name=cut.name,
                    index=cut.index,
                    predicted_head_ms=_compute_ms(profile, cut.edge_nodes),
                    predicted_tail_ms=_compute_ms(profile, [n for n in nodes if n not in edge]),
                    head_ms=statistics.median(head_s) * 1e3,
                    tail_ms=statistics.median(tail_s) * 1e3,
                    corrected_head_ms=drift_corrected_ms(head_s, drift),
                    corrected_tail_ms=drift_corrected_ms(tail_s, drift),
                    whole_ms=statistics.median(whole_s) * 1e3,
                    drift=statistics.median(drift),
                )
            )
            del head, tail, crossing
            if progress:
                progress(i + 1, len(chosen))
    return records


def drift_corrected_ms(seconds: Sequence[float], drift: Sequence[float]) -> float:
    """Median over rounds of one round's time (s) divided by that round's drift, in ms."""
    return statistics.median(s * 1e3 / d for s, d in zip(seconds, drift, strict=True))


def _interleaved(fns: Sequence[Callable[[], object]], repeats: int) -> list[list[float]]:
    """Seconds of each function per round, run round-robin so load hits them alike."""
    for _ in range(_WARMUP_ROUNDS):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return samples
