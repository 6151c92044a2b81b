"""The synthetic video task (splitwire.corrector.video): seeded, and its labels match its pixels."""

from __future__ import annotations

import pytest
import torch

from splitwire.corrector.errors import TaskConfigError
from splitwire.corrector.video import CLASS_NAMES, TaskConfig, clip, scene


def test_a_seed_always_gives_the_same_clip() -> None:
    a, b = clip(11, 5, speed=(2.0, 4.0)), clip(11, 5, speed=(2.0, 4.0))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.labels, b.labels)
    other = clip(12, 5, speed=(2.0, 4.0))
    assert not torch.equal(a.frames, other.frames)


def test_frames_look_like_a_camera_and_labels_are_class_maps() -> None:
    c = clip((1, 2, 3), 4, speed=(0.5, 1.5), config=TaskConfig(size=48))
    assert c.frames.shape == (4, 3, 48, 48) and c.frames.dtype == torch.uint8
    assert c.labels.shape == (4, 48, 48) and c.labels.dtype == torch.int64
    assert int(c.labels.min()) >= 0 and int(c.labels.max()) < len(CLASS_NAMES)
    assert int((c.labels[0] > 0).sum()) > 0  # objects are there


def test_rendering_single_frames_matches_the_clip() -> None:
    s = scene(5, speed=(1.0, 3.0), config=TaskConfig())
    whole = s.render(range(6))
    part = s.render([5, 2])
    assert torch.equal(part.frames[0], whole.frames[5])
    assert torch.equal(part.labels[1], whole.labels[2])


def _interior(labels: torch.Tensor, cls: int) -> torch.Tensor:
    # Pixels of class cls whose four neighbours are of the same class.
    m = labels == cls
    inner = m.clone()
    inner[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return inner


def test_object_pixels_carry_their_class_texture() -> None:
    # Vertical and horizontal neighbour differences of the grey level tell the textures apart:
    # horizontal stripes differ vertically, vertical stripes horizontally, the checker both ways
    # and the flat class neither (up to sensor noise).
    seen = set()
    for seed in range(40):
        c = clip(seed, 1, speed=(0.0, 0.0))
        grey = c.frames[0].float().mean(dim=0)
        dy = (grey[1:-1, 1:-1] - grey[2:, 1:-1]).abs()
        dx = (grey[1:-1, 1:-1] - grey[1:-1, 2:]).abs()
        for cls in range(1, len(CLASS_NAMES)):
            inner = _interior(c.labels[0], cls)[1:-1, 1:-1]
            if int(inner.sum()) < 10:
                continue
            seen.add(cls)
            vert, horiz = float(dy[inner].mean()), float(dx[inner].mean())
            strong, weak = 50.0, 20.0
            expected = {1: (strong, None), 2: (None, strong), 3: (strong, strong), 4: (None, None)}
            want_v, want_h = expected[cls]
            assert (vert > strong) == (want_v is not None), (seed, cls, vert, horiz)
            assert (horiz > strong) == (want_h is not None), (seed, cls, vert, horiz)
            if want_v is None:
                assert vert < weak, (seed, cls, vert)
            if want_h is None:
                assert horiz < weak, (seed, cls, horiz)
    assert seen == {1, 2, 3, 4}


def test_textures_vanish_at_half_resolution() -> None:
    # What makes the local model weak at "what": every aligned 2x2 block of a textured object
    # averages to its grey level (one object per scene here, so one grey level per class).
    checked = set()
    for seed in range(12):
        c = clip(seed, 1, speed=(0.0, 0.0), config=TaskConfig(noise=0.0, objects=(1, 1)))
        grey = c.frames[0].float().mean(dim=0)
        pooled = torch.nn.functional.avg_pool2d(grey[None, None], 2)[0, 0]
        cls = int(c.labels[0].max())
        block = (c.labels[0] == cls).reshape(32, 2, 32, 2).all(dim=3).all(dim=1)
        values = pooled[block]
        assert float(values.max() - values.min()) <= 1.0, (seed, cls)
        full = grey[c.labels[0] == cls]
        if cls != 4:  # while the full-resolution pixels are far apart
            assert float(full.max() - full.min()) > 60, (seed, cls)
        checked.add(cls)
    assert {1, 2, 3} <= checked


def test_objects_move_at_the_speed_asked_and_stand_still_at_zero() -> None:
    still = clip(8, 4, speed=(0.0, 0.0))
    assert all(torch.equal(still.labels[0], still.labels[i]) for i in range(4))
    s = scene(8, speed=(2.0, 4.0), config=TaskConfig())
    pos = s.positions(torch.arange(30).double().numpy())  # (30, n, 2)
    step = ((pos[1:] - pos[:-1]) ** 2).sum(axis=2) ** 0.5
    assert step.max() <= 4.0 + 1e-9
    assert (step > 1.0).mean() > 0.5  # moving (bounces shorten a few steps)
    r = s.radius[None, :]
    assert (pos[..., 0] >= r - 1e-9).all() and (pos[..., 0] <= 64 - r + 1e-9).all()


@pytest.mark.parametrize("speed", [(-1.0, 2.0), (3.0, 2.0)])
def test_bad_speed_ranges_are_rejected(speed: tuple[float, float]) -> None:
    with pytest.raises(TaskConfigError, match="speed range"):
        clip(0, 2, speed=speed)


def test_bad_task_settings_name_the_setting() -> None:
    with pytest.raises(TaskConfigError, match="task size 30"):
        TaskConfig(size=30)
    with pytest.raises(TaskConfigError, match="clip length 0"):
        clip(0, 0)
