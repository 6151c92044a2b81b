"""A small U-Net (Ronneberger et al., 2015) for semantic segmentation.

Four 2x downsamplings, so H and W must be divisible by 16. Shapes for (N, 3, 256, 256) with
``base_channels`` b = 16 (about 1.9 M parameters)::

    enc1  double conv           -> (N,   b, 256, 256) ----------------------------.
    enc2  pool, double conv     -> (N,  2b, 128, 128) -------------------.        |
    enc3  pool, double conv     -> (N,  4b,  64,  64) ----------.        |        |
    enc4  pool, double conv     -> (N,  8b,  32,  32) --.       |        |        |
    mid   pool, double conv     -> (N, 16b,  16,  16)   |       |        |        |
    dec4  up, cat, double conv  -> (N,  8b,  32,  32) <-'       |        |        |
    dec3  up, cat, double conv  -> (N,  4b,  64,  64) <---------'        |        |
    dec2  up, cat, double conv  -> (N,  2b, 128, 128) <------------------'        |
    dec1  up, cat, double conv  -> (N,   b, 256, 256) <---------------------------'
    head  conv1x1               -> (N, num_classes, 256, 256)

Skips are concatenated (not added), which is what makes cuts across the "U" expensive: a cut in
the middle has to carry every pending skip tensor.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet", "unet_small"]

_DEPTH = 4  # number of 2x downsamplings; inputs must be divisible by 2**_DEPTH


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Upsample 2x with a transposed conv, concatenate the skip, then a double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _double_conv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # x: (N, C_in, h, w) -> (N, C_out, 2h, 2w); cat with skip (N, C_out, 2h, 2w) on channels
        return self.conv(torch.cat((self.up(x), skip), dim=1))


class UNet(nn.Module):
    """U-Net encoder-decoder with concatenated skip connections.

    Args:
        num_classes: output channels (per-pixel class logits).
        base_channels: width of the first level; each level below doubles it.
        in_channels: channels of the input image.
    """

    def __init__(
        self, *, num_classes: int = 21, base_channels: int = 16, in_channels: int = 3
    ) -> None:
        super().__init__()
        b = base_channels
        self.pool = nn.MaxPool2d(2)
        self.enc1 = _double_conv(in_channels, b)
        self.enc2 = _double_conv(b, 2 * b)
        self.enc3 = _double_conv(2 * b, 4 * b)
        self.enc4 = _double_conv(4 * b, 8 * b)
        self.mid = _double_conv(8 * b, 16 * b)
        self.dec4 = Up(16 * b, 8 * b)
        self.dec3 = Up(8 * b, 4 * b)
        self.dec2 = Up(4 * b, 2 * b)
        self.dec1 = Up(2 * b, b)
        self.head = nn.Conv2d(b, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2**_DEPTH or w % 2**_DEPTH:
            raise ValueError(
                f"UNet input height and width must be divisible by {2**_DEPTH}, got {h}x{w}; "
                "pad or resize the image"
            )
        s1 = self.enc1(x)  # (N, b, H, W)
        s2 = self.enc2(self.pool(s1))  # (N, 2b, H/2, W/2)
        s3 = self.enc3(self.pool(s2))  # (N, 4b, H/4, W/4)
        s4 = self.enc4(self.pool(s3))  # (N, 8b, H/8, W/8)
        y = self.mid(self.pool(s4))  # (N, 16b, H/16, W/16)
        y = self.dec1(self.dec2(self.dec3(self.dec4(y, s4), s3), s2), s1)  # (N, b, H, W)
        return self.head(y)  # (N, num_classes, H, W)


def unet_small(*, num_classes: int = 21, base_channels: int = 16, in_channels: int = 3) -> UNet:
    """Build the small U-Net (1.9 M parameters at ``base_channels=16``) with random weights.

    Args:
        num_classes: output channels (21 = PASCAL VOC's 20 classes plus background).
        base_channels: width of the first level.
        in_channels: channels of the input image.

    Returns:
        The model, in training mode.
    """
    return UNet(num_classes=num_classes, base_channels=base_channels, in_channels=in_channels)
