"""The model hash (splitwire.partitioner.models.hashing): the captured graph and its weights.

Run: .venv/bin/pytest tests/partitioner/test_hashing.py -q
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import fx, nn

from splitwire.partitioner.capture import CapturedGraph, capture
from splitwire.partitioner.models import graph_text, load_model, model_hash, weights_hash

# BatchNorm (buffers), a reshape on the dynamic batch (symbolic sizes) and a non-persistent
# buffer (a tensor the graph reads that is not in the state dict).
NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.register_buffer("scale", torch.full((4,), 0.5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = y.reshape(x.shape[0], 8, -1).mean(dim=2)
        return self.fc(y) * self.scale


def build() -> nn.Module:
    return Net()
"""
SHAPE = (1, 3, 16, 16)


def _net_spec(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "net.py").write_text(textwrap.dedent(NET))
    return f"{directory / 'net.py'}:build"


@pytest.fixture
def spec(tmp_path: Path) -> str:
    return _net_spec(tmp_path / "a")


def _hash(module: nn.Module, shape: tuple[int, ...] = (1, 4)) -> str:
    return model_hash(capture(module, shape))


class Times2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Plus2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 2


def test_same_parameters_in_another_architecture_hash_differently() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 4)
    relu, gelu = nn.Sequential(linear, nn.ReLU()), nn.Sequential(copy.deepcopy(linear), nn.GELU())
    assert weights_hash(relu) == weights_hash(gelu)
    assert _hash(relu) != _hash(gelu)


def test_parameter_free_models_hash_differently() -> None:
    assert weights_hash(Times2()) == weights_hash(Plus2())  # both empty
    assert _hash(Times2()) != _hash(Plus2())


def test_an_argument_changes_the_hash_in_both_capture_methods() -> None:
    exact, tanh = nn.Sequential(nn.GELU()), nn.Sequential(nn.GELU(approximate="tanh"))
    assert _hash(exact) != _hash(tanh)  # torch.export: a keyword of aten.gelu
    # torch.fx keeps leaf modules: their configuration is in the module, not in the graph.
    example = (torch.ones(2, 4),)
    traced = [CapturedGraph(fx.symbolic_trace(m), "fx", (1, 4), example) for m in (exact, tanh)]
    assert model_hash(traced[0]) != model_hash(traced[1])
    assert "GELU(approximate='tanh')" in graph_text(traced[1])


def test_the_same_model_built_twice_hashes_the_same(spec: str, tmp_path: Path) -> None:
    first = capture(load_model(spec).module, SHAPE)
    again = capture(load_model(spec).module, SHAPE)
    assert graph_text(first) == graph_text(again)
    assert model_hash(first) == model_hash(again)
    # The batch is dynamic: another batch is the same graph. Another image size is not.
    assert model_hash(capture(load_model(spec).module, (4, 3, 16, 16))) == model_hash(first)
    assert model_hash(capture(load_model(spec).module, (1, 3, 32, 32))) != model_hash(first)
    # Nothing run-dependent: no addresses, no source locations.
    text = graph_text(first)
    assert "0x" not in text and str(tmp_path) not in text and "net.py" not in text
    assert "aten.conv2d.default" in text and "aten.batch_norm.default" in text


def test_a_changed_weight_or_buffer_changes_the_hash(spec: str) -> None:
    before = _hash(load_model(spec).module, SHAPE)
    for change in ("conv.weight", "bn.running_var", "scale"):  # the last is not in state_dict
        module = load_model(spec).module
        tensors = dict(module.named_parameters()) | dict(module.named_buffers())
        with torch.no_grad():
            tensors[change].view(-1)[0] += 1e-3
        assert _hash(module, SHAPE) != before, change


def test_the_hash_is_the_same_in_a_fresh_process(spec: str, tmp_path: Path) -> None:
    """Another process, another hash seed, and the model file at another path."""
    other = _net_spec(tmp_path / "elsewhere")
    code = (
        "from splitwire.partitioner.capture import capture\n"
        "from splitwire.partitioner.models import load_model, model_hash\n"
        f"print(model_hash(capture(load_model({other!r}).module, {SHAPE!r})))\n"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == _hash(load_model(spec).module, SHAPE)
