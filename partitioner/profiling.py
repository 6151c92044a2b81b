"""Device profiles: how long each node of a captured model takes on this machine.

    splitwire profile --model zoo:resnet50 --input-shape 1,3,224,224 --threads 1 --out edge.yaml

The planner predicts a half's latency as ``sum(node ms on that side) + call_overhead_ms``, so a
profile must make that sum agree with what the real exported halves take. Measuring works in
three interleaved streams, ``repeats`` passes each after ``warmup`` passes (medians are robust to
the odd pass a busy machine slows down; every node also records its IQR):

1. *per node*: a :class:`torch.fx.Interpreter` that brackets each compute node's call with
   ``time.perf_counter_ns``. Arguments are fetched from the interpreter's environment outside the
   bracket, so the interpreter's own bookkeeping stays out of the numbers;
2. *whole graph*: ``graph.module(x)``, the real generated code (``total_ms``);
3. *per call*: an exported identity with the same input signature, i.e. what one call of an
   exported module costs before any node runs (pytree flattening, input guards):
   ``call_overhead_ms``. It is timed right after a full pass, as in service where other work
   runs between calls: ~0.3 ms on a 2-core Xeon, against ~0.07 ms in a tight loop.

Calibration: the bracketed calls still miss the generated code's own per-line work (attribute
look-ups, non-compute nodes such as ``sym_size``) and pay a little timer cost, so the raw sum
differs from the real graph by a few per cent. Each node is rescaled by one factor::

    k  = (total_ms - call_overhead_ms) / sum(raw node ms)
    ms = raw ms × k

e.g. ResNet-50 at 224², one thread: raw sum 155.5 ms, total 163.4 ms, overhead 0.33 ms, so
k = (163.4 - 0.33) / 155.5 = 1.049,

after which ``sum(node ms) + call_overhead_ms == total_ms``. One factor rather than a fixed
amount per node, because the missing time is no per-node constant: it grows with tensor size
(ResNet-18: ~14 µs per node at 32², ~44 µs at 224², far more than a line of generated Python),
like the ops' own times. ``interpreted_ms`` keeps the raw sum, so ``k`` can be recovered; a ``k``
far from 1 means the machine was busy during the passes (a warning is logged).

Codecs are timed with :func:`protocol.encode` / :func:`protocol.decode` on one thread, on the
outputs of three nodes a quarter, half and three quarters of the way through the graph, for an
input from :func:`partitioner.calibration.synthetic_images` (real activations compress
differently from noise). Speeds are in MB/s (10**6 bytes) of float32-equivalent data.

:meth:`Profile.scaled` *emulates* a slower device by multiplying times (dividing codec speeds);
it is a guess, not a measurement, and the profile says so (``device.emulated``).
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import fx, nn
from tqdm import tqdm

from partitioner.calibration import synthetic_images
from partitioner.capture import CapturedGraph, capture, example_input
from partitioner.cuts import compute_nodes
from partitioner.device import DeviceInfo, current_device, torch_threads
from partitioner.errors import ProfileError
from protocol import CodecSpec, decode, encode

__all__ = [
    "DEFAULT_PROFILE_CODECS",
    "SCHEMA",
    "CodecTiming",
    "NodeTiming",
    "Profile",
    "check_profile_matches",
    "profile_graph",
]

logger = logging.getLogger(__name__)

SCHEMA = 1
DEFAULT_PROFILE_CODECS = (
    "fp32",
    "fp32+zstd1",
    "fp16",
    "fp16+zstd1",
    "bf16",
    "int8",
    "int8+zstd1",
    "int4",
    "int4+zstd1",
)
# Codec timing: a warm-up call, then the median of this many, per activation.
_CODEC_REPEATS = 5
# Calibration factors outside this range mean the passes saw very different machines.
_PLAUSIBLE_CALIBRATION = (0.8, 1.25)


@dataclass(frozen=True)
class NodeTiming:
    """One compute node's latency at the profile's input shape.

    Attributes:
        name: the node's name in the captured graph (``conv2d_3``).
        op: what it calls (``aten.conv2d.default``).
        ms: calibrated median latency in milliseconds.
        out_bytes: size of its output(s) in bytes.
        iqr_ms: interquartile range of the samples, calibrated like ``ms`` (noise indicator).
    """

    name: str
    op: str
    ms: float
    out_bytes: int
    iqr_ms: float = 0.0

    def __post_init__(self) -> None:
        where = f"node {self.name!r}"
        _require(isinstance(self.name, str) and bool(self.name), where, "name", self.name)
        _require(isinstance(self.op, str), where, "op", self.op)
        _require(_is_nonneg(self.ms), where, "ms", self.ms, "a finite number >= 0")
        _require(_is_count(self.out_bytes), where, "out_bytes", self.out_bytes, "an int >= 0")
        _require(_is_nonneg(self.iqr_ms), where, "iqr_ms", self.iqr_ms, "a finite number >= 0")


@dataclass(frozen=True)
class CodecTiming:
    """This device's speed for one codec, on one thread.

    Attributes:
        spec: the codec, canonical text (``int8+zstd1``).
        encode_mb_s / decode_mb_s: MB/s (10**6 bytes) of float32-equivalent activations.
    """

    spec: str
    encode_mb_s: float
    decode_mb_s: float

    def __post_init__(self) -> None:
        where = f"codec {self.spec!r}"
        _require(isinstance(self.spec, str), where, "spec", self.spec)
        for key in ("encode_mb_s", "decode_mb_s"):
            value = getattr(self, key)
            _require(_is_nonneg(value) and value > 0, where, key, value, "a finite number > 0")


@dataclass(frozen=True)
class Profile:
    """Per-node latencies of one model at one input shape on one device.

    Attributes:
        schema: file format version (:data:`SCHEMA`).
        model_spec / model_hash: the model measured; the planner refuses profiles of another.
        input_shape: the input shape measured, batch included.
        device: the machine, and whether the numbers are emulated.
        nodes: one timing per compute node, in graph order.
        codecs: codec speeds on this machine.
        call_overhead_ms: fixed cost of one call of an exported module.
        total_ms: median latency of the whole graph; ``sum(ms) + call_overhead_ms`` equals it.
        interpreted_ms: sum of the raw (uncalibrated) node medians.
    """

    schema: int
    model_spec: str
    model_hash: str
    input_shape: tuple[int, ...]
    device: DeviceInfo
    nodes: tuple[NodeTiming, ...]
    codecs: tuple[CodecTiming, ...]
    call_overhead_ms: float
    total_ms: float
    interpreted_ms: float = 0.0

    def __post_init__(self) -> None:
        where = "profile"
        if self.schema != SCHEMA or isinstance(self.schema, bool):
            raise ProfileError(
                f"profile: schema = {self.schema!r}; this splitwire reads schema {SCHEMA}; "
                "re-run `splitwire profile` to write a current profile"
            )
        for key in ("model_spec", "model_hash"):
            value = getattr(self, key)
            _require(isinstance(value, str) and bool(value), where, key, value, "a string")
        _require(
            isinstance(self.input_shape, tuple)
            and len(self.input_shape) > 0
            and all(_is_count(d) and d > 0 for d in self.input_shape),
            where,
            "input_shape",
            self.input_shape,
            "a tuple of positive ints",
        )
        _require(isinstance(self.device, DeviceInfo), where, "device", self.device)
        _require(
            isinstance(self.nodes, tuple) and all(isinstance(n, NodeTiming) for n in self.nodes),
            where,
            "nodes",
            self.nodes,
            "a tuple of NodeTiming",
        )
        _require(
            isinstance(self.codecs, tuple) and all(isinstance(c, CodecTiming) for c in self.codecs),
            where,
            "codecs",
            self.codecs,
            "a tuple of CodecTiming",
        )
        for key in ("call_overhead_ms", "total_ms", "interpreted_ms"):
            value = getattr(self, key)
            _require(_is_nonneg(value), where, key, value, "a finite number >= 0")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ProfileError(f"profile: nodes: duplicate node names {dup}")
        specs = [c.spec for c in self.codecs]
        if len(set(specs)) != len(specs):
            raise ProfileError(f"profile: codecs: duplicate codec specs in {specs}")

    @cached_property
    def _by_name(self) -> dict[str, NodeTiming]:
        return {n.name: n for n in self.nodes}

    def node_ms(self, name: str) -> float:
        """The calibrated median latency of one node.

        Args:
            name: a compute node's name in the captured graph.

        Returns:
            Its latency in milliseconds.

        Raises:
            ProfileError: the profile has no node of that name (another model or graph).
        """
        timing = self._by_name.get(name)
        if timing is None:
            raise ProfileError(
                f"profile of {self.model_spec} has no node {name!r}; it was taken for another "
                "graph; re-run `splitwire profile`"
            )
        return timing.ms

    def codec(self, spec: str | CodecSpec) -> CodecTiming:
        """This device's speed for one codec.

        Args:
            spec: the codec, in any spelling :meth:`CodecSpec.parse` accepts.

        Returns:
            Its timing.

        Raises:
            ProfileError: the codec was not profiled.
            CodecSpecError: ``spec`` does not parse.
        """
        key = str(CodecSpec.parse(spec))
        for timing in self.codecs:
            if timing.spec == key:
                return timing
        profiled = ", ".join(c.spec for c in self.codecs) or "none"
        raise ProfileError(
            f"profile has no timing for codec {key!r} (profiled: {profiled}); "
            f"re-run `splitwire profile` with that codec"
        )

    def scaled(self, k: float) -> Profile:
        """Emulate a device ``k`` times slower (``k < 1``: faster). **An emulation, not a
        measurement**: every node and the call overhead take ``k``× as long, codecs run ``k``×
        slower, ``device.slowdown`` is multiplied by ``k`` and ``device.emulated`` set. Real
        devices do not slow down uniformly (memory-bound layers scale differently from
        compute-bound ones); profile the real device when you can.

        Args:
            k: the slowdown factor, e.g. 4 for a device four times slower.

        Returns:
            A new, emulated profile; this one is unchanged.

        Raises:
            ProfileError: ``k`` is not a finite number > 0.
        """
        if not _is_nonneg(k) or k <= 0:
            raise ProfileError(f"slowdown {k!r}: expected a finite number > 0 (e.g. 4)")
        nodes = tuple(replace(n, ms=n.ms * k, iqr_ms=n.iqr_ms * k) for n in self.nodes)
        codecs = tuple(
            replace(c, encode_mb_s=c.encode_mb_s / k, decode_mb_s=c.decode_mb_s / k)
            for c in self.codecs
        )
        device = replace(self.device, slowdown=self.device.slowdown * k, emulated=True)
        return replace(
            self,
            device=device,
            nodes=nodes,
            codecs=codecs,
            call_overhead_ms=self.call_overhead_ms * k,
            total_ms=self.total_ms * k,
            interpreted_ms=self.interpreted_ms * k,
        )

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain YAML/JSON-able data (the file format)."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def save(self, path: str | Path) -> Path:
        """Write the profile as YAML to ``path`` (parent directories created).

        Returns:
            The path written.

        Raises:
            ProfileError: the file cannot be written (the OS error says why).
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"cannot write profile {path}: {exc.strerror or exc}") from exc
        return path

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile written by :meth:`save`, validating every field.

        Raises:
            ProfileError: the file is missing, not YAML, of another schema, or a key is missing,
                unknown or of the wrong type (the message names the key and the value).
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile {path} is not valid YAML: {exc}") from exc
        try:
            return _profile_from_dict(data)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from exc


def check_profile_matches(
    profile: Profile,
    *,
    model_hash: str,
    input_shape: Sequence[int],
    node_names: Sequence[str],
) -> None:
    """Refuse a profile taken for another model, input shape or graph.

    Args:
        profile: the profile to use.
        model_hash: :func:`partitioner.models.model_hash` of the model being planned.
        input_shape: the input shape being planned.
        node_names: the compute nodes of its captured graph, in order.

    Raises:
        ProfileError: the hash, the shape or the node names differ; the message says how.
    """
    rerun = "re-run `splitwire profile` for this model and shape"
    if profile.model_hash != model_hash:
        raise ProfileError(
            f"profile was taken for model {profile.model_hash[:12]} ({profile.model_spec}) but "
            f"the model is {model_hash[:12]}; {rerun}"
        )
    shape = tuple(int(d) for d in input_shape)
    if profile.input_shape != shape:
        raise ProfileError(
            f"profile was taken at input shape {_shape_text(profile.input_shape)} but the plan "
            f"is for {_shape_text(shape)}; {rerun}"
        )
    profiled = [n.name for n in profile.nodes]
    if profiled != list(node_names):
        missing = [n for n in node_names if n not in profile._by_name]
        extra = sorted(set(profiled) - set(node_names))
        detail = (
            f"missing {_few(missing)}, unexpected {_few(extra)}"
            if missing or extra
            else "same nodes in a different order"
        )
        raise ProfileError(
            f"profile of {profile.model_spec} lists {len(profiled)} compute nodes but the graph "
            f"has {len(node_names)} ({detail}); the graph was captured differently; {rerun}"
        )


def profile_graph(
    graph: CapturedGraph,
    *,
    model_spec: str,
    model_hash: str,
    threads: int,
    warmup: int = 3,
    repeats: int = 20,
    codecs: Sequence[str] = DEFAULT_PROFILE_CODECS,
    progress: bool = False,
) -> Profile:
    """Measure every compute node of ``graph`` at its input shape on this machine.

    See the module docstring for what is measured and how node times are calibrated.

    Args:
        graph: the captured model (:func:`partitioner.capture.capture`).
        model_spec / model_hash: recorded in the profile so the planner can match it.
        threads: torch intra-op threads for the node timings (the previous count is restored).
        warmup: passes run before measuring (first calls allocate and pick kernels).
        repeats: measured passes; each node's time is the median over them.
        codecs: codec specs to time (one thread).
        progress: show a progress bar on stderr (only when it is a terminal).

    Returns:
        The profile of this (non-emulated) device.

    Raises:
        ProfileError: ``threads``, ``warmup`` or ``repeats`` is out of range.
        CodecSpecError: a codec spec does not parse.
    """
    if threads < 1 or warmup < 0 or repeats < 1:
        raise ProfileError(
            f"threads={threads}, warmup={warmup}, repeats={repeats}: expected threads >= 1, "
            "warmup >= 0 and repeats >= 1"
        )
    specs = [CodecSpec.parse(c) for c in codecs]
    names = compute_nodes(graph)
    x = _profile_input(graph.input_shape)
    identity = _identity_like(graph)
    bar = tqdm(
        total=warmup + repeats + len(specs),
        desc="profiling",
        unit="step",
        file=sys.stderr,
        disable=None if progress else True,  # None: hide when stderr is not a terminal
    )
    with bar, torch.no_grad():
        with torch_threads(threads):
            timer = _NodeTimer(graph.module, names, keep=_codec_sources(graph.module, names))
            samples = _measure(graph.module, identity, timer, x, warmup, repeats, bar)
        codec_timings = []
        activations = list(timer.kept.values())
        if specs and not activations:
            logger.warning("the graph has no float activations: no codec is timed")
        # Per-thread speeds: zstd compresses on one thread, and quantising is cheap next to it.
        with torch_threads(1):
            for spec in specs if activations else ():
                codec_timings.append(_time_codec(spec, activations))
                bar.update(1)
    device = current_device(threads=threads)
    total = statistics.median(samples.total)
    overhead = max(0.0, statistics.median(samples.identity))
    nodes, raw_sum = _calibrated_nodes(graph.module, names, timer, total - overhead)
    return Profile(
        schema=SCHEMA,
        model_spec=model_spec,
        model_hash=model_hash,
        input_shape=tuple(graph.input_shape),
        device=device,
        nodes=nodes,
        codecs=tuple(codec_timings),
        call_overhead_ms=overhead,
        total_ms=total,
        interpreted_ms=raw_sum,
    )


# --- measuring -----------------------------------------------------------------------------


class _NodeTimer(fx.Interpreter):
    """Runs the graph, timing each compute node's call; keeps copies of a few outputs."""

    def __init__(self, module: fx.GraphModule, names: Sequence[str], *, keep: set[str]) -> None:
        super().__init__(module)
        self.samples: dict[str, list[int]] = {name: [] for name in names}
        self.out_bytes: dict[str, int] = {}
        self.keep = keep
        self.kept: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        samples = self.samples.get(n.name)
        if samples is None:
            return super().run_node(n)
        # Fetch arguments outside the bracket: the generated code pays nothing like it.
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        call = getattr(self, n.op)
        start = time.perf_counter_ns()
        out = call(n.target, args, kwargs)
        samples.append(time.perf_counter_ns() - start)
        if n.name not in self.out_bytes:
            self.out_bytes[n.name] = _nbytes(out)
        if (
            n.name in self.keep
            and n.name not in self.kept
            and isinstance(out, torch.Tensor)
            and out.is_floating_point()
        ):
            # A copy: a later in-place op (relu_) would otherwise change the kept tensor.
            self.kept[n.name] = out.detach().clone()
        return out


@dataclass
class _Samples:
    total: list[float] = field(default_factory=list)  # ms of graph.module(x)
    identity: list[float] = field(default_factory=list)  # ms of an exported identity


def _measure(
    module: fx.GraphModule,
    identity: nn.Module,
    timer: _NodeTimer,
    x: torch.Tensor,
    warmup: int,
    repeats: int,
    bar: tqdm[Any],
) -> _Samples:
    # The three streams are interleaved pass by pass, so a burst of load from another process
    # hits all of them alike instead of skewing one.
    samples = _Samples()
    for i in range(warmup + repeats):
        if i == warmup:
            for node_samples in timer.samples.values():
                node_samples.clear()
            samples = _Samples()
        timer.run(x)
        start = time.perf_counter_ns()
        module(x)
        samples.total.append((time.perf_counter_ns() - start) / 1e6)
        start = time.perf_counter_ns()
        identity(x)
        samples.identity.append((time.perf_counter_ns() - start) / 1e6)
        bar.update(1)
    return samples


def _calibrated_nodes(
    module: fx.GraphModule, names: Sequence[str], timer: _NodeTimer, target_ms: float
) -> tuple[tuple[NodeTiming, ...], float]:
    raw = {name: [s / 1e6 for s in timer.samples[name]] for name in names}
    medians = {name: statistics.median(v) for name, v in raw.items()}
    raw_sum = sum(medians.values())
    k = target_ms / raw_sum if raw_sum > 0 and target_ms > 0 else 1.0
    low, high = _PLAUSIBLE_CALIBRATION
    if not low <= k <= high:
        logger.warning(
            "node times needed a calibration factor of %.2f to match the whole graph "
            "(%.2f ms interpreted vs %.2f ms real): the machine was probably busy; "
            "re-run with more --repeats on an idle machine",
            k,
            raw_sum,
            target_ms,
        )
    by_name = {n.name: n for n in module.graph.nodes}
    nodes = tuple(
        NodeTiming(
            name=name,
            op=_op_name(by_name[name]),
            ms=medians[name] * k,
            out_bytes=timer.out_bytes.get(name, 0),
            iqr_ms=_iqr(raw[name]) * k,
        )
        for name in names
    )
    return nodes, raw_sum


def _time_codec(spec: CodecSpec, activations: Sequence[torch.Tensor]) -> CodecTiming:
    encode_s = decode_s = 0.0
    fp32_bytes = 0
    for act in activations:
        encoded = encode(act, spec)  # warm-up (and the payload decode is timed on)
        decode(encoded.header, encoded.payload)
        encode_s += _median_s(partial(encode, act, spec))
        decode_s += _median_s(partial(decode, encoded.header, encoded.payload))
        fp32_bytes += act.numel() * 4
    mb = fp32_bytes / 1e6
    # A timer tick of 0 (tiny tensors) would divide by zero; one nanosecond is the floor.
    return CodecTiming(str(spec), mb / max(encode_s, 1e-9), mb / max(decode_s, 1e-9))


def _median_s(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(_CODEC_REPEATS):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e9)
    return statistics.median(times)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _identity_like(graph: CapturedGraph) -> nn.Module:
    """An identity captured the way ``graph`` was: calling it costs exactly the per-call
    overhead (input flattening, guards) and no compute."""
    if graph.method == "export":
        return capture(_Identity(), graph.input_shape).module
    return fx.symbolic_trace(_Identity())


def _profile_input(shape: tuple[int, ...]) -> torch.Tensor:
    # Image-like inputs get a synthetic image, so kept activations have realistic statistics
    # for the codecs (sparsity after ReLU, smooth regions); anything else gets noise.
    if len(shape) == 4:
        return synthetic_images(shape[0], shape[1:])
    return example_input(shape)


def _codec_sources(module: fx.GraphModule, names: Sequence[str]) -> set[str]:
    """Three nodes a quarter, half and three quarters through the graph with float outputs."""
    by_name = {n.name: n for n in module.graph.nodes}
    floats = [
        name
        for name in names
        if isinstance(value := by_name[name].meta.get("val"), torch.Tensor)
        and value.is_floating_point()
    ] or list(names)  # no metadata (torch.fx captures): decided when the node runs
    return {floats[len(floats) * q // 4] for q in (1, 2, 3)} if floats else set()


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    return 0


def _op_name(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, str):
        return f"{node.op}:{target}"
    if isinstance(target, torch._ops.OpOverload):
        return str(target)  # aten.conv2d.default
    return str(getattr(target, "__qualname__", target))


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return max(0.0, q3 - q1)


# --- validation and (de)serialisation -------------------------------------------------------


def _is_nonneg(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _require(ok: bool, where: str, key: str, value: object, expected: str = "") -> None:
    if not ok:
        wanted = f"; expected {expected}" if expected else ""
        raise ProfileError(f"{where}: {key} = {value!r}{wanted}")


def _shape_text(shape: Sequence[int]) -> str:
    return ",".join(str(d) for d in shape)


def _few(names: Sequence[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _Reader:
    """Typed access to one YAML mapping; errors name the key path and the value."""

    def __init__(
        self, data: object, where: str, keys: Sequence[str], optional: Sequence[str] = ()
    ) -> None:
        if not isinstance(data, dict):
            raise ProfileError(f"{where}: expected a mapping, got {data!r}")
        unknown = sorted(set(map(str, data)) - set(keys) - set(optional))
        if unknown:
            raise ProfileError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(keys)}")
        for key in keys:
            if key not in data:
                raise ProfileError(f"{where}: missing key {key!r}")
        self.data: Mapping[str, object] = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], expected: str) -> Any:
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ProfileError(f"{self.where}: {key} = {value!r}; expected {expected}")
        return value

    def text(self, key: str) -> str:
        value: str = self.get(key, str, "a string")
        return value

    def integer(self, key: str) -> int:
        value: int = self.get(key, int, "an integer")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        if default is not None and key not in self.data:
            return default
        return float(self.get(key, (int, float), "a number"))

    def items(self, key: str) -> list[Any]:
        value: list[Any] = self.get(key, list, "a list")
        return value


_NODE_KEYS = ("name", "op", "ms", "out_bytes")
_CODEC_KEYS = ("spec", "encode_mb_s", "decode_mb_s")
_DEVICE_KEYS = ("description", "threads", "torch_version", "slowdown", "emulated")
_PROFILE_KEYS = (
    "schema",
    "model_spec",
    "model_hash",
    "input_shape",
    "device",
    "nodes",
    "codecs",
    "call_overhead_ms",
    "total_ms",
)


def _profile_from_dict(data: object) -> Profile:
    if isinstance(data, dict) and "schema" in data and data["schema"] != SCHEMA:
        # Checked first: a future schema's other keys would only produce confusing errors.
        raise ProfileError(
            f"schema = {data['schema']!r}; this splitwire reads schema {SCHEMA}; "
            "re-run `splitwire profile`"
        )
    top = _Reader(data, "profile", _PROFILE_KEYS, optional=("interpreted_ms",))
    shape = top.items("input_shape")
    if not shape or not all(_is_count(d) and d > 0 for d in shape):
        raise ProfileError(f"profile: input_shape = {shape!r}; expected a list of positive ints")
    dev = _Reader(top.data["device"], "profile: device", _DEVICE_KEYS)
    device = DeviceInfo(
        description=dev.text("description"),
        threads=dev.integer("threads"),
        torch_version=dev.text("torch_version"),
        slowdown=dev.number("slowdown"),
        emulated=dev.get("emulated", bool, "true or false"),
    )
    nodes = []
    for i, raw in enumerate(top.items("nodes")):
        item = _Reader(raw, f"profile: nodes[{i}]", _NODE_KEYS, optional=("iqr_ms",))
        nodes.append(
            NodeTiming(
                name=item.text("name"),
                op=item.text("op"),
                ms=item.number("ms"),
                out_bytes=item.integer("out_bytes"),
                iqr_ms=item.number("iqr_ms", default=0.0),
            )
        )
    codecs = []
    for i, raw in enumerate(top.items("codecs")):
        item = _Reader(raw, f"profile: codecs[{i}]", _CODEC_KEYS)
        codecs.append(
            CodecTiming(item.text("spec"), item.number("encode_mb_s"), item.number("decode_mb_s"))
        )
    return Profile(
        schema=top.integer("schema"),
        model_spec=top.text("model_spec"),
        model_hash=top.text("model_hash"),
        input_shape=tuple(shape),
        device=device,
        nodes=tuple(nodes),
        codecs=tuple(codecs),
        call_overhead_ms=top.number("call_overhead_ms"),
        total_ms=top.number("total_ms"),
        interpreted_ms=top.number("interpreted_ms", default=0.0),
    )
