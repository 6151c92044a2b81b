"""``hf:ClassName`` specs: a transformers vision model from its default config, random weights.

``transformers`` is optional (``pip install 'splitwire[hf]'``) and imported only here, when an
``hf:`` spec is resolved. Nothing is downloaded: the model is built from ``ClassName.config_class``
with the spec's options as config overrides, e.g.::

    hf:ViTForImageClassification?image_size=32&patch_size=8&hidden_size=32&num_labels=10
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import torch
from torch import nn

from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models._help import spec_forms

__all__ = ["HFImageModel", "HFModel", "build_hf"]

_EXAMPLES = (
    "ResNetForImageClassification, MobileNetV2ForImageClassification, ViTForImageClassification"
)
# Config fields that describe the file, not the model; overriding them makes no sense.
_NOT_OPTIONS = frozenset({"transformers_version", "architectures", "model_type"})


class HFImageModel(nn.Module):
    """Adapts a transformers vision model to ``forward(pixel_values) -> Tensor``.

    transformers models return a ``ModelOutput``; the graph partitioner needs a plain tensor
    output, so this returns ``logits`` when the output has them and the first output otherwise.
    The wrapped model is ``self.model`` (its state dict is what ``@weights`` checkpoints hold).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values: (N, num_channels, H, W) -> logits, e.g. (N, num_labels)
        out = self.model(pixel_values=pixel_values)
        logits = getattr(out, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        first = out if isinstance(out, torch.Tensor) else out[0]
        if not isinstance(first, torch.Tensor):
            raise TypeError(f"{type(self.model).__name__} returned {type(first).__name__} first")
        return first


@dataclasses.dataclass(frozen=True)
class HFModel:
    """What :func:`build_hf` resolved.

    Attributes:
        wrapper: the model behind ``forward(pixel_values) -> Tensor``.
        model: the transformers model inside ``wrapper`` (load checkpoints into this one).
        input_shape: (1, num_channels, image_size, image_size); 224 when the config has no size.
        task: "classification" / "segmentation" from the class name, else None.
    """

    wrapper: HFImageModel
    model: nn.Module
    input_shape: tuple[int, ...] | None
    task: str | None


def build_hf(class_name: str, options: Mapping[str, Any], *, spec: str) -> HFModel:
    """Build ``transformers.<class_name>`` from its default config with ``options`` applied.

    Weights are random, drawn from the caller's RNG state (the caller seeds it).

    Args:
        class_name: a transformers model class taking ``pixel_values``.
        options: config overrides; ``num_labels`` and every config field are accepted.
        spec: the spec being resolved, quoted in error messages.

    Returns:
        The wrapped model and what is known about its input.

    Raises:
        ModelSpecError: if transformers is missing, the class does not exist or is not a vision
            model, an option is unknown, or building fails.
    """
    transformers = _import_transformers(spec)
    cls = _model_class(transformers, class_name, spec=spec)
    config_class: type = cls.config_class  # type: ignore[attr-defined]
    accepted = _config_options(config_class)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ModelSpecError(
            f"{spec!r}: unknown option(s) {', '.join(unknown)} for {config_class.__name__}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    try:
        config = config_class(**options)
        model = cls(config)
    except Exception as exc:  # config validation and model init raise many types
        raise ModelSpecError(
            f"{spec!r}: building {class_name} failed ({type(exc).__name__}: {exc}); "
            "check the option values"
        ) from exc
    return HFModel(
        wrapper=HFImageModel(model),
        model=model,
        input_shape=_input_shape(config),
        task=_task(class_name),
    )


def _import_transformers(spec: str) -> ModuleType:
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise ModelSpecError(
            f"{spec!r}: hf: specs need the optional 'transformers' package, which is not "
            f"installed ({exc}); run: pip install 'splitwire[hf]' -c constraints.txt"
        ) from exc


def _model_class(transformers: ModuleType, class_name: str, *, spec: str) -> type[nn.Module]:
    try:
        cls = getattr(transformers, class_name)
    except (AttributeError, ImportError, RuntimeError) as exc:  # lazy modules may fail to import
        close = difflib.get_close_matches(class_name, dir(transformers), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelSpecError(
            f"{spec!r}: transformers has no model class {class_name!r}; {hint}"
            f"use a vision model class such as {_EXAMPLES}\n" + spec_forms()
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "config_class")):
        raise ModelSpecError(
            f"{spec!r}: transformers.{class_name} is not a model class with a config_class "
            f"(Auto* factories, configs and processors are not); use e.g. {_EXAMPLES}"
        )
    if "pixel_values" not in inspect.signature(cls.forward).parameters:
        raise ModelSpecError(
            f"{spec!r}: transformers.{class_name} does not take pixel_values; only vision models "
            f"are supported, e.g. {_EXAMPLES}"
        )
    return cls


def _config_options(config_class: type) -> set[str]:
    names = {
        p.name
        for p in inspect.signature(config_class).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }
    if dataclasses.is_dataclass(config_class):
        names |= {f.name for f in dataclasses.fields(config_class)}
    # num_labels is a property (it sizes id2label) but the usual way to set the class count.
    names.add("num_labels")
    return {n for n in names if not n.startswith("_") and n not in _NOT_OPTIONS}


def _input_shape(config: Any) -> tuple[int, ...] | None:
    channels = getattr(config, "num_channels", None)
    if not isinstance(channels, int):
        return None
    size = getattr(config, "image_size", 224)
    if isinstance(size, list | tuple) and len(size) == 2:
        return (1, channels, int(size[0]), int(size[1]))
    return (1, channels, int(size), int(size)) if isinstance(size, int) else None


def _task(class_name: str) -> str | None:
    if class_name.endswith("ForImageClassification"):
        return "classification"
    if class_name.endswith("ForSemanticSegmentation"):
        return "segmentation"
    return None
