"""A fingerprint of a model's weights: edge, cloud and plan check they hold the same model."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["model_hash"]


def model_hash(module: nn.Module) -> str:
    """Hash every entry of ``module.state_dict()``: name, dtype, shape and raw bytes.

    Parameters and persistent buffers (e.g. BatchNorm running statistics) are included, in sorted
    name order, so the hash does not depend on registration order. Each entry's header carries its
    byte length, which keeps (name, bytes) boundaries unambiguous. Non-tensor entries (a module's
    ``extra_state``) contribute their type and ``repr``.

    Args:
        module: the model; tensors may live on any device and have any dtype (bf16, fp8, bool).

    Returns:
        The sha256 as 64 lowercase hex digits. Same weights give the same hash on every machine of
        the same byte order; changing any element changes it.
    """
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        if isinstance(value, torch.Tensor):
            data = _raw_bytes(value)
            header = f"{name}\0{value.dtype}\0{tuple(value.shape)}\0{data.nbytes}\0"
            digest.update(header.encode())
            digest.update(data.numpy().data)  # a memoryview of the tensor: no copy
        else:
            digest.update(f"{name}\0{type(value).__qualname__}\0{value!r}\0".encode())
    return digest.hexdigest()


def _raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of the tensor's elements in row-major order (copies only when needed)."""
    t = tensor.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    # Flattening first makes the uint8 view legal for every element size (including 0-d
    # tensors), and sidesteps numpy's lack of bfloat16 / float8.
    return t.cpu().contiguous().reshape(-1).view(torch.uint8)
