"""The light local model that runs on the edge, on the current frame.

It sees the frame 2× downsampled (an average over 2×2 blocks, its first operation), so it
finds *where* objects are but cannot see the period-2 textures that tell *what* they are; the
fusion stage at a quarter of the input resolution takes the identity from the heavy model's
(stale) downlink features. Shapes for a (N, 3, 64, 64) input with width w = 32::

    avgpool 2x                        -> (N,  3, 32, 32)
    stem    conv3x3, relu             -> (N, w/2, 32, 32) -----------------.  skip
    down    conv3x3 s2, relu, conv3x3 -> (N,  w, 16, 16)  = stage            |
    fusion  stage (+ remote, delay)   -> (N,  w, 16, 16)                     |
    context conv3x3, relu             -> (N,  w, 16, 16) = c                 |
            c + up2x(convs at 8x8 of c), conv3x3, relu                      |
    up 2x, cat skip, conv3x3, relu    -> (N, w/2, 32, 32) <-----------------'
    head    conv1x1, up 2x (bilinear) -> logits (N, K, 64, 64)

The context layers after the fusion (one of them through an 8×8 detour) see ±8 cells of the
fusion stage (±32 input pixels), so an identity seen where an object was can reach where it is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from splitwire.corrector.fusion import Fusion

__all__ = ["LocalFeatures", "LocalModel"]


class LocalFeatures(NamedTuple):
    """What the local model computes from the current frame before the fusion.

    Attributes:
        stage: (N, w, H/4, W/4) features at the fusion stage.
        skip: (N, w/2, H/2, W/2) features for the decoder.
    """

    stage: torch.Tensor
    skip: torch.Tensor


class LocalModel(nn.Module):
    """The local model with its fusion operator.

    Args:
        fusion: the fusion operator (its ``channels`` set the width w).
        num_classes: K.
    """

    def __init__(self, *, fusion: Fusion, num_classes: int) -> None:
        super().__init__()
        w = fusion.channels
        self.width = w
        self.num_classes = num_classes
        self.stem = nn.Conv2d(3, w // 2, 3, padding=1)
        self.down1 = nn.Conv2d(w // 2, w, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(w, w, 3, padding=1)
        self.fusion = fusion
        self.context1 = nn.Conv2d(w, w, 3, padding=1)
        self.coarse = nn.Sequential(
            nn.Conv2d(w, w, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
        )
        self.context2 = nn.Conv2d(w, w, 3, padding=1)
        self.up = nn.Conv2d(w + w // 2, w // 2, 3, padding=1)
        self.head = nn.Conv2d(w // 2, num_classes, 1)

    def features(self, x: torch.Tensor) -> LocalFeatures:
        """Features of preprocessed frames x (N, 3, H, W)."""
        x = F.avg_pool2d(x, 2)  # (N, 3, H/2, W/2): the fine textures average out here
        skip = torch.relu(self.stem(x))  # (N, w/2, H/2, W/2)
        stage = self.down2(torch.relu(self.down1(skip)))  # (N, w, H/4, W/4)
        return LocalFeatures(stage, skip)

    def decode(
        self, feats: LocalFeatures, remote: torch.Tensor | None, delay: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N, K, H, W) from local features, fused with ``remote`` (or local-only when
        None) at ``delay`` (N,) int64 frames."""
        y = torch.relu(self.fusion(feats.stage, remote, delay))  # (N, w, H/4, W/4)
        y = torch.relu(self.context1(y))
        # A coarse detour at H/8 widens the receptive field cheaply (dilated convs are slow).
        y = y + F.interpolate(self.coarse(y), scale_factor=2.0, mode="nearest")
        y = torch.relu(self.context2(y))
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")  # (N, w, H/2, W/2)
        y = torch.relu(self.up(torch.cat((y, feats.skip), dim=1)))
        return F.interpolate(self.head(y), scale_factor=2.0, mode="bilinear")

    def forward(
        self,
        x: torch.Tensor,
        remote: torch.Tensor | None = None,
        delay: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if delay is None:
            delay = torch.zeros(x.shape[0], dtype=torch.int64)
        return self.decode(self.features(x), remote, delay)
