"""The registry of reference models, addressed as ``zoo:NAME`` in model specs.

Every entry builds with random weights from keyword arguments only, so a spec's options
(``zoo:vit_tiny?image_size=64``) map one-to-one onto the builder's signature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models.mobilenet import mobilenet_v2
from splitwire.partitioner.models.resnet import resnet18, resnet50
from splitwire.partitioner.models.unet import unet_small
from splitwire.partitioner.models.vit import vit_tiny

__all__ = ["ZooEntry", "zoo_entry", "zoo_names"]


@dataclass(frozen=True)
class ZooEntry:
    """One reference model.

    Attributes:
        name: the ``NAME`` in ``zoo:NAME``.
        build: keyword-only builder returning the model with random weights.
        input_shape: a batch-1 example input shape at the builder's defaults, e.g. (1, 3, 224, 224).
        task: what the output means: class logits (N, K) or per-pixel logits (N, K, H, W).
        description: one line for listings.
    """

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    task: Literal["classification", "segmentation"]
    description: str

    def input_shape_for(self, options: Mapping[str, Any]) -> tuple[int, ...]:
        """The batch-1 input shape once builder options are applied.

        Builders follow one convention: ``in_channels`` sets the channel count and ``image_size``
        the (square) side, so ``zoo:vit_tiny?image_size=64`` expects (1, 3, 64, 64).

        Args:
            options: keyword arguments that will be passed to ``build``.

        Returns:
            ``input_shape`` with channels and spatial size replaced where the options set them.
        """
        n, c, h, w = self.input_shape
        c = int(options.get("in_channels", c))
        if "image_size" in options:
            h = w = int(options["image_size"])
        return (n, c, h, w)


_ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="resnet18",
        build=resnet18,
        input_shape=(1, 3, 224, 224),
        task="classification",
        description="ResNet-18, BasicBlocks, 11.7 M params",
    ),
    ZooEntry(
        name="resnet50",
        build=resnet50,
        input_shape=(1, 3, 224, 224),
        task="classification",
        description="ResNet-50, Bottlenecks, 25.6 M params",
    ),
    ZooEntry(
        name="mobilenet_v2",
        build=mobilenet_v2,
        input_shape=(1, 3, 224, 224),
        task="classification",
        description="MobileNetV2, inverted residuals, 3.5 M params at width 1.0",
    ),
    ZooEntry(
        name="vit_tiny",
        build=vit_tiny,
        input_shape=(1, 3, 224, 224),
        task="classification",
        description="ViT-Tiny/16, dim 192, depth 12, 3 heads, 5.7 M params",
    ),
    ZooEntry(
        name="unet_small",
        build=unet_small,
        input_shape=(1, 3, 256, 256),
        task="segmentation",
        description="U-Net with concatenated skips, 21 classes, 1.9 M params",
    ),
)

_REGISTRY: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def zoo_names() -> list[str]:
    """Names of the registered models, sorted.

    Returns:
        The names usable as ``zoo:NAME``.
    """
    return sorted(_REGISTRY)


def zoo_entry(name: str) -> ZooEntry:
    """Look up a registered model.

    Args:
        name: a name from :func:`zoo_names`.

    Returns:
        The registry entry.

    Raises:
        ModelSpecError: if no model has that name; the message lists the available ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelSpecError(
            f"unknown zoo model {name!r}; available: {', '.join(zoo_names())} "
            "(use one of them, e.g. 'zoo:resnet18')"
        ) from None
