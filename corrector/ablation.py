"""What the delay conditioning buys: ``add`` against ``add-nodelay`` over several training seeds.

    splitwire corrector ablation --ckpt out/c0 --ckpt out/c1 --ckpt out/c2 --speed 0,4

On a regime of mixed speeds (each object's speed drawn from 0..4 px/frame, so the delay alone
cannot tell how far an object moved), every checkpoint (one training seed each, both variants
trained in lockstep on the same batches) is evaluated on the same held-out clips at delays
0..tau_max. Per delay the difference ``add − add-nodelay`` is reported per seed, with its mean,
standard deviation and range over the seeds, for the fusion alone (where the embedding acts)
and for the emitted answer (after the measured-motion selection).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from splitwire.corrector.checkpoint import Checkpoint
from splitwire.corrector.errors import TaskConfigError
from splitwire.corrector.evaluation import EvalRecord, Regime, evaluate, variant_key

__all__ = ["AblationRow", "ablation", "format_ablation"]

WITH, WITHOUT = "add", "add-nodelay"


@dataclass(frozen=True)
class AblationRow:
    """One delay: ``add − add-nodelay`` in mIoU (0..1) per seed, for the fusion alone and the
    emitted answer, with their mean, standard deviation (0 for one seed) and range."""

    delay_frames: int
    fusion_diff: list[float]
    fused_diff: list[float]
    fusion_mean: float
    fusion_std: float
    fusion_min: float
    fusion_max: float
    fused_mean: float
    fused_std: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ablation(
    checkpoints: Sequence[Checkpoint],
    *,
    speed: tuple[float, float] = (0.0, 4.0),
    clips: int = 64,
    seed: int = 0,
) -> list[AblationRow]:
    """Evaluate ``add`` against ``add-nodelay`` in every checkpoint (one per training seed).

    Raises:
        TaskConfigError: no checkpoint, a checkpoint without both variants, or checkpoints
            with different tau_max.
    """
    if not checkpoints:
        raise TaskConfigError("ablation: expected at least one checkpoint (--ckpt DIR)")
    for c in checkpoints:
        if WITH not in c.locals or WITHOUT not in c.locals:
            raise TaskConfigError(
                f"{c.directory}: holds {', '.join(sorted(c.locals))}; the ablation needs "
                f"{WITH} and {WITHOUT} (train with --fusion {WITH} --fusion {WITHOUT})"
            )
    tau_max = {c.tau_max for c in checkpoints}
    if len(tau_max) != 1:
        raise TaskConfigError(f"ablation: checkpoints with different tau_max {sorted(tau_max)}")
    regime = Regime(f"{speed[0]:g}-{speed[1]:g}", speed)
    runs = []
    for c in checkpoints:
        records = evaluate(c, regimes=(regime,), max_delay=c.tau_max, clips=clips, seed=seed)
        runs.append({r.delay_frames: r for r in records})
    rows = []
    for d in sorted(runs[0]):
        fusion, fused = [], []
        for run, c in zip(runs, checkpoints, strict=True):
            r = run[d]
            with_fusion = _figure(r, WITH, raw=True, primary=c.primary)
            with_fused = _figure(r, WITH, raw=False, primary=c.primary)
            fusion.append(round(with_fusion - _figure(r, WITHOUT, raw=True, primary=c.primary), 4))
            fused.append(round(with_fused - _figure(r, WITHOUT, raw=False, primary=c.primary), 4))
        rows.append(
            AblationRow(
                delay_frames=d,
                fusion_diff=fusion,
                fused_diff=fused,
                fusion_mean=round(statistics.fmean(fusion), 4),
                fusion_std=round(statistics.stdev(fusion), 4) if len(fusion) > 1 else 0.0,
                fusion_min=min(fusion),
                fusion_max=max(fusion),
                fused_mean=round(statistics.fmean(fused), 4),
                fused_std=round(statistics.stdev(fused), 4) if len(fused) > 1 else 0.0,
            )
        )
    return rows


def _figure(record: EvalRecord, fusion: str, *, raw: bool, primary: str) -> float:
    """A variant's mIoU in a record: the primary's own fields, the others' in ``variants``."""
    if fusion == primary:
        return record.fusion_miou if raw else record.fused_miou
    return record.variants[variant_key(fusion, raw=raw)]


def format_ablation(rows: Sequence[AblationRow], *, seeds: int, speed: tuple[float, float]) -> str:
    """The table for people: points, per delay."""
    lines = [
        f"add − add-nodelay, mIoU points, {seeds} training seeds, {speed[0]:g}-{speed[1]:g} "
        "px/frame (fusion alone; emitted answer)",
        "delay   per seed (fusion)          mean    std   range           emitted mean   std",
    ]
    for r in rows:
        per_seed = " ".join(f"{100 * v:+5.1f}" for v in r.fusion_diff)
        lines.append(
            f"{r.delay_frames:>5}   {per_seed:<24} {100 * r.fusion_mean:+6.1f} "
            f"{100 * r.fusion_std:6.1f}   {100 * r.fusion_min:+5.1f}..{100 * r.fusion_max:+5.1f}"
            f"   {100 * r.fused_mean:+6.1f} {100 * r.fused_std:6.1f}"
        )
    overall = statistics.fmean(r.fusion_mean for r in rows)
    lines.append(f"mean over delays (fusion alone): {100 * overall:+.2f} points")
    return "\n".join(lines)
