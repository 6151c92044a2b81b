"""Real photographs as camera frames: for measuring what a split does to a trained model's output.

Random tensors say little about a codec's effect on accuracy; photographs do. Two sources:

    "skimage"        the colour photographs bundled with scikit-image (``pip install
                     'splitwire[pretrained]'``), found without importing it: see BUNDLED_PHOTOS
    a directory      its image files (.png .jpg .jpeg .bmp .ppm .pgm .tif .tiff .webp), by name

    >>> frames = photo_frames("skimage", 32, height=224, width=224)   # (32, 3, 224, 224) uint8

Each photo is resized so it covers 1.15 × the frame (the usual resize-256-crop-224 margin), then
cropped. The first ``len(photos)`` frames are centre crops, one per photo; later ones cycle through
the photos again with random crops (0.6–1.0 of the largest crop of the frame's aspect that fits)
and horizontal flips, drawn from ``seed``: the same arguments always give the same frames.
Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from splitwire.partitioner.errors import PartitionerError
from splitwire.protocol.jpeg import PILLOW_ERRORS

__all__ = [
    "BUNDLED_PHOTOS",
    "IMAGE_EXTENSIONS",
    "PILLOW_FORMATS",
    "bundled_photo_dir",
    "list_images",
    "photo_files",
    "photo_frames",
]

# scikit-image's bundled colour photographs. Left out: the grey ones (camera, coins, moon, brick,
# grass, gravel, cell, clock_motion, page, text, microaneurysms), the synthetic ones (color: a
# colour wheel; chessboard_RGB, phantom, logo; horse: a silhouette) and the tiny ones
# (no_time_for_that_tiny.gif, multipage*.tif).
BUNDLED_PHOTOS = (
    "astronaut.png",  # a portrait with a flag and the Shuttle
    "chelsea.png",  # a tabby cat
    "coffee.png",  # a cup of espresso on a saucer
    "hubble_deep_field.jpg",  # galaxies
    "ihc.png",  # stained tissue under a microscope
    "motorcycle_left.png",  # a red motorcycle in a garage (stereo pair, left)
    "motorcycle_right.png",  # the same, right camera
    "retina.jpg",  # a fundus photograph
    "rocket.jpg",  # a rocket on its launch pad
)
_SKIMAGE = "skimage"
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)
# Only the decoders for the extensions above (Pillow otherwise picks one by content). No "MPO":
# the JPEG decoder opens phones' multi-picture JPEGs itself, and Pillow 13 registers no MPO
# opener, so naming it makes an undecodable file a KeyError.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "PPM", "TIFF", "WEBP")
_MODES = {1: "L", 3: "RGB"}
_EXIF_ORIENTATION = 0x0112
_SIDEWAYS = frozenset({5, 6, 7, 8})  # the EXIF orientations that swap width and height
_MARGIN = 1.15  # resize to cover this × the frame before cropping
_SCALE = (0.6, 1.0)  # random crops: this fraction of the largest crop that fits


def bundled_photo_dir() -> Path | None:
    """scikit-image's data directory, located without importing scikit-image.

    Returns:
        The directory, or None when scikit-image is not installed (or has no data directory).
    """
    found = importlib.util.find_spec(_SKIMAGE)
    if found is None or not found.submodule_search_locations:
        return None
    data = Path(next(iter(found.submodule_search_locations)), "data")
    return data if data.is_dir() else None


def photo_files(source: str | Path) -> list[Path]:
    """The photos a source names.

    Args:
        source: ``"skimage"`` for scikit-image's bundled photographs (:data:`BUNDLED_PHOTOS`,
            those present), or a directory of images.

    Returns:
        The image files: bundled ones in :data:`BUNDLED_PHOTOS` order, a directory's by name.

    Raises:
        PartitionerError: scikit-image is not installed or bundles none of the photos; the
            directory does not exist, cannot be listed or holds no images.
    """
    if isinstance(source, str) and source == _SKIMAGE:
        data = bundled_photo_dir()
        if data is None:
            raise PartitionerError(
                "photos 'skimage': scikit-image is not installed; install it with "
                "pip install 'splitwire[pretrained]' (or pip install scikit-image), or give a "
                "directory of photos"
            )
        files = [data / name for name in BUNDLED_PHOTOS if (data / name).is_file()]
        if not files:
            raise PartitionerError(
                f"photos 'skimage': {data} holds none of {', '.join(BUNDLED_PHOTOS)}; "
                "reinstall scikit-image or give a directory of photos"
            )
        return files
    return list_images(Path(source).expanduser(), where=f"photos {str(source)!r}")


def list_images(path: Path, *, where: str) -> list[Path]:
    """The image files in ``path`` (extensions in :data:`IMAGE_EXTENSIONS`, any case; hidden
    files skipped), sorted by name.

    Raises:
        PartitionerError: ``path`` is not a directory, cannot be listed or holds no images; the
            message starts with ``where``.
    """
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise PartitionerError(f"{where}: {what}, expected a directory of images")
    try:
        files = sorted(
            (
                entry
                for entry in path.iterdir()
                if entry.suffix.lower() in IMAGE_EXTENSIONS
                and not entry.name.startswith(".")
                and entry.is_file()
            ),
            key=lambda entry: entry.name,
        )
    except OSError as exc:
        raise PartitionerError(f"{where}: cannot list the directory: {exc}") from exc
    if not files:
        raise PartitionerError(
            f"{where}: no images, expected files ending in " + " ".join(sorted(IMAGE_EXTENSIONS))
        )
    return files


def photo_frames(
    source: str | Path,
    count: int,
    *,
    height: int,
    width: int,
    channels: int = 3,
    seed: int = 0,
) -> torch.Tensor:
    """``count`` camera frames cut from the photos of ``source`` (see the module docstring).

    Args:
        source: ``"skimage"`` or a directory of images (:func:`photo_files`).
        count: how many frames.
        height, width: the frame size.
        channels: 3 (RGB; grey photos are converted) or 1 (grey; colour photos are converted).
        seed: seeds the random crops and flips of the frames after the first ``len(photos)``.

    Returns:
        A ``(count, channels, height, width)`` uint8 tensor.

    Raises:
        PartitionerError: a size or count that is not positive, ``channels`` not 1 or 3, a
            source with no photos (:func:`photo_files`), or a photo that cannot be decoded
            (the message names it).
    """
    for name, value in (("count", count), ("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PartitionerError(f"photo frames: {name} must be a positive int, got {value!r}")
    if channels not in _MODES:
        raise PartitionerError(f"photo frames: channels must be 1 or 3, got {channels!r}")
    files = photo_files(source)
    photos = [_load(file, _MODES[channels], height=height, width=width) for file in files]
    rng = random.Random(seed)
    frames = []
    for i in range(count):
        photo = photos[i % len(photos)]
        image = (
            _centre_crop(photo, height, width)
            if i < len(photos)
            else _random_crop(photo, height, width, rng)
        )
        pixels = np.array(image, dtype=np.uint8)  # (H, W) or (H, W, 3), a writable copy
        frames.append(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames)))


def _load(file: Path, mode: str, *, height: int, width: int) -> Image.Image:
    """``file`` decoded, upright, in ``mode`` and resized to cover the frame × the margin."""
    target = (round(width * _MARGIN), round(height * _MARGIN))
    try:
        with Image.open(file, formats=PILLOW_FORMATS) as opened:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale for free, never below the size asked for
            # (in stored orientation: phones store portraits sideways plus an EXIF tag).
            sideways = opened.getexif().get(_EXIF_ORIENTATION, 1) in _SIDEWAYS
            opened.draft(mode, (target[1], target[0]) if sideways else target)
            image = ImageOps.exif_transpose(opened).convert(mode)
    except PILLOW_ERRORS as exc:
        raise PartitionerError(
            f"photos: cannot decode {str(file)!r} ({type(exc).__name__}: {exc})"
        ) from exc
    scale = max(target[0] / image.width, target[1] / image.height)
    size = (max(target[0], round(image.width * scale)), max(target[1], round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _centre_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _random_crop(image: Image.Image, height: int, width: int, rng: random.Random) -> Image.Image:
    # The largest box of the frame's aspect that fits, scaled down, at a random place.
    fit = min(image.width / width, image.height / height)
    scale = rng.uniform(*_SCALE)
    box_w = max(1, min(image.width, round(width * fit * scale)))
    box_h = max(1, min(image.height, round(height * fit * scale)))
    left = rng.randint(0, image.width - box_w)
    top = rng.randint(0, image.height - box_h)
    flip = rng.random() < 0.5
    crop = image.resize(
        (width, height), Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h)
    )
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop
