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

**Per-frame costs** (:class:`~splitwire.partitioner.profile_format.FrameCosts`): what a frame
costs beyond its nodes and codec, each the median of timed repeats after a warm-up:

* ``preprocess_ms``: a uint8 camera frame of the input shape to the float input (the plan's
  ``(pixels / 255 - mean) / std``; the constants do not change the time), for image inputs;
* ``message_call_ms`` + ``message_ms_per_mb``: one frame's round trip through the transport on
  loopback: a real ``grpc.aio`` server on 127.0.0.1 port 0 and a client in this process, the
  protocol's ``EdgeMessage`` chunks (:func:`splitwire.protocol.frame_chunks`, so frames over
  1 MiB pay for the chunking) out and a ``ResultChunk`` of ten logits back, for frames of 1 kB
  to 2 MB; a line through (bytes, median ms) as for the codecs. On this 2-core VM: ~1 ms per
  frame and ~2-4 ms per MB;
* ``handoff_ms``: an event loop handing work to a one-thread executor and taking its result
  back (``run_in_executor`` of a no-op), what the agent pays per frame around its compute.

Codecs are timed with :func:`splitwire.protocol.encode` / :func:`splitwire.protocol.decode` on one
thread, on the outputs of three nodes a quarter, half and three quarters of the way through the
graph, for an input from :func:`splitwire.partitioner.calibration.synthetic_images` (real
activations compress differently from noise), each whole and cut to its first 1/8 and 1/64 of
channels: nine sizes, from a few kB to MB. A line through (bytes, median ms) gives each codec's
fixed cost per call (``encode_call_ms``: quantisation's torch dispatch, zstd's frame set-up)
and its speed per byte (MB/s, 10**6 bytes of float32-equivalent data), so small crossings are
not priced at a large tensor's speed nor large ones at a small tensor's. E.g. timings of 0.20,
0.45 and 8.2 ms at 12.5 kB, 100 kB and 3.2 MB fit 0.18 ms per call and 399 MB/s.

:meth:`Profile.scaled` *emulates* a slower device by multiplying times (dividing codec speeds);
it is a guess, not a measurement, and the profile says so (``device.emulated``).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import fx, nn
from tqdm import tqdm

from splitwire.partitioner.calibration import synthetic_images
from splitwire.partitioner.capture import CapturedGraph, capture, example_input
from splitwire.partitioner.cuts import compute_nodes
from splitwire.partitioner.device import current_device, torch_threads
from splitwire.partitioner.errors import ProfileError
from splitwire.partitioner.plan_file import IMAGENET, IMAGENET_GREY
from splitwire.partitioner.profile_format import (
    SCHEMA,
    CodecTiming,
    FrameCosts,
    NodeTiming,
    Profile,
)
from splitwire.protocol import CodecSpec, decode, encode
from splitwire.stats import percentile

logger = logging.getLogger(__name__)

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
# Per-frame costs: a warm-up, then the median of this many, per size.
_FRAME_REPEATS = 9
# Frame sizes the transport's round trip is timed at (bytes): 1 kB to 2 MB (two chunks).
_MESSAGE_SIZES = (1_000, 16_000, 128_000, 512_000, 2_000_000)
# How long one transport measurement may take before it is abandoned (a broken loopback).
_MESSAGE_TIMEOUT_S = 30.0
# A graceful stop (no call is live by then): stop(None) cancels with an error gRPC logs.
_STOP_GRACE_S = 1.0
# Calibration factors outside this range mean the passes saw very different machines.
_PLAUSIBLE_CALIBRATION = (0.8, 1.25)


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
        graph: the captured model (:func:`splitwire.partitioner.capture.capture`).
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
            frame = measure_frame_costs(graph.input_shape)
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
        frame=frame,
    )


# --- measuring -----------------------------------------------------------------------------


def measure_frame_costs(input_shape: Sequence[int]) -> FrameCosts:
    """What a frame costs on this machine beyond its nodes and codec (see the module
    docstring): the camera preprocessing at ``input_shape`` (0 for inputs that are no image),
    the transport's round trip per frame and per MB, the agent's hand-off.

    Raises:
        ProfileError: the loopback transport did not answer within its timeout.
    """
    sizes, seconds = asyncio.run(_time_messages())
    call_s, byte_s = fit_call_and_byte_cost(sizes, seconds)
    return FrameCosts(
        preprocess_ms=_preprocess_ms(input_shape),
        message_call_ms=call_s * 1e3,
        message_ms_per_mb=byte_s * 1e9,
        handoff_ms=asyncio.run(_handoff_s()) * 1e3,
    )


def _preprocess_ms(input_shape: Sequence[int]) -> float:
    shape = tuple(input_shape)
    if len(shape) != 4 or shape[1] not in (1, 3):
        return 0.0
    preprocess = IMAGENET if shape[1] == 3 else IMAGENET_GREY
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator())
    with torch.inference_mode():
        preprocess.apply(pixels)  # warm-up
        return _median_of(lambda: preprocess.apply(pixels), _FRAME_REPEATS) * 1e3


async def _handoff_s() -> float:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as executor:
        await loop.run_in_executor(executor, int)  # warm-up: starts the thread
        times = []
        for _ in range(_FRAME_REPEATS):
            start = time.perf_counter_ns()
            await loop.run_in_executor(executor, int)
            times.append((time.perf_counter_ns() - start) / 1e9)
    return statistics.median(times)


async def _time_messages() -> tuple[list[float], list[float]]:
    """(bytes, median seconds) of a frame's round trip through grpc.aio on loopback, per size."""
    from grpc import aio

    from splitwire.protocol import (
        CLIENT_OPTIONS,
        SERVER_OPTIONS,
        ResultTimings,
        frame_chunks,
        result_chunks,
    )
    from splitwire.protocol import splitwire_pb2 as pb
    from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
    from splitwire.protocol.transport import RESULT_CODEC

    answer = encode(torch.zeros(1, 10), RESULT_CODEC, name="output0")

    class _Echo(pb_grpc.SplitSessionServicer):
        async def Session(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for message in requests:
                chunk = message.chunk
                if chunk.chunk_index + 1 == chunk.chunk_count:
                    (reply,) = result_chunks(
                        chunk.seq, chunk.capture_ts_ns, [answer], timings=ResultTimings()
                    )
                    yield pb.CloudMessage(result=reply)

    server = aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_SplitSessionServicer_to_server(_Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sizes: list[float] = []
    seconds: list[float] = []
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
            call = pb_grpc.SplitSessionStub(channel).Session()
            seq = 0
            for size in _MESSAGE_SIZES:
                frame = encode(torch.zeros(size), CodecSpec.parse("int8"), name="x")
                times = []
                for i in range(_FRAME_REPEATS + 1):  # the first is a warm-up
                    seq += 1
                    start = time.perf_counter_ns()
                    for chunk in frame_chunks(seq, 0, [frame]):
                        await call.write(pb.EdgeMessage(chunk=chunk))
                    await asyncio.wait_for(call.read(), _MESSAGE_TIMEOUT_S)
                    if i:
                        times.append((time.perf_counter_ns() - start) / 1e9)
                sizes.append(float(len(frame.payload)))
                seconds.append(statistics.median(times))
            await call.done_writing()
            # Read to the server's end of the stream, so closing does not cancel a live call.
            await asyncio.wait_for(call.read(), _MESSAGE_TIMEOUT_S)
            # Stopped while the channel is open: the client takes the server's GOAWAY quietly,
            # where a server outliving the channel logs the client's GOAWAY on stderr.
            await server.stop(_STOP_GRACE_S)
    except (TimeoutError, aio.AioRpcError) as exc:
        raise ProfileError(
            f"timing the transport on loopback failed ({type(exc).__name__}); expected an "
            f"answer within {_MESSAGE_TIMEOUT_S:g} s: is loopback usable here?"
        ) from exc
    finally:
        await server.stop(None)  # again on failure; a no-op once stopped
    return sizes, seconds


def _median_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e9)
    return statistics.median(times)


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
    sizes: list[float] = []
    encode_s: list[float] = []
    decode_s: list[float] = []
    for act in _codec_samples(activations):
        encoded = encode(act, spec)  # warm-up (and the payload decode is timed on)
        decode(encoded.header, encoded.payload)
        encode_s.append(_median_s(partial(encode, act, spec)))
        decode_s.append(_median_s(partial(decode, encoded.header, encoded.payload)))
        sizes.append(act.numel() * 4.0)
    encode_call_s, encode_byte_s = fit_call_and_byte_cost(sizes, encode_s)
    decode_call_s, decode_byte_s = fit_call_and_byte_cost(sizes, decode_s)
    return CodecTiming(
        str(spec),
        encode_mb_s=1e-6 / encode_byte_s,
        decode_mb_s=1e-6 / decode_byte_s,
        encode_call_ms=encode_call_s * 1e3,
        decode_call_ms=decode_call_s * 1e3,
    )


def _codec_samples(activations: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each activation whole and cut to its first 1/8 and 1/64 of channels (contiguous)."""
    out = []
    for act in activations:
        out.append(act)
        if act.dim() >= 2 and act.shape[1] >= 8:
            for part in (8, 64):
                out.append(act[:, : max(1, act.shape[1] // part)].contiguous())
    return out


# A per-byte cost below this (10**6 MB/s) is a fit to noise; it is the floor.
_MIN_BYTE_S = 1e-12


def fit_call_and_byte_cost(sizes: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``seconds = call + bytes * per_byte`` with both terms >= 0.

    Args:
        sizes: bytes per timed call (float32-equivalent), at least one.
        seconds: the median time of each call.

    Returns:
        ``(call, per_byte)`` in seconds and seconds per byte. With one size, or a negative
        intercept (noise), the line goes through 0; a negative slope keeps the mean time as the
        call cost.
    """
    n = len(sizes)
    mean_x, mean_y = sum(sizes) / n, sum(seconds) / n
    var = sum((x - mean_x) ** 2 for x in sizes)
    if var > 0:
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(sizes, seconds, strict=True)) / var
        call = mean_y - slope * mean_x
        if slope <= 0:
            return mean_y, _MIN_BYTE_S
        if call >= 0:
            return call, max(slope, _MIN_BYTE_S)
    # Through the origin: all of the time is per byte.
    sxx = sum(x * x for x in sizes)
    sxy = sum(x * y for x, y in zip(sizes, seconds, strict=True))
    return 0.0, max(sxy / sxx if sxx else 0.0, _MIN_BYTE_S)


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
    return percentile(values, 75) - percentile(values, 25)


# --- validation and (de)serialisation -------------------------------------------------------
