"""The evaluation's table (for people) and plot (mIoU against delay, one panel per regime)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from splitwire.corrector.checkpoint import Checkpoint
from splitwire.corrector.errors import CorrectorError
from splitwire.corrector.evaluation import EvalRecord

__all__ = ["format_table", "plot_curves"]


def format_table(records: Sequence[EvalRecord], *, checkpoint: Checkpoint) -> str:
    """One block per regime: a row per delay, mIoU in points, the fused margin over the
    stronger of local-only and remote-only (``*`` marks delays beyond tau_max), the heavy model
    at delay 0 and the downlink bytes per frame in the regime's heading."""
    if not records:
        return "(no records)"
    variants = list(records[0].variants)
    head = ["delay", "ms", "local", "remote", f"fused:{checkpoint.primary}", "fusion"] + [
        v.removesuffix("_miou").replace("_fusion", ":fusion").replace("_", "-") for v in variants
    ]
    head += ["kept%", "fused-best"]
    lines = [
        f"mIoU (points) on held-out clips; fused = {checkpoint.primary} with the remote class "
        "map kept where the edge measures no motion, fusion = the fusion alone; local = its "
        f"local-only path; tau_max {checkpoint.tau_max} (* beyond: remote features dropped, "
        "the class map still kept where nothing moved)"
    ]
    widths = [max(6, len(h)) for h in head]
    for motion in dict.fromkeys(r.motion for r in records):
        rows = [r for r in records if r.motion == motion]
        first = rows[0]
        lines.append("")
        lines.append(
            f"{motion}: {first.speed_lo:g}-{first.speed_hi:g} px/frame; heavy model at delay 0 "
            f"{100 * first.heavy_miou:.1f}; downlink {first.downlink_bytes:.0f} B/frame "
            f"(features {first.feature_bytes:.0f} + class map {first.class_map_bytes:.0f} + "
            "headers)"
        )
        lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
        for r in rows:
            cells = [
                f"{r.delay_frames}{'*' if r.beyond_tau_max else ''}",
                f"{r.delay_ms:.0f}",
                *(
                    f"{100 * v:.1f}"
                    for v in (r.local_miou, r.remote_miou, r.fused_miou, r.fusion_miou)
                ),
                *(f"{100 * r.variants[v]:.1f}" for v in variants),
                f"{100 * r.kept_share:.0f}",
                f"{100 * r.fused_margin:+.1f}",
            ]
            lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def plot_curves(records: Sequence[EvalRecord], path: Path, *, tau_max: int) -> None:
    """Write a PNG: per regime, mIoU against delay for every answer.

    Raises:
        CorrectorError: matplotlib is missing (install the ``plot`` extra) or the file cannot
            be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CorrectorError("--plot needs matplotlib: pip install 'splitwire[plot]'") from exc
    motions = list(dict.fromkeys(r.motion for r in records))
    fig, axes = plt.subplots(1, len(motions), figsize=(4.2 * len(motions), 3.6), sharey=True)
    axes = [axes] if len(motions) == 1 else list(axes)
    for ax, motion in zip(axes, motions, strict=True):
        rows = [r for r in records if r.motion == motion]
        delays = [r.delay_frames for r in rows]
        ax.plot(delays, [r.local_miou for r in rows], "o-", label="local only")
        ax.plot(delays, [r.remote_miou for r in rows], "s-", label="remote only (stale)")
        ax.plot(delays, [r.fused_miou for r in rows], "^-", lw=2, label="fused (emitted)")
        ax.plot(delays, [r.fusion_miou for r in rows], "--", label="fusion alone (add)")
        ax.axhline(rows[0].heavy_miou, color="black", lw=0.8, ls="--", label="heavy, no delay")
        ax.axvline(tau_max + 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{motion}: {rows[0].speed_lo:g}-{rows[0].speed_hi:g} px/frame")
        ax.set_xlabel("delay (frames at 30 fps)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mIoU")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CorrectorError(f"cannot write the plot to {path}: {exc}") from exc
    finally:
        plt.close(fig)
