"""Delay-injection training, in two phases, on clips generated on the fly.

    splitwire corrector train --out out/corrector            # heavy, then add, gate, add-nodelay

1. **heavy**: the heavy model on current frames (cross-entropy on its logits, plus an auxiliary
   cross-entropy of a 1×1 classifier on its downlink features against the labels at a quarter
   resolution, so the downlink carries identity *and* location).
2. **fusion**: the heavy model frozen; every requested fusion variant (each its own local model)
   trains in lockstep on the same batches. Per sample a delay d is drawn uniformly from
   0..tau_max, the remote features come from frame t-d and the labels from frame t. A share of
   the samples (``local_share``) gets zero remote features, which the fusion turns into exactly
   the local-only path: the loss is ``CE(fused) + local_weight * CE(local only)`` over the batch
   (the local-only term keeps the fallback good).

After each phase the held-out mIoU (validation clips, seeds disjoint from training and
evaluation) must reach a bar; below it, training continues in chunks of half the phase's steps
up to ``extensions`` times, then fails with :class:`ConvergenceError` (exit code 3). Everything
is drawn from ``seed``: the same seed and steps give the same weights (on one thread).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from splitwire.corrector.checkpoint import build_heavy, build_local, save_checkpoint
from splitwire.corrector.errors import ConvergenceError, TaskConfigError
from splitwire.corrector.fusion import fusion_names
from splitwire.corrector.inputs import preprocess
from splitwire.corrector.local import LocalModel
from splitwire.corrector.metrics import ConfusionMatrix
from splitwire.corrector.video import NUM_CLASSES, TaskConfig, check_speed, scene
from splitwire.partitioner.models.texture_unet import TextureUNet

__all__ = ["DEFAULT_FUSIONS", "TrainConfig", "TrainResult", "train"]

logger = logging.getLogger(__name__)

DEFAULT_FUSIONS = ("add", "gate", "add-nodelay")
# Seed namespaces: training, evaluation and validation scenes never share a seed.
PURPOSE_TRAIN, PURPOSE_EVAL, PURPOSE_VALIDATION = 0, 1, 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in ``corrector.json``).

    Attributes:
        seed: weights, batches and delays all derive from it.
        tau_max: delays are drawn from 0..tau_max frames; beyond, the remote is dropped.
        fusions: the fusion variants to train (each its own local model).
        heavy_steps / fusion_steps: optimiser steps per phase before any extension.
        heavy_batch / fusion_batch: clips per step.
        lr: Adam's learning rate (halved for extensions).
        speed: (lo, hi) object speeds of the training clips, pixels per frame.
        local_weight: weight of the local-only loss term (per local-only sample).
        local_share: share of each batch trained local-only (remote features zeroed).
        aux_weight: weight of the heavy model's downlink auxiliary loss.
        width: the local model's width w.
        heavy_channels / downlink_channels: the heavy model's base width and downlink channels.
        validation_clips: held-out clips for the convergence checks.
        min_heavy_miou / min_fused_miou: the bars (0 disables a check).
        extensions: how many extra half-phases a phase below its bar may take.
        task: the synthetic task's look.
    """

    seed: int = 0
    tau_max: int = 12
    fusions: tuple[str, ...] = DEFAULT_FUSIONS
    heavy_steps: int = 400
    fusion_steps: int = 800
    heavy_batch: int = 12
    fusion_batch: int = 16
    lr: float = 2e-3
    speed: tuple[float, float] = (0.0, 3.0)
    local_weight: float = 1.0
    local_share: float = 0.25
    aux_weight: float = 0.5
    width: int = 32
    heavy_channels: int = 16
    downlink_channels: int = 8
    validation_clips: int = 48
    min_heavy_miou: float = 0.85
    min_fused_miou: float = 0.6
    extensions: int = 2
    task: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        check_speed(self.speed)
        unknown = [f for f in self.fusions if f not in fusion_names()]
        if unknown or not self.fusions or len(set(self.fusions)) != len(self.fusions):
            raise TaskConfigError(
                f"fusions {list(self.fusions)}: expected distinct names among "
                f"{', '.join(fusion_names())}"
            )
        for name in ("heavy_steps", "fusion_steps", "heavy_batch", "fusion_batch", "width"):
            if getattr(self, name) < 1:
                raise TaskConfigError(f"{name} {getattr(self, name)}: expected >= 1")
        if not 0 <= self.tau_max <= 30:
            raise TaskConfigError(f"tau_max {self.tau_max}: expected 0..30 frames")
        if self.width % 2 or self.extensions < 0 or self.validation_clips < 1:
            raise TaskConfigError(
                f"width {self.width} (even), extensions {self.extensions} (>= 0), "
                f"validation_clips {self.validation_clips} (>= 1): out of range"
            )

    @property
    def primary(self) -> str:
        return "add" if "add" in self.fusions else self.fusions[0]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: its metadata (as written to ``corrector.json``) and where."""

    directory: Path
    meta: dict[str, Any]


def train(config: TrainConfig, out: Path, *, progress: bool = False) -> TrainResult:
    """Train the heavy model, then every fusion variant, and write the checkpoint.

    Args:
        config: the run's settings.
        out: the checkpoint directory (created; existing files are replaced).
        progress: show tqdm bars (a terminal); otherwise one log line per phase.

    Returns:
        The directory and the metadata written.

    Raises:
        ConvergenceError: a phase stayed below its held-out bar after every extension.
        CheckpointError: the checkpoint cannot be written.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        torch.manual_seed(config.seed)
        heavy = build_heavy(_heavy_options(config))
        aux = nn.Conv2d(config.downlink_channels, NUM_CLASSES, 1)
        heavy_log = _run_phase(
            "heavy",
            params=[*heavy.parameters(), *aux.parameters()],
            step_loss=lambda step: _heavy_loss(heavy, aux, config, step),
            check=lambda: _heavy_miou(heavy, config),
            bar=config.min_heavy_miou,
            steps=config.heavy_steps,
            config=config,
            progress=progress,
            train_modules=[heavy, aux],
        )
        heavy.eval()
        for p in heavy.parameters():
            p.requires_grad_(False)
        locals_ = {}
        for name in config.fusions:  # each variant's init depends on the seed and its name only
            torch.manual_seed(config.seed * 1_000_003 + zlib.crc32(name.encode()))
            locals_[name] = build_local(
                fusion=name,
                width=config.width,
                remote_channels=config.downlink_channels,
                tau_max=config.tau_max,
                num_classes=NUM_CLASSES,
            )
        torch.manual_seed(config.seed + 1)
        fusion_log = _run_phase(
            "fusion",
            params=[p for m in locals_.values() for p in m.parameters()],
            step_loss=lambda step: _fusion_loss(heavy, locals_, config, step),
            check=lambda: min(_fused_miou(heavy, locals_, config).values()),
            bar=config.min_fused_miou,
            steps=config.fusion_steps,
            config=config,
            progress=progress,
            train_modules=list(locals_.values()),
        )
        fusion_log["validation_miou_by_fusion"] = _fused_miou(heavy, locals_, config)
        for model in locals_.values():
            model.eval()
    finally:
        torch.set_num_threads(previous_threads)
    meta = {
        "seed": config.seed,
        "tau_max": config.tau_max,
        "primary": config.primary,
        "task": asdict(config.task),
        "heavy": {"spec": "zoo:texture_unet", "options": _heavy_options(config)},
        "local": {"width": config.width},
        "train": {k: v for k, v in asdict(config).items() if k != "task"},
        "phases": {"heavy": heavy_log, "fusion": fusion_log},
        "seconds": round(time.perf_counter() - started, 1),
        # CPU time of this process: what the run costs on an idle core (wall time includes
        # whatever else the machine was doing).
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    save_checkpoint(out, heavy=heavy, locals=locals_, meta=meta)
    logger.info(
        "checkpoint written to %s (%.0f s wall, %.0f s CPU)",
        out,
        meta["seconds"],
        meta["cpu_seconds"],
    )
    return TrainResult(out, meta)


def _heavy_options(config: TrainConfig) -> dict[str, int]:
    return {
        "num_classes": NUM_CLASSES,
        "base_channels": config.heavy_channels,
        "downlink_channels": config.downlink_channels,
    }


def _run_phase(
    phase: str,
    *,
    params: list[nn.Parameter],
    step_loss: Callable[[int], torch.Tensor],
    check: Callable[[], float],
    bar: float,
    steps: int,
    config: TrainConfig,
    progress: bool,
    train_modules: list[nn.Module],
) -> dict[str, Any]:
    """Optimise until ``steps`` are done and ``check()`` reaches ``bar`` (with extensions)."""
    optimiser = torch.optim.Adam(params, lr=config.lr)
    losses: list[float] = []
    started = time.perf_counter()
    done, budget, extension = 0, steps, 0
    while True:
        for m in train_modules:
            m.train()
        bar_ = tqdm(range(done, budget), desc=phase, disable=not progress, leave=False)
        for step in bar_:
            loss = step_loss(step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                bar_.set_postfix(loss=f"{losses[-1]:.3f}")
        done = budget
        for m in train_modules:
            m.eval()
        with torch.no_grad():
            miou = check()
        logger.info(
            "%s: %d steps, loss %.3f -> %.3f (first/last 20), held-out mIoU %.3f (bar %.2f), "
            "%.0f s",
            phase,
            done,
            _mean(losses[:20]),
            _mean(losses[-20:]),
            miou,
            bar,
            time.perf_counter() - started,
        )
        if miou >= bar:
            break
        if extension == config.extensions:
            raise ConvergenceError(
                f"{phase} phase: held-out mIoU {miou:.3f} after {done} steps is below the bar "
                f"{bar:.2f} (loss {_mean(losses[:20]):.3f} -> {_mean(losses[-20:]):.3f}); "
                "train longer (--steps), or check the task settings",
                phase=phase,
                miou=miou,
                required=bar,
            )
        extension += 1
        budget = done + max(1, steps // 2)
        for group in optimiser.param_groups:
            group["lr"] = config.lr / 2
        logger.warning(
            "%s phase: held-out mIoU %.3f below %.2f; extension %d/%d (%d more steps)",
            phase,
            miou,
            bar,
            extension,
            config.extensions,
            budget - done,
        )
    return {
        "steps": done,
        "extensions": extension,
        "validation_miou": round(miou, 4),
        "loss_first": round(_mean(losses[:20]), 4),
        "loss_last": round(_mean(losses[-20:]), 4),
        # One mean per 10 steps: enough to plot the curve, small enough for JSON.
        "loss_curve": [round(_mean(losses[i : i + 10]), 4) for i in range(0, len(losses), 10)],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _scenes(purpose: int, config: TrainConfig, step: int, count: int) -> Iterator[Any]:
    for i in range(count):
        yield scene((purpose, config.seed, step, i), speed=config.speed, config=config.task)


def _heavy_loss(heavy: TextureUNet, aux: nn.Conv2d, config: TrainConfig, step: int) -> torch.Tensor:
    clips = [s.render([0]) for s in _scenes(PURPOSE_TRAIN, config, step, config.heavy_batch)]
    frames = torch.cat([c.frames for c in clips])
    labels = torch.cat([c.labels for c in clips])
    logits, downlink = heavy(preprocess(frames))
    # Labels at the downlink's resolution: the centre pixel of each 4x4 block.
    small = labels[:, 2::4, 2::4]
    return F.cross_entropy(logits, labels) + config.aux_weight * F.cross_entropy(
        aux(downlink), small
    )


def _delay_batch(
    purpose: int, config: TrainConfig, step: int, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(current frames, remote frames, current labels, delays): frame t = d, remote frame 0."""
    generator = torch.Generator().manual_seed(
        zlib.crc32(f"{purpose}/{config.seed}/{step}".encode())
    )
    delays = torch.randint(0, config.tau_max + 1, (count,), generator=generator)
    now, old, labels = [], [], []
    for s, d in zip(_scenes(purpose, config, step, count), delays.tolist(), strict=True):
        c = s.render([d, 0])
        now.append(c.frames[:1])
        old.append(c.frames[1:])
        labels.append(c.labels[:1])
    return torch.cat(now), torch.cat(old), torch.cat(labels), delays


def _fusion_loss(
    heavy: TextureUNet, locals_: dict[str, LocalModel], config: TrainConfig, step: int
) -> torch.Tensor:
    now, old, labels, delays = _delay_batch(PURPOSE_TRAIN, config, step, config.fusion_batch)
    with torch.no_grad():
        _, remote = heavy(preprocess(old))
    # The local-only term: a share of the samples gets zero remote features, which the fusion
    # turns into exactly the local-only path (one decoder pass per sample, not two).
    generator = torch.Generator().manual_seed(zlib.crc32(f"local/{config.seed}/{step}".encode()))
    alone = torch.rand(len(delays), generator=generator) < config.local_share
    remote = remote * (~alone)[:, None, None, None].to(remote.dtype)
    weight = torch.where(alone, config.local_weight, 1.0)  # (N,)
    x = preprocess(now)
    total = torch.zeros(())
    for model in locals_.values():
        loss = F.cross_entropy(model(x, remote, delays), labels, reduction="none")  # (N, H, W)
        total = total + (loss.mean(dim=(1, 2)) * weight).sum() / weight.sum()
    return total / len(locals_)


def _heavy_miou(heavy: TextureUNet, config: TrainConfig) -> float:
    matrix = ConfusionMatrix(NUM_CLASSES)
    for s in _scenes(PURPOSE_VALIDATION, config, 0, config.validation_clips):
        c = s.render([0])
        logits, _ = heavy(preprocess(c.frames))
        matrix.add(logits, c.labels)
    return matrix.miou()


def _fused_miou(
    heavy: TextureUNet, locals_: dict[str, LocalModel], config: TrainConfig
) -> dict[str, float]:
    now, old, labels, delays = _delay_batch(PURPOSE_VALIDATION, config, 0, config.validation_clips)
    with torch.no_grad():
        _, remote = heavy(preprocess(old))
        x = preprocess(now)
        result = {}
        for name, model in locals_.items():
            matrix = ConfusionMatrix(NUM_CLASSES)
            matrix.add(model(x, remote, delays), labels)
            result[name] = round(matrix.miou(), 4)
    return result
