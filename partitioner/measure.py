"""Measure every (cut, codec) pair on calibration inputs: bytes on the wire and accuracy cost.

For each cut the crossing tensors of the calibration inputs are taken from a run of the whole
graph, recorded (:func:`record_reference`, copied where a later in-place op would change them)
or visited as the run computes them (:func:`stream_cuts`): the head computes exactly these
values. They are encoded one frame at a time with the codec as the edge would, decoded, and
fed to the cut's tail as one batch. The tail's outputs are
compared with the model's own in task terms (:mod:`splitwire.partitioner.accuracy`: relative
error, and KL divergence and top-1/top-5 agreement for classifiers, pixel agreement and mIoU for
segmentation); ``accuracy_cost`` is the budget's metric as a cost, with the number of inputs it
rests on and a 95 % interval (``evidence``, ``accuracy_interval``). The planner may measure a
candidate's accuracy on a few inputs first and on the rest later (:func:`cut_samples` on any
slice of the inputs; the figures of both combine exactly, :meth:`MetricSamples.joined`).

Bytes on the wire are the mean encoded size over the first frames, at least
:data:`BYTES_MIN_FRAMES` and then more until the 95 % interval of the mean is within
:data:`BYTES_TOLERANCE` of it (:func:`bytes_settled`), or every calibration frame:
a codec without entropy coding sends the same size for every frame, so it settles at once,
while zstd's sizes follow the content. ``bytes_frames`` says how many frames were encoded.

A codec whose scheme is lossless for every dtype (``fp32``) costs exactly 0 without running the
tail: the split equivalence tests show ``tail(*head(x)) == model(x)`` bit for bit.

Compute times come from the profiles (edge for the head and the encoder, cloud for the decoder
and the tail): ``sum(node ms) + call overhead``. The camera-frame baselines' encode/decode times
(:mod:`splitwire.partitioner.baselines`: the raw uint8 frame and JPEG) are measured here and
multiplied by each profile's slowdown (an emulation, like the profile's).
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import fx

from splitwire.partitioner.accuracy import (
    AccuracyBudget,
    Evidence,
    MetricSamples,
    TaskMetrics,
    task_samples,
)
from splitwire.partitioner.baselines import camera_roundtrip, jpeg_applicable
from splitwire.partitioner.capture import CapturedGraph
from splitwire.partitioner.cost import (
    ALL_IN_CLOUD_JPEG,
    ALL_IN_CLOUD_RAW,
    ALL_ON_EDGE,
    Measurement,
)
from splitwire.partitioner.cuts import CrossingTensor, Cut
from splitwire.partitioner.plan_file import Preprocess
from splitwire.partitioner.profile_format import Profile
from splitwire.protocol import CodecSpec, decode, encode, transport
from splitwire.protocol.header import DTYPES
from splitwire.protocol.wire import header_to_proto

logger = logging.getLogger(__name__)

# Results travel back as the tail service sends them; their size is measured with that codec.
RESULT_CODEC = transport.RESULT_CODEC
# The all-in-cloud raw baseline of a model whose input is no image sends the input as it is
# (an image model's sends the camera frame: ``frame``, see baselines.py).
RAW_CODEC = CodecSpec.parse("fp32")
# A candidate's mean bytes rest on at least this many frames ...
BYTES_MIN_FRAMES = 4
# ... and more, up to every calibration frame, until the 95 % interval of the mean (Student's
# t) is within this share of it: a 5 % error in bytes is at most 5 % of the transfer time,
# below the cost model's own error on real runs (bench e2e: 15 % is the target).
BYTES_TOLERANCE = 0.05
# Student's t, 97.5 % quantile, for 1..29 degrees of freedom (30 and more: 2.0).
_T975 = (
    12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13,
    2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05,
)  # fmt: skip


@dataclass(frozen=True)
class Reference:
    """The model's outputs on the calibration inputs, and every node's value to cut from."""

    inputs: torch.Tensor
    outputs: tuple[torch.Tensor, ...]
    values: dict[str, torch.Tensor]
    result_bytes: int


def record_reference(graph: CapturedGraph, inputs: torch.Tensor, keep: Iterable[str]) -> Reference:
    """Run the whole graph once on ``inputs``, keeping the values of the nodes in ``keep``."""
    wanted = set(keep)
    interpreter = _Keeper(graph.module, wanted)
    with torch.no_grad():
        # Nothing to keep: the generated code, without the interpreter's per-node dispatch.
        result = interpreter.run(inputs) if wanted else graph.module(inputs)
    outputs = tuple(
        t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor)
    )
    result_bytes = _mean_wire_bytes(
        [[o[i : i + 1] for o in outputs] for i in range(len(inputs))], RESULT_CODEC
    )
    return Reference(inputs, outputs, interpreter.kept, round(result_bytes))


def record_crossings(graph: CapturedGraph, inputs: torch.Tensor, keep: Iterable[str]) -> Reference:
    """The values of the nodes in ``keep`` on ``inputs``, running the graph only as far as the
    last of them (no outputs: ``outputs`` is empty and ``result_bytes`` 0)."""
    interpreter = _Keeper(graph.module, set(keep), stop=True)
    with torch.no_grad(), contextlib.suppress(_AllKept):
        interpreter.run(inputs)
    return Reference(inputs, (), interpreter.kept, 0)


# Encoded sizes by (crossing tensor, codec, calibration frame): see :func:`frame_sizes`.
TensorSizes = dict[tuple[str, str, int], int]


def stream_cuts(
    graph: CapturedGraph,
    inputs: torch.Tensor,
    cuts: Sequence[Cut],
    visit: Callable[[Cut, list[torch.Tensor]], None],
) -> None:
    """Run the graph once on ``inputs`` and call ``visit(cut, crossing)`` for each of ``cuts``
    the moment its crossing tensors are all computed (cut 0's is ``inputs``), in graph order;
    the run stops after the last of them.

    Nothing is kept beyond what the run itself holds: a crossing tensor is still live when its
    cut is visited (the tail uses it), so every cut's tail can run on a batch of every input
    without recording any activation first, and one run serves every cut, the deepest last.
    A cut is visited once its whole head has run, so its crossing tensors are what the head
    returns even where a head node changed one in place; they are valid during the call only
    (a later node may change one in place), and ``visit`` must not change them.
    """
    if not cuts:
        return
    order = {node.name: i for i, node in enumerate(graph.module.graph.nodes)}
    ready: dict[str, list[Cut]] = {}
    for cut in cuts:
        known = [t.node for t in cut.crossing if t.node in order]
        if len(known) < len(cut.crossing) or not cut.edge_nodes:  # crosses the input: cut 0
            visit(cut, [crossing_from(inputs, {}, t.node) for t in cut.crossing])
            continue
        ready.setdefault(max([*known, cut.edge_nodes[-1]], key=order.__getitem__), []).append(cut)
    if not ready:
        return
    streamer = _Streamer(graph.module, ready, visit)
    with torch.no_grad(), contextlib.suppress(_AllKept):
        streamer.run(inputs)


def frame_sizes(
    reference: Reference,
    cut: Cut,
    codec: CodecSpec,
    frames: range | None = None,
    *,
    first: int = 0,
    known: TensorSizes | None = None,
) -> list[int]:
    """The encoded size (payload and header) of each calibration frame ``reference`` holds
    (or of those in ``frames``, indices into them) for ``cut`` with ``codec``.

    Each crossing tensor is encoded on its own, as the edge sends it, so its size does not
    depend on the cut: ``known`` (filled in here) keeps each tensor's size by (node, codec,
    calibration frame), the frame being ``first`` + the index into ``reference``, and the cuts
    that share a tensor (a residual block's skip crosses every cut inside the block) encode it
    once. ResNet-50's 176 cuts cross 311 tensors, 175 of them distinct: 340 MB a frame to
    encode per codec without ``known``, 151 MB with it.
    """
    which = range(len(reference.inputs)) if frames is None else frames
    cache: TensorSizes = {} if known is None else known
    spelled = str(codec)
    sizes = [0] * len(which)
    for t in cut.crossing:
        value = crossing_value(reference, t.node)
        for k, i in enumerate(which):
            key = (t.node, spelled, first + i)
            if key not in cache:
                cache[key] = _wire_bytes([value[i : i + 1]], codec)
            sizes[k] += cache[key]
    return sizes


def bytes_settled(sizes: Sequence[int], *, available: int) -> bool:
    """Whether the mean of ``sizes`` (the first frames' encoded sizes) is known well enough:
    every one of the ``available`` frames is in, or at least :data:`BYTES_MIN_FRAMES` are
    and the 95 % interval of their mean is within :data:`BYTES_TOLERANCE` of it."""
    n = len(sizes)
    if n >= available:
        return True
    if n < BYTES_MIN_FRAMES:
        return False
    t = _T975[n - 2] if n - 1 <= len(_T975) else 2.0
    half = t * statistics.stdev(sizes) / math.sqrt(n)
    return half <= BYTES_TOLERANCE * statistics.fmean(sizes)


def measure_cut_bytes(
    cut: Cut,
    codecs: Sequence[CodecSpec],
    sizes: Mapping[CodecSpec, Sequence[int]],
    *,
    result_bytes: int,
    edge: Profile,
    cloud: Profile,
    task: str | None,
    budget: AccuracyBudget,
    all_nodes: Sequence[str],
    raw_baseline: bool = True,
) -> list[Measurement]:
    """The cheap half of measuring ``cut``: bytes on the wire and times for each codec.

    Lossless codecs are complete (accuracy cost 0, exact by construction); lossy ones are
    *pending*: no metrics yet, ``accuracy_cost`` ``inf``, until the planner runs the tail
    (:func:`cut_samples`, :func:`with_samples`) or skips it
    (:mod:`splitwire.partitioner.pruning`).

    Args:
        sizes: each codec's encoded frame sizes (:func:`frame_sizes`, as many frames as
            :func:`bytes_settled` wanted); their mean is ``bytes_wire``.
        result_bytes: the encoded model outputs the cloud sends back, per frame.
        all_nodes: the graph's compute nodes in order (``compute_nodes(graph)``).
        task: ``classification``, ``segmentation`` or None: which task metrics apply.
        budget: the metric ``accuracy_cost`` is stated in.
        raw_baseline: whether cut 0 with ``fp32`` is the raw baseline; not for image inputs,
            whose raw baseline sends the camera's uint8 frame (:func:`measure_camera`).
    """
    if cut.index == len(all_nodes):  # all on the edge: nothing crosses, nothing is lost
        nothing_sent = unpriced(
            cut, codec="none", baseline=ALL_ON_EDGE, bytes_wire=0.0, result_bytes=0,
            metrics=TaskMetrics.exact(task), budget=budget,
        )  # fmt: skip
        return [reprice(nothing_sent, cut, edge=edge, cloud=cloud, all_nodes=all_nodes)]
    out = []
    for codec in codecs:
        measured = unpriced(
            cut,
            codec=str(codec),
            baseline=(
                ALL_IN_CLOUD_RAW if raw_baseline and cut.index == 0 and codec == RAW_CODEC else None
            ),
            bytes_wire=statistics.fmean(sizes[codec]),
            result_bytes=result_bytes,
            metrics=TaskMetrics.exact(task),
            budget=budget,
            bytes_frames=len(sizes[codec]),
        )
        if not codec.lossless:
            measured = not_measured(measured)
        out.append(reprice(measured, cut, edge=edge, cloud=cloud, all_nodes=all_nodes))
    return out


def not_measured(measurement: Measurement, *, dominated_by: str | None = None) -> Measurement:
    """``measurement`` without an accuracy: pending (its tail has not run yet), or never to be
    measured because the exact candidate ``dominated_by`` beats it on every link."""
    return replace(
        measurement,
        accuracy_cost=math.inf,
        top1_agreement=None,
        metrics=None,
        dominated_by=dominated_by,
        evidence=None,
        accuracy_interval=None,
    )


def with_samples(
    measurement: Measurement, samples: MetricSamples, budget: AccuracyBudget
) -> Measurement:
    """``measurement`` with the task metrics, evidence and cost these per-input figures give."""
    metrics = samples.metrics()
    evidence = samples.evidence()
    return replace(
        measurement,
        accuracy_cost=budget.cost(metrics),
        top1_agreement=metrics.top1,
        metrics=metrics,
        dominated_by=None,
        evidence=evidence,
        accuracy_interval=evidence.interval(budget.metric),
    )


def unpriced(
    cut: Cut,
    *,
    codec: str,
    baseline: str | None,
    bytes_wire: float,
    result_bytes: int,
    metrics: TaskMetrics,
    budget: AccuracyBudget,
    evidence: Evidence | None = None,
    bytes_frames: int = 0,
) -> Measurement:
    """A measurement of ``cut`` whose compute times are not filled in yet (see :func:`reprice`);
    its ``accuracy_cost`` is ``metrics`` in the ``budget``'s metric. Under a camera codec what
    crosses is the uint8 frame, not cut 0's float input.

    ``evidence`` None means exact by construction (no tail ran): the interval is a point."""
    crossing, bytes_raw = cut.crossing, cut.bytes_raw
    if CodecSpec.parse(codec).camera:
        crossing = tuple(
            CrossingTensor(t.node, t.shape, "uint8", math.prod(t.shape)) for t in cut.crossing
        )
        bytes_raw = sum(t.nbytes for t in crossing)
    return Measurement(
        cut=cut.id,
        cut_name=cut.name,
        cut_index=cut.index,
        codec=codec,
        baseline=baseline,
        crossing=crossing,
        bytes_raw=bytes_raw,
        bytes_wire=bytes_wire,
        result_bytes=result_bytes,
        head_ms=0.0,
        tail_ms=0.0,
        encode_ms=0.0,
        decode_ms=0.0,
        accuracy_cost=budget.cost(metrics),
        top1_agreement=metrics.top1,
        metrics=metrics,
        evidence=evidence,
        accuracy_interval=(
            evidence.interval(budget.metric)
            if evidence is not None
            else (metrics.value(budget.metric),) * 2
        ),
        bytes_frames=bytes_frames,
    )


def reprice(
    measurement: Measurement,
    cut: Cut,
    *,
    edge: Profile,
    cloud: Profile,
    all_nodes: Sequence[str],
    camera_ms: Mapping[str, tuple[float, float]] | None = None,
) -> Measurement:
    """``measurement`` with its compute times taken from these profiles.

    Bytes and accuracy do not depend on the devices, times do: a measurement made once can be
    priced for another edge or server. ``camera_ms`` maps each camera-frame baseline's codec to
    its (encode, decode + preprocess) time measured on this machine, scaled by each profile's
    slowdown.
    """
    edge_nodes = set(cut.edge_nodes)
    if is_camera_baseline(measurement):
        encode_ms, decode_ms = (camera_ms or {}).get(measurement.codec, (0.0, 0.0))
        return replace(
            measurement,
            head_ms=0.0,
            tail_ms=_compute_ms(cloud, all_nodes),
            encode_ms=encode_ms * edge.device.slowdown,
            decode_ms=decode_ms * cloud.device.slowdown,
            preprocess_ms=0.0,  # the cloud preprocesses the frame, inside decode_ms
            handoff_ms=edge.frame.handoff_ms,
            message_ms=_message_ms(edge, cloud, measurement.bytes_wire),
        )
    if measurement.baseline == ALL_ON_EDGE:
        return replace(
            measurement,
            head_ms=_compute_ms(edge, cut.edge_nodes),
            preprocess_ms=edge.frame.preprocess_ms,
            handoff_ms=edge.frame.handoff_ms,
            message_ms=0.0,
        )
    codec = CodecSpec.parse(measurement.codec)
    # One codec call per crossing tensor, each a fixed cost plus its float32-equivalent bytes.
    fp32_bytes = sum(t.nbytes // max(1, _itemsize(t.dtype)) * 4 for t in cut.crossing)
    calls = len(cut.crossing)
    return replace(
        measurement,
        # The edge calls the head even when it computes nothing (cut 0 under a tensor codec):
        # the call's fixed cost is paid.
        head_ms=_compute_ms(edge, cut.edge_nodes) or edge.call_overhead_ms,
        tail_ms=_compute_ms(cloud, [n for n in all_nodes if n not in edge_nodes]),
        encode_ms=edge.codec(codec).encode_ms(fp32_bytes, calls=calls),
        decode_ms=cloud.codec(codec).decode_ms(fp32_bytes, calls=calls),
        preprocess_ms=edge.frame.preprocess_ms,
        handoff_ms=edge.frame.handoff_ms,
        message_ms=_message_ms(edge, cloud, measurement.bytes_wire),
    )


def _message_ms(edge: Profile, cloud: Profile, bytes_up: float) -> float:
    """The transport's round trip for ``bytes_up``, half of it on each end: the mean of both
    profiles' (see :class:`~splitwire.partitioner.cost.Measurement`)."""
    return (edge.frame.message_ms(bytes_up) + cloud.frame.message_ms(bytes_up)) / 2


def is_camera_baseline(measurement: Measurement) -> bool:
    """Whether ``measurement`` is a camera-frame baseline (raw ``frame`` or JPEG at cut 0)."""
    return measurement.baseline in (ALL_IN_CLOUD_RAW, ALL_IN_CLOUD_JPEG) and (
        CodecSpec.parse(measurement.codec).camera
    )


@dataclass(frozen=True)
class CameraBaselines:
    """What :func:`measure_camera` found: the measurements (accuracy on the first ``screen``
    inputs), each codec's (encode, decode + preprocess) ms on this machine, unscaled, and, by
    codec, each lossy one's per-input figures and decoded, preprocessed inputs (to measure the
    remaining inputs on later, :func:`camera_samples`)."""

    measurements: list[Measurement]
    times: dict[str, tuple[float, float]]
    samples: dict[str, MetricSamples]
    decoded: dict[str, torch.Tensor]


def measure_camera(
    graph: CapturedGraph,
    cut0: Cut,
    reference: Reference,
    *,
    frames: torch.Tensor | None,
    preprocess: Preprocess | None,
    codecs: Sequence[CodecSpec],
    edge: Profile,
    cloud: Profile,
    task: str | None,
    budget: AccuracyBudget,
    all_nodes: Sequence[str],
    screen: int | None = None,
) -> CameraBaselines:
    """The camera-frame baselines (:mod:`splitwire.partitioner.baselines`): each of ``codecs``
    on the uint8 ``frames`` whose preprocessing gave ``reference.inputs``, decoded, preprocessed
    and run through the whole model. Bytes and times are means over every frame; the accuracy
    is measured on the first ``screen`` inputs (None: all). A codec whose decoded frames are
    the originals (``frame``, ``frame+zstd1``) is exact by construction, without a run.

    Returns:
        The baselines (none when the input is not an image or there are no frames).

    Raises:
        ValueError: ``frames`` do not preprocess to the reference inputs (they were not the
            frames the reference was recorded on).
    """
    if frames is None or preprocess is None or not jpeg_applicable(tuple(frames.shape)):
        return CameraBaselines([], {}, {}, {})
    if not torch.equal(preprocess.apply(frames), reference.inputs):
        raise ValueError("camera frames do not preprocess to the reference inputs")
    count = len(frames) if screen is None else min(screen, len(frames))
    out, times, kept, found = [], {}, {}, {}
    for codec in codecs:
        result = camera_roundtrip(frames, codec)
        start = time.perf_counter_ns()
        inputs = preprocess.apply(result.decoded)  # the cloud's part of the baseline
        preprocess_ms = (time.perf_counter_ns() - start) / 1e6 / len(frames)
        evidence: Evidence | None = None
        metrics = TaskMetrics.exact(task)
        if not torch.equal(result.decoded, frames):
            kept[str(codec)] = inputs
            samples = camera_samples(graph, inputs, reference, range(count), task=task)
            metrics, evidence = samples.metrics(), samples.evidence()
            found[str(codec)] = samples
        measured = unpriced(
            cut0,
            codec=str(codec),
            baseline=ALL_IN_CLOUD_JPEG if codec.scheme == "jpeg" else ALL_IN_CLOUD_RAW,
            bytes_wire=result.mean_bytes,
            result_bytes=reference.result_bytes,
            metrics=metrics,
            budget=budget,
            evidence=evidence,
            bytes_frames=len(frames),
        )
        times[str(codec)] = (result.encode_ms, result.decode_ms + preprocess_ms)
        out.append(
            reprice(measured, cut0, edge=edge, cloud=cloud, all_nodes=all_nodes, camera_ms=times)
        )
    return CameraBaselines(out, times, found, kept)


def camera_samples(
    graph: CapturedGraph,
    decoded: torch.Tensor,
    reference: Reference,
    inputs: range,
    *,
    task: str | None,
) -> MetricSamples:
    """The per-input figures of a camera baseline on ``inputs`` (indices into the calibration
    inputs): the whole model on its ``decoded`` inputs against the reference outputs."""
    picked = slice(inputs.start, inputs.stop)
    # Run as the reference was (the same interpreter), so only the codec differs.
    outputs = record_reference(graph, decoded[picked], ()).outputs
    return task_samples([o[picked] for o in reference.outputs], outputs, task=task)


# At most this many inputs go through a tail in one call: a batch of 32 early ResNet-50
# activations (3.2 MB each) already needs ~1 GB of intermediate activations.
TAIL_BATCH = 32


def cut_samples(
    tail: torch.nn.Module,
    crossing: Sequence[torch.Tensor],
    codecs: Sequence[CodecSpec],
    reference_outputs: Sequence[torch.Tensor],
    *,
    task: str | None,
) -> dict[CodecSpec, MetricSamples]:
    """The per-input figures of each lossy codec at one cut, on the inputs whose crossing
    tensors are ``crossing`` (batch first) and whose model outputs are ``reference_outputs``.

    The codecs share tail calls: their decoded batches are stacked along the batch dimension
    (the tail's batch is dynamic; at most :data:`TAIL_BATCH` inputs a call), which keeps the
    tail busy with large batches instead of several small ones. Each frame is quantised on its
    own, as the edge does; the entropy stage is skipped (zstd is lossless: ``int8`` and
    ``int8+zstd1`` decode to the same values, so they share one run). A codec whose decoded
    tensors are bit for bit the originals (``int8`` on a cut that sends only integer tensors,
    which travel exactly) changes nothing, without a run.
    """
    count = len(crossing[0]) if crossing else 0
    unchanged = task_samples(reference_outputs, reference_outputs, task=task)
    effects: dict[CodecSpec, MetricSamples] = {}
    runs: dict[CodecSpec, list[torch.Tensor]] = {}  # by the codec without its entropy stage
    for codec in codecs:
        values = replace(codec, zstd_level=0)
        if values in runs or values in effects:
            continue
        decoded = [_roundtrip(t, values) for t in crossing]
        if _same_bits(decoded, crossing):
            effects[values] = unchanged
        else:
            runs[values] = decoded
    order = list(runs)
    per_call = max(1, TAIL_BATCH // max(1, count)) if count else 1
    for first in range(0, len(order), per_call):
        group = order[first : first + per_call]
        for start in range(0, count, TAIL_BATCH):
            stop = min(count, start + TAIL_BATCH)
            stacked = [
                torch.cat([runs[values][k][start:stop] for values in group])
                for k in range(len(crossing))
            ]
            with torch.no_grad():
                outputs = tuple(torch.utils._pytree.tree_leaves(tail(*stacked)))
            width = stop - start
            for i, values in enumerate(group):
                mine = [o[i * width : (i + 1) * width] for o in outputs]
                part = task_samples([r[start:stop] for r in reference_outputs], mine, task=task)
                effects[values] = effects[values].joined(part) if values in effects else part
    return {codec: effects[replace(codec, zstd_level=0)] for codec in codecs}


def _same_bits(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    """Whether two tensor lists are equal bit for bit (-0.0 and 0.0 differ, NaNs may match)."""
    return all(
        x.dtype == y.dtype
        and x.shape == y.shape
        and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))
        for x, y in zip(a, b, strict=True)
    )


def _compute_ms(profile: Profile, nodes: Iterable[str]) -> float:
    names = list(nodes)
    if not names:
        return 0.0
    return sum(profile.node_ms(n) for n in names) + profile.call_overhead_ms


def crossing_value(reference: Reference, node: str) -> torch.Tensor:
    """The value ``reference`` holds of a crossing tensor (cut 0's is the model input)."""
    return crossing_from(reference.inputs, reference.values, node)


def crossing_from(
    inputs: torch.Tensor, values: Mapping[str, torch.Tensor], node: str
) -> torch.Tensor:
    """A crossing tensor's value among node ``values`` (cut 0's is the model's ``inputs``)."""
    if node in values:
        return values[node]
    return inputs  # cut 0 crosses the model input


def _roundtrip(batch: torch.Tensor, codec: CodecSpec) -> torch.Tensor:
    """Encode each frame of ``batch`` separately, as the edge would, and decode it."""
    if len(batch) == 0:
        return batch.clone()
    frames = []
    for i in range(batch.shape[0]):
        encoded = encode(batch[i : i + 1], codec)
        frames.append(decode(encoded.header, encoded.payload))
    return torch.cat(frames)


def _wire_bytes(frame: Sequence[torch.Tensor], codec: CodecSpec) -> int:
    """One frame's encoded tensors, payloads and headers."""
    total = 0
    for tensor in frame:
        encoded = encode(tensor, codec)
        total += len(encoded.payload) + header_to_proto(encoded.header).ByteSize()
    return total


def _mean_wire_bytes(frames: Sequence[Sequence[torch.Tensor]], codec: CodecSpec) -> float:
    return sum(_wire_bytes(frame, codec) for frame in frames) / max(1, len(frames))


def _itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


class _Streamer(fx.Interpreter):
    """Runs the graph and visits each cut once its last crossing tensor is computed
    (:func:`stream_cuts`); ends the run (:class:`_AllKept`) after the last cut."""

    def __init__(
        self,
        module: fx.GraphModule,
        ready: dict[str, list[Cut]],
        visit: Callable[[Cut, list[torch.Tensor]], None],
    ) -> None:
        super().__init__(module)
        self.ready = ready
        self.visit = visit
        self.left = sum(len(cuts) for cuts in ready.values())
        self.nodes = {node.name: node for node in module.graph.nodes}

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        for cut in self.ready.get(n.name, ()):
            values = [
                result if t.node == n.name else self.env[self.nodes[t.node]] for t in cut.crossing
            ]
            self.visit(cut, [v for v in values if isinstance(v, torch.Tensor)])
            self.left -= 1
        if not self.left:
            raise _AllKept
        return result


def mutated_nodes(module: fx.GraphModule) -> set[str]:
    """The nodes whose value a later node changes in place: an exported graph keeps the
    model's in-place ops (ResNet's ``relu_`` after each batch norm, ``add_`` of the skip), so
    a reference to a batch norm's output held past its ``relu_`` holds the ReLU's output."""
    out = set()
    for node in module.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None:
            continue
        for i, argument in enumerate(schema.arguments):
            info = argument.alias_info
            if info is None or not info.is_write:
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
            if isinstance(value, fx.Node):
                out.add(value.name)
    return out


class _AllKept(Exception):
    """Raised by a stopping :class:`_Keeper` once every node to keep has its value."""


class _Keeper(fx.Interpreter):
    """Runs the graph and keeps the values of some nodes (the interpreter frees the rest);
    with ``stop``, ends the run (:class:`_AllKept`) once it has them all."""

    def __init__(self, module: fx.GraphModule, keep: set[str], *, stop: bool = False) -> None:
        super().__init__(module)
        self.keep = keep
        self.stop = stop
        self.kept: dict[str, torch.Tensor] = {}
        self.mutated = mutated_nodes(module)

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if n.name in self.keep and isinstance(result, torch.Tensor):
            # A later node changing the value in place must not change the copy kept.
            self.kept[n.name] = result.clone() if n.name in self.mutated else result
            if self.stop and len(self.kept) == len(self.keep):
                raise _AllKept
        return result
