"""Single-thread latency of the heavy model, the local model alone and the local model with the
fusion, at batch 1, measured in one process and interleaved so that a busy machine slows all
three alike (only their ratios are meant to be compared). Each ratio is the median of the
per-round ratios, so load that changes between rounds cancels. Convolution multiply-accumulates
are counted too: a figure no load can disturb.

    splitwire corrector latency --ckpt out/corrector
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from splitwire.corrector.runtime import Corrector

__all__ = ["Latency", "measure_latency"]


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per batch-1 frame over the measurement rounds.

    Attributes:
        heavy_ms: the heavy model (logits and downlink) on one uint8 frame.
        local_ms: the local model, local-only (features + decoder).
        fused_ms: the local model fused with remote features (fusion included).
        local_ratio: local_ms / heavy_ms (target ≤ 0.25).
        fusion_overhead: fused_ms / local_ms - 1 (target ≤ 0.15).
        threads: torch threads during the measurement.
        heavy_macs / local_macs / fused_macs: convolution multiply-accumulates per frame.
    """

    heavy_ms: float
    local_ms: float
    fused_ms: float
    local_ratio: float
    fusion_overhead: float
    threads: int
    heavy_macs: int
    local_macs: int
    fused_macs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def measure_latency(corrector: Corrector, *, rounds: int = 40, per_round: int = 10) -> Latency:
    """Time the three paths on a synthetic frame with one torch thread.

    Args:
        corrector: a loaded checkpoint.
        rounds: interleaved rounds (the median is reported).
        per_round: calls per path per round.

    Returns:
        The latencies and the two ratios of the targets.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        size = corrector.frame_size
        frame = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
        with torch.inference_mode():
            _, remote = corrector.remote(frame)
            # Every path starts from the uint8 frame (preprocessing included).
            paths: dict[str, Callable[[], object]] = {
                "heavy": lambda: corrector.remote(frame),
                "local": lambda: corrector.fuse(corrector.local_features(frame), None, 0),
                "fused": lambda: corrector.fuse(corrector.local_features(frame), remote, 1),
            }
            for fn in paths.values():  # warm up (allocator, oneDNN primitives)
                for _ in range(per_round):
                    fn()
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(rounds):
                for name, fn in paths.items():
                    start = time.perf_counter()
                    for _ in range(per_round):
                        fn()
                    times[name].append((time.perf_counter() - start) / per_round * 1e3)
        macs = {name: _conv_macs(corrector, fn) for name, fn in paths.items()}
    finally:
        torch.set_num_threads(previous)
    heavy, local, fused = (statistics.median(times[k]) for k in ("heavy", "local", "fused"))
    pairs = list(zip(times["heavy"], times["local"], times["fused"], strict=True))
    return Latency(
        heavy_ms=heavy,
        local_ms=local,
        fused_ms=fused,
        local_ratio=statistics.median(lo / h for h, lo, _ in pairs),
        fusion_overhead=statistics.median(f / lo for _, lo, f in pairs) - 1.0,
        threads=1,
        heavy_macs=macs["heavy"],
        local_macs=macs["local"],
        fused_macs=macs["fused"],
    )


def _conv_macs(corrector: Corrector, fn: Callable[[], object]) -> int:
    """Multiply-accumulates of every convolution ``fn`` runs (hooks on both models)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    convs = [
        m for model in (corrector.heavy, corrector.local) for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]  # fmt: skip
    handles = [m.register_forward_hook(count) for m in convs]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total
