"""Capture: torch.export with a dynamic batch, and precise errors when capture fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from splitwire.partitioner.capture import capture
from splitwire.partitioner.errors import CaptureError


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # Python control flow on a tensor value
            return x * 2
        return x


def test_export_keeps_the_batch_dynamic() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer
    graph = capture(model, (1, 3, 8, 8))
    assert graph.method == "export"
    assert graph.example_inputs[0].shape[0] >= 2  # batch 1 would be specialised
    for batch in (1, 3, 7):
        x = torch.randn(batch, 3, 8, 8)
        assert torch.equal(graph.module(x), model(x))


def test_data_dependent_control_flow_is_named_with_its_fix() -> None:
    with pytest.raises(CaptureError) as info:
        capture(DataDependent(), (1, 4))
    message = str(info.value)
    assert "data-dependent control flow" in message
    assert "test_capture.py" in message  # where it is
    assert "torch.where" in message and "torch.cond" in message  # how to fix it


def test_wrong_input_shape() -> None:
    with pytest.raises(CaptureError, match=r"does not run on an input of shape \(1, 5, 8, 8\)"):
        capture(nn.Conv2d(3, 4, 3), (1, 5, 8, 8))
    with pytest.raises(CaptureError, match="invalid"):
        capture(nn.Conv2d(3, 4, 3), (1, 0, 8, 8))


def test_untraceable_model_exits_2_from_the_command_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "import torch\n"
        "class Bad(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        if x.mean() > 0:\n"
        "            return x + 1\n"
        "        return x - 1\n"
        "def build():\n"
        "    return Bad()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "splitwire", "plan", "--model", f"{source}:build",
         "--input-shape", "1,4", "--link", "wifi", "--edge-slowdown", "2",
         "--out", str(tmp_path / "plan")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "data-dependent control flow at" in result.stderr and "bad.py:4" in result.stderr
