"""The delay corrector as the agent runs it (``splitwire edge ... --corrector DIR``).

A split model's answer for frame t arrives a round trip later. With a corrector the agent does
not wait for it: for every frame it runs the light local model on the frame itself and fuses
the *newest* remote features it holds (the downlink map the tail returned for an older frame
s), conditioned on the delay t − s in frames, measured on the edge's clock::

    frame t ──> local model ──> fuse(local_t, downlink_s, t − s) ──> output t   (fused)
          └──> head ──> encode ──> tail ... (a round trip later) ──> downlink_t  (kept for t+k)

Whether the remote answer still holds is *measured*, not guessed from its age: the agent keeps
a thumbnail (4×4-pixel cell means) of every frame it sends, and where the current frame's cells
match those of the frame the answer is for, the output shows the tail's class map, at any
delay; where the scene moved, the
fused answer (:meth:`~splitwire.corrector.runtime.Corrector.answer`), the features fused at any
age unless the frames show different scenes. When nothing of the answer can be used (another
scene with no cell in common, or an answer whose frame's thumbnail is no longer held and older
than ``tau_max``) the output is the local model's alone (``local``, reason ``stale_features``;
``no_features`` before the first answer). Delays are counted in frames: from capture
timestamps and the camera's frame interval when the source is paced (``--fps``), from sequence
numbers otherwise; no other machine's clock is involved.

What travels back is what the plan's result codecs say (``plan.yaml``'s ``result_codec`` per
output, which the heavy model declares: ``TextureUNet.result_codecs``): the class map as uint8
indices under zstd and the downlink map as ``int8+zstd1``, about 2.2 kB a frame. The session
client checked each result's headers against them (shape, dtype, wire scheme, sizes) before
buffering or decoding anything, and every class index after decoding
(:class:`~splitwire.protocol.result_codec.ResultCodec`); a plan that sends anything else is
refused at start. Each corrected frame carries ``downlink_bytes``: the bytes its remote answer
took on the wire as they arrived (result messages, headers included).

When the source carries labels (the corrector's synthetic video task), :class:`SegmentationScore`
scores every emitted output, and, on the same frames, what the local model alone and the stale
remote answer alone would have said, so a run reports fused against both baselines at the delay
it measured.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from splitwire.corrector import Corrector
from splitwire.corrector.metrics import ConfusionMatrix
from splitwire.corrector.selection import one_hot_logits
from splitwire.partitioner.plan_file import TensorSpec
from splitwire.stats import percentile

__all__ = [
    "THUMBNAIL_HISTORY",
    "Correction",
    "FrameCorrector",
    "RemoteAnswer",
    "SegmentationScore",
]

logger = logging.getLogger(__name__)

# Thumbnails kept for frames whose answer has not arrived: 3 KiB each at 64x64, so 256 frames
# (8.5 s at 30 fps, longer than any answer worth using) hold 0.75 MiB. An answer whose frame
# fell out is used the age-only way (fused up to tau_max, nothing beyond).
THUMBNAIL_HISTORY = 256
# A tail that keeps sending unusable answers gets one warning per this many.
_WARN_EVERY = 100


@dataclass(frozen=True)
class RemoteAnswer:
    """The tail's answer for one frame, kept until a newer one arrives.

    Attributes:
        seq: the frame it answers.
        captured_ns: that frame's capture time (``perf_counter_ns``, the edge's clock).
        downlink: its downlink feature map (1, C, H/4, W/4), what the fusion reads.
        classes: the heavy model's class map (1, H, W), shown where nothing moved.
        thumbnail: the answered frame's thumbnail (None if it was no longer held).
        downlink_bytes: the bytes the answer took on the downlink, as they arrived.
    """

    seq: int
    captured_ns: int
    downlink: torch.Tensor
    classes: torch.Tensor
    thumbnail: torch.Tensor | None
    downlink_bytes: int


@dataclass(frozen=True)
class Correction:
    """One frame's corrected output.

    Attributes:
        logits: the emitted class logits (1, K, H, W).
        source: ``fused`` (something of the remote answer used) or ``local``.
        reason: for ``local``: ``no_features`` or ``stale_features``.
        delay_frames: frames between this frame and the remote answer it could use (None
            before the first answer), whether or not it was fresh enough to fuse.
        remote_seq: the frame the remote answer came from.
        kept_share: share of the pixels showing the remote class map (None without an answer).
        downlink_bytes: the remote answer's downlink bytes (None without an answer).
        local_only: what the local model alone says (computed only when scoring).
        remote_only: the stale remote class map as one-hot logits, used as this frame's (when
            scoring).
    """

    logits: torch.Tensor
    source: str
    reason: str | None
    delay_frames: int | None
    remote_seq: int | None
    local_only: torch.Tensor | None = None
    remote_only: torch.Tensor | None = None
    kept_share: float | None = None
    downlink_bytes: int | None = None


class FrameCorrector:
    """The local model, the fusion and the newest remote answer, for one agent run.

    Args:
        corrector: the trained local model and fusion (:func:`splitwire.corrector.load_corrector`).
        outputs: the plan's output specs of the split the agent runs: the heavy model's
            ``(logits, downlink)``, sent back as a class map and a feature map (their result
            codecs); checked against the corrector so that an agent whose plan and corrector
            come from different models, or whose plan sends the full logits, fails at start,
            not per frame.
        frame_interval_ns: the camera's frame interval, or None to count delays in sequence
            numbers (an unpaced source).
        history: thumbnails kept for unanswered frames (:data:`THUMBNAIL_HISTORY`).

    Raises:
        ValueError: the plan's outputs are not the ``(logits, downlink)`` pair this corrector
            fuses, or the logits do not travel as a class map (the message says what to do).
    """

    def __init__(
        self,
        corrector: Corrector,
        *,
        outputs: tuple[TensorSpec, ...],
        frame_interval_ns: int | None,
        history: int = THUMBNAIL_HISTORY,
    ) -> None:
        if history < 1:
            raise ValueError(f"thumbnail history {history}: expected >= 1 frame")
        downlink = corrector.downlink_shape
        size = corrector.frame_size
        logits = (corrector.num_classes, size, size)
        if (
            len(outputs) != 2
            or tuple(outputs[0].shape[1:]) != logits
            or tuple(outputs[1].shape[1:]) != downlink
        ):
            got = ", ".join(f"{tuple(s.shape)} {s.dtype}" for s in outputs)
            raise ValueError(
                f"the plan's model returns ({got}); the corrector fuses class logits of "
                f"(N, {', '.join(map(str, logits))}) and a downlink map of "
                f"(N, {', '.join(map(str, downlink))}): plan the heavy model the corrector was "
                "trained with (zoo:texture_unet and its weights)"
            )
        if not outputs[0].result_codec.classes or outputs[1].result_codec.classes:
            codecs = ", ".join(str(s.result_codec) for s in outputs)
            raise ValueError(
                f"the plan's tail sends its outputs as ({codecs}); the corrector needs the class "
                "map and the feature map (result codecs classes+zstdN and a feature codec such "
                "as int8+zstd1): plan the heavy model again with this version of splitwire"
            )
        self.corrector = corrector
        self.tau_max = corrector.tau_max
        self.frame_interval_ns = frame_interval_ns
        self.history = history
        self._newest: RemoteAnswer | None = None
        # seq -> thumbnail, oldest first; written by correct() (worker thread), read and pruned
        # by remember() (event loop).
        self._thumbnails: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.refused = 0
        self.answers = 0
        self.answer_bytes = 0

    @property
    def newest(self) -> RemoteAnswer | None:
        """The newest remote answer received so far."""
        return self._newest

    def remember(
        self,
        seq: int,
        captured_ns: int,
        outputs: tuple[torch.Tensor, ...],
        *,
        wire_bytes: int,
    ) -> None:
        """Keep the tail's answer for frame ``seq`` if it is newer than the one held.

        ``outputs`` are the class map (1, H, W) and the feature map as the session client
        decoded them, after checking their headers and class indices against the plan;
        ``wire_bytes`` what they took on the downlink. An answer of other shapes or with
        features that are not finite is refused here too (the older answer stays; one warning
        per 100 refusals). Called on the event loop; :meth:`correct` (in the worker thread)
        reads the reference once, so it sees either the old answer or the new one, never a mix.
        """
        held = self._newest
        if held is not None and held.captured_ns >= captured_ns:
            return  # answers can arrive out of order: never replace a newer frame's
        classes, downlink = outputs
        c = self.corrector
        expected = (1, c.frame_size, c.frame_size)
        problem = None
        if tuple(classes.shape) != expected or classes.is_floating_point():
            problem = f"class map {tuple(classes.shape)} {classes.dtype}, expected {expected} uint8"
        elif tuple(downlink.shape) != (1, *c.downlink_shape):
            problem = f"features {tuple(downlink.shape)}, expected {(1, *c.downlink_shape)}"
        elif not bool(torch.isfinite(downlink).all()):
            problem = "features that are not finite"
        if problem is not None:
            self.refused += 1
            if self.refused % _WARN_EVERY == 1:
                logger.warning(
                    "corrector: refused the tail's answer for frame %d (%s; %d refused so far); "
                    "the previous answer stays in use",
                    seq,
                    problem,
                    self.refused,
                )
            return
        with self._lock:
            thumbnail = self._thumbnails.pop(seq, None)
            for old in [k for k in self._thumbnails if k < seq]:  # never used: newer answer
                del self._thumbnails[old]
        self.answers += 1
        self.answer_bytes += wire_bytes
        self._newest = RemoteAnswer(
            seq, captured_ns, downlink.float(), classes.long(), thumbnail, wire_bytes
        )

    def summary(self) -> dict[str, Any]:
        """The corrector's part of the run's summary: its fusion and range, the remote answers
        it took and their mean downlink bytes as they arrived, and those it refused."""
        c = self.corrector
        mean = round(self.answer_bytes / self.answers, 1) if self.answers else None
        return {
            "fusion": c.fusion,
            "tau_max": c.tau_max,
            "answers": self.answers,
            "downlink_bytes_mean": mean,
            "refused": self.refused,
        }

    def delay_frames(self, seq: int, captured_ns: int, answer: RemoteAnswer) -> int:
        """Frames between frame ``seq`` (captured at ``captured_ns``) and ``answer``'s."""
        if self.frame_interval_ns is None:
            return max(seq - answer.seq, 0)
        return max(round((captured_ns - answer.captured_ns) / self.frame_interval_ns), 0)

    def correct(
        self, pixels: torch.Tensor, *, seq: int, captured_ns: int, scoring: bool = False
    ) -> Correction:
        """The output for one uint8 frame (1, 3, H, W): the remote class map where the scene has
        not moved since the newest answer's frame, elsewhere fused with its features (see
        :meth:`~splitwire.corrector.runtime.Corrector.answer` for when they are dropped).

        Args:
            pixels: the camera frame.
            seq: its sequence number.
            captured_ns: its capture time (``perf_counter_ns``).
            scoring: also compute the local-only and remote-only answers (for scoring).
        """
        answer = self._newest  # one read: a newer answer arriving now waits for the next frame
        c = self.corrector
        thumbnail = c.gate.thumbnail(pixels)
        with self._lock:
            self._thumbnails[seq] = thumbnail
            while len(self._thumbnails) > self.history:
                self._thumbnails.popitem(last=False)
        local = c.local_features(pixels)
        if answer is None:
            logits = c.fuse(local, None, 0)
            return Correction(
                logits,
                "local",
                "no_features",
                None,
                None,
                logits if scoring else None,
                None,
            )
        delay = self.delay_frames(seq, captured_ns, answer)
        out = c.answer(
            local,
            thumbnail=thumbnail,
            delay_frames=delay,
            remote_feats=answer.downlink,
            remote_classes=answer.classes,
            remote_thumbnail=answer.thumbnail,
        )
        kept = float(out.kept[0])
        used = bool(out.fused[0]) or kept > 0
        source, reason = ("fused", None) if used else ("local", "stale_features")
        local_only = None
        if scoring:
            local_only = out.logits if source == "local" else c.fuse(local, None, 0)
        return Correction(
            out.logits,
            source,
            reason,
            delay,
            answer.seq,
            local_only,
            one_hot_logits(answer.classes, c.num_classes) if scoring else None,
            kept,
            answer.downlink_bytes,
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
