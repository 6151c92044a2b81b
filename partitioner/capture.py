"""Capture a model as a graph of tensor operations: ``torch.export`` first, ``torch.fx`` second.

    >>> graph = capture(model, (1, 3, 224, 224))
    >>> graph.method
    'export'

The batch dimension is kept dynamic, because the tail serves batches of frames from many edges.
``torch.export`` specialises a dimension whose example size is 1, so the example input has
batch 2 (the facts of this project: "a dynamic batch dimension needs an example of batch ≥ 2").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import fx, nn

from splitwire.partitioner.errors import CaptureError

logger = logging.getLogger(__name__)

# Largest batch the exported halves accept; torch.export needs a finite bound to reason with.
MAX_BATCH = 1024


@dataclass(frozen=True)
class CapturedGraph:
    """A model as an executable graph of tensor operations.

    Attributes:
        module: the graph; ``module(*example_inputs)`` computes the model. Parameters are
            ``get_attr`` nodes, so a graph cut can hand each half exactly the weights it uses.
        method: how it was captured.
        input_shape: the input shape as given (batch included, usually 1).
        example_inputs: the inputs it was captured with (batch >= 2 for a dynamic batch).
    """

    module: fx.GraphModule
    method: Literal["export", "fx"]
    input_shape: tuple[int, ...]
    example_inputs: tuple[torch.Tensor, ...]


def example_input(
    input_shape: Sequence[int], *, batch: int | None = None, seed: int = 0
) -> torch.Tensor:
    """A deterministic random input of ``input_shape`` with its batch set to ``batch``."""
    shape = list(input_shape)
    if batch is not None:
        shape[0] = batch
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def capture(model: nn.Module, input_shape: Sequence[int]) -> CapturedGraph:
    """Capture ``model`` for inputs of ``input_shape`` (N, ...), batch dimension dynamic.

    Raises:
        CaptureError: neither ``torch.export`` nor ``torch.fx`` could capture the model; the
            message names the construct that blocked them and how to fix it.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 1 or any(d < 1 for d in shape):
        raise CaptureError(
            f"input shape {shape} is invalid; expected positive sizes like 1,3,224,224"
        )
    example = (example_input(shape, batch=max(2, shape[0])),)
    model = model.eval()
    _check_runs(model, example, shape)
    try:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
        return CapturedGraph(program.module(), "export", shape, example)
    except Exception as exc:  # export raises many unrelated types; all mean "no"
        export_error = exc
    logger.warning("torch.export failed (%s); trying torch.fx", _first_line(export_error))
    try:
        traced = fx.symbolic_trace(model)
        traced(*example)  # a trace that runs wrongly is no capture
        return CapturedGraph(traced, "fx", shape, example)
    except Exception as fx_error:
        raise CaptureError(_explain(export_error, fx_error)) from export_error


def _check_runs(
    model: nn.Module, example: tuple[torch.Tensor, ...], shape: tuple[int, ...]
) -> None:
    try:
        with torch.no_grad():
            model(*example)
    except Exception as exc:  # any failure here means the shape does not fit
        raise CaptureError(
            f"the model does not run on an input of shape {shape} ({_first_line(exc)}); "
            "check --input-shape (N,C,H,W for image models)"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _explain(export_error: BaseException, fx_error: BaseException) -> str:
    text = f"{export_error}\n{fx_error}"
    location = re.search(r'File "([^"]+)", line (\d+)', text)
    where = f" at {location[1]}:{location[2]}" if location else ""
    if re.search(
        r"data.dependent|GuardOnDataDependent|symbolically traced variables cannot be "
        r"used as inputs to control flow|Could not guard on data-dependent",
        text,
    ):
        hint = (
            f"data-dependent control flow{where}: Python `if`/`while` on tensor values cannot be "
            "captured; replace it with torch.where (both branches computed) or torch.cond"
        )
    else:
        hint = f"an operation neither tracer supports{where}"
    return (
        f"cannot capture the model: {hint}.\n"
        f"  torch.export: {_first_line(export_error)}\n"
        f"  torch.fx:     {_first_line(fx_error)}"
    )
