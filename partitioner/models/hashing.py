"""A fingerprint of what runs: the captured graph's operations and the weights they read.

Edge, cloud and plan check they hold the same model by comparing :func:`model_hash`. It covers

* the graph (:func:`graph_text`): every node in execution order with its operation, arguments
  and, where the capture recorded them, output shapes and dtypes — so two architectures with the
  same parameters (ReLU vs GELU after the same Linear), or two parameter-free models (``x * 2``
  vs ``x + 2``), hash differently;
* the weights (:func:`weights_hash`'s encoding): every entry of the graph's ``state_dict()`` plus
  the tensors it reads that are not in it (non-persistent buffers, lifted constants).

The text holds no memory address, object id or file path, and symbolic sizes are renamed in order
of appearance, so the same model captured for the same input shape hashes alike in every process.
It does depend on the torch version wherever that changes the captured graph.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn

from splitwire.partitioner.capture import CapturedGraph

__all__ = ["graph_text", "model_hash", "weights_hash"]

# Bumped whenever the hashed encoding changes, so old and new hashes never coincide.
_VERSION = "splitwire-model-hash/2"
# CPython's default repr, "<foo.Bar object at 0x7f...>": the address differs between runs.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# Sympy symbols of symbolic sizes (s0, s31, u0, ...); their numbering is an implementation detail.
_SYMBOL = re.compile(r"\b[a-z]\d+\b")


def model_hash(graph: CapturedGraph) -> str:
    """Hash a captured model: its graph (:func:`graph_text`) and every tensor the graph holds.

    Args:
        graph: the model as captured by :func:`splitwire.partitioner.capture.capture` for the
            input shape being planned.

    Returns:
        The sha256 as 64 lowercase hex digits. The same model captured for the same input shape
        (batch aside: it is dynamic) gives the same hash in every process on machines of the same
        byte order and torch version; another operation, argument or weight changes it.
    """
    digest = hashlib.sha256()
    text = graph_text(graph).encode()
    digest.update(f"{_VERSION}\0graph\0{len(text)}\0".encode())
    digest.update(text)
    _update_with_tensors(digest, _graph_tensors(graph.module).items())
    return digest.hexdigest()


def weights_hash(module: nn.Module) -> str:
    """Hash every entry of ``module.state_dict()``: name, dtype, shape and raw bytes.

    This is the weights alone: two architectures with the same parameters hash alike, so compare
    models with :func:`model_hash`. Parameters and persistent buffers (e.g. BatchNorm running
    statistics) are included, in sorted name order, so the hash does not depend on registration
    order. Each entry's header carries its byte length, which keeps (name, bytes) boundaries
    unambiguous. Non-tensor entries (a module's ``extra_state``) contribute their type and
    ``repr``.

    Args:
        module: the model; tensors may live on any device and have any dtype (bf16, fp8, bool).

    Returns:
        The sha256 as 64 lowercase hex digits. Same weights give the same hash on every machine of
        the same byte order; changing any element changes it.
    """
    digest = hashlib.sha256()
    _update_with_tensors(digest, module.state_dict().items())
    return digest.hexdigest()


def graph_text(graph: CapturedGraph) -> str:
    """A canonical text of the captured graph: what :func:`model_hash` hashes besides weights.

    One line per node, in execution order: ``name = op target args kwargs -> output``. Targets
    are operator names (``aten.conv2d.default``) or qualified function names; a called submodule
    (the ``torch.fx`` fallback keeps leaf modules such as ``Conv2d``) is written with its
    ``repr``, which carries its configuration. Outputs are dtype and shape when the capture
    recorded them (``torch.export`` does). A first line records the capture method and the input
    shape without its batch.

    Args:
        graph: the captured model.

    Returns:
        The text; the same for the same model and input shape in every process.
    """
    sample = "x".join(map(str, graph.input_shape[1:])) or "scalar"
    lines = [f"capture {graph.method} input Nx{sample}"]
    root = graph.module
    for spec in ("_in_spec", "_out_spec"):  # how torch.export flattens inputs and outputs
        if getattr(root, spec, None) is not None:
            lines.append(f"{spec} {' '.join(_scrub(str(getattr(root, spec))).split())}")
    lines += _graph_lines(root, {})
    return "\n".join(lines) + "\n"


def _graph_lines(module: fx.GraphModule, symbols: dict[str, str]) -> list[str]:
    lines = []
    for node in module.graph.nodes:
        target = _target_text(node, module, symbols)
        args = _value_text(node.args, symbols)
        kwargs = _value_text(node.kwargs, symbols)
        out = _value_text(node.meta.get("val"), symbols)
        lines.append(f"{node.name} = {node.op} {target} {args} {kwargs} -> {out}")
    return lines


def _target_text(node: fx.Node, module: fx.GraphModule, symbols: dict[str, str]) -> str:
    if node.op == "call_function":
        return _callable_text(node.target)
    if node.op == "call_module":
        assert isinstance(node.target, str)
        return f"{node.target}:{_module_text(module.get_submodule(node.target), symbols)}"
    if node.op == "get_attr":
        assert isinstance(node.target, str)
        value = _attribute(module, node.target)
        if isinstance(value, nn.Module):  # e.g. the branches of torch.cond
            return f"{node.target}:{_module_text(value, symbols)}"
        return node.target  # a tensor: its bytes are hashed with the weights, by this name
    return str(node.target)  # placeholder, output, call_method: a plain name


def _module_text(module: nn.Module, symbols: dict[str, str]) -> str:
    if isinstance(module, fx.GraphModule):
        return "{" + "; ".join(_graph_lines(module, symbols)) + "}"
    return _scrub(repr(module))


def _callable_text(fn: Any) -> str:
    """A function's qualified name, e.g. ``aten.conv2d.default`` or ``_operator.getitem``."""
    if isinstance(fn, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return str(fn)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(name, str):
        return f"{getattr(fn, '__module__', None) or ''}.{name}"
    return f"{type(fn).__qualname__}({_scrub(repr(fn))})"


def _value_text(value: Any, symbols: dict[str, str]) -> str:
    """An argument or an output, with nodes by name and tensors by dtype and shape."""
    if isinstance(value, fx.Node):
        return f"%{value.name}"
    if value is None or isinstance(value, bool | int | float | complex | str):
        return repr(value)
    if isinstance(value, tuple | list):
        inner = ", ".join(_value_text(v, symbols) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        items = ", ".join(f"{k!r}: {_value_text(v, symbols)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
        return _SYMBOL.sub(lambda m: symbols.setdefault(m[0], f"s{len(symbols)}"), str(value))
    if isinstance(value, torch.Tensor):
        shape = _value_text(tuple(value.shape), symbols)
        text = f"tensor({value.dtype}, {shape})"
        if not isinstance(value, torch._subclasses.FakeTensor) and value.device.type != "meta":
            text += f" sha256:{hashlib.sha256(_raw_bytes(value).numpy().data).hexdigest()}"
        return text
    if isinstance(value, torch.dtype | torch.device | torch.layout | torch.memory_format):
        return str(value)
    if isinstance(value, slice):
        parts = (_value_text(p, symbols) for p in (value.start, value.stop, value.step))
        return f"slice({', '.join(parts)})"
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if value is Ellipsis:
        return "..."
    if callable(value):
        return _callable_text(value)
    return f"{type(value).__qualname__}({_scrub(repr(value))})"


def _scrub(text: str) -> str:
    return _ADDRESS.sub("", text)


def _attribute(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _graph_tensors(module: fx.GraphModule) -> dict[str, Any]:
    """The graph module's state dict plus the tensors its ``get_attr`` nodes read besides."""
    entries: dict[str, Any] = dict(module.state_dict())
    for node in module.graph.nodes:
        if node.op == "get_attr" and node.target not in entries:
            value = _attribute(module, str(node.target))
            if isinstance(value, torch.Tensor):
                entries[str(node.target)] = value
    return entries


def _update_with_tensors(digest: hashlib._Hash, entries: Iterable[tuple[str, Any]]) -> None:
    """Feed ``(name, value)`` entries to ``digest`` in sorted name order (see weights_hash)."""
    for name, value in sorted(entries, key=lambda entry: entry[0]):
        if isinstance(value, torch.Tensor):
            data = _raw_bytes(value)
            header = f"{name}\0{value.dtype}\0{tuple(value.shape)}\0{data.nbytes}\0"
            digest.update(header.encode())
            digest.update(data.numpy().data)  # a memoryview of the tensor: no copy
        else:
            digest.update(f"{name}\0{type(value).__qualname__}\0{value!r}\0".encode())


def _raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of the tensor's elements in row-major order (copies only when needed)."""
    t = tensor.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    # Flattening first makes the uint8 view legal for every element size (including 0-d
    # tensors), and sidesteps numpy's lack of bfloat16 / float8.
    return t.cpu().contiguous().reshape(-1).view(torch.uint8)
