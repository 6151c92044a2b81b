"""Mean IoU over a data set, accumulated in a confusion matrix (every class counted over all
pixels of all frames, then averaged over the classes that occur in the labels or predictions)."""

from __future__ import annotations

import torch

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """A K × K pixel count: rows are the labels, columns the predictions.

    Args:
        num_classes: K, background included.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count the arg-max of logits (N, K, H, W) against labels (N, H, W)."""
        k = self.num_classes
        pred = logits.argmax(dim=1)
        index = labels.reshape(-1) * k + pred.reshape(-1)
        self.counts += torch.bincount(index, minlength=k * k).reshape(k, k)

    def ious(self) -> list[float | None]:
        """Per-class IoU, None for a class absent from both labels and predictions."""
        hit = self.counts.diag()
        union = self.counts.sum(0) + self.counts.sum(1) - hit
        return [float(h) / float(u) if u else None for h, u in zip(hit, union, strict=True)]

    def miou(self) -> float:
        """Mean IoU over the classes present (1.0 if nothing was counted)."""
        present = [v for v in self.ious() if v is not None]
        return sum(present) / len(present) if present else 1.0
