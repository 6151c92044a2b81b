"""Codec benchmark: wire bytes, error and speed of every codec on real activations.

    splitwire bench codec                      # every zoo model, every default codec
    splitwire bench codec --models resnet18 --json

Activations come from the zoo models (random weights, BatchNorm statistics calibrated on
synthetic images so their scale and sparsity are realistic) at several depths, captured with
forward hooks. Every codec is compared with what the reference tools send: the tensor pickled
as float32 (``pickle.dumps``), measured in the same run.
"""

from __future__ import annotations

import pickle
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch

from splitwire.partitioner.calibration import calibrate_batchnorm, synthetic_images
from splitwire.partitioner.models import load_model
from splitwire.protocol import CodecSpec, decode, encode
from splitwire.protocol.quantise import default_channel_axis, quantise_affine
from splitwire.protocol.wire import header_to_proto

# Where to tap each zoo model: module paths whose outputs are the activations measured.
TAPS: dict[str, tuple[str, ...]] = {
    "resnet18": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
    "mobilenet_v2": ("features.3", "features.6", "features.13", "features.17"),
    "vit_tiny": ("blocks.3", "blocks.7", "blocks.11"),
    "unet_small": ("enc2", "mid", "dec2"),
}
DEFAULT_SPECS = (
    "fp32",
    "fp32+zstd1",
    "fp16",
    "fp16+zstd1",
    "bf16+zstd1",
    "int8",
    "int8+zstd1",
    "int8+zstd3",
    "int4+zstd1",
)


@dataclass(frozen=True)
class CodecRecord:
    """One (activation, codec) measurement. Speeds are MB/s of fp32-equivalent data."""

    model: str
    layer: str
    shape: tuple[int, ...]
    spec: str
    raw_bytes: int
    pickle_bytes: int
    wire_bytes: int
    ratio_vs_pickle: float
    rel_rmse: float
    exact: bool
    encode_mb_s: float
    decode_mb_s: float
    pickle_mb_s: float
    # For int8/int4: pickled bytes over the order-0 entropy of the codes — the ratio no coder of
    # independent symbols can beat on this tensor (None for other schemes).
    entropy_bound_ratio: float | None

    def as_json(self) -> dict[str, object]:
        """The record as JSON-ready fields."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


@dataclass(frozen=True)
class TargetCheck:
    """One target of the foundation issue, checked against the measured records."""

    description: str
    measured: str
    passed: bool


def capture_activations(model: str, *, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Outputs of ``TAPS[model]`` for one synthetic image, after BatchNorm calibration."""
    loaded = load_model(f"zoo:{model}")
    if loaded.input_shape is None:
        raise ValueError(f"zoo:{model} has no example input shape")
    module = loaded.module
    calibrate_batchnorm(module, synthetic_images(16, loaded.input_shape[1:], seed=seed + 1))
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for path in TAPS[model]:
        sub = module.get_submodule(path)

        def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor, path: str = path) -> None:
            captured[path] = out.detach().clone()

        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(synthetic_images(1, loaded.input_shape[1:], seed=seed))
    finally:
        for handle in handles:
            handle.remove()
    return [(path, captured[path]) for path in TAPS[model]]


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first call pays for allocations and zstd context creation
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e9


def measure(
    model: str, layer: str, activation: torch.Tensor, specs: Sequence[str], *, repeats: int
) -> Iterator[CodecRecord]:
    """Measure every spec on one activation (plus pickled fp32, the reference)."""
    x = activation.float().contiguous()
    raw_bytes = x.numel() * 4
    pickled = pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)
    pickle_s = _median_seconds(lambda: pickle.loads(pickle.dumps(x, protocol=5)), repeats)
    norm = x.norm().item() or 1.0
    for text in specs:
        spec = CodecSpec.parse(text)
        enc = encode(x, spec)
        y = decode(enc.header, enc.payload)
        wire_bytes = len(enc.payload) + header_to_proto(enc.header).ByteSize()
        yield CodecRecord(
            model=model,
            layer=layer,
            shape=tuple(x.shape),
            spec=str(spec),
            raw_bytes=raw_bytes,
            pickle_bytes=len(pickled),
            wire_bytes=wire_bytes,
            ratio_vs_pickle=len(pickled) / wire_bytes,
            rel_rmse=(x - y).norm().item() / norm,
            exact=torch.equal(x.view(torch.int32), y.view(torch.int32)),
            encode_mb_s=raw_bytes / _median_seconds(partial(encode, x, spec), repeats) / 1e6,
            decode_mb_s=raw_bytes
            / _median_seconds(partial(decode, enc.header, enc.payload), repeats)
            / 1e6,
            pickle_mb_s=raw_bytes / pickle_s / 1e6,
            entropy_bound_ratio=_entropy_bound_ratio(x, spec, len(pickled)),
        )


def _entropy_bound_ratio(x: torch.Tensor, spec: CodecSpec, pickle_bytes: int) -> float | None:
    if spec.scheme not in ("int8", "int4"):
        return None
    bits = 8 if spec.scheme == "int8" else 4
    codes, _, _ = quantise_affine(x, axis=default_channel_axis(x.shape), bits=bits)
    counts = torch.bincount(codes.reshape(-1).long(), minlength=1 << bits).double()
    p = counts[counts > 0] / codes.numel()
    entropy_bits = float(-(p * p.log2()).sum()) * codes.numel()
    return pickle_bytes / max(entropy_bits / 8, 1.0)


def check_targets(records: Sequence[CodecRecord]) -> list[TargetCheck]:
    """The foundation issue's targets, on ResNet-18's stage outputs (layer1..layer4)."""
    stages = [r for r in records if r.model == "resnet18" and r.layer.startswith("layer")]
    checks: list[TargetCheck] = []

    def by(spec: str) -> list[CodecRecord]:
        return [r for r in stages if r.spec == spec]

    def add(description: str, values: list[float], ok: Callable[[float], bool], fmt: str) -> None:
        if values:
            shown = ", ".join(format(v, fmt) for v in values)
            checks.append(TargetCheck(description, shown, all(ok(v) for v in values)))

    int8, fp16 = by("int8+zstd1"), by("fp16+zstd1")
    if int8:
        # The order-0 entropy of the codes, measured on the same tensors, is the reference: no
        # coder of independent symbols can do better at 8 bits.
        shown = ", ".join(
            f"{r.ratio_vs_pickle:.2f} (entropy bound {r.entropy_bound_ratio or 0:.2f})"
            for r in int8
        )
        checks.append(
            TargetCheck(
                "int8+zstd1 bytes: >= 6x fewer than pickled fp32",
                shown,
                all(r.ratio_vs_pickle >= 6 for r in int8),
            )
        )
    add(
        "int8+zstd1 relative RMS error <= 1 %",
        [100 * r.rel_rmse for r in int8],
        lambda v: v <= 1,
        ".3f",
    )
    add("int8+zstd1 encode >= 400 MB/s", [r.encode_mb_s for r in int8], lambda v: v >= 400, ".0f")
    add("int8+zstd1 decode >= 800 MB/s", [r.decode_mb_s for r in int8], lambda v: v >= 800, ".0f")
    add(
        "fp16+zstd1 bytes: >= 3x fewer than pickled fp32",
        [r.ratio_vs_pickle for r in fp16],
        lambda v: v >= 3,
        ".2f",
    )
    add(
        "fp16+zstd1 relative RMS error <= 1e-3",
        [r.rel_rmse for r in fp16],
        lambda v: v <= 1e-3,
        ".1e",
    )
    lossless = [r for r in stages if CodecSpec.parse(r.spec).lossless]
    if lossless:
        checks.append(
            TargetCheck(
                "lossless specs round-trip bit-exactly",
                f"{sum(r.exact for r in lossless)}/{len(lossless)} exact",
                all(r.exact for r in lossless),
            )
        )
    return checks
