"""The synthetic video task: segment moving objects whose class is a fine texture.

Every clip is generated on the fly from a seed (no files), at 30 frames per second::

    >>> from splitwire.corrector.video import clip
    >>> c = clip(7, 8, speed=(2.0, 4.0))
    >>> c.frames.shape, c.frames.dtype, c.labels.shape, c.labels.dtype
    (torch.Size([8, 3, 64, 64]), torch.uint8, torch.Size([8, 64, 64]), torch.int64)

*Where* an object is can be seen cheaply: objects are grey on a smooth, colourful background,
so a 2× downsampled frame still shows every blob. *What* it is needs the full resolution: the
four classes differ only by a texture of period 2 pixels laid on the image grid, which averages
to exactly the object's grey level over every aligned 2×2 block::

    class 1 horizontal   rows alternate   mean ± a        (-1)^y
    class 2 vertical     columns alternate                (-1)^x
    class 3 checker      both                             (-1)^(x+y)
    class 4 flat         no texture                       0

Objects (discs or squares, shape and grey level independent of the class) keep their class for
the whole clip, move in straight lines at a constant speed drawn from ``speed`` (pixels per
frame), bounce off the borders, and occlude each other (later objects on top). Labels are
class maps, 0 the background. Every pixel gets fresh sensor noise each frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from splitwire.corrector.errors import TaskConfigError

__all__ = ["CLASS_NAMES", "FPS", "NUM_CLASSES", "Clip", "Scene", "TaskConfig", "clip", "scene"]

FPS = 30
CLASS_NAMES = ("background", "horizontal", "vertical", "checker", "flat")
NUM_CLASSES = len(CLASS_NAMES)

Seed = int | Sequence[int]


@dataclass(frozen=True)
class TaskConfig:
    """What the synthetic scenes look like.

    Attributes:
        size: frame side in pixels (square frames, a multiple of 8).
        objects: (fewest, most) objects per clip.
        radius: (smallest, largest) object radius in pixels (half the side for squares).
        amplitude: texture amplitude: a textured pixel is grey ± amplitude.
        noise: standard deviation of the per-frame sensor noise, in grey levels.
    """

    size: int = 64
    objects: tuple[int, int] = (2, 4)
    radius: tuple[float, float] = (5.0, 8.0)
    amplitude: tuple[float, float] = (35.0, 55.0)
    noise: float = 6.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskConfig:
        """The config recorded in ``corrector.json`` (lists back to tuples).

        Raises:
            TaskConfigError: a missing, unknown or malformed key.
        """
        try:
            return cls(
                size=int(data["size"]),
                objects=(int(data["objects"][0]), int(data["objects"][1])),
                radius=(float(data["radius"][0]), float(data["radius"][1])),
                amplitude=(float(data["amplitude"][0]), float(data["amplitude"][1])),
                noise=float(data["noise"]),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TaskConfigError(f"task config {data!r}: {type(exc).__name__}: {exc}") from exc

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 8:
            raise TaskConfigError(f"task size {self.size}: expected a multiple of 8, at least 16")
        lo, hi = self.objects
        if not 1 <= lo <= hi:
            raise TaskConfigError(f"task objects {self.objects}: expected 1 <= fewest <= most")
        if not 1.0 <= self.radius[0] <= self.radius[1] < self.size / 4:
            raise TaskConfigError(
                f"task radius {self.radius}: expected 1 <= smallest <= largest < size/4 "
                f"({self.size / 4})"
            )
        if self.noise < 0:
            raise TaskConfigError(f"task noise {self.noise}: expected >= 0")


def check_speed(speed: tuple[float, float]) -> tuple[float, float]:
    """Validate a speed range (pixels per frame); returns it as floats."""
    lo, hi = float(speed[0]), float(speed[1])
    if not (0.0 <= lo <= hi) or not np.isfinite(hi):
        raise TaskConfigError(f"speed range {speed}: expected 0 <= lo <= hi (pixels per frame)")
    return lo, hi


@dataclass(frozen=True)
class Clip:
    """Frames and labels of one clip.

    Attributes:
        frames: (T, 3, H, W) uint8, like a camera's.
        labels: (T, H, W) int64 class map, 0 the background.
    """

    frames: torch.Tensor
    labels: torch.Tensor


class Scene:
    """A seeded scene: its objects' classes, shapes, start points and velocities. Any frame can
    be rendered directly (``render``), without stepping through the ones before it."""

    def __init__(self, seed: Seed, *, speed: tuple[float, float], config: TaskConfig) -> None:
        lo, hi = check_speed(speed)
        self.config = config
        self.seed = seed
        rng = np.random.default_rng(list(seed) if not isinstance(seed, int) else seed)
        size = config.size
        n = int(rng.integers(config.objects[0], config.objects[1] + 1))
        self.classes = rng.integers(1, NUM_CLASSES, size=n)  # (n,) in 1..4
        self.square = rng.random(n) < 0.5
        self.radius = rng.uniform(*config.radius, size=n)
        self.grey = rng.uniform(95.0, 165.0, size=n)
        self.amplitude = rng.uniform(*config.amplitude, size=n)
        self.start = rng.uniform(self.radius[:, None], size - self.radius[:, None], size=(n, 2))
        angle = rng.uniform(0.0, 2 * np.pi, size=n)
        self.speed = rng.uniform(lo, hi, size=n)
        self.velocity = self.speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        self.background = _background(rng, size)  # (3, H, W) float
        self._noise_seed = int(rng.integers(2**62))

    def positions(self, frames: np.ndarray) -> np.ndarray:
        """Object centres (x, y) at the given frame indices: (F, n, 2).

        A straight line folded into [r, size - r] (a triangle wave) is a bounce off the borders.
        """
        lo = self.radius[None, :, None]
        span = self.config.size - 2 * lo  # (1, n, 1)
        raw = self.start[None] + frames[:, None, None] * self.velocity[None] - lo
        folded = np.mod(raw, 2 * span)
        return lo + np.where(folded > span, 2 * span - folded, folded)

    def render(self, frames: Sequence[int]) -> Clip:
        """Render the given frame indices (any order, repeats allowed).

        Returns:
            The frames (F, 3, H, W) uint8 and labels (F, H, W) int64.
        """
        index = np.asarray(frames, dtype=np.float64)
        size = self.config.size
        centres = self.positions(index)  # (F, n, 2)
        coords = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
        yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (H, W)
        iy, ix = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        patterns = {
            1: np.where(iy % 2 == 0, 1.0, -1.0),
            2: np.where(ix % 2 == 0, 1.0, -1.0),
            3: np.where((ix + iy) % 2 == 0, 1.0, -1.0),
            4: np.zeros((size, size)),
        }
        image = np.broadcast_to(self.background, (len(index), 3, size, size)).copy()
        labels = np.zeros((len(index), size, size), dtype=np.int64)
        for k in range(len(self.classes)):  # later objects occlude earlier ones
            dx = xx[None] - centres[:, k, 0, None, None]  # (F, H, W)
            dy = yy[None] - centres[:, k, 1, None, None]
            r = self.radius[k]
            if self.square[k]:
                inside = np.maximum(np.abs(dx), np.abs(dy)) <= r
            else:
                inside = dx * dx + dy * dy <= r * r
            cls = int(self.classes[k])
            value = self.grey[k] + self.amplitude[k] * patterns[cls]  # (H, W), grey: all channels
            image = np.where(inside[:, None], value[None, None], image)
            labels[inside] = cls
        for i, f in enumerate(index.astype(np.int64)):  # sensor noise: per frame, seeded
            noise_rng = np.random.default_rng([self._noise_seed, int(f)])
            image[i] += noise_rng.normal(0.0, self.config.noise, size=image.shape[1:])
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return Clip(torch.from_numpy(pixels), torch.from_numpy(labels))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth, saturated colour blobs (bilinear upsampling of a coarse grid) plus fixed fine
    grain; (3, size, size) float in grey levels."""
    coarse = rng.uniform(0.0, 255.0, size=(1, 3, 5, 5)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=True
    )[0].numpy()
    grain = rng.normal(0.0, 8.0, size=(3, size, size))
    return smooth.astype(np.float64) + grain


def scene(seed: Seed, *, speed: tuple[float, float], config: TaskConfig | None = None) -> Scene:
    """A seeded scene whose frames can be rendered in any order.

    Args:
        seed: an integer, or a sequence of integers (e.g. ``(purpose, run_seed, index)``).
        speed: (lo, hi) object speed in pixels per frame, each object's drawn uniformly.
        config: the task's look (default :class:`TaskConfig`).

    Raises:
        TaskConfigError: a negative or reversed speed range.
    """
    return Scene(seed, speed=speed, config=config or TaskConfig())


def clip(
    seed: Seed,
    length: int,
    speed: tuple[float, float] = (0.5, 1.5),
    *,
    config: TaskConfig | None = None,
) -> Clip:
    """Frames 0..length-1 of the scene ``seed``.

    Args:
        seed: the scene's seed; the same seed always gives the same clip.
        length: number of frames.
        speed: (lo, hi) object speed in pixels per frame.
        config: the task's look (default :class:`TaskConfig`).

    Returns:
        The clip: frames (length, 3, H, W) uint8 and labels (length, H, W) int64.

    Raises:
        TaskConfigError: a length below 1 or a bad speed range.
    """
    if length < 1:
        raise TaskConfigError(f"clip length {length}: expected at least 1 frame")
    return scene(seed, speed=speed, config=config).render(range(length))
