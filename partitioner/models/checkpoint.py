"""Loading a state-dict checkpoint (the ``@path/to/state_dict.pt`` part of a spec) into a model.

Loading is strict and never falls back: a file that cannot be read, holds anything but tensors,
or does not fit the model raises :class:`ModelSpecError` — a model silently left with random
weights would otherwise look fine until its accuracy is measured.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitwire.partitioner.errors import ModelSpecError

__all__ = ["load_weights"]

# Keys under which training scripts commonly nest the state dict in a larger checkpoint.
_NESTED_KEYS = ("state_dict", "model")
# How many offending keys an error message lists before summarising the rest.
_SHOW = 5
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def load_weights(module: nn.Module, path: Path, *, spec: str) -> None:
    """Load a state dict from ``path`` into ``module`` (strict: every key, every shape).

    Args:
        module: the model to fill in place.
        path: a file written by ``torch.save(model.state_dict(), path)``, or by ``torch.save`` of a
            dict holding such a state dict under ``"state_dict"`` or ``"model"``.
        spec: the spec being resolved, quoted in error messages.

    Raises:
        ModelSpecError: if the file is missing or unreadable, contains pickled objects other than
            tensors and plain containers (refused by ``weights_only=True``), or its keys / shapes
            do not match the model's.
    """
    if not path.is_file():
        raise ModelSpecError(
            f"{spec!r}: weights file {str(path)!r} does not exist; "
            "pass the path of a file saved with torch.save(model.state_dict(), path)"
        )
    try:
        # weights_only: unpickling an arbitrary object can run arbitrary code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only names the first class it refused; anything else is a damaged file.
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused is None:
            raise ModelSpecError(
                f"{spec!r}: cannot read weights file {str(path)!r}: not a torch.save file, or "
                "damaged; expected a file written by torch.save(model.state_dict(), path)"
            ) from exc
        raise ModelSpecError(
            f"{spec!r}: refused to load {str(path)!r}: it pickles {refused.group(1)}, and only "
            "tensors and plain containers are loaded (torch.load(weights_only=True)); save "
            "model.state_dict() instead of the model or other Python objects"
        ) from exc
    except Exception as exc:  # torch.load raises RuntimeError, KeyError, EOFError, OSError, ...
        raise ModelSpecError(
            f"{spec!r}: cannot read weights file {str(path)!r} ({type(exc).__name__}: {exc}); "
            "expected a file written by torch.save(model.state_dict(), path)"
        ) from exc
    state = _extract_state_dict(obj, path=path, spec=spec)
    _check_fits(module, state, path=path, spec=spec)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything the check above did not anticipate
        raise ModelSpecError(
            f"{spec!r}: weights {str(path)!r} do not fit the model: {exc}"
        ) from exc


def _extract_state_dict(obj: object, *, path: Path, spec: str) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ModelSpecError(
            f"{spec!r}: {str(path)!r} holds a {type(obj).__name__}, not a state dict; expected a "
            "mapping of parameter names to tensors (optionally under 'state_dict' or 'model')"
        )
    # Modules with get_extra_state() store other (weights_only-safe) values under *_extra_state.
    not_tensors = [
        k
        for k, v in obj.items()
        if not isinstance(v, torch.Tensor) and not k.endswith("_extra_state")
    ]
    if not_tensors:
        raise ModelSpecError(
            f"{spec!r}: {str(path)!r} is not a state dict: entries {_few(not_tensors)} are not "
            "tensors (a training checkpoint? nest the weights under 'state_dict' or 'model')"
        )
    return obj


def _check_fits(module: nn.Module, state: Mapping[str, Any], *, path: Path, spec: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if isinstance(state[k], torch.Tensor) and state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_few(mismatched)}")
    raise ModelSpecError(
        f"{spec!r}: weights {str(path)!r} do not fit the model: {'; '.join(problems)}"
        f"{_prefix_hint(set(expected), set(state))}; check that the checkpoint was saved from the "
        "same model with the same options (e.g. num_classes)"
    )


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    rest = len(items) - _SHOW
    return f"[{shown}{f', ... and {rest} more' if rest > 0 else ''}]"


def _prefix_hint(expected: set[str], given: set[str]) -> str:
    """Explain the commonest mismatch: every key carries one extra (or one missing) prefix."""
    if given and all("." in k for k in given):
        prefixes = {k.split(".", 1)[0] for k in given}
        if len(prefixes) == 1 and {k.split(".", 1)[1] for k in given} == expected:
            return f" (every checkpoint key has an extra {next(iter(prefixes)) + '.'!r} prefix)"
    if expected and all("." in k for k in expected):
        prefixes = {k.split(".", 1)[0] for k in expected}
        if len(prefixes) == 1 and {k.split(".", 1)[1] for k in expected} == given:
            return f" (checkpoint keys lack the model's {next(iter(prefixes)) + '.'!r} prefix)"
    return ""
