"""How a plan is shown: a table per link (front, baselines, pick), JSON, and a plot.

Marks in the table: ``*`` on the Pareto front, ``>`` the pick, ``B`` a baseline; a lossy
candidate whose tail was never run (an exact one beats it on every link) shows ``n/m`` as its
accuracy cost. Under each table the pick's accuracy in the budget's metric, with its 95 %
interval and the inputs it was measured on (:func:`accuracy_text`). Every baseline
is its own row, named by its kind and told apart by its codec: ``all-in-cloud-raw`` with
``frame`` / ``frame+zstd1`` (the camera's uint8 frame; ``fp32`` for inputs that are no image),
``all-in-cloud-jpeg`` with ``jpeg75`` (4:2:0) / ``jpeg75s444`` (4:4:4) per quality,
``all-on-edge`` with ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from splitwire.partitioner.accuracy import AGREEMENTS, AccuracyBudget
from splitwire.partitioner.cost import Candidate, Measurement
from splitwire.partitioner.decisions import LinkDecision
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.measure import BYTES_TOLERANCE
from splitwire.partitioner.planner import PlanOutcome, describe_calibration

if TYPE_CHECKING:  # matplotlib is optional (splitwire[plot]) and imported when plotting
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
            "accuracy_inputs": choice.evidence.inputs if choice.evidence else None,
            "accuracy_interval": (
                list(choice.accuracy_interval) if choice.accuracy_interval else None
            ),
            "links": [_pick_json(d) for d in outcome.decisions],
        },
        "model_hash": outcome.model_hash,
        "accuracy_budget": outcome.request.budget.text,
        "trained_weights": outcome.trained_weights,
        "task": outcome.task,
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
        "accuracy_inputs": pick["accuracy_inputs"],
        "accuracy_interval": pick["accuracy_interval"],
    }


def phase_summary(outcome: PlanOutcome) -> str:
    """One line: seconds per planning phase (``measure`` split into encoding, screening and
    confirming) and
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
            if not outcome.random_weights  # said only when known (zoo/hf without weights)
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
        frames = [m.bytes_frames for m in outcome.measurements if m.bytes_frames]
        screen = min(request.screen, request.calibration)
        print(
            f"accuracy: lossy candidates screened on the first {screen} "
            f"inputs, every front member and pick measured on all {request.calibration}; bytes "
            f"are means over {min(frames, default=0)}–{max(frames, default=0)} frames (fewer "
            f"where the sizes agree within {100 * BYTES_TOLERANCE:g} %)",
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
        print(
            f"  pick's accuracy: {accuracy_text(decision.pick.measurement, request.budget)}",
            file=out,
        )
    choice = outcome.choice
    print(f"\nplan: cut {choice.cut} ({choice.cut_name}) with {choice.codec}", end="", file=out)
    if outcome.robust_ratio is not None:
        print(
            f" — robust across {len(outcome.decisions)} links: at worst "
            f"{outcome.robust_ratio:.2f}× each link's best {request.objective}",
            end="",
            file=out,
        )
    print(f"; accuracy {accuracy_text(choice, request.budget)}", file=out)


def accuracy_text(m: Measurement, budget: AccuracyBudget) -> str:
    """A candidate's accuracy in the budget's metric with what it rests on, e.g.
    ``kl 2.1e-04, 95 % interval [1.5e-04, 3.0e-04] on 32 inputs`` or ``kl 0 (exact: lossless)``."""
    if m.dominated_by or m.metrics is None:
        return f"not measured (dominated by {m.dominated_by} on every link)"
    value = m.metrics.value(budget.metric)
    if m.evidence is None:
        return f"{budget.metric} {value:.3g} (exact: nothing lossy is sent)"
    interval = m.accuracy_interval or (value, value)
    return (
        f"{budget.metric} {value:.3g}, 95 % interval [{interval[0]:.3g}, {interval[1]:.3g}] on "
        f"{m.evidence.inputs} inputs"
    )


def _table(rows: Sequence[Candidate], pick: Candidate, out: TextIO, *, metric: str) -> None:
    header = f"{metric} cost" if metric in AGREEMENTS else metric
    # As wide as the longest name listed: a cut name is where the model is split, and two cuts
    # can share the first twenty characters (layer4.1.conv2 / layer4.1.conv2_bn).
    width = max(
        [len("name"), *(len(m.baseline or m.cut_name) for m in (c.measurement for c in rows))]
    )
    print(
        f"  {'':3} {'cut':<6} {'name':<{width}} {'codec':<11} {'bytes':>9} {'edge ms':>8} "
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
            f"  {marks} {m.cut:<6} {name:<{width}} {m.codec:<11} {_bytes(m.bytes_wire):>9} "
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
    """Write :func:`figure` to ``path`` (its format from the suffix; ``splitwire plan`` checked
    the path before planning, :func:`~splitwire.partitioner.outputs.check_plot_file`).

    Raises:
        PartitionerError: matplotlib is not installed, or the file cannot be written.
    """
    fig = figure(outcome)
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise PartitionerError(f"--plot {path}: cannot write it: {exc.strerror}") from exc
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def figure(outcome: PlanOutcome) -> Figure:
    """Latency against throughput, a panel per link: every candidate, those over the accuracy
    budget crossed out, the Pareto front, the baselines, the link's pick and (several links)
    the robust pick. The caller closes it (``matplotlib.pyplot.close``).

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
    budget = outcome.request.budget
    robust = outcome.choice if outcome.robust_ratio is not None else None
    fig, axes = plt.subplots(1, len(decisions), figsize=(5.5 * len(decisions), 6), squeeze=False)
    for ax, decision in zip(axes[0], decisions, strict=True):
        everything = decision.candidates
        within = [c for c in everything if c.measurement.accuracy_cost <= budget.max_cost]
        over = [
            c
            for c in everything
            if c.measurement.accuracy_cost > budget.max_cost and not c.measurement.dominated_by
        ]
        unmeasured = [c for c in everything if c.measurement.dominated_by]
        _points(ax, within, s=8, color="0.6", label="candidates within budget")
        _points(
            ax, over, s=14, marker="x", color="tab:red", linewidths=0.8,
            label=f"over the {budget.text} budget",
        )  # fmt: skip
        _points(
            ax, unmeasured, s=6, color="0.85",
            label="not measured (an exact candidate beats them)",
        )  # fmt: skip
        # Points, not a line: a front over five objectives is no curve in these two.
        front = [c for c in everything if c.pareto]
        _points(ax, front, s=16, color="tab:blue", label="Pareto front (5 objectives)")
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
            zorder=5,
            label=f"this link's pick: {_label(pick)}",
        )
        if robust is not None:
            mine = next(
                c
                for c in everything
                if (c.measurement.cut, c.measurement.codec) == (robust.cut, robust.codec)
            )
            ax.scatter(
                mine.latency_ms,
                mine.throughput_fps,
                marker="o",
                s=260,
                facecolors="none",
                edgecolors="black",
                linewidths=1.6,
                zorder=6,
                label=f"robust pick (the plan's): {_label(mine)}",
            )
        _log_axis(ax, [c.latency_ms for c in everything])
        ax.set_xlabel("end-to-end latency (ms, log scale)")
        ax.set_ylabel("pipelined throughput (frames/s)")
        ax.set_title(str(decision.link), fontsize=9)  # names alone repeat ("custom")
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle(f"{outcome.request.model_spec} {'x'.join(map(str, outcome.request.input_shape))}")
    fig.tight_layout()
    return fig


def _label(c: Candidate) -> str:
    m = c.measurement
    return _baseline_label(c) if m.baseline else f"{m.cut} {m.cut_name} {m.codec}"


def _points(ax: Axes, rows: Sequence[Candidate], **style: Any) -> None:
    if rows:
        ax.scatter([c.latency_ms for c in rows], [c.throughput_fps for c in rows], **style)


def _log_axis(ax: Axes, values: Sequence[float]) -> None:
    """A log x axis whose labels never overlap: plain numbers (``20``, ``500``, ``1000``), every
    1..9 step within half a decade, 1-2-5 steps over a decade or so, fewer over more decades,
    unlabelled minor ticks (matplotlib labels the minor ticks of a short log axis, and they
    crowd into each other)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    decades = math.log10(max(positive) / min(positive)) if positive else 1.0
    subs: tuple[float, ...] = (1.0,)
    for most, steps in ((0.6, tuple(range(1, 10))), (1.5, (1, 2, 5)), (3.0, (1, 3))):
        if decades <= most:
            subs = tuple(map(float, steps))
            break
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    ax.xaxis.set_minor_formatter(NullFormatter())
