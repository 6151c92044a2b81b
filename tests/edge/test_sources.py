"""Frame sources: synthetic determinism, directory order and cropping, .npy/.npz layouts, errors."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitwire.edge.sources import (
    DirectorySource,
    FrameSource,
    NpySource,
    SourceError,
    SyntheticSource,
    open_source,
)
from splitwire.errors import SplitwireError


def take(source: FrameSource, count: int) -> list[torch.Tensor]:
    return list(itertools.islice(source, count))


def assert_frame(frame: torch.Tensor, channels: int, height: int, width: int) -> None:
    assert frame.dtype == torch.uint8
    assert tuple(frame.shape) == (channels, height, width)
    assert frame.is_contiguous()


# --- synthetic --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_shape_dtype_and_endless(channels: int) -> None:
    source = open_source("synthetic", channels=channels, height=48, width=64)
    assert isinstance(source, SyntheticSource)
    assert source.length is None
    assert source.description == "synthetic(seed=0)"
    for frame in take(source, 3):
        assert_frame(frame, channels, 48, 64)
        assert int(frame.max()) > int(frame.min())  # not a blank frame


def test_synthetic_same_seed_same_frames() -> None:
    first = take(open_source("synthetic", channels=3, height=40, width=56, seed=7), 5)
    again = take(open_source("synthetic", channels=3, height=40, width=56, seed=7), 5)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_synthetic_iterating_twice_restarts() -> None:
    source = open_source("synthetic", channels=1, height=32, width=32, seed=3)
    first, again = take(source, 4), take(source, 4)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(source.frame(2), first[2])  # type: ignore[attr-defined]


def test_synthetic_different_seeds_differ() -> None:
    a = open_source("synthetic", channels=3, height=40, width=40, seed=1)
    b = open_source("synthetic", channels=3, height=40, width=40, seed=2)
    assert not torch.equal(next(iter(a)), next(iter(b)))


def test_synthetic_spec_seed_overrides_argument() -> None:
    source = open_source("synthetic:seed=5", channels=3, height=24, width=24, seed=0)
    assert source.description == "synthetic(seed=5)"
    direct = SyntheticSource(channels=3, height=24, width=24, seed=5)
    assert torch.equal(next(iter(source)), direct.frame(0))


def test_synthetic_frames_change_and_shapes_move() -> None:
    source = SyntheticSource(channels=3, height=64, width=64, seed=0)
    frames = [source.frame(i).to(torch.int16) for i in (0, 1, 30)]
    # Noise alone differs by a few grey levels; moving shapes change pixels a lot.
    assert (frames[0] - frames[1]).abs().max() > 0
    assert ((frames[0] - frames[2]).abs() > 40).sum() > 50


def test_synthetic_noise_is_mild_and_fresh_each_frame() -> None:
    source = SyntheticSource(channels=3, height=64, width=64, seed=0)
    change = (source.frame(0).to(torch.int16) - source.frame(1).to(torch.int16)).abs()
    assert (change > 0).float().mean() > 0.5  # new noise nearly everywhere, not only on shapes
    assert change.float().median() <= 6


def test_synthetic_far_frames_stay_in_range() -> None:
    source = SyntheticSource(channels=3, height=30, width=50, seed=4)
    assert_frame(source.frame(10**7), 3, 30, 50)


@pytest.mark.parametrize("spec", ["synthetic:seed=x", "synthetic:seed=-1", "synthetic:speed=2"])
def test_synthetic_bad_options(spec: str) -> None:
    with pytest.raises(SourceError, match="seed"):
        open_source(spec, channels=3, height=8, width=8)


# --- dir: -------------------------------------------------------------------------------------

COLOURS = {"a.png": (255, 0, 0), "b.png": (0, 255, 0), "c.PNG": (0, 0, 255)}


def write_images(folder: Path) -> None:
    # Written out of name order and at different sizes and aspect ratios.
    sizes = {"c.PNG": (30, 90), "a.png": (120, 40), "b.png": (50, 50)}
    for name, size in sizes.items():
        Image.new("RGB", size, COLOURS[name]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")


def test_dir_sorted_by_name_and_cropped(tmp_path: Path) -> None:
    write_images(tmp_path)
    source = open_source(f"dir:{tmp_path}", channels=3, height=20, width=24)
    assert isinstance(source, DirectorySource)
    assert source.length == 3
    assert source.description == f"dir:{tmp_path} (3 images)"
    frames = list(source)
    assert len(frames) == 3
    for frame, name in zip(frames, ["a.png", "b.png", "c.PNG"], strict=True):
        assert_frame(frame, 3, 20, 24)
        expected = torch.tensor(COLOURS[name], dtype=torch.uint8)[:, None, None]
        assert torch.equal(frame, expected.expand(3, 20, 24))


def test_dir_grey(tmp_path: Path) -> None:
    write_images(tmp_path)
    frames = list(open_source(f"dir:{tmp_path}", channels=1, height=16, width=16))
    # Pillow's L conversion: L = (299 R + 587 G + 114 B) / 1000, rounded.
    assert [int(frame[0, 8, 8]) for frame in frames] == [76, 150, 29]
    assert_frame(frames[0], 1, 16, 16)


def test_dir_centre_crop_keeps_the_middle(tmp_path: Path) -> None:
    # A wide image: left third red, middle third green, right third blue.
    pixels = np.zeros((30, 90, 3), dtype=np.uint8)
    pixels[:, :30, 0] = pixels[:, 30:60, 1] = pixels[:, 60:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    frame = next(iter(open_source(f"dir:{tmp_path}", channels=3, height=10, width=10)))
    # Shorter side 30 → 10 scales the width to 30; the centre crop is the green band.
    assert frame[:, 2:8, 2:8].tolist() == [[[0] * 6] * 6, [[255] * 6] * 6, [[0] * 6] * 6]


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = pixels[:, width // 2 :, 2] = 255
    return Image.fromarray(pixels)


def test_dir_large_jpeg(tmp_path: Path) -> None:
    # 800×400 to 50×50 lets the JPEG decoder scale by 1/8 before the exact resize.
    halves(800, 400).save(tmp_path / "big.jpg", quality=95)
    frame = next(iter(open_source(f"dir:{tmp_path}", channels=3, height=50, width=50)))
    assert_frame(frame, 3, 50, 50)
    # The crop keeps x 25..75 of the scaled 100×50: red up to 25, blue after.
    red, blue = frame[:, 25, 5].tolist(), frame[:, 25, 45].tolist()
    assert red[0] > 230 and red[2] < 25
    assert blue[2] > 230 and blue[0] < 25


def test_dir_follows_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the stored left half ends up on top
    halves(40, 20).save(tmp_path / "portrait.jpg", quality=95, exif=exif)
    frame = next(iter(open_source(f"dir:{tmp_path}", channels=3, height=20, width=10)))
    top, bottom = frame[:, 2, 5].tolist(), frame[:, 17, 5].tolist()
    assert top[0] > 230 and top[2] < 25
    assert bottom[2] > 230 and bottom[0] < 25


def test_dir_loop_repeats(tmp_path: Path) -> None:
    write_images(tmp_path)
    source = open_source(f"dir:{tmp_path}", channels=3, height=8, width=8, loop=True)
    assert source.length is None
    assert source.description.endswith("(3 images, looping)")
    frames = take(source, 7)
    reds = [int(frame[0, 0, 0]) for frame in frames]
    assert reds == [255, 0, 0, 255, 0, 0, 255]
    assert torch.equal(frames[1], frames[4])


def test_dir_empty(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        open_source(f"dir:{tmp_path}", channels=3, height=8, width=8)


def test_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"dir:{tmp_path / 'nowhere'}", channels=3, height=8, width=8)


def test_dir_bad_image_is_skipped_with_one_warning_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 certainly not a jpeg")
    Image.new("RGB", (8, 8), (4, 5, 6)).save(tmp_path / "c.png")
    source = open_source(f"dir:{tmp_path}", channels=3, height=8, width=8, loop=True)
    assert source.skipped == 0
    with caplog.at_level(logging.WARNING, logger="splitwire.edge.sources"):
        frames = take(source, 6)  # three passes over the directory
    assert [int(frame[2, 0, 0]) for frame in frames] == [3, 6, 3, 6, 3, 6]
    assert source.skipped == 1  # the same file, once, however often the source comes back
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"--source dir:{tmp_path}: cannot decode 'b.jpg': ")
    assert warning.endswith("; skipped (1 so far)") and "\n" not in warning
    # read() itself still says what is wrong with the file.
    with pytest.raises(SourceError, match=r"b\.jpg"):
        source.read(tmp_path / "b.jpg")  # type: ignore[attr-defined]


def test_dir_file_name_is_escaped_in_the_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "b\nERROR forged.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="splitwire.edge.sources"):
        assert len(list(open_source(f"dir:{tmp_path}", channels=3, height=8, width=8))) == 1
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'b\\nERROR forged.png'" in warning and "\n" not in warning


def test_dir_refuses_formats_outside_the_list(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png", format="GIF")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    source = open_source(f"dir:{tmp_path}", channels=3, height=8, width=8)
    assert len(list(source)) == 1 and source.skipped == 1  # the GIF named .png is not read


@pytest.mark.parametrize("loop", [False, True])
def test_dir_where_no_image_decodes_is_an_error(tmp_path: Path, loop: bool) -> None:
    """Not an endless loop of warnings, nor a source that ends without a word."""
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 nor a jpeg")
    source = open_source(f"dir:{tmp_path}", channels=3, height=8, width=8, loop=loop)
    with pytest.raises(SourceError, match="none of its 2 images decodes; expected images in one"):
        next(iter(source))
    assert source.skipped == 2


# --- npy: -------------------------------------------------------------------------------------


def frames_nchw(count: int = 4, channels: int = 3, height: int = 6, width: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(count, channels, height, width), dtype=np.uint8)


def assert_frames_equal(source: FrameSource, expected: np.ndarray) -> None:
    frames = list(source)
    assert len(frames) == len(expected) == source.length
    for frame, want in zip(frames, expected, strict=True):
        assert frame.is_contiguous()
        assert np.array_equal(frame.numpy(), want)


def test_npy_nhwc(tmp_path: Path) -> None:
    data = frames_nchw()
    np.save(tmp_path / "f.npy", data.transpose(0, 2, 3, 1))
    source = open_source(f"npy:{tmp_path / 'f.npy'}", channels=3, height=6, width=5)
    assert isinstance(source, NpySource)
    assert source.layout == "NHWC"
    assert_frames_equal(source, data)


def test_npy_nchw(tmp_path: Path) -> None:
    data = frames_nchw()
    np.save(tmp_path / "f.npy", data)
    source = open_source(f"npy:{tmp_path / 'f.npy'}", channels=3, height=6, width=5)
    assert source.description == f"npy:{tmp_path / 'f.npy'} (4 frames, NCHW)"
    assert_frames_equal(source, data)


def test_npy_grey(tmp_path: Path) -> None:
    data = frames_nchw(channels=1)
    np.save(tmp_path / "g.npy", data[:, 0])
    source = open_source(f"npy:{tmp_path / 'g.npy'}", channels=1, height=6, width=5)
    assert_frames_equal(source, data)


def test_npy_frames_are_writable_copies(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", frames_nchw())
    frame = next(iter(open_source(f"npy:{tmp_path / 'f.npy'}", channels=3, height=6, width=5)))
    frame.zero_()  # would fail on a read-only memory map
    again = next(iter(open_source(f"npy:{tmp_path / 'f.npy'}", channels=3, height=6, width=5)))
    assert int(again.sum()) > 0


def test_npz_frames_member(tmp_path: Path) -> None:
    data = frames_nchw()
    np.savez_compressed(tmp_path / "f.npz", labels=np.arange(4), frames=data.transpose(0, 2, 3, 1))
    source = open_source(f"npy:{tmp_path / 'f.npz'}", channels=3, height=6, width=5)
    assert_frames_equal(source, data)


def test_npz_single_member(tmp_path: Path) -> None:
    data = frames_nchw()
    np.savez(tmp_path / "f.npz", video=data)
    assert_frames_equal(
        open_source(f"npy:{tmp_path / 'f.npz'}", channels=3, height=6, width=5), data
    )


def test_npz_ambiguous_members(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", a=frames_nchw(), b=frames_nchw())
    with pytest.raises(SourceError, match="'frames' or a single array, found: a, b"):
        open_source(f"npy:{tmp_path / 'f.npz'}", channels=3, height=6, width=5)


def test_npy_loop(tmp_path: Path) -> None:
    data = frames_nchw(count=2)
    np.save(tmp_path / "f.npy", data)
    source = open_source(f"npy:{tmp_path / 'f.npy'}", channels=3, height=6, width=5, loop=True)
    assert source.length is None
    frames = take(source, 5)
    for index, frame in enumerate(frames):
        assert np.array_equal(frame.numpy(), data[index % 2])


def test_npy_wrong_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", frames_nchw().astype(np.float32))
    spec = f"npy:{tmp_path / 'x.npy'}"
    with pytest.raises(SourceError) as caught:
        open_source(spec, channels=3, height=6, width=5)
    assert str(caught.value) == f"--source {spec}: frames are float32, expected uint8"


def test_npy_wrong_size(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", frames_nchw())
    with pytest.raises(SourceError) as caught:
        open_source(f"npy:{tmp_path / 'x.npy'}", channels=3, height=8, width=5)
    message = str(caught.value)
    assert "(4, 3, 6, 5)" in message
    assert "expected (T, 8, 5, 3) or (T, 3, 8, 5)" in message


def test_npy_wrong_channels(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", frames_nchw(channels=3))
    with pytest.raises(SourceError, match=r"expected \(T, 6, 5, 1\) or \(T, 1, 6, 5\) or"):
        open_source(f"npy:{tmp_path / 'x.npy'}", channels=1, height=6, width=5)


def test_npy_never_unpickles(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="cannot load"):
        open_source(f"npy:{tmp_path / 'o.npy'}", channels=3, height=6, width=5)


def test_npy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"npy:{tmp_path / 'none.npy'}", channels=3, height=6, width=5)


# --- specs ------------------------------------------------------------------------------------


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(SourceError) as caught:
        open_source("camera:0", channels=3, height=8, width=8)
    message = str(caught.value)
    assert "'camera'" in message
    for known in ("synthetic", "dir:PATH", "npy:FILE"):
        assert known in message
    assert isinstance(caught.value, SplitwireError)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("spec", ["dir:", "npy:"])
def test_scheme_without_path(spec: str) -> None:
    with pytest.raises(SourceError, match="expected a path"):
        open_source(spec, channels=3, height=8, width=8)


@pytest.mark.parametrize(("channels", "height", "width"), [(2, 8, 8), (4, 8, 8), (3, 0, 8)])
def test_unusable_frame_size(channels: int, height: int, width: int) -> None:
    with pytest.raises(SourceError):
        open_source("synthetic", channels=channels, height=height, width=width)
