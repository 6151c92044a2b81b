"""Fusion operators: zero or absent remote features are exactly the local-only path, delays
beyond tau_max drop the remote, and remote features do change the answer."""

from __future__ import annotations

import pytest
import torch

from splitwire.corrector.checkpoint import build_heavy, build_local
from splitwire.corrector.errors import FeatureShapeError, TaskConfigError
from splitwire.corrector.fusion import Fusion, fusion_names, make_fusion
from splitwire.corrector.runtime import Corrector
from splitwire.corrector.selection import MotionGate
from splitwire.corrector.video import clip

TAU_MAX = 4


def _corrector(fusion: str, seed: int = 0) -> Corrector:
    torch.manual_seed(seed)
    heavy = build_heavy({"num_classes": 5, "base_channels": 4, "downlink_channels": 8})
    local = build_local(fusion=fusion, width=16, remote_channels=8, tau_max=TAU_MAX, num_classes=5)
    with torch.no_grad():  # non-trivial embeddings and biases, so "exact" means something
        for p in local.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return Corrector(
        heavy=heavy, local=local, tau_max=TAU_MAX, frame_size=64, fusion=fusion, gate=MotionGate()
    )


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.cat([clip(s, 1, speed=(0.0, 0.0)).frames for s in range(3)])  # (3, 3, 64, 64)


def test_the_registry_has_dedelayed_an_alternative_and_the_ablation() -> None:
    assert {"add", "add-nodelay", "gate"} <= set(fusion_names())
    for name in fusion_names():
        op = make_fusion(name, channels=8, remote_channels=4, tau_max=2)
        assert isinstance(op, Fusion)
    with pytest.raises(TaskConfigError, match="unknown fusion 'nope'; available: add"):
        make_fusion("nope", channels=8, remote_channels=4, tau_max=2)


@pytest.mark.parametrize("fusion", fusion_names())
def test_zero_remote_features_are_the_local_only_path_bit_for_bit(
    fusion: str, frames: torch.Tensor
) -> None:
    c = _corrector(fusion)
    feats = c.local_features(frames)
    alone = c.fuse(feats, None, 0)
    for d in range(TAU_MAX + 1):
        zeros = torch.zeros(3, *c.downlink_shape)
        assert torch.equal(c.fuse(feats, zeros, d), alone), d
    # ...and at the operator itself, straight from the local features
    op = c.local.fusion
    delay = torch.tensor([0, 2, 4])
    assert torch.equal(op(feats.stage, torch.zeros(3, 8, 16, 16), delay), feats.stage)
    assert op(feats.stage, None, delay) is feats.stage


@pytest.mark.parametrize("fusion", fusion_names())
def test_remote_features_change_the_answer(fusion: str, frames: torch.Tensor) -> None:
    c = _corrector(fusion)
    feats = c.local_features(frames)
    _, downlink = c.remote(frames)
    assert not torch.equal(c.fuse(feats, downlink, 1), c.fuse(feats, None, 1))


def test_the_delay_embedding_changes_the_answer_unless_ablated(frames: torch.Tensor) -> None:
    for fusion, conditioned in (("add", True), ("gate", True), ("add-nodelay", False)):
        c = _corrector(fusion)
        feats = c.local_features(frames)
        _, downlink = c.remote(frames)
        same = torch.equal(c.fuse(feats, downlink, 0), c.fuse(feats, downlink, 3))
        assert same != conditioned, fusion


@pytest.mark.parametrize("fusion", fusion_names())
def test_delays_beyond_tau_max_fall_back_to_local(fusion: str, frames: torch.Tensor) -> None:
    c = _corrector(fusion)
    feats = c.local_features(frames)
    _, downlink = c.remote(frames)
    alone = c.fuse(feats, None, 0)
    for d in (TAU_MAX + 1, TAU_MAX + 7):
        assert torch.equal(c.fuse(feats, downlink, d), alone), d
    # per sample in a batch: only the stale sample falls back
    mixed = c.fuse(feats, downlink, torch.tensor([1, TAU_MAX + 1, TAU_MAX]))
    assert torch.equal(mixed[1], alone[1])
    assert not torch.equal(mixed[0], alone[0]) and not torch.equal(mixed[2], alone[2])
    fresh = c.fuse(feats, downlink, torch.tensor([1, 1, TAU_MAX]))
    assert torch.equal(mixed[0], fresh[0])


def test_features_that_do_not_fit_are_rejected(frames: torch.Tensor) -> None:
    c = _corrector("add")
    feats = c.local_features(frames)
    with pytest.raises(FeatureShapeError, match=r"expected \(3, 8, 16, 16\) float32"):
        c.fuse(feats, torch.zeros(3, 4, 16, 16), 1)
    with pytest.raises(FeatureShapeError, match="float32"):
        c.fuse(feats, torch.zeros(3, 8, 16, 16, dtype=torch.float16), 1)
    with pytest.raises(FeatureShapeError, match="delay"):
        c.fuse(feats, None, -1)
    with pytest.raises(FeatureShapeError, match="64x64"):
        c.local_features(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TaskConfigError, match="uint8"):
        c.local_features(torch.zeros(1, 3, 64, 64))
