"""A smoke-sized checkpoint, trained once per test session (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitwire.corrector.training import TrainConfig, TrainResult, train

SMOKE = TrainConfig(
    seed=3,
    tau_max=3,
    heavy_steps=40,
    fusion_steps=40,
    heavy_batch=4,
    fusion_batch=4,
    lr=3e-3,
    width=8,
    heavy_channels=4,
    validation_clips=4,
    min_heavy_miou=0.0,
    min_fused_miou=0.0,
    extensions=0,
)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The smoke checkpoint (its directory and metadata)."""
    out: Path = tmp_path_factory.mktemp("corrector") / "ckpt"
    return train(SMOKE, out)
