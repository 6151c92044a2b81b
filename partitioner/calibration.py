"""Calibration inputs: synthetic images, and BatchNorm statistics that match them.

No data set can be downloaded, so measurements that need "realistic" activations (the codec's
ratio and error, the accuracy cost of a cut) use images generated here: smooth random fields
with edges, closer to natural images than white noise (which no camera produces). A randomly
initialised network's BatchNorm layers start with running statistics (mean 0, var 1) that fit no
input; :func:`calibrate_batchnorm` re-estimates them on these images, so activations have the
scale and sparsity a trained network's would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def synthetic_images(
    count: int, shape: Sequence[int], *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``count`` images of ``shape`` (C, H, W), normalised to mean 0 / std 1 per channel.

    Each image is low-frequency noise (a 1/8-resolution field, upsampled bicubically) plus a
    few axis-aligned rectangles, so it has both smooth regions and sharp edges.

    Returns:
        A tensor of shape ``(count, C, H, W)``.
    """
    channels, height, width = (int(d) for d in shape)
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(count, channels, max(2, height // 8), max(2, width // 8), generator=gen)
    images = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
    for i in range(count):
        for _ in range(4):
            y0, x0 = (int(v) for v in torch.randint(0, max(1, height - 4), (2,), generator=gen))
            h, w = (int(v) for v in torch.randint(4, max(5, height // 2), (2,), generator=gen))
            images[i, :, y0 : y0 + h, x0 : x0 + w] += torch.randn(channels, 1, 1, generator=gen)
    mean = images.mean(dim=(0, 2, 3), keepdim=True)
    std = images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return ((images - mean) / std).to(dtype)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 8) -> int:
    """Re-estimate every BatchNorm layer's running mean/var on ``inputs``; leave ``model`` in
    eval mode. Weights are not touched.

    Returns:
        The number of BatchNorm layers recalibrated (0 leaves the model unchanged).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all calibration batches
    model.train()
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    finally:
        model.eval()
    return len(norms)
