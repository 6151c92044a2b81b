"""Measure every (cut, codec) pair on calibration inputs: bytes on the wire and accuracy cost.

For each cut the crossing tensors of every calibration input are taken from one recorded run of
the whole graph (the head computes exactly these values), encoded one frame at a time with the
codec as the edge would, decoded, and fed to the cut's tail as one batch. The tail's outputs are
compared with the model's own in task terms (:mod:`splitwire.partitioner.accuracy`: relative
error, and KL divergence and top-1/top-5 agreement for classifiers, pixel agreement and mIoU for
segmentation); ``accuracy_cost`` is the budget's metric as a cost.

A codec whose scheme is lossless for every dtype (``fp32``) costs exactly 0 without running the
tail: the split equivalence tests show ``tail(*head(x)) == model(x)`` bit for bit.

Compute times come from the profiles (edge for the head and the encoder, cloud for the decoder
and the tail): ``sum(node ms) + call overhead``. The camera-frame baselines' encode/decode times
(:mod:`splitwire.partitioner.baselines`: the raw uint8 frame and JPEG) are measured here and
multiplied by each profile's slowdown (an emulation, like the profile's).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import fx

from splitwire.partitioner.accuracy import AccuracyBudget, TaskMetrics, task_metrics
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
from splitwire.partitioner.split import split
from splitwire.protocol import CodecSpec, decode, encode, transport
from splitwire.protocol.header import DTYPES
from splitwire.protocol.wire import header_to_proto

logger = logging.getLogger(__name__)

# Results travel back as the tail service sends them; their size is measured with that codec.
RESULT_CODEC = transport.RESULT_CODEC
# The all-in-cloud raw baseline of a model whose input is no image sends the input as it is
# (an image model's sends the camera frame: ``frame``, see baselines.py).
RAW_CODEC = CodecSpec.parse("fp32")


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
        result = interpreter.run(inputs)
    outputs = tuple(
        t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor)
    )
    result_bytes = _mean_wire_bytes(
        [[o[i : i + 1] for o in outputs] for i in range(len(inputs))], RESULT_CODEC
    )
    return Reference(inputs, outputs, interpreter.kept, round(result_bytes))


def measure_cut(
    graph: CapturedGraph,
    cut: Cut,
    codecs: Sequence[CodecSpec],
    reference: Reference,
    *,
    edge: Profile,
    cloud: Profile,
    task: str | None,
    budget: AccuracyBudget,
    all_nodes: Sequence[str],
    raw_baseline: bool = True,
) -> list[Measurement]:
    """Measure ``cut`` with each codec (see the module docstring): :func:`measure_cut_bytes`,
    then :func:`measure_cut_accuracy` for every lossy codec.

    Args:
        all_nodes: the graph's compute nodes in order (``compute_nodes(graph)``).
        task: ``classification``, ``segmentation`` or None: which task metrics apply.
        budget: the metric ``accuracy_cost`` is stated in.
        raw_baseline: whether cut 0 with ``fp32`` is the raw baseline; not for image inputs,
            whose raw baseline sends the camera's uint8 frame (:func:`measure_camera`).
    """
    priced = measure_cut_bytes(
        cut, codecs, reference, edge=edge, cloud=cloud, task=task, budget=budget,
        all_nodes=all_nodes, raw_baseline=raw_baseline,
    )  # fmt: skip
    return measure_cut_accuracy(graph, cut, priced, reference, task=task, budget=budget)


def measure_cut_bytes(
    cut: Cut,
    codecs: Sequence[CodecSpec],
    reference: Reference,
    *,
    edge: Profile,
    cloud: Profile,
    task: str | None,
    budget: AccuracyBudget,
    all_nodes: Sequence[str],
    raw_baseline: bool = True,
) -> list[Measurement]:
    """The cheap half of measuring ``cut``: bytes on the wire and times for each codec.

    Lossless codecs are complete (accuracy cost 0); lossy ones are *pending*: no metrics yet,
    ``accuracy_cost`` ``inf``, until :func:`measure_cut_accuracy` runs the tail (or the planner
    skips them, :mod:`splitwire.partitioner.pruning`). Arguments as :func:`measure_cut`.
    """
    if cut.index == len(all_nodes):  # all on the edge: nothing crosses, nothing is lost
        nothing_sent = unpriced(
            cut, codec="none", baseline=ALL_ON_EDGE, bytes_wire=0.0, result_bytes=0,
            metrics=TaskMetrics.exact(task), budget=budget,
        )  # fmt: skip
        return [reprice(nothing_sent, cut, edge=edge, cloud=cloud, all_nodes=all_nodes)]
    crossing = [_crossing_value(reference, t.node) for t in cut.crossing]
    frames = [[t[i : i + 1] for t in crossing] for i in range(len(reference.inputs))]
    out = []
    for codec in codecs:
        measured = unpriced(
            cut,
            codec=str(codec),
            baseline=(
                ALL_IN_CLOUD_RAW if raw_baseline and cut.index == 0 and codec == RAW_CODEC else None
            ),
            bytes_wire=_mean_wire_bytes(frames, codec),
            result_bytes=reference.result_bytes,
            metrics=TaskMetrics.exact(task),
            budget=budget,
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
    )


def measure_cut_accuracy(
    graph: CapturedGraph,
    cut: Cut,
    measurements: Sequence[Measurement],
    reference: Reference,
    *,
    task: str | None,
    budget: AccuracyBudget,
) -> list[Measurement]:
    """``measurements`` of ``cut`` with the task metrics of the pending ones filled in (one
    batched tail run; see :func:`_codec_effects`); the others are returned unchanged."""
    pending = [m for m in measurements if m.metrics is None and not m.dominated_by]
    if not pending:
        return list(measurements)
    crossing = [_crossing_value(reference, t.node) for t in cut.crossing]
    codecs = [CodecSpec.parse(m.codec) for m in pending]
    effects = _codec_effects(split(graph, cut).tail, crossing, codecs, reference, task=task)
    waiting = {id(m) for m in pending}
    out = []
    for m in measurements:
        if id(m) in waiting:
            metrics = effects[CodecSpec.parse(m.codec)]
            m = replace(
                m,
                accuracy_cost=budget.cost(metrics),
                top1_agreement=metrics.top1,
                metrics=metrics,
            )
        out.append(m)
    return out


def unpriced(
    cut: Cut,
    *,
    codec: str,
    baseline: str | None,
    bytes_wire: float,
    result_bytes: int,
    metrics: TaskMetrics,
    budget: AccuracyBudget,
) -> Measurement:
    """A measurement of ``cut`` whose compute times are not filled in yet (see :func:`reprice`);
    its ``accuracy_cost`` is ``metrics`` in the ``budget``'s metric. Under a camera codec what
    crosses is the uint8 frame, not cut 0's float input."""
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
        )
    if measurement.baseline == ALL_ON_EDGE:
        return replace(measurement, head_ms=_compute_ms(edge, cut.edge_nodes))
    codec = CodecSpec.parse(measurement.codec)
    # One codec call per crossing tensor, each a fixed cost plus its float32-equivalent bytes.
    fp32_bytes = sum(t.nbytes // max(1, _itemsize(t.dtype)) * 4 for t in cut.crossing)
    calls = len(cut.crossing)
    return replace(
        measurement,
        head_ms=_compute_ms(edge, cut.edge_nodes),
        tail_ms=_compute_ms(cloud, [n for n in all_nodes if n not in edge_nodes]),
        encode_ms=edge.codec(codec).encode_ms(fp32_bytes, calls=calls),
        decode_ms=cloud.codec(codec).decode_ms(fp32_bytes, calls=calls),
    )


def is_camera_baseline(measurement: Measurement) -> bool:
    """Whether ``measurement`` is a camera-frame baseline (raw ``frame`` or JPEG at cut 0)."""
    return measurement.baseline in (ALL_IN_CLOUD_RAW, ALL_IN_CLOUD_JPEG) and (
        CodecSpec.parse(measurement.codec).camera
    )


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
) -> tuple[list[Measurement], dict[str, tuple[float, float]]]:
    """The camera-frame baselines (:mod:`splitwire.partitioner.baselines`): each of ``codecs``
    on the uint8 ``frames`` whose preprocessing gave ``reference.inputs``, decoded, preprocessed
    and run through the whole model.

    Returns:
        The measurements (none when the input is not an image or there are no frames) and each
        codec's (encode, decode + preprocess) ms on this machine, unscaled.

    Raises:
        ValueError: ``frames`` do not preprocess to the reference inputs (they were not the
            frames the reference was recorded on).
    """
    if frames is None or preprocess is None or not jpeg_applicable(tuple(frames.shape)):
        return [], {}
    if not torch.equal(preprocess.apply(frames), reference.inputs):
        raise ValueError("camera frames do not preprocess to the reference inputs")
    out, times = [], {}
    for codec in codecs:
        result = camera_roundtrip(frames, codec)
        start = time.perf_counter_ns()
        inputs = preprocess.apply(result.decoded)  # the cloud's part of the baseline
        preprocess_ms = (time.perf_counter_ns() - start) / 1e6 / len(frames)
        # Run as the reference was (same interpreter, same batch), so a lossless codec is exact.
        outputs = record_reference(graph, inputs, ()).outputs
        measured = unpriced(
            cut0,
            codec=str(codec),
            baseline=ALL_IN_CLOUD_JPEG if codec.scheme == "jpeg" else ALL_IN_CLOUD_RAW,
            bytes_wire=result.mean_bytes,
            result_bytes=reference.result_bytes,
            metrics=task_metrics(reference.outputs, outputs, task=task),
            budget=budget,
        )
        times[str(codec)] = (result.encode_ms, result.decode_ms + preprocess_ms)
        out.append(
            reprice(measured, cut0, edge=edge, cloud=cloud, all_nodes=all_nodes, camera_ms=times)
        )
    return out, times


def _codec_effects(
    tail: torch.nn.Module,
    crossing: Sequence[torch.Tensor],
    codecs: Sequence[CodecSpec],
    reference: Reference,
    *,
    task: str | None,
) -> dict[CodecSpec, TaskMetrics]:
    """The task metrics of each codec at one cut.

    Lossless codecs cost 0 without a run. The lossy ones share one tail call: their decoded
    batches are stacked along the batch dimension (the tail's batch is dynamic), which keeps
    the tail busy with one large batch instead of several small ones. A lossy codec whose
    decoded tensors are bit for bit the originals (``int8`` on a cut that sends only integer
    tensors, which travel exactly) costs 0 without a run, and one whose decoded tensors are
    bit for bit another's (``int8`` and ``int8+zstd1``: zstd is lossless) shares its result.
    """
    effects = {codec: TaskMetrics.exact(task) for codec in codecs if codec.lossless}
    runs: list[tuple[CodecSpec, list[torch.Tensor]]] = []
    same_as: dict[CodecSpec, CodecSpec] = {}
    for codec in codecs:
        if codec.lossless:
            continue
        decoded = [_roundtrip(t, codec) for t in crossing]
        if _same_bits(decoded, crossing):
            effects[codec] = TaskMetrics.exact(task)
            continue
        twin = next((other for other, seen in runs if _same_bits(decoded, seen)), None)
        if twin is not None:
            same_as[codec] = twin
        else:
            runs.append((codec, decoded))
    if runs:
        stacked = [torch.cat([decoded[k] for _, decoded in runs]) for k in range(len(crossing))]
        with torch.no_grad():
            outputs = tuple(torch.utils._pytree.tree_leaves(tail(*stacked)))
        count = len(reference.inputs)
        for i, (codec, _) in enumerate(runs):
            mine = [o[i * count : (i + 1) * count] for o in outputs]
            effects[codec] = task_metrics(reference.outputs, mine, task=task)
    for codec, twin in same_as.items():
        effects[codec] = effects[twin]
    return effects


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


def _crossing_value(reference: Reference, node: str) -> torch.Tensor:
    if node in reference.values:
        return reference.values[node]
    return reference.inputs  # cut 0 crosses the model input


def _roundtrip(batch: torch.Tensor, codec: CodecSpec) -> torch.Tensor:
    """Encode each frame of ``batch`` separately, as the edge would, and decode it."""
    frames = []
    for i in range(batch.shape[0]):
        encoded = encode(batch[i : i + 1], codec)
        frames.append(decode(encoded.header, encoded.payload))
    return torch.cat(frames)


def _mean_wire_bytes(frames: Sequence[Sequence[torch.Tensor]], codec: CodecSpec) -> float:
    total = 0
    for frame in frames:
        for tensor in frame:
            encoded = encode(tensor, codec)
            total += len(encoded.payload) + header_to_proto(encoded.header).ByteSize()
    return total / max(1, len(frames))


def _itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


class _Keeper(fx.Interpreter):
    """Runs the graph and keeps the values of some nodes (the interpreter frees the rest)."""

    def __init__(self, module: fx.GraphModule, keep: set[str]) -> None:
        super().__init__(module)
        self.keep = keep
        self.kept: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if n.name in self.keep and isinstance(result, torch.Tensor):
            self.kept[n.name] = result
        return result
