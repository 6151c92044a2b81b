"""What a profile was measured on: the CPU, the thread count, the torch build.

    >>> current_device(threads=1).description
    'Intel(R) Xeon(R) Processor, 2 cores'

A profile can also describe an *emulated* device: ``Profile.scaled(4)`` turns a profile of this
machine into a guess for a machine 4× slower (see :mod:`splitwire.partitioner.profiling`);
``slowdown`` and ``emulated`` record that, so a plan built from it never passes for a measurement.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from splitwire.partitioner.errors import ProfileError

__all__ = ["DeviceInfo", "current_device", "describe_cpu"]

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class DeviceInfo:
    """The machine a profile describes.

    Attributes:
        description: the CPU model and core count, e.g. ``"Intel(R) Xeon(R) Processor, 2 cores"``.
        threads: torch intra-op threads the nodes were timed with.
        torch_version: ``torch.__version__`` of the measuring process.
        slowdown: how many times slower than the measured machine this profile claims to be
            (1.0 for a real measurement).
        emulated: True when the numbers were derived (scaled), not measured.
    """

    description: str
    threads: int
    torch_version: str
    slowdown: float = 1.0
    emulated: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise ProfileError(f"device.threads: expected an integer >= 1, got {self.threads!r}")
        if not (isinstance(self.slowdown, int | float) and math.isfinite(self.slowdown)) or (
            self.slowdown <= 0
        ):
            raise ProfileError(
                f"device.slowdown: expected a finite number > 0, got {self.slowdown!r}"
            )
        if self.slowdown != 1.0 and not self.emulated:
            raise ProfileError(
                f"device.slowdown: {self.slowdown!r} on a device that is not emulated; "
                "only a scaled (emulated) profile has a slowdown other than 1"
            )


def describe_cpu() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else :mod:`platform`) and the core count.

    Returns:
        e.g. ``"Intel(R) Xeon(R) Processor, 2 cores"``; ``"unknown CPU, N cores"`` when the
        platform names no model.
    """
    model = ""
    try:
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            # x86 names it "model name"; many ARM kernels only give "Hardware" or "Model".
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                model = value.strip()
                break
    except OSError:  # not Linux, or /proc unavailable in a sandbox
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cores = os.cpu_count() or 1
    return f"{model}, {cores} core{'s' if cores != 1 else ''}"


def current_device(*, threads: int) -> DeviceInfo:
    """Describe this machine, measured with ``threads`` torch threads.

    Args:
        threads: the intra-op thread count the profile is taken with.

    Returns:
        A non-emulated :class:`DeviceInfo`.

    Raises:
        ProfileError: ``threads`` is below 1.
    """
    return DeviceInfo(describe_cpu(), threads, str(torch.__version__))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with torch using ``threads`` intra-op threads, then restore the previous
    count. Measurements pin this: with more threads than free cores, OpenMP's spinning workers
    slow a busy machine down by an order of magnitude."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
