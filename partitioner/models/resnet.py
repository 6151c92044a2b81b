"""ResNet-18 and ResNet-50 (He et al., 2016), standard ImageNet topology.

The stride-2 of a downsampling bottleneck sits on its 3x3 convolution ("ResNet v1.5"), as in most
published ImageNet checkpoints. Shapes for a (N, 3, 224, 224) input::

    stem     conv7x7/2 + maxpool/2   -> (N,   64, 56, 56)
    layer1   stride 1                -> (N,   64 * e, 56, 56)
    layer2   stride 2                -> (N,  128 * e, 28, 28)
    layer3   stride 2                -> (N,  256 * e, 14, 14)
    layer4   stride 2                -> (N,  512 * e,  7,  7)
    head     avgpool + fc            -> (N, num_classes)

with expansion ``e`` = 1 (BasicBlock, ResNet-18) or 4 (Bottleneck, ResNet-50).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every convolution is followed by a BatchNorm whose shift makes a bias redundant.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity (or 1x1 projection) shortcut."""

    expansion: ClassVar[int] = 1

    def __init__(
        self, in_channels: int, width: int, *, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, plus a shortcut."""

    expansion: ClassVar[int] = 4

    def __init__(
        self, in_channels: int, width: int, *, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet built from one block type and the number of blocks in each of the four stages.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: size of the classifier output.
        in_channels: channels of the input image.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self._block = block
        self._channels = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(64, layers[0], stride=1)
        self.layer2 = self._make_stage(128, layers[1], stride=2)
        self.layer3 = self._make_stage(256, layers[2], stride=2)
        self.layer4 = self._make_stage(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._init_weights()

    def _make_stage(self, width: int, blocks: int, *, stride: int) -> nn.Sequential:
        out_channels = width * self._block.expansion
        downsample: nn.Module | None = None
        # The shortcut needs a projection whenever the block changes resolution or channel count.
        if stride != 1 or self._channels != out_channels:
            downsample = nn.Sequential(
                _conv1x1(self._channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        stage = [self._block(self._channels, width, stride=stride, downsample=downsample)]
        self._channels = out_channels
        stage += [self._block(out_channels, width) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) -> (N, num_classes); any H, W >= 32 works thanks to the adaptive pool.
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)  # (N, 512 * expansion)
        return self.fc(x)


def resnet18(*, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """Build ResNet-18 (11.7 M parameters at 1000 classes) with random weights.

    Args:
        num_classes: size of the classifier output.
        in_channels: channels of the input image.

    Returns:
        The model, in training mode.
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


def resnet50(*, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """Build ResNet-50 (25.6 M parameters at 1000 classes) with random weights.

    Args:
        num_classes: size of the classifier output.
        in_channels: channels of the input image.

    Returns:
        The model, in training mode.
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
