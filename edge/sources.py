"""Camera-like frame sources for the edge agent: ``splitwire edge --source SPEC``.

A source yields uint8 frames shaped ``(C, H, W)`` at the size the model's head expects::

    synthetic            moving textured shapes, deterministic from the seed, endless
    synthetic:seed=N     the same with another seed
    video[:seed=N,speed=LO-HI,scene=F]
                         the delay corrector's labelled video task (splitwire.corrector.video):
                         moving textured objects at LO..HI pixels per frame (default 2-4), a
                         new scene every F frames (default 300), endless; it knows each
                         frame's class map, so the agent can score its outputs
    dir:PATH             the images in PATH, sorted by name, resized and centre-cropped
    npy:FILE             a uint8 array of frames in a .npy or .npz file, used as stored

``dir:`` and ``npy:`` sources make one pass unless opened with ``loop=True``. Every problem with
a spec or its data raises :class:`SourceError`, whose message says what was expected, except an
image of a ``dir:`` source that does not decode: a camera folder keeps going past one bad file,
so that file is skipped with a one-line warning and counted (:attr:`FrameSource.skipped`); only a
directory in which no image decodes is an error.
"""

from __future__ import annotations

import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from splitwire.errors import SplitwireError
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.photos import IMAGE_EXTENSIONS, PILLOW_FORMATS, list_images
from splitwire.protocol.jpeg import PILLOW_ERRORS
from splitwire.protocol.peer_text import peer_text

__all__ = [
    "IMAGE_EXTENSIONS",
    "KNOWN_SCHEMES",
    "DirectorySource",
    "FrameSource",
    "NpySource",
    "SourceError",
    "SyntheticSource",
    "VideoSource",
    "open_source",
]

logger = logging.getLogger(__name__)

KNOWN_SCHEMES = ("synthetic[:seed=N]", "video[:seed=N,speed=LO-HI,scene=F]", "dir:PATH", "npy:FILE")
_MODES = {1: "L", 3: "RGB"}
_EXIF_ORIENTATION = 0x0112
_SIDEWAYS = frozenset({5, 6, 7, 8})  # the EXIF orientations that swap width and height


class SourceError(SplitwireError):
    """A source spec or its data is unusable (message says what was expected)."""


class FrameSource(ABC):
    """An endless-or-finite iterator of uint8 camera frames.

    Each frame is a contiguous, writable ``torch.Tensor`` of shape ``(channels, height, width)``
    and dtype ``torch.uint8``, at the size the source was opened for.

    Attributes:
        channels: 1 (grey) or 3 (RGB).
        height, width: the frame size in pixels.
        description: what the source reads, for logs, e.g. ``"synthetic(seed=0)"``.
        length: frames per iteration, or ``None`` for an endless source.
        labelled: whether :meth:`labels` knows the frames' ground truth.
        skipped: inputs passed over because they could not be read (each counted once, however
            often a looping source comes back to it).
    """

    labelled = False

    def __init__(
        self, *, channels: int, height: int, width: int, description: str, length: int | None
    ) -> None:
        self.channels = channels
        self.height = height
        self.width = width
        self.description = description
        self.length = length

    @abstractmethod
    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield the frames from the first one on; each call starts again."""

    def labels(self, index: int) -> torch.Tensor | None:
        """The ground truth of frame ``index`` (a class map), for sources that know it."""
        return None

    @property
    def skipped(self) -> int:
        """Inputs skipped so far as unreadable (none, unless the source reads files)."""
        return 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.description} {self.channels}×{self.height}×{self.width}>"
        )


def open_source(
    spec: str, *, channels: int, height: int, width: int, seed: int = 0, loop: bool = False
) -> FrameSource:
    """Open a ``--source`` SPEC: ``synthetic[:seed=N]``, ``dir:PATH`` or ``npy:FILE``.

    Args:
        spec: the source spec; a ``seed=N`` in a synthetic spec overrides ``seed``.
        channels: 1 or 3, the channels every frame has.
        height, width: the size every frame has.
        seed: the synthetic scene's seed.
        loop: repeat a ``dir:`` or ``npy:`` source forever instead of making one pass.

    Raises:
        SourceError: an unknown scheme (the message lists the known ones), a missing path, an
            empty directory, an image that cannot be decoded, an array of the wrong dtype or
            shape, or a frame size that no source can produce.
    """
    _check_size(spec, channels, height, width)
    scheme, sep, rest = spec.partition(":")
    if scheme == "synthetic":
        seed = _parse_synthetic_options(spec, rest) if sep else seed
        return SyntheticSource(channels=channels, height=height, width=width, seed=seed)
    if scheme == "video":
        return VideoSource.from_spec(spec, rest, channels=channels, height=height, width=width,
                                     seed=seed)  # fmt: skip
    if scheme in ("dir", "npy") and not rest:
        raise SourceError(f"--source {spec}: expected a path after '{scheme}:'")
    if scheme == "dir":
        return DirectorySource(
            Path(rest).expanduser(), channels=channels, height=height, width=width, loop=loop
        )
    if scheme == "npy":
        return NpySource(
            Path(rest).expanduser(), channels=channels, height=height, width=width, loop=loop
        )
    raise SourceError(
        f"--source {spec}: unknown source scheme {scheme!r}, expected one of "
        + ", ".join(KNOWN_SCHEMES)
    )


def _check_size(spec: str, channels: int, height: int, width: int) -> None:
    if channels not in _MODES:
        raise SourceError(f"--source {spec}: frames need 1 or 3 channels, not {channels}")
    if height < 1 or width < 1:
        raise SourceError(f"--source {spec}: frame size must be positive, not {height}×{width}")


def _parse_synthetic_options(spec: str, options: str) -> int:
    key, sep, value = options.partition("=")
    if key != "seed" or not sep:
        raise SourceError(f"--source {spec}: expected 'synthetic' or 'synthetic:seed=N'")
    try:
        seed = int(value)
    except ValueError:
        seed = -1
    if seed < 0:
        raise SourceError(f"--source {spec}: seed must be a non-negative integer, not {value!r}")
    return seed


# ---------------------------------------------------------------------------------------------
# the corrector's labelled video task


class VideoSource(FrameSource):
    """The delay corrector's synthetic video task as an endless, labelled camera.

    Frame ``i`` belongs to scene ``i // scene_frames`` (seeded ``(seed, scene)``) and is that
    scene's frame ``i % scene_frames``; like :class:`SyntheticSource` it is a pure function of
    its index. The class maps of recent frames are kept (a bounded number) for
    :meth:`labels`.
    """

    labelled = True
    _KEPT_LABELS = 1024

    def __init__(
        self,
        *,
        size: int,
        seed: int = 0,
        speed: tuple[float, float] = (2.0, 4.0),
        scene_frames: int = 300,
    ) -> None:
        from splitwire.corrector.video import TaskConfig, check_speed

        super().__init__(
            channels=3,
            height=size,
            width=size,
            description=f"video(seed={seed}, speed={speed[0]:g}-{speed[1]:g}, "
            f"scene={scene_frames})",
            length=None,
        )
        self.seed = seed
        self.speed = check_speed(speed)
        self.scene_frames = scene_frames
        self._config = TaskConfig(size=size)
        self._labels: dict[int, torch.Tensor] = {}
        self._scene: tuple[int, Any] | None = None  # (number, Scene): frames come in order

    @classmethod
    def from_spec(
        cls, spec: str, options: str, *, channels: int, height: int, width: int, seed: int
    ) -> VideoSource:
        """Parse ``video[:seed=N,speed=LO-HI,scene=F]`` for frames of the plan's size."""
        from splitwire.corrector.errors import TaskConfigError

        expected = "expected video[:seed=N,speed=LO-HI,scene=F], e.g. video:seed=3,speed=2-4"
        fields: dict[str, str] = {}
        for item in filter(None, options.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in ("seed", "speed", "scene") or key in fields:
                raise SourceError(f"--source {spec}: {item!r} is not an option; {expected}")
            fields[key] = value
        if channels != 3 or height != width:
            raise SourceError(
                f"--source {spec}: the video task makes square RGB frames; the plan wants "
                f"{channels}×{height}×{width}"
            )
        try:
            lo, _, hi = fields.get("speed", "2-4").partition("-")
            speed = (float(lo), float(hi or lo))
            scene_frames = int(fields.get("scene", "300"))
            seed = int(fields.get("seed", seed))
        except ValueError as exc:
            raise SourceError(f"--source {spec}: {exc}; {expected}") from exc
        if scene_frames < 1 or seed < 0:
            raise SourceError(f"--source {spec}: scene >= 1 and seed >= 0; {expected}")
        try:
            return cls(size=height, seed=seed, speed=speed, scene_frames=scene_frames)
        except TaskConfigError as exc:
            raise SourceError(f"--source {spec}: {exc}") from exc

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield frames 0, 1, 2, … forever."""
        return map(self.frame, itertools.count())

    def frame(self, index: int) -> torch.Tensor:
        """Frame ``index`` as a ``(3, H, W)`` uint8 tensor (its labels are kept)."""
        from splitwire.corrector.video import scene

        number, offset = divmod(index, self.scene_frames)
        if self._scene is None or self._scene[0] != number:
            made = scene((self.seed, number), speed=self.speed, config=self._config)
            self._scene = (number, made)
        rendered = self._scene[1].render([offset])
        self._labels[index] = rendered.labels[0]
        while len(self._labels) > self._KEPT_LABELS:
            del self._labels[next(iter(self._labels))]  # the oldest: dicts keep insertion order
        return rendered.frames[0].contiguous()

    def labels(self, index: int) -> torch.Tensor | None:
        """The class map (H, W) int64 of a recent frame, or None once it was forgotten."""
        return self._labels.get(index)


# ---------------------------------------------------------------------------------------------
# synthetic


@dataclass(frozen=True)
class _Shape:
    """One moving shape; lengths in pixels, colours as (C,) int16 arrays."""

    disc: bool
    half_height: float
    half_width: float
    y0: float
    x0: float
    vy: float
    vx: float
    checker: bool
    period: float  # pixels per texture cycle
    angle: float  # of the stripes, radians
    colour_a: np.ndarray
    colour_b: np.ndarray


class SyntheticSource(FrameSource):
    """Moving textured shapes on a gradient background, as an endless camera.

    Frame ``i`` is a pure function of ``(seed, i, channels, height, width)``: the scene comes
    from a generator seeded with the seed, each frame's noise from one seeded with ``(seed, i)``,
    and positions are closed-form functions of ``i`` (constant velocity, reflected at the
    borders). Two iterations, or two processes, therefore see identical frames.
    """

    _NOISE = 3  # ± grey levels: mild sensor noise, enough that no two frames are identical

    def __init__(self, *, channels: int, height: int, width: int, seed: int = 0) -> None:
        _check_size(f"synthetic:seed={seed}", channels, height, width)
        super().__init__(
            channels=channels,
            height=height,
            width=width,
            description=f"synthetic(seed={seed})",
            length=None,
        )
        self.seed = seed
        scene = np.random.default_rng([seed, 0])
        # Precomputed once so a frame costs only a few vectorised passes over its pixels.
        self._ys = np.arange(height, dtype=np.float32)[:, None]
        self._xs = np.arange(width, dtype=np.float32)[None, :]
        self._background = self._make_background(scene)
        self._shapes = [self._make_shape(scene) for _ in range(int(scene.integers(3, 6)))]

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield frames 0, 1, 2, … forever."""
        return map(self.frame, itertools.count())

    def frame(self, index: int) -> torch.Tensor:
        """Frame ``index`` (≥ 0) of the endless sequence, as a ``(C, H, W)`` uint8 tensor."""
        canvas = self._background.copy()
        for shape in self._shapes:
            self._paint(canvas, shape, index)
        noise = np.random.default_rng([self.seed, 1, index]).integers(
            -self._NOISE, self._NOISE + 1, size=canvas.shape, dtype=np.int16
        )
        canvas += noise
        np.clip(canvas, 0, 255, out=canvas)
        return torch.from_numpy(canvas.astype(np.uint8))

    def _make_background(self, scene: np.random.Generator) -> np.ndarray:
        start, end = scene.uniform(40, 200, size=(2, 3))
        angle = scene.uniform(0, 2 * math.pi)
        along_y, along_x = math.sin(angle) / self.height, math.cos(angle) / self.width
        ramp = self._ys * along_y + self._xs * along_x
        # Rescaled so the full colour range spans the frame whatever the direction.
        ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
        rgb = start[:, None, None] + (end - start)[:, None, None] * ramp[None]
        return np.rint(self._to_channels(rgb)).astype(np.int16)

    def _make_shape(self, scene: np.random.Generator) -> _Shape:
        side = min(self.height, self.width)
        half_height = max(1.0, side * scene.uniform(0.08, 0.2))
        disc = bool(scene.integers(0, 2))
        half_width = half_height if disc else max(1.0, half_height * scene.uniform(0.6, 1.6))
        # Speeds relative to the frame so a shape crosses it in roughly 1–4 s at 30 fps.
        speed = side * scene.uniform(0.008, 0.03)
        heading = scene.uniform(0, 2 * math.pi)
        colours = scene.uniform(0, 255, size=(2, 3))
        return _Shape(
            disc=disc,
            half_height=half_height,
            half_width=half_width,
            y0=scene.uniform(0, self.height),
            x0=scene.uniform(0, self.width),
            vy=speed * math.sin(heading),
            vx=speed * math.cos(heading),
            checker=bool(scene.integers(0, 2)),
            period=max(2.0, half_height * scene.uniform(0.3, 1.0)),
            angle=scene.uniform(0, math.pi),
            colour_a=np.rint(self._to_channels(colours[0])).astype(np.int16),
            colour_b=np.rint(self._to_channels(colours[1])).astype(np.int16),
        )

    def _to_channels(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` with its first axis of 3 reduced to luma when the frames are grey."""
        if self.channels == 3:
            return rgb
        weights = np.array([0.299, 0.587, 0.114]).reshape((3,) + (1,) * (rgb.ndim - 1))
        return (rgb * weights).sum(axis=0, keepdims=True)

    def _paint(self, canvas: np.ndarray, shape: _Shape, index: int) -> None:
        cy = _bounce(
            shape.y0 + shape.vy * index, shape.half_height, self.height - shape.half_height
        )
        cx = _bounce(shape.x0 + shape.vx * index, shape.half_width, self.width - shape.half_width)
        # Only the shape's bounding box is touched: most of the frame is background.
        top, bottom = _span(cy, shape.half_height, self.height)
        left, right = _span(cx, shape.half_width, self.width)
        if top >= bottom or left >= right:
            return
        dy = self._ys[top:bottom] - np.float32(cy)
        dx = self._xs[:, left:right] - np.float32(cx)
        if shape.disc:
            inside = dy * dy + dx * dx <= np.float32(shape.half_height**2)
        else:
            inside = (np.abs(dy) <= shape.half_height) & (np.abs(dx) <= shape.half_width)
        # Texture coordinates are relative to the centre, so the pattern moves with the shape.
        bands = np.float32(2 / shape.period)  # two bands, one of each colour, per cycle
        if shape.checker:
            cells = np.floor(dy * bands) + np.floor(dx * bands)
        else:
            along = dy * np.float32(math.sin(shape.angle)) + dx * np.float32(math.cos(shape.angle))
            cells = np.floor(along * bands)
        stripe_a = (cells.astype(np.int32) & 1).astype(bool)
        texture = np.where(stripe_a, shape.colour_a[:, None, None], shape.colour_b[:, None, None])
        region = canvas[:, top:bottom, left:right]
        np.copyto(region, texture, where=inside[None])


def _bounce(position: float, low: float, high: float) -> float:
    """``position`` reflected into ``[low, high]``, as a ball bouncing between two walls."""
    span = high - low
    if span <= 0:
        return (low + high) / 2
    offset = (position - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def _span(centre: float, half: float, size: int) -> tuple[int, int]:
    return max(0, math.floor(centre - half)), min(size, math.ceil(centre + half) + 1)


# ---------------------------------------------------------------------------------------------
# dir:


class DirectorySource(FrameSource):
    """The image files of a directory, sorted by name, one decoded per frame.

    Files with an extension in :data:`IMAGE_EXTENSIONS` (any case) count; hidden files (a
    leading dot, e.g. macOS's ``._photo.jpg``) and subdirectories do not. Each image is
    converted to RGB or grey, scaled so its shorter side fits, and centre-cropped. An image that
    does not decode is skipped with a warning (once: a looping source passes it over silently
    after) and counted in :attr:`skipped`; a pass in which no image decodes raises
    :class:`SourceError`, since the source would never yield a frame.
    """

    def __init__(
        self, path: Path, *, channels: int, height: int, width: int, loop: bool = False
    ) -> None:
        _check_size(f"dir:{path}", channels, height, width)
        self.path = path
        self.loop = loop
        self.files = _list_images(path)
        self._unreadable: set[Path] = set()
        noun = "image" if len(self.files) == 1 else "images"
        super().__init__(
            channels=channels,
            height=height,
            width=width,
            description=f"dir:{path} ({len(self.files)} {noun}{', looping' if loop else ''})",
            length=None if loop else len(self.files),
        )

    @property
    def skipped(self) -> int:
        """Images skipped so far because they did not decode."""
        return len(self._unreadable)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Decode and yield the images in name order, once or (``loop``) forever, passing over
        those that do not decode.

        Raises:
            SourceError: a whole pass yielded no frame (no image in the directory decodes).
        """
        passes = itertools.count() if self.loop else range(1)
        for _ in passes:
            decoded = 0
            for file in self.files:
                if file in self._unreadable:
                    continue
                try:
                    frame = self.read(file)
                except SourceError as error:
                    self._unreadable.add(file)
                    logger.warning("%s; skipped (%d so far)", error, len(self._unreadable))
                    continue
                decoded += 1
                yield frame
            if decoded == 0:
                raise SourceError(
                    f"--source dir:{self.path}: none of its {len(self.files)} images decodes; "
                    f"expected images in one of: {', '.join(PILLOW_FORMATS)}"
                )

    def read(self, file: Path) -> torch.Tensor:
        """``file`` decoded, converted and cropped to a ``(C, H, W)`` uint8 tensor.

        Raises:
            SourceError: the file cannot be read or decoded (the message names it).
        """
        try:
            with Image.open(file, formats=PILLOW_FORMATS) as image:
                pixels = self._fit(image)
        except PILLOW_ERRORS as error:
            # File names and the decoder's words about them are escaped: one line, whatever
            # the name holds.
            raise SourceError(
                f"--source dir:{self.path}: cannot decode {peer_text(file.name)}: "
                f"{peer_text(str(error), limit=160)}"
            ) from None
        if self.channels == 1:
            return torch.from_numpy(np.ascontiguousarray(pixels[None]))
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def _fit(self, image: Image.Image) -> np.ndarray:
        """An open image as an ``(H, W)`` or ``(H, W, 3)`` array at the source's size."""
        mode = _MODES[self.channels]
        # JPEG can decode at 1/2, 1/4 or 1/8 scale for almost nothing; draft never goes below the
        # requested size, so the resize below still sets the exact one.
        sideways = image.getexif().get(_EXIF_ORIENTATION, 1) in _SIDEWAYS
        stored = (self.height, self.width) if sideways else (self.width, self.height)
        image.draft(mode, _cover(image.size, stored))
        image = ImageOps.exif_transpose(image)  # phones store portraits sideways plus a tag
        image = image.convert(mode)
        size = _cover(image.size, (self.width, self.height))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        left = (size[0] - self.width) // 2
        top = (size[1] - self.height) // 2
        image = image.crop((left, top, left + self.width, top + self.height))
        return np.array(image, dtype=np.uint8)  # a writable copy: tensors must own their data


def _cover(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """``size`` (width, height) scaled so it covers ``target`` with its shorter side fitting."""
    scale = max(target[0] / size[0], target[1] / size[1])
    return max(target[0], round(size[0] * scale)), max(target[1], round(size[1] * scale))


def _list_images(path: Path) -> list[Path]:
    try:
        return list_images(path, where=f"--source dir:{path}")
    except PartitionerError as error:
        raise SourceError(str(error)) from None


# ---------------------------------------------------------------------------------------------
# npy:


class NpySource(FrameSource):
    """uint8 frames stored in a ``.npy`` or ``.npz`` file, used at their stored size.

    The array is ``(T, H, W, C)``, ``(T, C, H, W)`` or, for grey, ``(T, H, W)``; in a ``.npz`` it
    is the one named ``frames``, or the only one. A ``.npy`` is memory-mapped, so only the frames
    read are paged in; a ``.npz`` member is decompressed whole. Nothing is ever unpickled.
    """

    def __init__(
        self, path: Path, *, channels: int, height: int, width: int, loop: bool = False
    ) -> None:
        self.spec = f"npy:{path}"
        _check_size(self.spec, channels, height, width)
        self.path = path
        self.loop = loop
        self._frames, self.layout = _frames_view(
            self.spec, _load_array(self.spec, path), channels, height, width
        )
        count = len(self._frames)
        super().__init__(
            channels=channels,
            height=height,
            width=width,
            description=f"npy:{path} ({count} frames, {self.layout}{', looping' if loop else ''})",
            length=None if loop else count,
        )

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield the stored frames in order, once or (``loop``) forever."""
        passes = itertools.count() if self.loop else range(1)
        for _ in passes:
            for frame in self._frames:
                # A copy: the array may be a read-only memory map, and tensors must own their data.
                yield torch.from_numpy(frame.copy(order="C"))


def _load_array(spec: str, path: Path) -> np.ndarray:
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise SourceError(f"--source {spec}: {what}, expected a .npy or .npz file")
    try:
        # np.load tells .npy from .npz by content; mmap_mode applies to .npy only.
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return _pick_member(spec, loaded)
    except (OSError, ValueError, EOFError) as error:
        # allow_pickle=False turns pickles and object arrays into a ValueError.
        raise SourceError(f"--source {spec}: cannot load a uint8 array: {error}") from None
    if not isinstance(loaded, np.ndarray):
        raise SourceError(f"--source {spec}: expected a .npy or .npz file of frames")
    return loaded


def _pick_member(spec: str, archive: np.lib.npyio.NpzFile) -> np.ndarray:
    names = list(archive.files)
    if "frames" in names:
        return archive["frames"]
    if len(names) == 1:
        return archive[names[0]]
    listed = ", ".join(names) if names else "none"
    raise SourceError(
        f"--source {spec}: expected an array named 'frames' or a single array, found: {listed}"
    )


def _frames_view(
    spec: str, array: np.ndarray, channels: int, height: int, width: int
) -> tuple[np.ndarray, str]:
    """``array`` as ``(T, C, H, W)`` (a view, not a copy) and the layout it was stored in."""
    if array.dtype != np.uint8:
        raise SourceError(f"--source {spec}: frames are {array.dtype}, expected uint8")
    # NHWC first: when both readings fit (H = W = C), the image convention is the likelier one.
    if array.ndim == 4 and array.shape[1:] == (height, width, channels):
        view, layout = array.transpose(0, 3, 1, 2), "NHWC"
    elif array.ndim == 4 and array.shape[1:] == (channels, height, width):
        view, layout = array, "NCHW"
    elif array.ndim == 3 and channels == 1 and array.shape[1:] == (height, width):
        view, layout = array[:, None], "NHW"
    else:
        expected = f"(T, {height}, {width}, {channels}) or (T, {channels}, {height}, {width})"
        if channels == 1:
            expected += f" or (T, {height}, {width})"
        raise SourceError(
            f"--source {spec}: frames have shape {tuple(array.shape)}, expected {expected}"
        )
    if len(view) == 0:
        raise SourceError(f"--source {spec}: the array holds no frames, expected at least one")
    return view, layout
