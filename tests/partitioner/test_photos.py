"""Real photos as camera frames (splitwire.partitioner.photos).

The test install has the `pretrained` extra (scikit-image, for its bundled photos): a missing
scikit-image fails here rather than skipping.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitwire.partitioner import photos
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.photos import (
    BUNDLED_PHOTOS,
    bundled_photo_dir,
    photo_files,
    photo_frames,
)

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def _save(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _halves(height: int, width: int) -> np.ndarray:
    """Red on the left, blue on the right."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return pixels


# --- the bundled photos -------------------------------------------------------------------------


def test_bundled_photo_dir_is_found_without_importing_skimage() -> None:
    code = (
        "import sys\n"
        "from splitwire.partitioner.photos import bundled_photo_dir\n"
        "d = bundled_photo_dir()\n"
        "assert (d / 'chelsea.png').is_file(), d\n"
        "assert 'skimage' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_bundled_selection_is_the_colour_photographs() -> None:
    files = photo_files("skimage")
    assert [f.name for f in files] == list(BUNDLED_PHOTOS)  # all present in scikit-image >= 0.22
    assert {"chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"} <= set(BUNDLED_PHOTOS)
    assert not {"camera.png", "coins.png", "color.png", "chessboard_RGB.png"} & set(BUNDLED_PHOTOS)
    for file in files:
        with Image.open(file) as image:
            assert image.mode == "RGB" and min(image.size) >= 300, file.name


def test_frames_shape_dtype_and_determinism() -> None:
    frames = photo_frames("skimage", 20, height=64, width=80)
    assert frames.shape == (20, 3, 64, 80) and frames.dtype == torch.uint8
    assert torch.equal(frames, photo_frames("skimage", 20, height=64, width=80, seed=0))
    other = photo_frames("skimage", 20, height=64, width=80, seed=1)
    n = len(BUNDLED_PHOTOS)
    assert torch.equal(other[:n], frames[:n])  # centre crops do not depend on the seed
    assert not torch.equal(other[n:], frames[n:])
    assert torch.equal(photo_frames("skimage", 5, height=64, width=80), frames[:5])


def test_first_frames_are_centre_crops_of_distinct_photos() -> None:
    n = len(BUNDLED_PHOTOS)
    frames = photo_frames("skimage", 2 * n, height=48, width=48)
    flat = frames.flatten(1).float()
    for i in range(n):
        for j in range(i + 1, n):
            assert not torch.equal(frames[i], frames[j]), (i, j)
    # The cat (chelsea.png, 451x300) resized to cover 55x55 is 83x55; its centre crop is the
    # middle 48 columns of that resize.
    chelsea = BUNDLED_PHOTOS.index("chelsea.png")
    with Image.open(bundled_photo_dir() / "chelsea.png") as image:
        resized = np.array(image.convert("RGB").resize((83, 55), Image.Resampling.BILINEAR))
    expected = torch.from_numpy(resized[3:51, 17:65].transpose(2, 0, 1).copy())
    assert torch.equal(frames[chelsea], expected)
    # Later frames are other crops: never a repeat of a centre crop.
    for k in range(n, 2 * n):
        assert not any(torch.equal(frames[k], frames[i]) for i in range(n)), k
    assert flat.std() > 20  # real pictures, not blank frames


# --- a directory of photos ----------------------------------------------------------------------


def test_directory_photos_in_name_order_with_centre_crops(tmp_path: Path) -> None:
    # b.png has a green square at its centre; a.png is plain red. Names decide the order.
    marked = np.full((100, 200, 3), BLUE, np.uint8)
    marked[40:60, 90:110] = GREEN
    _save(tmp_path / "b.png", marked)
    _save(tmp_path / "a.png", np.full((80, 80, 3), RED, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [f.name for f in photo_files(tmp_path)] == ["a.png", "b.png"]
    frames = photo_frames(tmp_path, 2, height=40, width=40)
    assert (frames[0].permute(1, 2, 0) == torch.tensor(RED, dtype=torch.uint8)).all()
    centre = frames[1][:, 18:22, 18:22].permute(1, 2, 0).reshape(-1, 3)
    assert (centre == torch.tensor(GREEN, dtype=torch.uint8)).all()
    corner = frames[1][:, :3, :3].permute(1, 2, 0).reshape(-1, 3)
    assert (corner == torch.tensor(BLUE, dtype=torch.uint8)).all()


def test_later_frames_are_random_crops_and_flips(tmp_path: Path) -> None:
    _save(tmp_path / "halves.png", _halves(100, 100))
    frames = photo_frames(tmp_path, 40, height=32, width=32, seed=3)
    left, right = frames[:, 0, :, 2].float().mean(1), frames[:, 0, :, -3].float().mean(1)
    unflipped = left > right  # red (high R) still on the left
    assert bool(unflipped[0])  # the centre crop is never flipped
    assert 5 <= int((~unflipped[1:]).sum()) <= 34  # about half the random ones are
    # Random crops vary in scale and place: the red/blue border moves between frames.
    borders = {int((frames[k, 0, 16] > 120).sum()) for k in range(1, 40)}
    assert len(borders) > 5


def test_grey_photos_become_rgb_and_colour_becomes_grey(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 250, 2.5, dtype=np.uint8), (60, 1))  # (60, 100) ramp, mode L
    _save(tmp_path / "grey.png", grey)
    rgb = photo_frames(tmp_path, 2, height=30, width=30)
    assert rgb.shape == (2, 3, 30, 30)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    assert rgb[0, 0, 0, -1] > rgb[0, 0, 0, 0]  # the ramp survives
    (tmp_path / "grey.png").unlink()
    _save(tmp_path / "halves.png", _halves(50, 50))
    mono = photo_frames(tmp_path, 1, height=20, width=20, channels=1)
    assert mono.shape == (1, 1, 20, 20) and mono.dtype == torch.uint8


# --- errors -------------------------------------------------------------------------------------


def test_an_empty_or_missing_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(PartitionerError, match=r"no images, expected files ending in .*\.png"):
        photo_frames(tmp_path, 1, height=8, width=8)
    with pytest.raises(PartitionerError, match="does not exist"):
        photo_files(tmp_path / "nowhere")
    with pytest.raises(PartitionerError, match="is not a directory"):
        photo_files(tmp_path / "readme.txt")


def test_an_undecodable_photo_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(PartitionerError, match=r"cannot decode .*broken\.png"):
        photo_frames(tmp_path, 1, height=8, width=8)


def test_the_decompression_bomb_guard_stays_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(tmp_path / "big.png", _halves(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 × the limit
    with pytest.raises(PartitionerError, match=r"big\.png.*DecompressionBombError"):
        photo_frames(tmp_path, 1, height=8, width=8)


def test_missing_skimage_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photos, "bundled_photo_dir", lambda: None)
    with pytest.raises(
        PartitionerError, match=r"scikit-image is not installed.*splitwire\[pretrained\]"
    ):
        photo_files("skimage")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count must be a positive int"),
        ({"height": -1}, "height must be a positive int"),
        ({"channels": 4}, "channels must be 1 or 3"),
    ],
)
def test_bad_sizes_are_errors(kwargs: dict[str, int], message: str) -> None:
    args: dict[str, int] = {"count": 1, "height": 8, "width": 8} | kwargs
    with pytest.raises(PartitionerError, match=message):
        photo_frames("skimage", **args)
