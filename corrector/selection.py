"""Which answer each pixel gets: the stale remote class map where the scene has not moved since
the remote frame, the fused (or local) answer where it has.

The fusion alone cannot reproduce the heavy model's answer (its 8×16×16 downlink map does not
carry it), so on a still scene it lost ~9 mIoU points against simply showing the stale remote
answer. The edge, however, holds both frames, the current one and the one the remote answer is
for, and can *measure* whether the answer still applies, at no model cost::

    thumbnail(f)  = mean of f over cell×cell blocks, per colour    (N, 3, H/cell, W/cell)
    changed cells = max over colours |thumb(t) − thumb(t − d)| > threshold, dilated by one cell
    output        = fused                         where changed
                    one-hot(remote class map)     elsewhere

and the remote *features* are fused at any age (the delay embedding clamped to ``tau_max``) as
long as the two frames show the same scene: when more than ``scene_change`` of the cells
changed, the remote frame is another scene (a cut, a camera turned away) and its features are
dropped (the changed cells get the local answer). On the evaluation's clips the fusion at
13–30 frames still beats the local model by 6–36 points in every motion regime, so age alone
was the wrong reason to drop them.

Worked example (cell 4, threshold 14 grey levels): sensor noise (σ = 6 per pixel) moves a cell's
mean by σ/4 = 1.5, a difference of two frames by ~2.1, so a still cell stays far below 14 and
keeps the heavy model's answer at any age, also beyond ``tau_max``; an object (grey 95–165)
sliding one pixel into a cell of colourful background changes a quarter of its pixels by tens of
grey levels in at least one colour, and the cell (and its neighbours, by the dilation) take the
fused answer. The object textures that carry the classes average out exactly over every aligned
2×2 block, so a cell's mean sees where things are, never what they are.

The threshold is calibrated on training-side clips of still scenes (:func:`calibrate_gate`): the
largest difference sensor noise alone produced there, plus half of it again, so that noise
practically never marks a still cell as changed (a false "changed" costs the difference between
the fused and the remote answer on that cell, nothing more).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from splitwire.corrector.errors import FeatureShapeError, TaskConfigError
from splitwire.corrector.video import TaskConfig, scene

__all__ = [
    "CALIBRATION_CLIPS",
    "CALIBRATION_MARGIN",
    "MotionGate",
    "calibrate_gate",
    "one_hot_logits",
]

# Still training-side clips the threshold is calibrated on (2 frames each: ~0.1 s at load).
CALIBRATION_CLIPS = 32
# The threshold is the largest noise-only difference seen in calibration times this.
CALIBRATION_MARGIN = 1.5
# Logit of the classes a one-hot answer does not pick: finite (strict JSON summaries), and far
# enough below 0 that a softmax puts ~1e-13 on them.
_OFF_LOGIT = -30.0


@dataclass(frozen=True)
class MotionGate:
    """The measured-motion rule (see the module docstring).

    Attributes:
        cell: side of a motion cell in pixels (even: textures average out over 2×2 blocks).
        threshold: grey levels a cell's mean must move, in some colour, to count as changed.
        dilate: cells of dilation around a changed cell (an object's edge moving inside a
            neighbour cell by less than the threshold).
        scene_change: share of changed pixels above which the remote frame counts as another
            scene and its features are dropped. Moving objects change well under half of a
            frame here (at most ~50 % at 16 frames, 2-4 px/frame); a cut changes nearly all.
    """

    cell: int = 4
    threshold: float = 14.0
    dilate: int = 1
    scene_change: float = 0.9

    def __post_init__(self) -> None:
        if (
            self.cell < 2
            or self.cell % 2
            or self.dilate < 0
            or not self.threshold > 0
            or not 0.0 < self.scene_change <= 1.0
        ):
            raise TaskConfigError(
                f"motion gate cell {self.cell} (even, >= 2), dilate {self.dilate} (>= 0), "
                f"threshold {self.threshold} (> 0), scene_change {self.scene_change} (0..1]: "
                "out of range"
            )

    def thumbnail(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, 3, H, W) or (3, H, W) → cell means (N, 3, H/cell, W/cell) float32.

        Raises:
            FeatureShapeError: frames not uint8 with 3 channels, or a side not a multiple of
                ``cell``.
        """
        if frames.dim() == 3:
            frames = frames.unsqueeze(0)
        if (
            frames.dtype != torch.uint8
            or frames.dim() != 4
            or frames.shape[1] != 3
            or frames.shape[-1] % self.cell
            or frames.shape[-2] % self.cell
        ):
            raise FeatureShapeError(
                f"frames: expected uint8 (N, 3, H, W) with H and W multiples of {self.cell}, "
                f"got {frames.dtype} {tuple(frames.shape)}"
            )
        return F.avg_pool2d(frames.float(), self.cell)

    def changed(self, now: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
        """Pixels whose cell moved between two thumbnails: bool (N, 1, H, W) at frame size.

        Raises:
            FeatureShapeError: thumbnails of different shapes.
        """
        if now.shape != then.shape:
            raise FeatureShapeError(
                f"thumbnails: expected the same shape, got {tuple(now.shape)} and "
                f"{tuple(then.shape)}"
            )
        moved = (now - then).abs().amax(dim=1, keepdim=True) > self.threshold  # (N,1,h,w)
        if self.dilate:
            k = 2 * self.dilate + 1
            moved = F.max_pool2d(moved.float(), k, stride=1, padding=self.dilate) > 0
        return moved.repeat_interleave(self.cell, dim=2).repeat_interleave(self.cell, dim=3)


def one_hot_logits(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A class map (N, H, W) as logits (N, K, H, W): 0 for its class, -30 for the others."""
    onehot = F.one_hot(classes.long(), num_classes).permute(0, 3, 1, 2)  # (N, K, H, W)
    return (1.0 - onehot.float()) * _OFF_LOGIT


def calibrate_gate(task: TaskConfig, *, seed: int, cell: int = 4, dilate: int = 1) -> MotionGate:
    """The gate whose threshold sits above what sensor noise alone does on still scenes.

    Scenes ``(3, seed, i)``: a seed namespace of their own, beside training's (0), evaluation's
    (1) and validation's (2); deterministic, so a checkpoint always gets the same gate.

    Args:
        task: the task's look (its noise level matters).
        seed: the training seed.
        cell / dilate: as :class:`MotionGate`.
    """
    gate = MotionGate(cell=cell, threshold=1.0, dilate=dilate)
    largest = 0.0
    for i in range(CALIBRATION_CLIPS):
        c = scene((3, seed, i), speed=(0.0, 0.0), config=task).render([0, 1])
        thumbs = gate.thumbnail(c.frames)
        largest = max(largest, float((thumbs[0] - thumbs[1]).abs().max()))
    # A noiseless task would give 0: keep a floor of one grey level.
    return MotionGate(cell=cell, threshold=max(1.0, CALIBRATION_MARGIN * largest), dilate=dilate)
