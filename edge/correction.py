"""The delay corrector as the agent runs it (``splitwire edge ... --corrector DIR``).

A split model's answer for frame t arrives a round trip later. With a corrector the agent does
not wait for it: for every frame it runs the light local model on the frame itself and fuses
the *newest* remote features it holds (the downlink map the tail returned for an older frame
s), conditioned on the delay t − s in frames, measured on the edge's clock::

    frame t ──> local model ──> fuse(local_t, downlink_s, t − s) ──> output t   (fused)
          └──> head ──> encode ──> tail ... (a round trip later) ──> downlink_t  (kept for t+k)

Features older than the corrector's ``tau_max`` are dropped and the output is the local model's
alone (``local``, reason ``stale_features``; ``no_features`` before the first answer). Delays
are counted in frames: from capture timestamps and the camera's frame interval when the source
is paced (``--fps``), from sequence numbers otherwise; no other machine's clock is involved.

When the source carries labels (the corrector's synthetic video task), :class:`SegmentationScore`
scores every emitted output, and, on the same frames, what the local model alone and the stale
remote answer alone would have said, so a run reports fused against both baselines at the delay
it measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from splitwire.corrector import Corrector
from splitwire.corrector.metrics import ConfusionMatrix
from splitwire.partitioner.plan_file import TensorSpec
from splitwire.stats import percentile

__all__ = ["Correction", "FrameCorrector", "RemoteAnswer", "SegmentationScore"]


@dataclass(frozen=True)
class RemoteAnswer:
    """The tail's answer for one frame, kept until a newer one arrives.

    Attributes:
        seq: the frame it answers.
        captured_ns: that frame's capture time (``perf_counter_ns``, the edge's clock).
        logits: the heavy model's own class logits (1, K, H, W).
        downlink: its downlink feature map (1, C, H/4, W/4), what the fusion reads.
    """

    seq: int
    captured_ns: int
    logits: torch.Tensor
    downlink: torch.Tensor


@dataclass(frozen=True)
class Correction:
    """One frame's corrected output.

    Attributes:
        logits: the emitted class logits (1, K, H, W).
        source: ``fused`` (remote features used) or ``local``.
        reason: for ``local``: ``no_features`` or ``stale_features``.
        delay_frames: frames between this frame and the remote answer it could use (None
            before the first answer), whether or not it was fresh enough to fuse.
        remote_seq: the frame the remote answer came from.
        local_only: what the local model alone says (computed only when scoring).
        remote_only: the stale remote answer's logits, used as this frame's (when scoring).
    """

    logits: torch.Tensor
    source: str
    reason: str | None
    delay_frames: int | None
    remote_seq: int | None
    local_only: torch.Tensor | None = None
    remote_only: torch.Tensor | None = None


class FrameCorrector:
    """The local model, the fusion and the newest remote answer, for one agent run.

    Args:
        corrector: the trained local model and fusion (:func:`splitwire.corrector.load_corrector`).
        outputs: the plan's output specs of the split the agent runs: the heavy model's
            ``(logits, downlink)``; checked against the corrector so that an agent whose
            plan and corrector come from different models fails at start, not per frame.
        frame_interval_ns: the camera's frame interval, or None to count delays in sequence
            numbers (an unpaced source).

    Raises:
        ValueError: the plan's outputs are not the ``(logits, downlink)`` pair this corrector
            fuses (the message gives both shapes).
    """

    def __init__(
        self,
        corrector: Corrector,
        *,
        outputs: tuple[TensorSpec, ...],
        frame_interval_ns: int | None,
    ) -> None:
        downlink = corrector.downlink_shape
        if len(outputs) != 2 or tuple(outputs[1].shape[1:]) != downlink:
            got = ", ".join(f"{tuple(s.shape)} {s.dtype}" for s in outputs)
            raise ValueError(
                f"the plan's model returns ({got}); the corrector fuses a downlink map of "
                f"(N, {', '.join(map(str, downlink))}) as the second output: plan the heavy "
                "model the corrector was trained with (zoo:texture_unet and its weights)"
            )
        self.corrector = corrector
        self.tau_max = corrector.tau_max
        self.frame_interval_ns = frame_interval_ns
        self._newest: RemoteAnswer | None = None

    @property
    def newest(self) -> RemoteAnswer | None:
        """The newest remote answer received so far."""
        return self._newest

    def remember(self, seq: int, captured_ns: int, outputs: tuple[torch.Tensor, ...]) -> None:
        """Keep the tail's answer for frame ``seq`` if it is newer than the one held.

        Called on the event loop; :meth:`correct` (in the worker thread) reads the reference
        once, so it sees either the old answer or the new one, never a mix.
        """
        held = self._newest
        if held is not None and held.captured_ns >= captured_ns:
            return  # answers can arrive out of order: never replace a newer frame's
        logits, downlink = outputs
        self._newest = RemoteAnswer(seq, captured_ns, logits.float(), downlink.float())

    def delay_frames(self, seq: int, captured_ns: int, answer: RemoteAnswer) -> int:
        """Frames between frame ``seq`` (captured at ``captured_ns``) and ``answer``'s."""
        if self.frame_interval_ns is None:
            return max(seq - answer.seq, 0)
        return max(round((captured_ns - answer.captured_ns) / self.frame_interval_ns), 0)

    def correct(
        self, pixels: torch.Tensor, *, seq: int, captured_ns: int, scoring: bool = False
    ) -> Correction:
        """The output for one uint8 frame (1, 3, H, W): fused with the newest remote answer
        when it is at most ``tau_max`` frames old, the local model's alone otherwise.

        Args:
            pixels: the camera frame.
            seq: its sequence number.
            captured_ns: its capture time (``perf_counter_ns``).
            scoring: also compute the local-only and remote-only answers (for scoring).
        """
        answer = self._newest  # one read: a newer answer arriving now waits for the next frame
        local = self.corrector.local_features(pixels)
        delay = self.delay_frames(seq, captured_ns, answer) if answer is not None else None
        if answer is None:
            source, reason, downlink = "local", "no_features", None
        elif delay is not None and delay > self.tau_max:
            source, reason, downlink = "local", "stale_features", None
        else:
            source, reason, downlink = "fused", None, answer.downlink
        logits = self.corrector.fuse(local, downlink, delay or 0)
        local_only = remote_only = None
        if scoring:
            local_only = logits if downlink is None else self.corrector.fuse(local, None, 0)
            remote_only = answer.logits if answer is not None else None
        return Correction(
            logits,
            source,
            reason,
            delay,
            answer.seq if answer is not None else None,
            local_only,
            remote_only,
        )


class SegmentationScore:
    """mIoU of a run's outputs against the source's labels, by kind of output.

    ``fused``/``local``/``remote`` score what was emitted, by its source; ``local_only`` and
    ``remote_only`` score, on every frame a corrector answered, what the local model alone and
    the stale remote answer alone would have said (a frame with no remote answer yet counts for
    ``remote_only`` as the background everywhere: that is all the agent could have shown).
    """

    KINDS = ("fused", "local", "remote", "local_only", "remote_only")

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._matrices = {kind: ConfusionMatrix(num_classes) for kind in self.KINDS}
        self._frames = dict.fromkeys(self.KINDS, 0)
        self._delays: list[int] = []

    def add(self, kind: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Score one output (1, K, H, W) against labels (H, W) or (1, H, W)."""
        self._matrices[kind].add(logits.float(), labels.reshape(1, *labels.shape[-2:]))
        self._frames[kind] += 1

    def add_correction(self, correction: Correction, labels: torch.Tensor) -> None:
        """Score a corrected frame, and the two baselines on the same frame."""
        self.add(correction.source, correction.logits, labels)
        if correction.local_only is not None:
            self.add("local_only", correction.local_only, labels)
        remote = correction.remote_only
        if remote is None:
            remote = torch.zeros_like(correction.logits)
            remote[:, 0] = 1.0  # no answer yet: background everywhere
        self.add("remote_only", remote, labels)
        if correction.delay_frames is not None:
            self._delays.append(correction.delay_frames)

    def summary(self) -> dict[str, Any]:
        """``{"miou": {kind: value}, "frames": {kind: n}, "delay_frames": {...}}`` for kinds
        that scored at least one frame."""
        miou = {k: round(m.miou(), 4) for k, m in self._matrices.items() if self._frames[k]}
        delays = sorted(self._delays)
        delay = (
            {
                "mean": round(sum(delays) / len(delays), 3),
                "median": percentile(delays, 50),
                "max": delays[-1],
            }
            if delays
            else None
        )
        frames = {k: n for k, n in self._frames.items() if n}
        return {"miou": miou, "frames": frames, "delay_frames": delay}
