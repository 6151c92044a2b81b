"""MobileNetV2 (Sandler et al., 2018): inverted residuals with linear bottlenecks.

Shapes for a (N, 3, 224, 224) input at width 1.0::

    features[0]      conv3x3/2                 -> (N,   32, 112, 112)
    features[1:18]   17 inverted residuals     -> (N,  320,   7,   7)
    features[18]     conv1x1                   -> (N, 1280,   7,   7)
    classifier       avgpool, dropout, linear  -> (N, num_classes)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

# One row per stage: expansion factor t, output channels c, repeats n, stride of the first repeat s.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never dropping below 90 %.

    Hardware kernels prefer channel counts that are multiples of 8; the 90 % floor keeps small
    width multipliers from shrinking a layer by a whole ``divisor`` step.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu6(
    in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3, carries the stride) -> project (1x1, no activation).

    The shortcut exists only when the block keeps both resolution and channel count.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            # Linear bottleneck: a ReLU here would destroy information in the narrow projection.
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier.

    Args:
        num_classes: size of the classifier output.
        width_mult: scales every layer's channel count (0.35 ... 1.4 in the paper).
        dropout: dropout probability before the classifier (inactive in eval mode).
        in_channels: channels of the input image.

    Raises:
        ValueError: if ``width_mult`` is not positive.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"MobileNetV2 width_mult must be positive, got {width_mult}")
        channels = _make_divisible(32 * width_mult)
        # The last layer only grows with the multiplier, never shrinks (as in the paper).
        last_channels = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, channels, stride=2)]
        for t, c, n, s in _STAGES:
            out_channels = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(
                    InvertedResidual(
                        channels, out_channels, stride=s if i == 0 else 1, expand_ratio=t
                    )
                )
                channels = out_channels
        features.append(_conv_bn_relu6(channels, last_channels, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) -> features (N, last_channels, H/32, W/32) -> (N, num_classes)
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenet_v2(
    *, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3
) -> MobileNetV2:
    """Build MobileNetV2 (3.5 M parameters at width 1.0, 1000 classes) with random weights.

    Args:
        num_classes: size of the classifier output.
        width_mult: channel multiplier.
        dropout: dropout before the classifier.
        in_channels: channels of the input image.

    Returns:
        The model, in training mode.

    Raises:
        ValueError: if ``width_mult`` is not positive.
    """
    return MobileNetV2(
        num_classes=num_classes, width_mult=width_mult, dropout=dropout, in_channels=in_channels
    )
