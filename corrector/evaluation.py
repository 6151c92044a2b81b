"""mIoU against delay for local-only, remote-only and fused answers, per motion regime.

    splitwire corrector eval --ckpt out/corrector --json

For every held-out clip (seeds disjoint from training and validation) of ``max_delay + 1``
frames, the current frame t is the last one and, for each delay d, the remote frame is t - d:

* ``local``: the primary variant's local model alone on frame t;
* ``remote``: the heavy model's prediction for frame t - d, used as the answer for frame t;
* ``fused`` (and every other trained variant): local features of t fused with the heavy
  model's downlink features of t - d at delay d (beyond tau_max: exactly local-only).

All answers of a regime are scored on the same clips (paired), each mIoU over the background
and the four object classes, counted over all pixels of all clips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from splitwire.corrector.checkpoint import Checkpoint
from splitwire.corrector.errors import TaskConfigError
from splitwire.corrector.inputs import preprocess
from splitwire.corrector.metrics import ConfusionMatrix
from splitwire.corrector.runtime import Corrector
from splitwire.corrector.training import PURPOSE_EVAL
from splitwire.corrector.video import FPS, NUM_CLASSES, TaskConfig, check_speed, scene

__all__ = ["DEFAULT_REGIMES", "EvalRecord", "Regime", "evaluate", "variant_key"]


@dataclass(frozen=True)
class Regime:
    """A motion regime: a name and the (lo, hi) object speed in pixels per frame."""

    name: str
    speed: tuple[float, float]


DEFAULT_REGIMES = (
    Regime("static", (0.0, 0.0)),
    Regime("low", (0.5, 1.5)),
    Regime("high", (2.0, 4.0)),
)


def variant_key(fusion: str) -> str:
    """The record field of a non-primary fusion variant: ``gate`` → ``gate_miou``."""
    return f"{fusion.replace('-', '_')}_miou"


@dataclass(frozen=True)
class EvalRecord:
    """One (regime, delay) row.

    Attributes:
        motion: the regime's name (``static``, ``low``, ``high``, or ``LO-HI`` for --speed).
        speed_lo / speed_hi: its speed range, pixels per frame.
        delay_frames / delay_ms: the delay (frames at 30 fps).
        beyond_tau_max: the delay exceeds the trained range (fused falls back to local).
        local_miou / remote_miou / fused_miou: the three answers (fused: the primary variant).
        variants: every other trained variant's fused mIoU, keyed by :func:`variant_key`.
    """

    motion: str
    speed_lo: float
    speed_hi: float
    delay_frames: int
    delay_ms: float
    beyond_tau_max: bool
    local_miou: float
    remote_miou: float
    fused_miou: float
    variants: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        row = asdict(self)
        row.pop("variants")
        return {**row, **self.variants}


def evaluate(
    checkpoint: Checkpoint,
    *,
    regimes: tuple[Regime, ...] = DEFAULT_REGIMES,
    max_delay: int = 16,
    clips: int = 64,
    seed: int = 0,
) -> list[EvalRecord]:
    """Score every trained variant on held-out clips.

    Args:
        checkpoint: a loaded checkpoint (all variants to report).
        regimes: the motion regimes.
        max_delay: delays 0..max_delay frames are scored.
        clips: held-out clips per regime.
        seed: the evaluation seed (scenes ``(PURPOSE_EVAL, seed, i)``).

    Returns:
        One record per (regime, delay), regimes in order.

    Raises:
        TaskConfigError: a negative max_delay, no clips, or a bad speed range.
    """
    if max_delay < 0 or clips < 1:
        raise TaskConfigError(f"max_delay {max_delay} (>= 0), clips {clips} (>= 1): out of range")
    task = TaskConfig.from_dict(checkpoint.meta["task"])
    primary = checkpoint.primary
    correctors = {name: Corrector.from_checkpoint(checkpoint, name) for name in checkpoint.locals}
    records = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for regime in regimes:
            check_speed(regime.speed)
            matrices = _score_regime(
                correctors,
                primary=primary,
                task=task,
                regime=regime,
                max_delay=max_delay,
                clips=clips,
                seed=seed,
            )
            for d in range(max_delay + 1):
                records.append(
                    EvalRecord(
                        motion=regime.name,
                        speed_lo=regime.speed[0],
                        speed_hi=regime.speed[1],
                        delay_frames=d,
                        delay_ms=round(d * 1000 / FPS, 1),
                        beyond_tau_max=d > checkpoint.tau_max,
                        local_miou=round(matrices["local"][d].miou(), 4),
                        remote_miou=round(matrices["remote"][d].miou(), 4),
                        fused_miou=round(matrices[primary][d].miou(), 4),
                        variants={
                            variant_key(name): round(matrices[name][d].miou(), 4)
                            for name in correctors
                            if name != primary
                        },
                    )
                )
    finally:
        torch.set_num_threads(previous)
    return records


def _score_regime(
    correctors: dict[str, Corrector],
    *,
    primary: str,
    task: TaskConfig,
    regime: Regime,
    max_delay: int,
    clips: int,
    seed: int,
) -> dict[str, list[ConfusionMatrix]]:
    length = max_delay + 1
    names = ["local", "remote", *correctors]
    matrices = {k: [ConfusionMatrix(NUM_CLASSES) for _ in range(length)] for k in names}
    primary_local = correctors[primary]
    batch = 16
    for start in range(0, clips, batch):
        rendered = [
            scene((PURPOSE_EVAL, seed, i), speed=regime.speed, config=task).render(range(length))
            for i in range(start, min(start + batch, clips))
        ]
        frames = torch.stack([c.frames for c in rendered])  # (B, T, 3, H, W)
        labels = torch.stack([c.labels[-1] for c in rendered])  # (B, H, W) at frame t
        b = frames.shape[0]
        with torch.inference_mode():
            logits, downlink = primary_local.heavy(preprocess(frames.flatten(0, 1)))
        logits = logits.unflatten(0, (b, length))  # (B, T, K, H, W)
        downlink = downlink.unflatten(0, (b, length))
        now = frames[:, -1]
        feats = {name: c.local_features(now) for name, c in correctors.items()}
        local_only = primary_local.fuse(feats[primary], None, 0)
        for d in range(length):
            t_old = length - 1 - d
            matrices["local"][d].add(local_only, labels)
            matrices["remote"][d].add(logits[:, t_old], labels)
            for name, c in correctors.items():
                matrices[name][d].add(c.fuse(feats[name], downlink[:, t_old].clone(), d), labels)
    return matrices
