"""Codec benchmark: wire bytes, error and speed of every codec on real activations.

    splitwire bench codec                      # every zoo model, every default codec
    splitwire bench codec --models resnet18 --json
    splitwire bench codec --models zoo:efficientnet_lite0@pretrained --calibration-data skimage

Activations come from the zoo models at several depths (:data:`TAPS`), captured with forward
hooks. Every codec is compared with what the reference tools send: the tensor pickled as float32
(``pickle.dumps``), measured in the same run.

Two kinds of input:

* **synthetic** (the default for random weights): one synthetic image, BatchNorm statistics
  calibrated on synthetic images so the activations' scale and sparsity are realistic. Only
  the activation's own error (``rel_rmse``) is measured: with random weights no output figure
  would mean anything about a task.
* **photos** (``--calibration-data skimage|DIR``, the default for trained weights such as
  ``zoo:efficientnet_lite0@pretrained``): ``count`` real photo crops, preprocessed as the weights
  expect. Each tap's activation is encoded frame by frame (batch 1, as the edge sends it) and the
  rest of the network runs on the decoded activation (the partitioner's tail at that cut, or the
  whole model with the tap's output replaced where no single-tensor cut matches). The model's
  output is compared with its uncompressed output (:func:`splitwire.partitioner.accuracy.
  task_metrics`: ``rel``, and for classifiers ``kl``, ``top1``, ``top5``), next to the camera
  frames sent as JPEG q75 instead (mean bytes per frame, and the model's output on the decoded
  frames). Wire bytes are means over the frames; speeds are measured on the first frame.
"""

from __future__ import annotations

import logging
import pickle
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import torch

from splitwire.errors import SplitwireError
from splitwire.partitioner.accuracy import TaskMetrics, task_metrics
from splitwire.partitioner.calibration import calibrate_batchnorm, synthetic_images
from splitwire.partitioner.models import load_model
from splitwire.partitioner.models.spec import parse_spec
from splitwire.partitioner.plan_file import IMAGENET, IMAGENET_GREY, Preprocess
from splitwire.protocol import CodecSpec, decode, encode
from splitwire.protocol.quantise import default_channel_axis, quantise_affine
from splitwire.protocol.wire import header_to_proto

if TYPE_CHECKING:
    from splitwire.partitioner.capture import CapturedGraph
    from splitwire.partitioner.cuts import Cut

logger = logging.getLogger(__name__)

# Where to tap each zoo model: module paths whose outputs are the activations measured.
TAPS: dict[str, tuple[str, ...]] = {
    "resnet18": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
    "mobilenet_v2": ("features.3", "features.6", "features.13", "features.17"),
    "vit_tiny": ("blocks.3", "blocks.7", "blocks.11"),
    "unet_small": ("enc2", "mid", "dec2"),
    # After the stem, after blocks 2, 5, 10 and 15, and the head conv (its ReLU6).
    "efficientnet_lite0": (
        "_relu0",
        "_blocks.2",
        "_blocks.5",
        "_blocks.10",
        "_blocks.15",
        "_relu1",
    ),
}
SYNTHETIC = "synthetic"  # --calibration-data: one synthetic image (the random-weight default)
PHOTOS_DEFAULT = "skimage"  # ... the default for trained weights
DEFAULT_COUNT = 200  # photo crops
JPEG_REFERENCE = "jpeg75"  # what a camera would send instead of an activation
EVAL_BATCH = 25  # frames per forward pass when measuring task metrics
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
    # Photo runs (None / defaults on synthetic input). ``wire_bytes``, ``rel_rmse`` and ``exact``
    # are then over all ``frames`` (bytes: the mean per frame, rounded).
    calibration: str = SYNTHETIC
    frames: int = 1
    trained: bool = False
    task: str | None = None
    # The whole model's output with this activation through the codec, against its output
    # without (``rel``: relative L2 error; ``kl``, ``top1``, ``top5``: classifiers only). With
    # random weights these are output distortion, not a task metric.
    rel: float | None = None
    kl: float | None = None
    top1: float | None = None
    top5: float | None = None
    # The reference: the camera frames sent as JPEG q75 (mean wire bytes per frame) and the
    # model's output on the decoded frames; ratio_vs_jpeg75 = jpeg75_bytes / wire_bytes.
    jpeg75_bytes: float | None = None
    jpeg75_rel: float | None = None
    jpeg75_kl: float | None = None
    jpeg75_top1: float | None = None
    jpeg75_top5: float | None = None
    ratio_vs_jpeg75: float | None = None

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
    scope: str = "ResNet-18 stage outputs, one thread"


@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark: ``label`` as records name it, ``spec`` as loaded, ``zoo`` its taps."""

    label: str
    spec: str
    zoo: str

    @property
    def trained(self) -> bool:
        """Whether the spec supplies weights (``@pretrained`` or a state-dict file)."""
        return parse_spec(self.spec).weights is not None


def resolve_model(text: str) -> BenchModel:
    """A zoo name (``resnet18``) or a zoo spec (``zoo:efficientnet_lite0@pretrained``).

    Raises:
        SplitwireError: not a zoo model, or one without activation taps.
    """
    spec = text if any(ch in text for ch in ":?@") else f"zoo:{text}"
    parsed = parse_spec(spec)
    if parsed.kind != "zoo" or parsed.target not in TAPS:
        raise SplitwireError(
            f"no activation taps for {text!r}; expected a zoo model among {list(TAPS)}, by name "
            "or as a spec such as zoo:efficientnet_lite0@pretrained"
        )
    plain = not parsed.options and parsed.weights is None
    return BenchModel(label=parsed.target if plain else text, spec=spec, zoo=parsed.target)


def _hooked(
    module: torch.nn.Module, paths: Sequence[str], captured: dict[str, torch.Tensor]
) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    for path in paths:

        def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor, path: str = path) -> None:
            captured[path] = out.detach().clone()

        handles.append(module.get_submodule(path).register_forward_hook(hook))
    return handles


def capture_activations(model: str, *, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Outputs of the model's taps for one synthetic image, after BatchNorm calibration.

    ``model`` is a zoo name or spec (:func:`resolve_model`); trained weights keep their
    BatchNorm statistics.
    """
    which = resolve_model(model)
    loaded = load_model(which.spec)
    if loaded.input_shape is None:
        raise ValueError(f"{which.spec} has no example input shape")
    module = loaded.module
    if not loaded.trained:
        calibrate_batchnorm(module, synthetic_images(16, loaded.input_shape[1:], seed=seed + 1))
    captured: dict[str, torch.Tensor] = {}
    handles = _hooked(module, TAPS[which.zoo], captured)
    try:
        with torch.no_grad():
            module(synthetic_images(1, loaded.input_shape[1:], seed=seed))
    finally:
        for handle in handles:
            handle.remove()
    return [(path, captured[path]) for path in TAPS[which.zoo]]


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


class _Outputs:
    """A model's outputs on the frames seen so far, against its uncompressed outputs."""

    def __init__(self, task: str | None) -> None:
        self.classifier = task == "classification"
        self.task = task if self.classifier else None
        self.reference: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.num = self.den = 0.0

    def add(self, reference: torch.Tensor, output: torch.Tensor) -> None:
        if self.classifier:  # (N, K) logits: kept for KL and top-k
            self.reference.append(reference)
            self.outputs.append(output)
        else:  # possibly large (segmentation maps): only the relative error
            self.num += float((output.float() - reference.float()).pow(2).sum())
            self.den += float(reference.float().pow(2).sum())

    def metrics(self) -> TaskMetrics:
        if self.classifier:
            ref, out = torch.cat(self.reference), torch.cat(self.outputs)
            return task_metrics([ref], [out], task=self.task)
        return TaskMetrics(rel=(self.num / (self.den or 1.0)) ** 0.5)


class _Crossing:
    """Per-frame encode + decode of one activation under one codec, with running totals."""

    def __init__(self) -> None:
        self.bytes = 0
        self.frames = 0
        self.num = self.den = 0.0
        self.exact = True

    def roundtrip(self, x: torch.Tensor, spec: CodecSpec) -> torch.Tensor:
        decoded = []
        for frame in x.split(1):  # batch 1: what the edge sends per camera frame
            enc = encode(frame, spec)
            y = decode(enc.header, enc.payload)
            self.bytes += len(enc.payload) + header_to_proto(enc.header).ByteSize()
            decoded.append(y)
        y = torch.cat(decoded)
        if y.is_floating_point():
            self.num += float((x.float() - y.float()).pow(2).sum())
            self.den += float(x.float().pow(2).sum())
            self.exact = self.exact and torch.equal(x.view(torch.int32), y.view(torch.int32))
        else:
            self.exact = self.exact and torch.equal(x, y)
        self.frames += x.shape[0]
        return y

    @property
    def mean_bytes(self) -> float:
        return self.bytes / max(self.frames, 1)

    @property
    def rel_rmse(self) -> float:
        return (self.num / (self.den or 1.0)) ** 0.5


def _first_output(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise SplitwireError(f"model output {type(out).__name__}: expected a tensor or a tuple")


def _tail_after(graph: CapturedGraph, cuts: Sequence[Cut], path: str) -> torch.nn.Module | None:
    """The partitioner's tail after module ``path``: the last single-tensor cut inside it."""
    from splitwire.partitioner.split import split

    inside = [
        c
        for c in cuts
        if len(c.crossing) == 1 and (c.name == path or c.name.startswith(path + "."))
    ]
    if not inside:
        return None
    return split(graph, max(inside, key=lambda c: c.index)).tail


def measure_on_photos(
    model: str,
    specs: Sequence[str],
    *,
    source: str,
    count: int = DEFAULT_COUNT,
    repeats: int,
    layers: Sequence[str] | None = None,
    eval_threads: int | None = None,
    batch: int = EVAL_BATCH,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[CodecRecord]:
    """Every spec at every tap of ``model`` on ``count`` photo crops, in task terms.

    See the module docstring. Forward passes run with ``eval_threads`` torch threads (default:
    the current number); speeds are timed with the current number.

    Args:
        model: a zoo name or spec (:func:`resolve_model`).
        specs: codecs.
        source: ``"skimage"`` or a directory of photos.
        count: photo crops.
        repeats: timed runs per speed figure (median).
        layers: taps to measure (default: all of ``TAPS``).
        progress: called with (steps done, steps in all) after each batch of frames.

    Raises:
        SplitwireError: unknown model or tap, no image input, or no photos.
    """
    from splitwire.partitioner.capture import capture
    from splitwire.partitioner.cuts import enumerate_cuts
    from splitwire.partitioner.photos import photo_frames

    which = resolve_model(model)
    taps = tuple(layers or TAPS[which.zoo])
    unknown = [t for t in taps if t not in TAPS[which.zoo]]
    if unknown:
        raise SplitwireError(f"{model}: no tap {unknown}; expected some of {TAPS[which.zoo]}")
    if count < 1:
        raise SplitwireError(f"--count must be at least 1, got {count}")
    loaded = load_model(which.spec)
    shape = loaded.input_shape
    if shape is None or len(shape) != 4 or shape[1] not in (1, 3):
        raise SplitwireError(f"{which.spec}: photos need an image input, got shape {shape}")
    _, channels, height, width = shape
    frames = photo_frames(source, count, height=height, width=width, channels=channels, seed=seed)
    prep: Preprocess = loaded.preprocess or (IMAGENET if channels == 3 else IMAGENET_GREY)
    # NHWC runs these convolutions about twice as fast on CPU; the wire still carries NCHW.
    module = loaded.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    timing_threads = torch.get_num_threads()
    torch.set_num_threads(eval_threads or timing_threads)
    try:
        if not loaded.trained:  # random weights: BatchNorm statistics of these photos
            calibrate_batchnorm(module, prep.apply(frames[: min(count, 16)]))
        graph = capture(module, (1, channels, height, width))
        cuts = enumerate_cuts(graph)
        tails = {path: _tail_after(graph, cuts, path) for path in taps}
        parsed = [CodecSpec.parse(s) for s in specs]
        jpeg = CodecSpec.parse(JPEG_REFERENCE)
        jpeg_wire, jpeg_out = _Crossing(), _Outputs(loaded.task)
        wires = {(p, str(s)): _Crossing() for p in taps for s in parsed}
        outs = {(p, str(s)): _Outputs(loaded.task) for p in taps for s in parsed}
        first: dict[str, torch.Tensor] = {}
        done = 0
        with torch.no_grad():
            for start in range(0, count, batch):
                pixels = frames[start : start + batch]
                x = prep.apply(pixels).contiguous(memory_format=torch.channels_last)
                acts: dict[str, torch.Tensor] = {}
                handles = _hooked(module, taps, acts)
                try:
                    ref = _first_output(module(x))
                finally:
                    for handle in handles:
                        handle.remove()
                decoded = prep.apply(jpeg_wire.roundtrip(pixels, jpeg))
                decoded = decoded.contiguous(memory_format=torch.channels_last)
                jpeg_out.add(ref, _first_output(module(decoded)))
                for path in taps:
                    act = acts[path]
                    if start == 0:
                        first[path] = act[:1].clone()
                        tail = tails[path]
                        # The cut must be the tap: the tail on the tap's output gives the model's.
                        if tail is not None and not torch.allclose(
                            _first_output(tail(act)), ref, rtol=1e-3, atol=1e-3
                        ):
                            logger.warning(
                                "%s: no cut matches tap %s; rerunning the model", which.spec, path
                            )
                            tails[path] = None
                    for spec in parsed:
                        key = (path, str(spec))
                        y = wires[key].roundtrip(act, spec)
                        outs[key].add(ref, _run_after(module, tails[path], path, x, y))
                done += pixels.shape[0]
                if progress is not None:
                    progress(done, count)
        jpeg_metrics = jpeg_out.metrics()
    finally:
        torch.set_num_threads(timing_threads)

    records = []
    for path in taps:
        for record in measure(which.label, path, first[path], specs, repeats=repeats):
            key = (path, record.spec)
            wire, metrics = wires[key], outs[key].metrics()
            records.append(
                replace(
                    record,
                    wire_bytes=round(wire.mean_bytes),
                    ratio_vs_pickle=record.pickle_bytes / wire.mean_bytes,
                    rel_rmse=wire.rel_rmse,
                    exact=wire.exact,
                    calibration=str(source),
                    frames=count,
                    trained=loaded.trained,
                    task=loaded.task,
                    rel=metrics.rel,
                    kl=metrics.kl,
                    top1=metrics.top1,
                    top5=metrics.top5,
                    jpeg75_bytes=jpeg_wire.mean_bytes,
                    jpeg75_rel=jpeg_metrics.rel,
                    jpeg75_kl=jpeg_metrics.kl,
                    jpeg75_top1=jpeg_metrics.top1,
                    jpeg75_top5=jpeg_metrics.top5,
                    ratio_vs_jpeg75=jpeg_wire.mean_bytes / wire.mean_bytes,
                )
            )
    return records


def _run_after(
    module: torch.nn.Module,
    tail: torch.nn.Module | None,
    path: str,
    x: torch.Tensor,
    activation: torch.Tensor,
) -> torch.Tensor:
    """The model's output when ``path`` outputs ``activation``: its tail, else the whole model
    with that output replaced (skip connections from before ``path`` then stay uncompressed)."""
    if activation.dim() == 4:
        activation = activation.contiguous(memory_format=torch.channels_last)
    if tail is not None:
        return _first_output(tail(activation))
    handle = module.get_submodule(path).register_forward_hook(lambda _m, _i, _o: activation)
    try:
        return _first_output(module(x))
    finally:
        handle.remove()


def _entropy_bound_ratio(x: torch.Tensor, spec: CodecSpec, pickle_bytes: int) -> float | None:
    if spec.scheme not in ("int8", "int4"):
        return None
    bits = 8 if spec.scheme == "int8" else 4
    codes, _, _, _ = quantise_affine(x, axis=default_channel_axis(x.shape), bits=bits)
    counts = torch.bincount(codes.reshape(-1).long(), minlength=1 << bits).double()
    p = counts[counts > 0] / codes.numel()
    entropy_bits = float(-(p * p.log2()).sum()) * codes.numel()
    return pickle_bytes / max(entropy_bits / 8, 1.0)


def check_targets(records: Sequence[CodecRecord]) -> list[TargetCheck]:
    """The foundation issue's targets, on ResNet-18's stage outputs (layer1..layer4), then the
    task targets of trained classifiers on photos (:func:`check_task_targets`)."""
    stages = [
        r
        for r in records
        if r.model == "resnet18" and r.layer.startswith("layer") and r.calibration == SYNTHETIC
    ]
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
    return checks + check_task_targets(records)


def check_task_targets(records: Sequence[CodecRecord]) -> list[TargetCheck]:
    """The task targets, for every trained classifier measured on photos.

    * ``int8+zstd1`` at every tap: top-1 agreement >= 0.99 and KL <= 1e-4;
    * at least one (tap, codec) that sends no more than JPEG q75 with a KL at least 10x lower.
    """
    checks: list[TargetCheck] = []
    models = dict.fromkeys(r.model for r in records if r.trained and r.top1 is not None)
    for model in models:
        mine = [r for r in records if r.model == model and r.top1 is not None]
        ref = mine[0]
        scope = (
            f"{model}, {ref.frames} photo crops ({ref.calibration}); JPEG q75: "
            f"{ref.jpeg75_bytes or 0:.0f} B/frame, KL {ref.jpeg75_kl or 0:.2e}, "
            f"top-1 {ref.jpeg75_top1 or 0:.3f}"
        )
        int8 = [r for r in mine if r.spec == "int8+zstd1"]
        if int8:
            checks.append(
                TargetCheck(
                    "int8+zstd1 top-1 agreement >= 0.99 at every layer",
                    ", ".join(f"{r.layer} {r.top1:.3f}" for r in int8),
                    all((r.top1 or 0) >= 0.99 for r in int8),
                    scope,
                )
            )
            checks.append(
                TargetCheck(
                    "int8+zstd1 KL <= 1e-4 at every layer",
                    ", ".join(f"{r.layer} {r.kl:.1e}" for r in int8),
                    all((r.kl if r.kl is not None else 1.0) <= 1e-4 for r in int8),
                    scope,
                )
            )
        jpeg_kl = ref.jpeg75_kl if ref.jpeg75_kl is not None else 0.0
        jpeg_bytes = ref.jpeg75_bytes or 0.0

        def wins(r: CodecRecord, jpeg_kl: float = jpeg_kl, jpeg_bytes: float = jpeg_bytes) -> bool:
            return r.wire_bytes <= jpeg_bytes and (r.kl or 0.0) * 10 <= jpeg_kl

        winners = [r for r in mine if wins(r)]
        affordable = sorted(
            (r for r in mine if r.wire_bytes <= jpeg_bytes), key=lambda r: r.kl or 0
        )
        shown = winners or affordable[:1]
        measured = (
            "; ".join(
                f"{r.layer} {r.spec}: {r.wire_bytes} B ({r.ratio_vs_jpeg75 or 0:.2f}x fewer), "
                f"KL {r.kl or 0:.1e} ({jpeg_kl / max(r.kl or 0, 1e-30):.0f}x lower)"
                for r in shown
            )
            if shown
            else f"no layer and codec sends <= {jpeg_bytes:.0f} B"
        )
        checks.append(
            TargetCheck(
                "some layer sends <= JPEG q75 bytes with KL >= 10x lower than JPEG q75's",
                measured,
                bool(winners),
                scope,
            )
        )
    return checks
