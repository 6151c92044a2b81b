"""What an output line says about a frame's model outputs: a few numbers a reader can use,
never the whole tensor.

The plan's task (``plan.yaml``'s ``model.task``) says what the outputs mean; their shape alone
does not (a regression's (N, 4) box is no 4-class classifier):

====================  ====================================  =================================
plan's task           outputs                               ``result``
====================  ====================================  =================================
classification        one ``(N, K)`` float tensor, K >= 2   ``top5`` class indices and
                                                            softmax probabilities (image 0)
segmentation          one ``(N, K, H, W)`` float, K >= 2    ``class_fraction``, the share of
                                                            pixels whose arg-max is each class
anything else, or     any                                   ``shapes`` and a CRC-32
outputs of another                                          ``checksum`` of the bytes
shape, or no task
====================  ====================================  =================================
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

TOP_K = 5


def summarise_outputs(outputs: Sequence[torch.Tensor], *, task: str | None) -> dict[str, Any]:
    """The ``result`` field of a frame's output line (see the module table).

    Args:
        outputs: the model's outputs for the frame, batch first.
        task: the plan's task (``Plan.task``), None when the plan does not say.
    """
    if len(outputs) == 1 and outputs[0].is_floating_point():
        out = outputs[0]
        if task == "classification" and out.dim() == 2 and out.shape[1] >= 2:
            return _classification(out[0])
        if task == "segmentation" and out.dim() == 4 and out.shape[1] >= 2:
            return _segmentation(out[0])
    return {
        "kind": "tensors",
        "shapes": [list(t.shape) for t in outputs],
        "checksum": _checksum(outputs),
    }


def _classification(logits: torch.Tensor) -> dict[str, Any]:
    probabilities = torch.softmax(logits.float(), dim=0)
    top = torch.topk(probabilities, min(TOP_K, probabilities.numel()))
    return {
        "kind": "classification",
        "top5": [int(i) for i in top.indices],
        "probabilities": [round(float(p), 6) for p in top.values],
    }


def _segmentation(logits: torch.Tensor) -> dict[str, Any]:
    classes = logits.shape[0]
    counts = torch.bincount(logits.argmax(dim=0).flatten(), minlength=classes)
    total = max(int(counts.sum()), 1)
    return {
        "kind": "segmentation",
        "class_fraction": [round(int(c) / total, 6) for c in counts],
    }


def _checksum(outputs: Sequence[torch.Tensor]) -> int:
    crc = 0
    for t in outputs:
        crc = zlib.crc32(
            t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), crc
        )
    return crc
