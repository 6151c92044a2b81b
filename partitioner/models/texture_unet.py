"""The delay corrector's heavy remote model: a U-Net for the synthetic texture-segmentation task
(:mod:`splitwire.corrector.video`) that also returns a small *downlink* feature map.

It reads the full-resolution frame, where the fine textures that tell the object classes apart
are visible. Besides its own per-pixel class logits it returns ``downlink``, a few channels at a
quarter of the input resolution: what the cloud sends back so that the edge's light local model
can fuse it into its own features (the local model fuses at the same quarter resolution).
Shapes for (N, 3, 64, 64) with ``base_channels`` b = 16 and ``downlink_channels`` D = 8::

    enc1  double conv              -> (N,  b, 64, 64) ---------------------------.
    enc2  pool, double conv        -> (N, 2b, 32, 32) ------------------.        |
    enc3  pool, double conv        -> (N, 3b, 16, 16) --.               |        |
    mid   pool, double conv        -> (N, 4b,  8,  8)   |               |        |
    dec3  up, cat, double conv     -> (N, 3b, 16, 16) <-'--> downlink   |        |
    dec2  up, cat, conv            -> (N, 2b, 32, 32) <-----------------'        |
    dec1  up, cat, conv            -> (N,  b, 64, 64) <--------------------------'
    head  conv1x1                  -> logits (N, num_classes, 64, 64)
    downlink conv1x1 of dec3       -> (N, D, 16, 16)

``forward`` returns the tuple ``(logits, downlink)``: logits first, so the planner's
segmentation metrics (which read the first output) apply. H and W must be divisible by 8. A
split of it returns them as :attr:`TextureUNet.result_codecs` says (the class map and the
int8 downlink map).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TextureUNet", "texture_unet"]

_DEPTH = 3  # 2x poolings: inputs must be divisible by 2**_DEPTH


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*_conv(in_channels, out_channels), *_conv(out_channels, out_channels))


class TextureUNet(nn.Module):
    """U-Net with concatenated skips and a quarter-resolution downlink side output.

    Args:
        num_classes: per-pixel classes (background included).
        base_channels: width of the full-resolution level.
        downlink_channels: channels of the downlink feature map.
        in_channels: channels of the input image.
    """

    # How a split's tail sends the answer back (the planner writes them into plan.yaml): the
    # class map as uint8 indices under zstd and the downlink map as int8+zstd1, about 2.2 kB
    # per frame against 90 kB of fp32 logits and features; the delay corrector needs no more.
    result_codecs = ("classes+zstd3", "int8+zstd1")

    def __init__(
        self,
        *,
        num_classes: int = 5,
        base_channels: int = 16,
        downlink_channels: int = 8,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        b = base_channels
        self.num_classes = num_classes
        self.downlink_channels = downlink_channels
        self.pool = nn.MaxPool2d(2)
        self.enc1 = _double_conv(in_channels, b)
        self.enc2 = _double_conv(b, 2 * b)
        self.enc3 = _double_conv(2 * b, 3 * b)
        self.mid = _double_conv(3 * b, 4 * b)
        self.dec3 = _double_conv(4 * b + 3 * b, 3 * b)
        self.dec2 = nn.Sequential(*_conv(3 * b + 2 * b, 2 * b))
        self.dec1 = nn.Sequential(*_conv(2 * b + b, b))
        self.head = nn.Conv2d(b, num_classes, 1)
        self.downlink = nn.Conv2d(3 * b, downlink_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 2**_DEPTH or w % 2**_DEPTH:
            raise ValueError(
                f"TextureUNet input height and width must be divisible by {2**_DEPTH}, got "
                f"{h}x{w}; pad or resize the frame"
            )
        s1 = self.enc1(x)  # (N, b, H, W)
        s2 = self.enc2(self.pool(s1))  # (N, 2b, H/2, W/2)
        s3 = self.enc3(self.pool(s2))  # (N, 3b, H/4, W/4)
        y = self.mid(self.pool(s3))  # (N, 4b, H/8, W/8)
        y = self.dec3(torch.cat((_up(y), s3), dim=1))  # (N, 3b, H/4, W/4)
        downlink = self.downlink(y)  # (N, D, H/4, W/4)
        y = self.dec2(torch.cat((_up(y), s2), dim=1))  # (N, 2b, H/2, W/2)
        y = self.dec1(torch.cat((_up(y), s1), dim=1))  # (N, b, H, W)
        return self.head(y), downlink


def _up(x: torch.Tensor) -> torch.Tensor:
    # Nearest 2x: no weights, exact, and cheap on the cloud.
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def texture_unet(
    *,
    num_classes: int = 5,
    base_channels: int = 16,
    downlink_channels: int = 8,
    in_channels: int = 3,
) -> TextureUNet:
    """Build the corrector's heavy model with random weights.

    Args:
        num_classes: per-pixel classes (5: background and the task's four textures).
        base_channels: width of the full-resolution level (about 0.16 M parameters at 16).
        downlink_channels: channels of the quarter-resolution downlink map.
        in_channels: channels of the input image.

    Returns:
        The model, in training mode; ``forward`` returns ``(logits, downlink)``.
    """
    return TextureUNet(
        num_classes=num_classes,
        base_channels=base_channels,
        downlink_channels=downlink_channels,
        in_channels=in_channels,
    )
