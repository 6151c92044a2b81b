"""Run a graph once and record what every node produced: shapes and dtypes, not values.

Like ``torch.fx.passes.shape_prop.ShapeProp``, but it describes every value, not only tensors:
the cut enumeration must know which nodes give a tensor, a list of tensors (``unbind``, ``split``)
or something else (a size, ``None``), and the value of sizes, to recognise the batch size.

    >>> values = record_values(graph_module, (torch.randn(1, 3, 32, 32),))
    >>> values[conv_node]
    ValueInfo(kind='tensor', shape=(1, 16, 32, 32), dtype=torch.float32, number=None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import fx

__all__ = ["ValueInfo", "record_values"]


@dataclass(frozen=True)
class ValueInfo:
    """What one node produced in one run.

    Attributes:
        kind: ``"tensor"``; ``"tensors"`` for a list or tuple holding tensors (``unbind``,
            ``split``, multi-output ops); ``"other"`` for anything else (sizes, ``None``).
        shape: the tensor's shape (``()`` unless ``kind == "tensor"``).
        dtype: the tensor's dtype (``None`` unless ``kind == "tensor"``).
        number: the value of an integer-valued node such as ``sym_size`` (``None`` otherwise).
    """

    kind: Literal["tensor", "tensors", "other"]
    shape: tuple[int, ...] = ()
    dtype: torch.dtype | None = None
    number: int | None = None

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes (0 unless ``kind == "tensor"``)."""
        if self.dtype is None:
            return 0
        return self.dtype.itemsize * math.prod(self.shape)


def record_values(
    module: fx.GraphModule, inputs: Sequence[torch.Tensor]
) -> dict[fx.Node, ValueInfo]:
    """Run ``module`` on ``inputs`` node by node and describe each node's value.

    Args:
        module: the graph to run.
        inputs: one tensor per placeholder, in order.

    Returns:
        A description of every node's value, placeholders included (the output node excluded).
    """
    recorder = _Recorder(module)
    with torch.no_grad():
        recorder.run(*inputs)
    return recorder.values


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        # The interpreter frees each value after its last use; only descriptions are kept, so a
        # whole-model run at 224×224 costs no more memory than the model's forward pass.
        super().__init__(module)
        self.values: dict[fx.Node, ValueInfo] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.op != "output":
            self.values[n] = _describe(result)
        return result


def _describe(value: object) -> ValueInfo:
    if isinstance(value, torch.Tensor):
        return ValueInfo("tensor", tuple(value.shape), value.dtype)
    if isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return ValueInfo("tensors")
    # bool is an int subclass, but a flag is never a size.
    if isinstance(value, int) and not isinstance(value, bool):
        return ValueInfo("other", number=value)
    return ValueInfo("other")
