"""``splitwire bench planning`` on a small model: the accounting it prints adds up, and every
lossy front member it counts rests on every calibration input."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitwire.benchmarks.planning import run_planning, target_line

pytestmark = pytest.mark.slow

SMALL = """
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.down(x))
        return self.head(x.mean(dim=(2, 3)))


def build() -> nn.Module:
    torch.manual_seed(0)
    return Small()
"""

CALIBRATION = 8


def test_planning_accounting_adds_up(tmp_path: Path) -> None:
    (tmp_path / "small.py").write_text(SMALL)
    links = ("wifi", "3g")
    result = run_planning(
        f"{tmp_path / 'small.py'}:build", (1, 3, 32, 32), links=links,
        calibration=CALIBRATION, threads=1, repeats=1, progress=False,
    )  # fmt: skip
    assert len(result["front_per_link"]) == len(links)
    assert all(size >= 1 for size in result["front_per_link"])
    # Every lossy front member is measured on every input (the screen is 4 inputs).
    assert result["lossy_on_a_front"] <= result["accuracy_all_inputs"]
    assert result["accuracy_all_inputs"] + result["accuracy_screen_only"] > 0
    assert result["tail_runs"] == (
        CALIBRATION * result["accuracy_all_inputs"] + 4 * result["accuracy_screen_only"]
    )
    line = target_line(
        {
            **result,
            "model": "small",
            "input_shape": [1, 3, 32, 32],
            "link_names": list(links),
            "target_s": 1e6,
            "ratio_to_target": result["capture_to_plan_s"] / 1e6,
            "load_average_before": 0.5,
            "load_average_after": 0.7,
        }
    )
    assert line.startswith("PASS  small 1x3x32x32, 2 links (wifi, 3g)")
    fronts = "/".join(map(str, result["front_per_link"]))
    assert f"fronts of {fronts} per link; {result['tail_runs']} tail runs" in line
