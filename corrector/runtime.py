"""The corrector as the edge agent runs it: torch only, one frame (or batch) at a time.

    >>> from splitwire.corrector import load_corrector
    >>> c = load_corrector(Path("out/corrector"))
    >>> feats = c.local_features(frame)               # uint8 (3, 64, 64) or (N, 3, 64, 64)
    >>> logits = c.fuse(feats, None, 0)               # local only: no remote answer yet
    >>> logits = c.fuse(feats, downlink, delay_frames=3)  # downlink (N, 8, 16, 16) of frame t-3

``fuse`` drops the remote features when the delay exceeds ``tau_max`` (the range the fusion
was trained on): the answer is then exactly the local-only one. ``answer`` is what the agent
emits: the fused answer where the scene moved since the remote frame, the remote class map
where it did not, at any delay; the features are dropped when the edge measures that the
remote frame shows another scene, not for their age (:mod:`.selection`)::

    >>> now = c.gate.thumbnail(frame)                 # kept per frame on the edge
    >>> out = c.answer(feats, thumbnail=now, delay_frames=3, remote_feats=downlink,
    ...                remote_classes=classes, remote_thumbnail=then)
    >>> out.logits, out.kept                          # (N, K, H, W), share of pixels kept
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from splitwire.corrector.checkpoint import Checkpoint, load_checkpoint
from splitwire.corrector.errors import FeatureShapeError
from splitwire.corrector.inputs import preprocess
from splitwire.corrector.local import LocalFeatures, LocalModel
from splitwire.corrector.selection import MotionGate, calibrate_gate, one_hot_logits
from splitwire.corrector.video import TaskConfig
from splitwire.partitioner.models.texture_unet import TextureUNet

__all__ = ["Answer", "Corrector", "load_corrector"]


class Answer(NamedTuple):
    """What :meth:`Corrector.answer` emits.

    Attributes:
        logits: (N, K, H, W) class logits for the current frame.
        kept: (N,) share of the pixels that show the remote class map (0.0 when there is none).
        fused: (N,) bool, the remote features were fused.
    """

    logits: torch.Tensor
    kept: torch.Tensor
    fused: torch.Tensor


class Corrector:
    """A local model with its fusion operator, and the heavy model it was trained against.

    Args:
        heavy: the heavy model (what the cloud runs; here for evaluation and latency).
        local: the local model and fusion operator.
        tau_max: the largest delay (frames) the fusion was trained on.
        frame_size: the side of the square frames it was trained on.
        fusion: the fusion variant's name.
        gate: the measured-motion rule that decides where the remote class map still holds.
    """

    def __init__(
        self,
        *,
        heavy: TextureUNet,
        local: LocalModel,
        tau_max: int,
        frame_size: int,
        fusion: str,
        gate: MotionGate,
    ) -> None:
        if frame_size % gate.cell:
            raise FeatureShapeError(
                f"frame size {frame_size} is not a multiple of the motion gate's cell {gate.cell}"
            )
        self.heavy = heavy.eval()
        self.local = local.eval()
        self.tau_max = tau_max
        self.frame_size = frame_size
        self.fusion = fusion
        self.gate = gate
        self.num_classes = local.num_classes

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, fusion: str | None = None) -> Corrector:
        """The corrector of one variant (default: the checkpoint's primary) of a checkpoint."""
        name = fusion or checkpoint.primary
        task = TaskConfig.from_dict(checkpoint.meta["task"])
        return cls(
            heavy=checkpoint.heavy,
            local=checkpoint.locals[name],
            tau_max=checkpoint.tau_max,
            frame_size=task.size,
            fusion=name,
            gate=calibrate_gate(task, seed=int(checkpoint.meta["seed"])),
        )

    @property
    def downlink_shape(self) -> tuple[int, int, int]:
        """(C, H/4, W/4): one frame's remote features, as the heavy model's second output."""
        quarter = self.frame_size // 4
        return (self.heavy.downlink_channels, quarter, quarter)

    @staticmethod
    def preprocess(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) or (3, H, W) → the float input of both models."""
        return preprocess(frames)

    def remote(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the cloud computes: the heavy model's (logits, downlink) for uint8 frames."""
        with torch.inference_mode():
            logits, downlink = self.heavy(self._input(frames))
        return logits, downlink

    def local_features(self, frames: torch.Tensor) -> LocalFeatures:
        """The local model's features of the current uint8 frame(s), before the fusion."""
        with torch.inference_mode():
            return self.local.features(self._input(frames))

    def fuse(
        self,
        local_feats: LocalFeatures,
        remote_feats: torch.Tensor | None,
        delay_frames: int | torch.Tensor,
    ) -> torch.Tensor:
        """Class logits (N, K, H, W) for the current frame.

        Args:
            local_feats: from :meth:`local_features`.
            remote_feats: the downlink features (N, C, H/4, W/4) float32 of the frame
                ``delay_frames`` before, or None when no remote answer is available.
            delay_frames: frames between the current frame and the remote one (an int for the
                batch, or (N,) int64); above ``tau_max`` the remote features are dropped.

        Raises:
            FeatureShapeError: remote features of another shape or dtype, or a negative delay.
        """
        n = local_feats.stage.shape[0]
        if remote_feats is not None:
            expected = (n, *self.downlink_shape)
            if tuple(remote_feats.shape) != expected or remote_feats.dtype != torch.float32:
                raise FeatureShapeError(
                    f"remote features: expected {expected} float32, got "
                    f"{tuple(remote_feats.shape)} {remote_feats.dtype}; the cloud runs another "
                    "heavy model or cut"
                )
        if isinstance(delay_frames, int):  # the edge's case: one delay, checked in Python
            if delay_frames < 0:
                raise FeatureShapeError(
                    f"delay {delay_frames}: expected frames >= 0 (the remote frame is older)"
                )
            remote = remote_feats if delay_frames <= self.tau_max else None
            delay = torch.full((n,), min(delay_frames, self.tau_max), dtype=torch.int64)
        else:
            delay = torch.as_tensor(delay_frames, dtype=torch.int64).reshape(-1).expand(n)
            if bool((delay < 0).any()):
                raise FeatureShapeError(
                    f"delay {delay.tolist()}: expected frames >= 0 (the remote frame is older)"
                )
            remote = remote_feats
            fresh = delay <= self.tau_max  # (N,) beyond the trained range: drop
            if remote is not None and not bool(fresh.all()):
                # zeros mean "no remote information", exactly
                remote = remote * fresh[:, None, None, None].to(remote.dtype)
            delay = delay.clamp(max=self.tau_max)
        with torch.inference_mode():
            return self.local.decode(local_feats, remote, delay)

    def answer(
        self,
        local_feats: LocalFeatures,
        *,
        thumbnail: torch.Tensor,
        delay_frames: int,
        remote_feats: torch.Tensor | None = None,
        remote_classes: torch.Tensor | None = None,
        remote_thumbnail: torch.Tensor | None = None,
    ) -> Answer:
        """The output for the current frame: the remote class map where the scene has not
        moved since the remote frame (at any delay), the fused answer where it has. The
        features are fused at any age (the delay embedding clamped to ``tau_max``) unless the
        two frames show different scenes (``gate.scene_change``), then the moved pixels get the
        local answer. Without a class map or the remote frame's thumbnail nothing can be
        measured, and the answer is :meth:`fuse`'s (the age rule: no features past tau_max).

        Args:
            local_feats: from :meth:`local_features` of the current frame.
            thumbnail: ``gate.thumbnail`` of the current frame (N, 3, h, w).
            delay_frames: frames between the current frame and the remote one (>= 0).
            remote_feats: the downlink features of the remote frame (as :meth:`fuse`).
            remote_classes: the heavy model's class map of the remote frame (N, H, W), integer
                values in 0..K-1 (validated here: it came from a peer).
            remote_thumbnail: ``gate.thumbnail`` of the remote frame, kept by the edge.

        Raises:
            FeatureShapeError: a class map or thumbnail of another shape, class values outside
                0..K-1, or a negative delay.
        """
        n = local_feats.stage.shape[0]
        if remote_classes is None or remote_thumbnail is None:
            fused = self.fuse(local_feats, remote_feats, delay_frames)
            fresh = remote_feats is not None and 0 <= delay_frames <= self.tau_max
            return Answer(fused, torch.zeros(n), torch.full((n,), fresh))
        self.check_classes(remote_classes, n)
        changed = self.gate.changed(thumbnail, remote_thumbnail)  # (N, 1, H, W) bool
        share = changed.float().mean(dim=(1, 2, 3))  # (N,)
        same_scene = share <= self.gate.scene_change  # (N,)
        remote = None
        if remote_feats is not None:
            remote = remote_feats * same_scene[:, None, None, None].to(remote_feats.dtype)
        if delay_frames < 0:
            raise FeatureShapeError(
                f"delay {delay_frames}: expected frames >= 0 (the remote frame is older)"
            )
        fused = self.fuse(local_feats, remote, min(delay_frames, self.tau_max))
        logits = torch.where(changed, fused, one_hot_logits(remote_classes, self.num_classes))
        if remote_feats is None:
            same_scene = torch.zeros(n, dtype=torch.bool)
        return Answer(logits, 1.0 - share, same_scene)

    def check_classes(self, classes: torch.Tensor, n: int) -> None:
        """Check a remote class map (peer input) before it is used.

        Raises:
            FeatureShapeError: not an integer (N, H, W) map of the frame's size, or a value
                outside 0..K-1.
        """
        expected = (n, self.frame_size, self.frame_size)
        if tuple(classes.shape) != expected or classes.is_floating_point():
            raise FeatureShapeError(
                f"remote class map: expected an integer map {expected}, got "
                f"{tuple(classes.shape)} {classes.dtype}; the cloud runs another heavy model"
            )
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise FeatureShapeError(
                f"remote class map: expected classes 0..{self.num_classes - 1}, got values "
                f"{int(classes.min())}..{int(classes.max())}"
            )

    def _input(self, frames: torch.Tensor) -> torch.Tensor:
        x = preprocess(frames)
        if tuple(x.shape[-2:]) != (self.frame_size, self.frame_size):
            raise FeatureShapeError(
                f"frames: expected {self.frame_size}x{self.frame_size}, got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the camera's frames"
            )
        return x


def load_corrector(directory: Path, *, fusion: str | None = None) -> Corrector:
    """Load one fusion variant of a checkpoint directory for inference.

    Args:
        directory: what ``splitwire corrector train --out`` wrote.
        fusion: the variant (default: the checkpoint's primary, ``add``).

    Raises:
        CheckpointError: see :func:`~splitwire.corrector.checkpoint.load_checkpoint`.
    """
    checkpoint = load_checkpoint(directory, fusions=[fusion] if fusion else None)
    return Corrector.from_checkpoint(checkpoint, fusion)
