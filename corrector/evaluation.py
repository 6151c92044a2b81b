"""mIoU against delay for local-only, remote-only and fused answers, per motion regime.

    splitwire corrector eval --ckpt out/corrector --json

For every held-out clip (seeds disjoint from training and validation) of ``max_delay + 1``
frames, the current frame t is the last one and, for each delay d, the remote frame is t - d:

* ``local``: the primary variant's local model alone on frame t;
* ``remote``: the heavy model's prediction for frame t - d, used as the answer for frame t;
* ``heavy``: the heavy model on frame t itself (what no delay would give; the same at every d);
* ``fused`` (and every other trained variant): what the agent emits
  (:meth:`~splitwire.corrector.runtime.Corrector.answer`): the remote class map of t - d where
  the edge measures no motion between the two frames, elsewhere the fusion of the local
  features of t with the downlink features of t - d (local-only beyond tau_max);
* ``fusion``: the fusion alone, everywhere (what the selection starts from);
* ``fused_margin``: fused − max(local, remote), the issue's target (≥ −0.005).

Every remote answer goes through the downlink as a tail sends it
(:func:`~splitwire.corrector.payload.transmit`: the class map as zstd uint8 indices, the
feature map as int8+zstd1, in result messages): the fusion reads the features the edge decodes,
and the downlink bytes per frame are the result messages' (mean over the regime's remote
frames), with the class map's and the feature map's payloads beside them.

All answers of a regime are scored on the same clips (paired), each mIoU over the background
and the four object classes, counted over all pixels of all clips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from splitwire.corrector.checkpoint import Checkpoint
from splitwire.corrector.errors import TaskConfigError
from splitwire.corrector.inputs import preprocess
from splitwire.corrector.metrics import ConfusionMatrix
from splitwire.corrector.payload import transmit
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


def variant_key(fusion: str, *, raw: bool = False) -> str:
    """The record field of a fusion variant: ``gate`` → ``gate_miou`` (what the agent emits
    with it), ``gate_fusion_miou`` with ``raw`` (the fusion alone)."""
    return f"{fusion.replace('-', '_')}{'_fusion' if raw else ''}_miou"


@dataclass(frozen=True)
class EvalRecord:
    """One (regime, delay) row.

    Attributes:
        motion: the regime's name (``static``, ``low``, ``high``, or ``LO-HI`` for --speed).
        speed_lo / speed_hi: its speed range, pixels per frame.
        delay_frames / delay_ms: the delay (frames at 30 fps).
        beyond_tau_max: the delay exceeds the trained range (the fusion falls back to local).
        local_miou / remote_miou / fused_miou: the three answers (fused: the primary variant).
        heavy_miou: the heavy model on the current frame (the delay-0 reference).
        fusion_miou: the primary variant's fusion alone, without the measured-motion selection.
        fused_margin: fused − max(local, remote).
        kept_share: share of the pixels that showed the remote class map.
        feature_bytes / class_map_bytes / downlink_bytes: the remote answer's downlink bytes
            per frame (mean): the feature map's payload (quantisation parameters included),
            the class map's, and the result messages' in all (headers included).
        variants: every other trained variant's figures, keyed by :func:`variant_key`, and
            every variant's fusion alone (``raw``).
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
    heavy_miou: float
    fusion_miou: float
    fused_margin: float
    kept_share: float
    feature_bytes: float
    class_map_bytes: float
    downlink_bytes: float
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
            scores = _score_regime(
                correctors,
                primary=primary,
                task=task,
                regime=regime,
                max_delay=max_delay,
                clips=clips,
                seed=seed,
            )
            m = scores.matrices
            heavy = round(m["heavy"].miou(), 4)
            for d in range(max_delay + 1):
                local, remote = round(m["local"][d].miou(), 4), round(m["remote"][d].miou(), 4)
                fused = round(m[primary][d].miou(), 4)
                variants: dict[str, float] = {}
                for name in correctors:
                    if name != primary:
                        variants[variant_key(name)] = round(m[name][d].miou(), 4)
                    variants[variant_key(name, raw=True)] = round(m[f"raw:{name}"][d].miou(), 4)
                fusion = variants.pop(variant_key(primary, raw=True))
                records.append(
                    EvalRecord(
                        motion=regime.name,
                        speed_lo=regime.speed[0],
                        speed_hi=regime.speed[1],
                        delay_frames=d,
                        delay_ms=round(d * 1000 / FPS, 1),
                        beyond_tau_max=d > checkpoint.tau_max,
                        local_miou=local,
                        remote_miou=remote,
                        fused_miou=fused,
                        heavy_miou=heavy,
                        fusion_miou=fusion,
                        fused_margin=round(fused - max(local, remote), 4),
                        kept_share=round(scores.kept[d] / scores.clips, 4),
                        feature_bytes=round(scores.feature_bytes / scores.frames, 1),
                        class_map_bytes=round(scores.class_map_bytes / scores.frames, 1),
                        downlink_bytes=round(scores.wire_bytes / scores.frames, 1),
                        variants=variants,
                    )
                )
    finally:
        torch.set_num_threads(previous)
    return records


@dataclass
class _Scores:
    """A regime's confusion matrices (per answer, per delay; ``heavy`` one) and byte counts."""

    matrices: dict[str, Any]
    kept: list[float]
    frames: int = 0  # remote frames priced
    clips: int = 0
    feature_bytes: int = 0
    class_map_bytes: int = 0
    wire_bytes: int = 0


def _score_regime(
    correctors: dict[str, Corrector],
    *,
    primary: str,
    task: TaskConfig,
    regime: Regime,
    max_delay: int,
    clips: int,
    seed: int,
) -> _Scores:
    length = max_delay + 1
    names = ["local", "remote", *correctors, *(f"raw:{n}" for n in correctors)]
    matrices: dict[str, Any] = {
        k: [ConfusionMatrix(NUM_CLASSES) for _ in range(length)] for k in names
    }
    matrices["heavy"] = ConfusionMatrix(NUM_CLASSES)
    scores = _Scores(matrices, [0.0] * length)
    primary_local = correctors[primary]
    gate = primary_local.gate
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
        # Every frame's remote answer as the edge receives it: priced, and what is fused.
        answers = [transmit(logits[j : j + 1], downlink[j : j + 1]) for j in range(len(logits))]
        classes = torch.cat([a.classes for a in answers]).unflatten(0, (b, length))
        downlink = torch.cat([a.downlink for a in answers]).unflatten(0, (b, length))
        logits = logits.unflatten(0, (b, length))  # (B, T, K, H, W)
        thumbs = gate.thumbnail(frames.flatten(0, 1)).unflatten(0, (b, length))
        scores.feature_bytes += sum(a.feature_bytes for a in answers)
        scores.class_map_bytes += sum(a.class_map_bytes for a in answers)
        scores.wire_bytes += sum(a.wire_bytes for a in answers)
        scores.frames += b * length
        scores.clips += b
        now = frames[:, -1]
        feats = {name: c.local_features(now) for name, c in correctors.items()}
        local_only = primary_local.fuse(feats[primary], None, 0)
        matrices["heavy"].add(logits[:, -1], labels)
        for d in range(length):
            t_old = length - 1 - d
            matrices["local"][d].add(local_only, labels)
            matrices["remote"][d].add(logits[:, t_old], labels)
            for name, c in correctors.items():
                out = c.answer(
                    feats[name],
                    thumbnail=thumbs[:, -1],
                    delay_frames=d,
                    remote_feats=downlink[:, t_old].clone(),
                    remote_classes=classes[:, t_old],
                    remote_thumbnail=thumbs[:, t_old],
                )
                matrices[name][d].add(out.logits, labels)
                matrices[f"raw:{name}"][d].add(
                    c.fuse(feats[name], downlink[:, t_old].clone(), d), labels
                )
                if name == primary:
                    scores.kept[d] += float(out.kept.sum())
    return scores
