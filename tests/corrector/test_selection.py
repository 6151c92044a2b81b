"""The drop rule looks at whether the stale answer still holds, measured on the edge: on a still
scene the remote class map is shown at any delay (beyond tau_max too), where things moved the
fused answer is, features are dropped for another scene, not for their age; the gate's
threshold is calibrated above what sensor noise does."""

from __future__ import annotations

import pytest
import torch

from splitwire.corrector.errors import FeatureShapeError, TaskConfigError
from splitwire.corrector.selection import MotionGate, calibrate_gate, one_hot_logits
from splitwire.corrector.video import TaskConfig, scene

from .test_fusion import TAU_MAX, _corrector


def test_calibration_puts_the_threshold_above_sensor_noise() -> None:
    gate = calibrate_gate(TaskConfig(), seed=0)
    # noise sigma 6 per pixel -> ~2.1 per difference of 4x4 means: far below, but not absurd
    assert 5.0 < gate.threshold < 30.0, gate
    assert calibrate_gate(TaskConfig(), seed=0) == gate  # deterministic per seed
    # Still scenes it was not calibrated on (other seeds), far apart in time: nothing moves.
    for i in range(8):
        c = scene((9, i), speed=(0.0, 0.0)).render([0, 40])
        t = gate.thumbnail(c.frames)
        assert not gate.changed(t[1:], t[:1]).any(), i


def test_moving_objects_mark_the_cells_they_cross_and_only_those() -> None:
    gate = calibrate_gate(TaskConfig(), seed=0)
    c = scene((9, 100), speed=(3.0, 3.0)).render([0, 2])
    t = gate.thumbnail(c.frames)
    changed = gate.changed(t[1:], t[:1])[0, 0]  # (64, 64)
    moved = c.labels[0] != c.labels[1]  # pixels whose label changed
    assert moved.any()
    assert changed[moved].float().mean() > 0.95  # where the answer went wrong, it is dropped
    assert changed.float().mean() < 0.6  # and the background far from objects keeps it


def test_a_static_clip_beyond_tau_max_shows_the_remote_answer() -> None:
    """The stale class map is kept bit for bit at delays past tau_max on a still scene: the
    age alone no longer throws a perfect answer away."""
    c = _corrector("add")
    clip = scene((9, 7), speed=(0.0, 0.0)).render([0, 3 * TAU_MAX])
    then, now = clip.frames[:1], clip.frames[1:]
    logits, downlink = c.remote(then)
    classes = logits.argmax(dim=1)
    feats = c.local_features(now)
    for delay in (0, TAU_MAX, TAU_MAX + 1, 3 * TAU_MAX):
        out = c.answer(
            feats,
            thumbnail=c.gate.thumbnail(now),
            delay_frames=delay,
            remote_feats=downlink,
            remote_classes=classes,
            remote_thumbnail=c.gate.thumbnail(then),
        )
        assert float(out.kept[0]) == 1.0, delay
        assert torch.equal(out.logits, one_hot_logits(classes, 5)), delay
    # Without the remote frame's thumbnail motion cannot be measured: age decides, as before.
    blind = c.answer(feats, thumbnail=c.gate.thumbnail(now), delay_frames=TAU_MAX + 1,
                     remote_feats=downlink, remote_classes=classes)  # fmt: skip
    assert torch.equal(blind.logits, c.fuse(feats, None, 0)) and float(blind.kept[0]) == 0.0


def test_where_the_scene_moved_the_fused_answer_is_shown() -> None:
    c = _corrector("add")
    clip = scene((9, 100), speed=(3.0, 3.0)).render([0, 2])
    then, now = clip.frames[:1], clip.frames[1:]
    logits, downlink = c.remote(then)
    classes = logits.argmax(dim=1)
    feats = c.local_features(now)
    changed = c.gate.changed(c.gate.thumbnail(now), c.gate.thumbnail(then))
    # Past tau_max the features are still fused (the embedding clamped): the same scene.
    late = c.fuse(feats, downlink, TAU_MAX)
    for delay, expected in ((2, c.fuse(feats, downlink, 2)), (TAU_MAX + 2, late)):
        out = c.answer(feats, thumbnail=c.gate.thumbnail(now), delay_frames=delay,
                       remote_feats=downlink, remote_classes=classes,
                       remote_thumbnail=c.gate.thumbnail(then))  # fmt: skip
        mask = changed.expand_as(out.logits)
        assert torch.equal(out.logits[mask], expected[mask]), delay
        assert torch.equal(out.logits[~mask], one_hot_logits(classes, 5)[~mask]), delay
        assert 0.0 < float(out.kept[0]) < 1.0 and bool(out.fused[0])


def test_features_of_another_scene_are_dropped() -> None:
    """A cut (every cell changed): the old scene's features would mislead the fusion."""
    c = _corrector("add")
    then = scene((9, 11), speed=(0.0, 0.0)).render([0]).frames
    now = scene((9, 12), speed=(0.0, 0.0)).render([0]).frames
    logits, downlink = c.remote(then)
    feats = c.local_features(now)
    out = c.answer(
        feats,
        thumbnail=c.gate.thumbnail(now),
        delay_frames=1,
        remote_feats=downlink,
        remote_classes=logits.argmax(1),
        remote_thumbnail=c.gate.thumbnail(then),
    )
    assert float(out.kept[0]) < 1 - c.gate.scene_change and not bool(out.fused[0])
    changed = c.gate.changed(c.gate.thumbnail(now), c.gate.thumbnail(then)).expand_as(out.logits)
    assert torch.equal(out.logits[changed], c.fuse(feats, None, 0)[changed])


def test_a_class_map_that_does_not_fit_is_refused() -> None:
    c = _corrector("add")
    frame = scene((9, 1), speed=(0.0, 0.0)).render([0]).frames
    feats, thumb = c.local_features(frame), c.gate.thumbnail(frame)
    bad = {
        "values 0..5": torch.full((1, 64, 64), 5),
        "negative": torch.full((1, 64, 64), -1),
        "shape": torch.zeros(1, 32, 32, dtype=torch.int64),
        "float": torch.zeros(1, 64, 64),
    }
    for what, classes in bad.items():
        with pytest.raises(FeatureShapeError, match="remote class map"):
            c.answer(feats, thumbnail=thumb, delay_frames=1, remote_classes=classes,
                     remote_thumbnail=thumb)  # fmt: skip
        assert what
    with pytest.raises(FeatureShapeError, match="thumbnails"):
        c.answer(feats, thumbnail=thumb, delay_frames=1, remote_classes=torch.zeros(1, 64, 64,
                 dtype=torch.int64), remote_thumbnail=thumb[..., :8])  # fmt: skip
    with pytest.raises(FeatureShapeError, match="multiples of 4"):
        c.gate.thumbnail(torch.zeros(1, 3, 62, 62, dtype=torch.uint8))
    with pytest.raises(TaskConfigError, match="cell 3"):
        MotionGate(cell=3)
