"""Training (splitwire.corrector.training) at smoke size: the loss falls, the checkpoint round-trips
through torch.load(weights_only=True), runs repeat from the seed, and a run below its bar fails."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from splitwire.corrector.checkpoint import META_FILE, load_checkpoint, local_file
from splitwire.corrector.errors import CheckpointError, ConvergenceError, TaskConfigError
from splitwire.corrector.runtime import load_corrector
from splitwire.corrector.training import TrainConfig, TrainResult, train
from splitwire.partitioner.models import load_model

from .conftest import SMOKE


@pytest.mark.slow
def test_the_loss_falls_in_both_phases(smoke: TrainResult) -> None:
    for phase in ("heavy", "fusion"):
        log = smoke.meta["phases"][phase]
        assert log["steps"] == 40
        assert log["loss_last"] < 0.8 * log["loss_first"], (phase, log)
        assert len(log["loss_curve"]) == 4


@pytest.mark.slow
def test_the_checkpoint_round_trips_with_weights_only(smoke: TrainResult) -> None:
    loaded = load_checkpoint(smoke.directory)
    assert set(loaded.locals) == {"add", "gate", "add-nodelay"}
    assert loaded.primary == "add" and loaded.tau_max == 3
    for name, model in loaded.locals.items():
        state = torch.load(smoke.directory / local_file(name), weights_only=True)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    meta = json.loads((smoke.directory / META_FILE).read_text())
    assert meta["seed"] == 3 and meta["train"]["fusion_steps"] == 40
    # The heavy weights load into the zoo model, so the planner can split the trained model.
    spec = f"zoo:texture_unet?base_channels=4@{smoke.directory / 'heavy.pt'}"
    heavy = load_model(spec).module
    assert all(torch.equal(a, b) for a, b in zip(
        heavy.state_dict().values(), loaded.heavy.state_dict().values(), strict=True))  # fmt: skip


@pytest.mark.slow
def test_a_seed_repeats_a_run(smoke: TrainResult, tmp_path: Path) -> None:
    short = dataclasses.replace(SMOKE, heavy_steps=3, fusion_steps=3, fusions=("gate",))
    a = train(short, tmp_path / "a")
    b = train(short, tmp_path / "b")
    assert a.meta["phases"] == b.meta["phases"] or _same_but_time(a.meta, b.meta)
    assert (tmp_path / "a" / "local-gate.pt").read_bytes() == (
        tmp_path / "b" / "local-gate.pt"
    ).read_bytes()
    c = train(dataclasses.replace(short, seed=4), tmp_path / "c")
    assert c.meta["phases"]["heavy"]["loss_curve"] != a.meta["phases"]["heavy"]["loss_curve"]


def _same_but_time(a: dict, b: dict) -> bool:
    strip = lambda m: {k: {kk: vv for kk, vv in v.items() if kk != "seconds"}  # noqa: E731
                       for k, v in m["phases"].items()}  # fmt: skip
    return strip(a) == strip(b)


@pytest.mark.slow
def test_training_below_its_bar_fails_loudly(tmp_path: Path) -> None:
    hopeless = dataclasses.replace(
        SMOKE, heavy_steps=2, fusion_steps=2, min_heavy_miou=0.99, extensions=1
    )
    with pytest.raises(ConvergenceError, match="heavy phase: held-out mIoU") as info:
        train(hopeless, tmp_path / "x")
    assert info.value.exit_code == 3 and info.value.phase == "heavy"
    assert not (tmp_path / "x").exists()  # nothing shipped


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused(smoke: TrainResult, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for f in smoke.directory.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    load_corrector(copy, fusion="gate")  # intact: loads
    with pytest.raises(CheckpointError, match="holds no fusion variant 'film'"):
        load_corrector(copy, fusion="film")
    (copy / "heavy.pt").write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(copy)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_bad_training_settings_are_rejected() -> None:
    with pytest.raises(TaskConfigError, match="fusions"):
        TrainConfig(fusions=("add", "film"))
    with pytest.raises(TaskConfigError, match="heavy_steps 0"):
        TrainConfig(heavy_steps=0)
