"""Building a model from each kind of spec source: ``zoo:``, ``file.py:callable`` and ``.pt2``.

(``hf:`` lives in :mod:`splitwire.partitioner.models.hf`, since it owns the optional transformers
import.) These functions build with whatever RNG state they are given; :func:`load_model` seeds it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models._help import spec_forms
from splitwire.partitioner.models.zoo import zoo_entry, zoo_names

__all__ = ["Built", "build_file", "build_zoo", "load_pt2"]


@dataclass(frozen=True)
class Built:
    """A freshly built model and what is known about it.

    Attributes:
        module: the model :class:`LoadedModel` will expose.
        weights_target: the module a ``@weights`` checkpoint is loaded into (usually ``module``).
        input_shape: a batch-1 example input shape, when known.
        task: "classification" / "segmentation", when known.
    """

    module: nn.Module
    weights_target: nn.Module
    input_shape: tuple[int, ...] | None
    task: str | None


def build_zoo(name: str, options: Mapping[str, Any], *, spec: str) -> Built:
    """Build ``zoo:name`` with ``options`` as builder keyword arguments.

    Args:
        name: a registered zoo name.
        options: keyword arguments for the builder.
        spec: the spec being resolved, quoted in error messages.

    Returns:
        The model with random weights.

    Raises:
        ModelSpecError: for an unknown name, an unknown option or values the builder rejects.
    """
    if name not in zoo_names():
        raise ModelSpecError(
            f"{spec!r}: unknown zoo model {name!r}; use one of {', '.join(zoo_names())}\n"
            + spec_forms()
        )
    entry = zoo_entry(name)
    module = _call_builder(entry.build, options, spec=spec, what=f"zoo model {name!r}")
    return Built(module, module, entry.input_shape_for(options), entry.task)


def build_file(path: Path, attr: str, options: Mapping[str, Any], *, spec: str) -> Built:
    """Import the Python file ``path`` and call ``attr(**options)``, which must return a module.

    The file is executed as a fresh module on every call, registered in ``sys.modules`` under a
    name derived from its resolved path (dataclasses and pickling need that).

    Args:
        path: a ``.py`` file.
        attr: the name of a callable defined in it.
        options: keyword arguments for the callable (none: called with no arguments).
        spec: the spec being resolved, quoted in error messages.

    Returns:
        The model; its input shape and task are unknown.

    Raises:
        ModelSpecError: if the file is missing or fails to import, the callable is missing, an
            option is not one of its parameters, or it returns something other than a module.
    """
    if not path.is_file():
        raise ModelSpecError(
            f"{spec!r}: model file {str(path)!r} does not exist; give the path of a .py file that "
            "defines the callable, e.g. models/net.py:build\n" + spec_forms()
        )
    module_name = (
        "splitwire_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    )
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ModelSpecError(f"{spec!r}: cannot import {str(path)!r} as a Python module")
    py_module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = py_module
    try:
        import_spec.loader.exec_module(py_module)
    except Exception as exc:  # the user's code may raise anything while importing
        sys.modules.pop(module_name, None)
        raise ModelSpecError(
            f"{spec!r}: importing {str(path)!r} failed ({type(exc).__name__}: {exc}); fix the file"
        ) from exc
    fn = getattr(py_module, attr, None)
    if not callable(fn):
        available = sorted(
            k for k, v in vars(py_module).items() if callable(v) and not k.startswith("_")
        )
        what = "is not callable" if hasattr(py_module, attr) else "is not defined"
        raise ModelSpecError(
            f"{spec!r}: {attr!r} {what} in {str(path)!r}; callables defined there: "
            f"{', '.join(available) or 'none'}"
        )
    module = _call_builder(fn, options, spec=spec, what=f"{path.name}:{attr}")
    return Built(module, module, None, None)


def load_pt2(path: Path, *, spec: str) -> Built:
    """Load a ``torch.export`` archive and return its module.

    The exported graph's train/eval behaviour was fixed when it was exported (``.eval()`` is not
    supported on exported modules): export models in eval mode.

    Args:
        path: a file written by ``torch.export.save``.
        spec: the spec being resolved, quoted in error messages.

    Returns:
        ``ep.module()``; the input shape comes from the graph's single input, with a symbolic
        batch dimension set to 1 (None when there are several inputs).

    Raises:
        ModelSpecError: if the file is missing or is not a loadable archive.
    """
    if not path.is_file():
        raise ModelSpecError(
            f"{spec!r}: exported program {str(path)!r} does not exist; write one with "
            "torch.export.save(torch.export.export(model, (x,)), 'model.pt2')\n" + spec_forms()
        )
    try:
        program = torch.export.load(path)
    except Exception as exc:  # zipfile, RuntimeError, KeyError, version mismatches, ...
        raise ModelSpecError(
            f"{spec!r}: cannot load {str(path)!r} as a torch.export archive "
            f"({type(exc).__name__}: {exc}); re-export it with torch.export.save under this "
            f"torch ({torch.__version__})"
        ) from exc
    module = program.module()
    return Built(module, module, _pt2_input_shape(program), None)


def accepted_options(fn: Callable[..., Any]) -> list[str] | None:
    """Keyword arguments ``fn`` accepts, or None when it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return sorted(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _call_builder(
    fn: Callable[..., Any], options: Mapping[str, Any], *, spec: str, what: str
) -> nn.Module:
    accepted = accepted_options(fn)
    unknown = sorted(set(options) - set(accepted)) if accepted is not None else []
    if unknown:
        raise ModelSpecError(
            f"{spec!r}: unknown option(s) {', '.join(unknown)} for {what}; accepted: "
            f"{', '.join(accepted or []) or 'none'}"
        )
    try:
        module = fn(**options)
    except Exception as exc:  # builders validate their arguments with ValueError / TypeError
        raise ModelSpecError(
            f"{spec!r}: building {what} failed ({type(exc).__name__}: {exc}); check the options"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ModelSpecError(
            f"{spec!r}: {what} returned {type(module).__module__}.{type(module).__qualname__} "
            f"({_short_repr(module)}), expected a torch.nn.Module; return the model itself"
        )
    return module


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pt2_input_shape(program: torch.export.ExportedProgram) -> tuple[int, ...] | None:
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs
    ]
    if len(placeholders) != 1:
        return None
    value = placeholders[0].meta.get("val")
    if not isinstance(value, torch.Tensor):
        return None
    shape: list[int] = []
    for i, dim in enumerate(value.shape):
        if isinstance(dim, int):
            shape.append(dim)
        elif i == 0:
            # A symbolic batch: batch 1 is what callers want, unless the export forbade it.
            bounds = program.range_constraints.get(dim.node.expr)
            shape.append(max(1, int(bounds.lower)) if bounds is not None else 1)
        else:
            return None  # other dynamic dims have no single natural example size
    return tuple(shape)
