"""How a plan is shown: a table per link (front, baselines, pick), JSON, and a plot.

Marks in the table: ``*`` on the Pareto front, ``>`` the pick, ``B`` a baseline; a lossy
candidate whose tail was never run (an exact one beats it on every link) shows ``n/m`` as its
accuracy cost. Every baseline
is its own row, named by its kind and told apart by its codec: ``all-in-cloud-raw`` with
``frame`` / ``frame+zstd1`` (the camera's uint8 frame; ``fp32`` for inputs that are no image),
``all-in-cloud-jpeg`` with ``jpeg75`` (4:2:0) / ``jpeg75s444`` (4:4:4) per quality,
``all-on-edge`` with ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from splitwire.partitioner.accuracy import AGREEMENTS, AccuracyBudget
from splitwire.partitioner.cost import Candidate
from splitwire.partitioner.decisions import LinkDecision
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.planner import PlanOutcome, describe_calibration

ACCURACY_MEANING = {
    "rel": "relative output error against the uncompressed model",
    "kl": "mean KL divergence (nats) of the class distribution from the uncompressed model's",
    "top1": "cost = 1 - share of inputs whose top-1 class is unchanged",
    "top5": "cost = 1 - share of inputs whose top-1 class stays in the top 5",
    "pixel": "cost = 1 - share of pixels whose class is unchanged",
    "miou": "cost = 1 - mIoU against the uncompressed model's segmentation",
}


def outcome_json(outcome: PlanOutcome, plan_path: Path | None) -> dict[str, Any]:
    """The ``--json`` document: every candidate of every link, and the choice."""
    choice = outcome.choice
    return {
        "candidates": [c.as_json() for d in outcome.decisions for c in d.candidates],
        "choice": {
            "cut": choice.cut,
            "cut_name": choice.cut_name,
            "codec": choice.codec,
            "baseline": choice.baseline,
            "robust_worst_ratio": outcome.robust_ratio,
            "links": [_pick_json(d) for d in outcome.decisions],
        },
        "model_hash": outcome.model_hash,
        "accuracy_budget": outcome.request.budget.text,
        "trained_weights": outcome.trained,
        "seconds": {k: round(v, 3) for k, v in outcome.seconds.items()},
        "plan": str(plan_path) if plan_path else None,
    }


def _pick_json(decision: LinkDecision) -> dict[str, Any]:
    pick = decision.pick.as_json()
    return {
        "link": str(decision.link),
        "cut": pick["cut"],
        "cut_name": pick["cut_name"],
        "codec": pick["codec"],
        "baseline": pick["baseline"],
        "split_wins": decision.split_wins,
        "latency_ms": pick["latency_ms"],
        "throughput_fps": pick["throughput_fps"],
        "bytes_wire": pick["bytes_wire"],
        "accuracy_cost": pick["accuracy_cost"],
    }


def phase_summary(outcome: PlanOutcome) -> str:
    """One line: seconds per planning phase (``measure`` split into encoding and tails) and
    how many lossy candidates were not measured, e.g. ``phases: capture 5.8 s, ...``."""
    seconds = outcome.seconds
    parts = []
    for phase, s in seconds.items():
        if "." in phase:
            continue
        subs = [f"{k.split('.', 1)[1]} {v:.1f} s" for k, v in seconds.items() if "." in k]
        detail = f" ({', '.join(subs)})" if phase == "measure" and subs else ""
        parts.append(f"{phase} {s:.1f} s{detail}")
    skipped = sum(1 for m in outcome.measurements if m.dominated_by)
    line = "phases: " + ", ".join(parts)
    if skipped:
        line += (
            f"; {skipped} lossy candidates not measured (an exact one beats each on every "
            "link; --no-prune measures them)"
        )
    return line


def print_tables(outcome: PlanOutcome, out: TextIO, *, show_all: bool = False) -> None:
    """One table per link, then the choice. Without ``show_all`` only the front, the baselines
    and the pick are listed."""
    request = outcome.request
    print(
        f"accuracy budget {request.budget.text}: "
        + ACCURACY_MEANING.get(request.budget.metric, "")
        + (
            ""
            if outcome.trained
            else "; the weights are random, so this is output distortion, not a task metric"
        ),
        file=out,
    )
    if outcome.request.reuse_measurements is None:
        print(
            f"measured on {request.calibration} × "
            f"{describe_calibration(request.calibration_data)}; the camera baselines encode "
            "those frames",
            file=out,
        )
    else:
        print(f"measurements reused from {outcome.request.reuse_measurements}", file=out)
    for decision in outcome.decisions:
        rows = [
            c
            for c in decision.candidates
            if show_all or c.pareto or c.measurement.baseline or c is decision.pick
        ]
        rows.sort(key=lambda c: c.latency_ms)
        front = sum(c.pareto for c in decision.candidates)
        print(
            f"\nlink {decision.link.name} ({decision.link}): {len(decision.candidates)} "
            f"candidates, {front} on the Pareto front",
            file=out,
        )
        _table(rows, decision.pick, out, metric=request.budget.metric)
        print(_verdict(decision, request.objective, request.budget), file=out)
    choice = outcome.choice
    print(f"\nplan: cut {choice.cut} ({choice.cut_name}) with {choice.codec}", end="", file=out)
    if outcome.robust_ratio is not None:
        print(
            f" — robust across {len(outcome.decisions)} links: at worst "
            f"{outcome.robust_ratio:.2f}× each link's best {request.objective}",
            end="",
            file=out,
        )
    print(file=out)


def _table(rows: Sequence[Candidate], pick: Candidate, out: TextIO, *, metric: str) -> None:
    header = f"{metric} cost" if metric in AGREEMENTS else metric
    print(
        f"  {'':3} {'cut':<6} {'name':<22} {'codec':<11} {'bytes':>9} {'edge ms':>8} "
        f"{'xfer ms':>8} {'cloud ms':>8} {'lat ms':>8} {'fps':>7} {header:>9}",
        file=out,
    )
    for c in rows:
        m = c.measurement
        marks = (
            ("*" if c.pareto else " ") + (">" if c is pick else " ") + ("B" if m.baseline else " ")
        )
        name = m.baseline or m.cut_name
        print(
            f"  {marks} {m.cut:<6} {name[:22]:<22} {m.codec:<11} {_bytes(m.bytes_wire):>9} "
            f"{c.edge_ms:>8.2f} {c.transfer_ms:>8.2f} {c.cloud_ms:>8.2f} {c.latency_ms:>8.2f} "
            f"{c.throughput_fps:>7.1f} "
            + (f"{'n/m':>9}" if m.dominated_by else f"{m.accuracy_cost:>9.2e}"),
            file=out,
        )


def _verdict(decision: LinkDecision, objective: str, budget: AccuracyBudget) -> str:
    pick = decision.pick
    baselines = [c for c in decision.candidates if c.measurement.baseline]
    within = [c for c in baselines if c.measurement.accuracy_cost <= budget.max_cost]
    beyond = [c for c in baselines if c.measurement.accuracy_cost > budget.max_cost]
    notes = "".join(
        f"; {_baseline_label(c)} ({c.latency_ms:.1f} ms) costs "
        f"{c.measurement.accuracy_cost:.1e} in {budget.metric}, over the {budget.text} budget"
        for c in beyond
        if c.latency_ms < pick.latency_ms
    )
    if decision.split_wins:
        best_base = min(within, key=lambda c: c.latency_ms)
        return (
            f"  pick: split at {pick.measurement.cut} ({pick.measurement.cut_name}), "
            f"{pick.measurement.codec}: {pick.latency_ms:.1f} ms vs the best baseline within "
            f"budget ({_baseline_label(best_base)}) {best_base.latency_ms:.1f} ms{notes}"
        )
    what = (
        _baseline_label(pick)
        if pick.measurement.baseline
        else f"all in the cloud, input sent as {pick.measurement.codec}"
    )
    return f"  no split beats the baselines on {objective} here: planning {what}{notes}"


def _baseline_label(c: Candidate) -> str:
    """A baseline row in words: its kind and its codec (``all-in-cloud-jpeg jpeg75s444``)."""
    m = c.measurement
    return f"{m.baseline} {m.codec}" if m.baseline and m.codec != "none" else str(m.baseline)


# Baseline markers in the plot: one shape per kind, one colour per row.
_BASELINE_MARKERS = {"all-on-edge": "^", "all-in-cloud-raw": "s", "all-in-cloud-jpeg": "D"}


def _bytes(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def plot(outcome: PlanOutcome, path: Path) -> None:
    """Latency against throughput for each link: all candidates, the front, the baselines and
    the pick.

    Raises:
        PartitionerError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PartitionerError("--plot needs matplotlib: pip install 'splitwire[plot]'") from exc
    decisions = outcome.decisions
    fig, axes = plt.subplots(1, len(decisions), figsize=(5.5 * len(decisions), 4.5), squeeze=False)
    for ax, decision in zip(axes[0], decisions, strict=True):
        everything = decision.candidates
        ax.scatter(
            [c.latency_ms for c in everything],
            [c.throughput_fps for c in everything],
            s=8,
            color="0.75",
            label="candidates",
        )
        front = sorted((c for c in everything if c.pareto), key=lambda c: c.latency_ms)
        ax.scatter(
            [c.latency_ms for c in front],
            [c.throughput_fps for c in front],
            s=16,
            color="tab:blue",
            label="Pareto front (5 objectives)",
        )
        baselines = sorted(
            (c for c in everything if c.measurement.baseline),
            key=lambda c: (str(c.measurement.baseline), c.measurement.codec),
        )
        colours = plt.get_cmap("tab10")
        for i, c in enumerate(baselines):
            ax.scatter(
                c.latency_ms,
                c.throughput_fps,
                marker=_BASELINE_MARKERS.get(str(c.measurement.baseline), "s"),
                s=45,
                facecolors="none",
                edgecolors=colours(i % 10),
                linewidths=1.4,
                label=f"{_baseline_label(c)} ({_bytes(c.measurement.bytes_wire)}B)",
            )
        pick = decision.pick
        ax.scatter(
            pick.latency_ms,
            pick.throughput_fps,
            marker="*",
            s=220,
            color="tab:orange",
            label=f"pick: {pick.measurement.cut_name} {pick.measurement.codec}",
        )
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms, log)")
        ax.set_ylabel("pipelined throughput (frames/s)")
        ax.set_title(str(decision.link), fontsize=9)  # names alone repeat ("custom")
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{outcome.request.model_spec} {'x'.join(map(str, outcome.request.input_shape))}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
