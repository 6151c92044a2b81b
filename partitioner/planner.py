"""``splitwire plan`` end to end: model spec in, plan directory out.

    request = PlanRequest(model_spec="zoo:resnet50", input_shape=(1, 3, 224, 224),
                          links=(parse_link("wifi"),), codecs=AUTO_CODECS, edge_slowdown=4)
    outcome = plan_model(request)
    write_plan_directory(outcome, Path("plans/resnet50"))

Phases (each timed in ``outcome.seconds``): ``capture`` the graph and enumerate its cuts;
``profile`` each side without a profile on this machine; ``measure`` every (cut, codec) on
calibration inputs (:mod:`splitwire.partitioner.measure`) — first the bytes and times of every
candidate (``measure.encode``), then the tails on decoded activations for the lossy candidates
an exact one does not beat on every link (:mod:`splitwire.partitioner.pruning`), on the first
``screen`` inputs (``measure.screen``), then on all of them for every candidate that is on a
front, a pick, or could become a pick (``measure.confirm``, :func:`_confirm`);
``decide`` on every link (:mod:`splitwire.partitioner.decisions`); ``export`` the halves of the
cuts the plan refers to (timed by :func:`write_plan_directory`'s caller).

Accuracy is measured lazily, where it can change a front or a pick, and the fronts stay exact
with respect to the figures reported: every candidate's accuracy says how many inputs it rests
on (``evidence``); those measured on the screen only are on no front and no pick, because a
front member or a pick measured on fewer than all inputs is measured again on all of them and
the decision made again, until none is left. A screened candidate faster (on the objective)
than a link's pick is confirmed too unless no further input can bring it within the budget
(:meth:`~splitwire.partitioner.accuracy.MetricSamples.cost_floor`): so no pick is lost to a
screen's noise. E.g. ResNet-50 under ``kl=1e-3`` with 32 inputs and a screen of 4: int4 at
``layer2.0`` shows KL 0.4 on the screen, at least 4 × 0.4 / 32 = 0.05 over all 32 — beyond
the budget whatever the other 28 show, so it is confirmed only if it is on a front.
A re-plan from stored measurements does the same for the candidates stored as measured on the
screen only (:func:`_confirm_reused`): other links, objectives or budgets may put them on a
front or make them a pick.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from splitwire import __version__
from splitwire.partitioner.accuracy import (
    AccuracyBudget,
    MetricSamples,
    default_budget,
    parse_budget,
)
from splitwire.partitioner.baselines import (
    DEFAULT_JPEG_QUALITIES,
    camera_codecs,
    camera_roundtrip,
    synthetic_frames,
)
from splitwire.partitioner.calibration import synthetic_images
from splitwire.partitioner.capture import CapturedGraph, capture
from splitwire.partitioner.cost import ALL_ON_EDGE, DEFAULT_WINDOW, Candidate, Measurement
from splitwire.partitioner.cuts import Cut, compute_nodes, enumerate_cuts
from splitwire.partitioner.decisions import (
    OBJECTIVE_FIELDS,
    LinkDecision,
    Objective,
    decide_link,
    robust_pick,
)
from splitwire.partitioner.device import torch_threads
from splitwire.partitioner.errors import PartitionerError, PlanError
from splitwire.partitioner.link import LinkModel, LinkTrace
from splitwire.partitioner.measure import (
    BYTES_MIN_FRAMES,
    BYTES_TOLERANCE,
    RAW_CODEC,
    Reference,
    TensorSizes,
    bytes_settled,
    camera_samples,
    crossing_value,
    cut_samples,
    frame_sizes,
    is_camera_baseline,
    measure_camera,
    measure_cut_bytes,
    record_crossings,
    record_reference,
    reprice,
    stream_cuts,
    with_samples,
)
from splitwire.partitioner.measurement_cache import (
    CacheKey,
    crossings_digest,
    load_measurements,
    save_measurements,
)
from splitwire.partitioner.models import load_model, model_hash
from splitwire.partitioner.outputs import CUTS_FOLDER, remove_stale_cuts
from splitwire.partitioner.photos import bundled_photo_dir, photo_frames
from splitwire.partitioner.plan_file import (
    IMAGENET,
    IMAGENET_GREY,
    TASKS,
    LinkChoice,
    Plan,
    PlanCut,
    PlanOption,
    Preprocess,
    TensorSpec,
    sha256_file,
    write_plan,
)
from splitwire.partitioner.profile_format import Profile, check_profile_matches
from splitwire.partitioner.profiling import profile_graph
from splitwire.partitioner.progress import phase, track
from splitwire.partitioner.pruning import dominated_lossy, is_pending, recheck_skipped
from splitwire.partitioner.split import export_split, split
from splitwire.partitioner.task import check_task, output_shapes
from splitwire.protocol import CodecSpec
from splitwire.protocol.errors import CodecSpecError
from splitwire.protocol.header import DTYPE_NAMES
from splitwire.protocol.result_codec import ResultCodec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

logger = logging.getLogger(__name__)

# Calibration inputs every front member's and every pick's accuracy is measured on: a top-1
# agreement on 32 inputs is a share with a 95 % interval about ±0.1 wide (Wilson), on 4 it
# could only be 0, 0.25, 0.5, 0.75 or 1.
DEFAULT_CALIBRATION = 32
# Inputs every lossy candidate not pruned is screened on before the fronts and picks are
# known (see the module docstring): enough for the screen's floor to rule out candidates far
# over the budget, few enough that running hundreds of tails stays cheap.
SCREEN_INPUTS = 4

AUTO_CODECS = tuple(
    CodecSpec.parse(s) for s in ("fp32", "fp32+zstd1", "fp16+zstd1", "int8+zstd1", "int4+zstd1")
)


@dataclass(frozen=True)
class PlanRequest:
    """Everything ``splitwire plan`` was asked; validated on construction."""

    model_spec: str
    input_shape: tuple[int, ...]
    links: tuple[LinkModel | LinkTrace, ...]
    codecs: tuple[CodecSpec, ...] = AUTO_CODECS
    objective: Objective = "latency"
    # A budget in a task metric (kl=1e-3, top1=0.99) or a bare relative error; None: the
    # model's default (task metrics for trained weights, 1 % relative error for random ones).
    accuracy_budget: AccuracyBudget | float | str | None = None
    # The JPEG baselines' qualities, each priced at 4:2:0 (jpegQ) and 4:4:4 (jpegQs444).
    jpeg_qualities: tuple[int, ...] = DEFAULT_JPEG_QUALITIES
    calibration: int = DEFAULT_CALIBRATION
    # The first this many calibration inputs screen every lossy candidate; fronts and picks
    # are confirmed on all of them (module docstring). With prune False all are measured.
    screen: int = SCREEN_INPUTS
    edge_profile: Profile | None = None
    cloud_profile: Profile | None = None
    edge_slowdown: float | None = None
    threads: int = 1
    repeats: int = 10
    # Progress bars in a terminal; False (--json): log lines only (see progress.py).
    progress: bool = False
    reuse_measurements: Path | None = None
    # How camera frames become the input (None: ImageNet statistics for image inputs).
    preprocess: Preprocess | None = None
    # Cuts (ids or names, or "all") shipped besides the picks.
    ship: tuple[str, ...] = ()
    # Ship the all-on-edge option too, the edge's fallback when the link or the tail fails
    # (False: `splitwire plan --no-local`, only the picks and --ship).
    local_fallback: bool = True
    # Frames the edge keeps in flight: bounds the pipelined throughput (see cost.py).
    window: int = DEFAULT_WINDOW
    # "synthetic", "skimage" (the photos bundled with scikit-image) or a directory of images;
    # None: real photos for a trained image model when they are installed, else synthetic.
    calibration_data: str | None = None
    # Skip the tail runs of lossy candidates an exact one beats on every link (they cannot be
    # on a front nor picked; see pruning.py). False measures everything, e.g. to reuse the
    # measurements for other links later.
    prune: bool = True
    # What the outputs mean (plan_file.TASKS: `--task`), over the model's own (zoo/hf); None:
    # the model's, which plan_model fills in (still None for a model of unknown task).
    task: str | None = None

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise PartitionerError(f"task {self.task!r}: expected one of {', '.join(TASKS)}")
        if not self.links:
            raise PartitionerError("no link given; pass --link (e.g. --link wifi)")
        if not self.codecs:
            raise PartitionerError("no codec given; pass --codec auto or codec specs")
        if self.edge_profile is not None and self.edge_slowdown is not None:
            raise PartitionerError(
                "--edge-profile and --edge-slowdown contradict each other: a measured profile "
                "already describes the edge; give one of them"
            )
        if self.edge_slowdown is not None and self.edge_slowdown <= 0:
            raise PartitionerError(f"edge slowdown {self.edge_slowdown} must be > 0")
        if self.accuracy_budget is not None and not isinstance(
            self.accuracy_budget, AccuracyBudget
        ):
            object.__setattr__(self, "accuracy_budget", parse_budget(self.accuracy_budget))
        bad = [q for q in self.jpeg_qualities if not 1 <= q <= 95]
        if bad or not self.jpeg_qualities:
            raise PartitionerError(
                f"JPEG qualities {list(self.jpeg_qualities)}: expected one or more in 1..95"
            )
        for name in ("calibration", "screen", "threads", "repeats", "window"):
            if getattr(self, name) < 1:
                raise PartitionerError(f"{name} = {getattr(self, name)}; expected at least 1")

    @property
    def camera_codecs(self) -> tuple[CodecSpec, ...]:
        """The camera-frame baselines' codecs (image inputs only): ``frame``, ``frame+zstd1``
        and every JPEG quality at 4:2:0 and 4:4:4."""
        return camera_codecs(self.jpeg_qualities)

    @property
    def budget(self) -> AccuracyBudget:
        """The accuracy budget: as given, else as :func:`plan_model` resolved it from the
        model, else (a request not planned yet) the relative-error default."""
        if isinstance(self.accuracy_budget, AccuracyBudget):
            return self.accuracy_budget
        return default_budget(None, trained=False)

    def link_states(self) -> list[LinkModel]:
        """Every link to plan for: traces contribute each of their states."""
        out: list[LinkModel] = []
        for link in self.links:
            out.extend(link.states() if isinstance(link, LinkTrace) else [link])
        return out


@dataclass(frozen=True)
class PlanOutcome:
    """What planning found (see :func:`plan_model`)."""

    request: PlanRequest
    model_hash: str
    graph: CapturedGraph
    cuts: tuple[Cut, ...]
    reference: Reference
    measurements: tuple[Measurement, ...]
    decisions: tuple[LinkDecision, ...]
    choice: Measurement
    robust_ratio: float | None
    edge: Profile
    cloud: Profile
    seconds: dict[str, float] = field(default_factory=dict)
    # Whether the weights came from a file (not the seeded random initialisation), and how
    # the weights want camera frames normalised, when the model says (``@pretrained``).
    trained: bool = False
    preprocess: Preprocess | None = None
    # Whether the weights are known to be the seeded random init (zoo/hf without weights).
    random_weights: bool = False
    # What the outputs mean (plan_file.TASKS; None: unknown), as resolved from --task and the
    # model: what plan.yaml and the measurements file record.
    task: str | None = None
    # How each output travels back to the edge, when the model says (plan.yaml's result_codec).
    result_codecs: tuple[str, ...] = ()

    @property
    def trained_weights(self) -> bool | None:
        """True: the spec gave the weights; False: they are known random; None: the builder's
        (a ``file.py:callable`` may load trained weights itself)."""
        return True if self.trained else (False if self.random_weights else None)


def plan_model(request: PlanRequest) -> PlanOutcome:
    """Capture, profile, measure and decide (see the module docstring).

    Raises:
        PartitionerError: a user error at any phase (spec, shape, profile, links, codecs).
    """
    seconds: dict[str, float] = {}
    with _timed(seconds, "capture"):
        loaded = load_model(request.model_spec)
        graph = capture(loaded.module, request.input_shape)
        digest = model_hash(graph)  # the graph and its weights: what the halves will run
        cuts = tuple(enumerate_cuts(graph))
        nodes = compute_nodes(graph)
    task = request.task or loaded.task
    request = dataclasses.replace(request, task=task)
    if request.accuracy_budget is None:
        budget = default_budget(task, trained=not loaded.random_weights)
        request = dataclasses.replace(request, accuracy_budget=budget)
    check_task(task, outputs=output_shapes(graph), budget=request.budget, spec=request.model_spec)
    if request.calibration_data is None:
        # Real photos for an image model whose weights are trained, or whose task is named
        # (a file model's builder may load trained weights itself).
        photos = (
            (loaded.trained or (task is not None and not loaded.random_weights))
            and is_image(request.input_shape)
            and bundled_photo_dir()
        )
        request = dataclasses.replace(request, calibration_data="skimage" if photos else SYNTHETIC)
    preprocess = request.preprocess or loaded.preprocess or default_preprocess(request.input_shape)
    with _timed(seconds, "profile"):
        edge, cloud = _profiles(request, graph, digest, nodes)
    # Nothing is timed while measuring bytes and accuracy: use every idle core.
    with _timed(seconds, "measure"), torch_threads(idle_cores()):
        if request.reuse_measurements is None:
            frames, inputs = _calibration(request, preprocess)
            camera = (frames, preprocess)
            reference, measurements = _measure(
                request, graph, cuts, nodes, edge, cloud, task, inputs, camera, seconds=seconds
            )
        else:
            # Outputs only (their shapes go into the plan): one forward pass, nothing kept.
            one = calibration_inputs(request.input_shape, 1, data=SYNTHETIC, preprocess=None)
            reference = record_reference(graph, one, ())
            cached = load_measurements(
                request.reuse_measurements,
                cache_key(request, digest, cuts, task=task),
                {cut.id: cut for cut in cuts},
                [str(c) for c in request.codecs],
                budget=request.budget,
            )
            by_id = {cut.id: cut for cut in cuts}
            measurements = [
                reprice(m, by_id[m.cut], edge=edge, cloud=cloud, all_nodes=nodes,
                        camera_ms=cached.camera_ms)
                for m in cached.measurements
            ]  # fmt: skip
            measurements = _measure_skipped(
                request, graph, by_id, measurements, task=task, preprocess=preprocess
            )
            measurements = _confirm_reused(
                request, graph, by_id, measurements, task=task, preprocess=preprocess
            )
    with _timed(seconds, "decide"):
        decisions, choice, ratio = decide(measurements, request)
    return PlanOutcome(
        request,
        digest,
        graph,
        cuts,
        reference,
        tuple(measurements),
        decisions,
        choice,
        ratio,
        edge,
        cloud,
        seconds,
        trained=loaded.trained,
        preprocess=loaded.preprocess,
        random_weights=loaded.random_weights,
        task=task,
        result_codecs=loaded.result_codecs,
    )


def idle_cores() -> int:
    """The cores no other process keeps busy (at least 1): the cores less the load average
    over the last minute, this process's own thread (it has been capturing and profiling)
    not counted. Torch's threads wait for each other at every op, so a thread on a core
    another process holds stalls the rest: on this 2-core machine under a load of 5 to 8,
    measuring with two threads was several times slower than with one."""
    cores = os.cpu_count() or 1
    busy = max(0.0, os.getloadavg()[0] - 1.0)
    return max(1, min(cores, round(cores - busy)))


def _calibration(
    request: PlanRequest, preprocess: Preprocess | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The calibration camera frames (None for inputs that are no image) and the inputs."""
    frames = calibration_frames(
        request.input_shape,
        request.calibration,
        data=request.calibration_data or SYNTHETIC,
        preprocess=preprocess,
    )
    if frames is not None:
        assert preprocess is not None  # calibration_frames needs it
        return frames, preprocess.apply(frames)
    inputs = calibration_inputs(
        request.input_shape, request.calibration, data=SYNTHETIC, preprocess=None
    )
    return None, inputs


def _measure_skipped(
    request: PlanRequest,
    graph: CapturedGraph,
    cuts: dict[str, Cut],
    measurements: Sequence[Measurement],
    *,
    task: str | None,
    preprocess: Preprocess | None,
) -> list[Measurement]:
    """Reused measurements for these links: candidates skipped when they were made that an
    exact one no longer beats on every link are measured now, on the same calibration inputs
    (the cache key fixes them); the rest are kept."""
    rechecked = recheck_skipped(measurements, request.link_states(), window=request.window)
    pending = list(dict.fromkeys(m.cut for m in rechecked if is_pending(m)))
    if not pending:
        return rechecked
    logger.info("measuring %d cuts whose skipped candidates may be on these fronts", len(pending))
    _, inputs = _calibration(request, preprocess)
    outputs = record_reference(graph, inputs, ()).outputs
    codecs: dict[str, list[str]] = {}
    for m in rechecked:
        if m.baseline is None and is_pending(m):
            codecs.setdefault(m.cut, []).append(m.codec)
    found = _tail_samples(
        request, graph, [cuts[cut_id] for cut_id in pending], codecs, inputs, outputs,
        tails={}, task=task, desc="measuring tails",
    )  # fmt: skip
    return [
        with_samples(m, found[(m.cut, m.codec)], request.budget) if (m.cut, m.codec) in found else m
        for m in rechecked
    ]


def _confirm_reused(
    request: PlanRequest,
    graph: CapturedGraph,
    cuts: dict[str, Cut],
    measurements: Sequence[Measurement],
    *,
    task: str | None,
    preprocess: Preprocess | None,
) -> list[Measurement]:
    """Reused measurements for these links: a candidate measured on the screen only that is
    now on a front or a pick, or could become one (:func:`_wanted`), is measured again on every
    calibration input (the screen's per-input figures are not stored), and the decision made
    again, until none is left: a re-plan's picks and fronts rest on every input too.

    The least cost the other inputs allow follows from the stored figures: a mean of
    per-input costs over ``n`` of ``N`` inputs is at least ``cost * n / N`` over all;
    ``rel`` needs the reference's norm over the screened inputs and over all of them.
    """
    count = request.calibration
    measured = list(measurements)
    screened = [m for m in measured if m.evidence is not None and m.evidence.inputs < count]
    if not screened:
        return measured
    frames, inputs = _calibration(request, preprocess)
    reference: Reference | None = None  # run the model only when something is to measure
    norms: list[float] = []
    budget = request.budget
    rounds = 0
    while True:
        floors: dict[tuple[str, str], float] = {}
        for m in measured:
            if m.evidence is None or m.evidence.inputs >= count:
                continue
            n = m.evidence.inputs
            if budget.metric == "rel":  # no floor until the reference's norms are known
                share = sum(norms[:n]) / (sum(norms) or 1.0) if norms else 0.0
                floors[(m.cut, m.codec)] = m.accuracy_cost * math.sqrt(share)
            else:  # a mean of per-input costs (miou has none: no floor)
                floors[(m.cut, m.codec)] = (
                    0.0 if budget.metric == "miou" else m.accuracy_cost * n / count
                )
        decisions, _, ratio = decide(measured, request)
        wanted = _wanted(request, decisions, ratio, floors)
        if not wanted:
            return measured
        if reference is None:
            reference = record_reference(graph, inputs, ())
            norms = [
                float(sum(o[i].double().pow(2).sum() for o in reference.outputs))
                for i in range(count)
            ]
            continue  # the floors again, now with the norms
        rounds += 1
        logger.info(
            "measuring %d reused candidates measured on the screen only on all %d inputs "
            "(round %d): on a front, a pick, or able to become one on these links",
            len(wanted),
            count,
            rounds,
        )
        by_key = {(m.cut, m.codec): m for m in measured}
        fresh: dict[tuple[str, str], MetricSamples] = {}
        by_cut: dict[str, list[str]] = {}
        for key in sorted(wanted):
            if is_camera_baseline(by_key[key]):
                assert frames is not None and preprocess is not None  # camera baselines had them
                decoded = preprocess.apply(
                    camera_roundtrip(frames, CodecSpec.parse(key[1])).decoded
                )
                fresh[key] = camera_samples(graph, decoded, reference, range(count), task=task)
            else:
                by_cut.setdefault(key[0], []).append(key[1])
        fresh |= _tail_samples(
            request, graph, [cuts[c] for c in by_cut], by_cut, inputs, reference.outputs,
            tails={}, task=task, desc="confirming tails",
        )  # fmt: skip
        measured = [
            with_samples(m, fresh[(m.cut, m.codec)], budget) if (m.cut, m.codec) in fresh else m
            for m in measured
        ]


def _measure(
    request: PlanRequest,
    graph: CapturedGraph,
    cuts: Sequence[Cut],
    nodes: Sequence[str],
    edge: Profile,
    cloud: Profile,
    task: str | None,
    inputs: torch.Tensor,
    camera: tuple[torch.Tensor | None, Preprocess | None] = (None, None),
    *,
    seconds: dict[str, float] | None = None,
) -> tuple[Reference, list[Measurement]]:
    """Measure every (cut, codec) on the calibration inputs, and the camera-frame baselines
    (raw frame, JPEG grid) on ``camera``'s uint8 frames, whose preprocessing gave ``inputs``.

    Bytes and times first, for every candidate (each codec's bytes on as few frames as
    :func:`~splitwire.partitioner.measure.bytes_settled` allows); then, with
    ``request.prune``, the lossy candidates an exact one beats on every link are marked
    ``dominated_by`` and their tails are not run; the rest are screened on the first
    ``request.screen`` inputs and confirmed on all where a front or a pick needs it
    (:func:`_confirm`). ``seconds`` gets each part.
    """
    timings: dict[str, float] = {} if seconds is None else seconds
    frames, preprocess = camera
    count = len(inputs)
    screen = min(request.screen, count)
    with _timed(timings, "measure.encode"):
        # The model's outputs on every input: what each codec's outputs are compared with.
        reference = record_reference(graph, inputs, ())
        first = min(count, max(BYTES_MIN_FRAMES, screen))
        head = record_reference(graph, inputs[:first], {t.node for c in cuts for t in c.crossing})
        sizes = _frame_sizes(request, graph, cuts, inputs, head)
        measured = []
        for cut in cuts:
            codecs = _codecs(request, cut)
            measured += measure_cut_bytes(
                cut,
                codecs,
                {c: sizes[(cut.id, c)] for c in codecs if (cut.id, c) in sizes},
                result_bytes=reference.result_bytes,
                edge=edge,
                cloud=cloud,
                task=task,
                budget=request.budget,
                all_nodes=nodes,
                raw_baseline=frames is None,  # an image's raw baseline is the camera frame
            )
        # The camera-frame baselines run the whole model: exact ones join the dominators.
        baselines = measure_camera(
            graph,
            cuts[0],
            reference,
            frames=frames,
            preprocess=preprocess,
            codecs=request.camera_codecs,
            edge=edge,
            cloud=cloud,
            task=task,
            budget=request.budget,
            all_nodes=nodes,
            screen=screen,
        )
        measured += baselines.measurements
        skip = (
            dominated_lossy(measured, request.link_states(), window=request.window)
            if request.prune
            else {}
        )
    if skip:
        pending = sum(m.metrics is None for m in measured)
        logger.info(
            "%d of %d lossy candidates not measured: an exact candidate beats each on every link",
            len(skip),
            pending,
        )
    samples: dict[tuple[str, str], MetricSamples] = {}
    tails: dict[str, torch.nn.Module] = {}  # by cut id, built once for screen and confirm
    with _timed(timings, "measure.screen"):
        measured = [
            dataclasses.replace(m, dominated_by=skip[(m.cut, m.codec)])
            if (m.cut, m.codec) in skip
            else m
            for m in measured
        ]
        by_id = {cut.id: cut for cut in cuts}
        todo = list(dict.fromkeys(m.cut for m in measured if is_pending(m)))
        outputs = [o[:screen] for o in reference.outputs]
        for cut_id in track(todo, desc="screening tails", unit="cut", bars=request.progress):
            cut = by_id[cut_id]
            mine = [m for m in measured if m.cut == cut_id and is_pending(m)]
            crossing = [crossing_value(head, t.node)[:screen] for t in cut.crossing]
            wanted = [CodecSpec.parse(m.codec) for m in mine]
            tails[cut_id] = split(graph, cut).tail
            found = cut_samples(tails[cut_id], crossing, wanted, outputs, task=task)
            for m in mine:
                samples[(m.cut, m.codec)] = found[CodecSpec.parse(m.codec)]
        for m in baselines.measurements:
            if m.codec in baselines.samples:
                samples[(m.cut, m.codec)] = baselines.samples[m.codec]
        measured = [
            with_samples(m, samples[(m.cut, m.codec)], request.budget)
            if (m.cut, m.codec) in samples
            else m
            for m in measured
        ]
        del head  # the first frames' activations of every cut: the largest thing kept
    with _timed(timings, "measure.confirm"):
        measured = _confirm(
            request, graph, by_id, measured, samples, reference,
            decoded=baselines.decoded, tails=tails, task=task,
        )  # fmt: skip
    return reference, measured


def _codecs(request: PlanRequest, cut: Cut) -> tuple[CodecSpec, ...]:
    # The raw baseline is on every table, whichever codecs were asked for.
    if cut.index == 0 and RAW_CODEC not in request.codecs:
        return (RAW_CODEC, *request.codecs)
    return request.codecs


def _frame_sizes(
    request: PlanRequest,
    graph: CapturedGraph,
    cuts: Sequence[Cut],
    inputs: torch.Tensor,
    head: Reference,
) -> dict[tuple[str, CodecSpec], list[int]]:
    """Each (cut, codec)'s encoded frame sizes: the frames ``head`` holds, then more, a few
    at a time, for those :func:`~splitwire.partitioner.measure.bytes_settled` finds unsettled
    (re-running the whole graph on the next frames, keeping only their cuts' activations)."""
    count = len(inputs)
    held = len(head.inputs)
    first = range(min(count, BYTES_MIN_FRAMES))
    sizes: dict[tuple[str, CodecSpec], list[int]] = {}
    known: TensorSizes = {}  # a tensor several cuts cross is encoded once
    for cut in track(cuts, desc="encoding cuts", unit="cut", bars=request.progress):
        if not cut.crossing and cut.index > 0:  # all on the edge: nothing to encode
            continue
        for codec in _codecs(request, cut):
            sizes[(cut.id, codec)] = frame_sizes(head, cut, codec, first, known=known)
    by_id = {cut.id: cut for cut in cuts}
    done = len(first)
    while done < count:
        unsettled = [key for key, got in sizes.items() if not bytes_settled(got, available=count)]
        if not unsettled:
            break
        stop = min(count, done + BYTES_MIN_FRAMES)
        # The frames ``head`` holds, else the next ones recorded for the unsettled cuts only.
        if stop <= held:
            more, frames, offset = head, range(done, stop), 0
        else:
            keep = {t.node for cut_id, _ in unsettled for t in by_id[cut_id].crossing}
            more, frames, offset = record_crossings(graph, inputs[done:stop], keep), None, done
        for cut_id, codec in unsettled:
            sizes[(cut_id, codec)] += frame_sizes(
                more, by_id[cut_id], codec, frames, first=offset, known=known
            )
        done = stop
    settled_early = sum(len(got) < count for got in sizes.values())
    if settled_early:
        logger.info(
            "bytes of %d of %d (cut, codec) pairs from fewer than all %d frames: their sizes "
            "agree within %g %% (95 %% interval of the mean)",
            settled_early, len(sizes), count, 100 * BYTES_TOLERANCE,
        )  # fmt: skip
    return sizes


def _confirm(
    request: PlanRequest,
    graph: CapturedGraph,
    cuts: dict[str, Cut],
    measured: list[Measurement],
    samples: dict[tuple[str, str], MetricSamples],
    reference: Reference,
    *,
    decoded: dict[str, torch.Tensor],
    tails: dict[str, torch.nn.Module],
    task: str | None,
) -> list[Measurement]:
    """Measure on every calibration input the screened candidates a front or a pick needs
    (:func:`_wanted`), decide again, and repeat until none is left: a confirmed figure can
    move another screened candidate onto a front or ahead of a pick.

    ``samples`` holds each measured candidate's per-input figures (updated here); ``decoded``
    the camera baselines' decoded inputs by codec; ``tails`` the screened cuts' tails.
    """
    count = len(reference.inputs)
    sq_reference = sum(float(o.double().pow(2).sum()) for o in reference.outputs)
    rounds = 0
    while True:
        decisions, _, ratio = decide(measured, request)
        floors = {
            key: found.cost_floor(request.budget, inputs=count, sq_reference=sq_reference)
            for key, found in samples.items()
            if found.inputs < count
        }
        wanted = _wanted(request, decisions, ratio, floors)
        if not wanted:
            return measured
        rounds += 1
        logger.info(
            "confirming %d candidates on all %d inputs (round %d): on a front, a pick, or able "
            "to become one",
            len(wanted),
            count,
            rounds,
        )
        start = min(samples[key].inputs for key in wanted)
        outputs = [o[start:] for o in reference.outputs]
        fresh: dict[tuple[str, str], MetricSamples] = {}
        for cut0, codec in [key for key in wanted if key[1] in decoded]:
            fresh[(cut0, codec)] = camera_samples(
                graph, decoded[codec], reference, range(start, count), task=task
            )
        by_cut: dict[str, list[str]] = {}
        for cut_id, codec in sorted(wanted):
            if codec not in decoded:
                by_cut.setdefault(cut_id, []).append(codec)
        fresh |= _tail_samples(
            request, graph, [cuts[c] for c in by_cut], by_cut, reference.inputs[start:], outputs,
            tails=tails, task=task, desc="confirming tails",
        )  # fmt: skip
        for key, more in fresh.items():
            samples[key] = samples[key].joined(more)
        measured = [
            with_samples(m, samples[(m.cut, m.codec)], request.budget)
            if (m.cut, m.codec) in fresh
            else m
            for m in measured
        ]


def _wanted(
    request: PlanRequest,
    decisions: Sequence[LinkDecision],
    robust_ratio: float | None,
    floors: Mapping[tuple[str, str], float],
) -> set[tuple[str, str]]:
    """The candidates measured on fewer than every input (the keys of ``floors``, each with
    the least cost the rest of the inputs allow) that are on a front, a pick, or better than a
    pick on the objective (on a link, or in the robust ratio) while the rest of the inputs
    could still bring them within the budget; every one when ``request.prune`` is False."""
    if not request.prune:  # measure everything on every input
        return set(floors)
    budget = request.budget
    field, sense = OBJECTIVE_FIELDS[request.objective]
    sign = 1.0 if sense == "min" else -1.0

    def screened(c: Candidate) -> bool:
        return (c.measurement.cut, c.measurement.codec) in floors

    def could_fit(c: Candidate) -> bool:
        return floors[(c.measurement.cut, c.measurement.codec)] <= budget.max_cost

    wanted = set()
    worst: dict[tuple[str, str], float] = {}
    for d in decisions:
        best = d.pick.objective(field)
        for c in d.candidates:
            key = (c.measurement.cut, c.measurement.codec)
            value = c.objective(field)
            # A best of 0 (--objective bytes: all on the edge sends nothing): any other is
            # infinitely worse, as in the robust pick.
            num, den = (value, best) if sense == "min" else (best, value)
            ratio = 1.0 if value == best else (num / den if den > 0 else math.inf)
            if not math.isfinite(ratio) or ratio < 0:
                ratio = math.inf
            worst[key] = max(worst.get(key, 0.0), ratio)
            if not screened(c):
                continue
            ahead = sign * value <= sign * best and could_fit(c)
            if c.pareto or c is d.pick or ahead:
                wanted.add(key)
    if robust_ratio is not None:
        for d in decisions:
            for c in d.candidates:
                key = (c.measurement.cut, c.measurement.codec)
                if screened(c) and worst[key] <= robust_ratio and could_fit(c):
                    wanted.add(key)
    return wanted


def _tail_samples(
    request: PlanRequest,
    graph: CapturedGraph,
    cuts: Sequence[Cut],
    codecs: Mapping[str, Sequence[str]],
    inputs: torch.Tensor,
    outputs: Sequence[torch.Tensor],
    *,
    tails: Mapping[str, torch.nn.Module],
    task: str | None,
    desc: str,
) -> dict[tuple[str, str], MetricSamples]:
    """The per-input figures of each of ``codecs[cut.id]`` at each of ``cuts`` on ``inputs``
    (whose model outputs are ``outputs``): one run of the graph on every input, each cut's
    tail run on its decoded crossing tensors as they are computed
    (:func:`~splitwire.partitioner.measure.stream_cuts`), with the tails in ``tails`` or built
    here."""
    found: dict[tuple[str, str], MetricSamples] = {}
    bar = iter(track(range(len(cuts)), desc=desc, unit="cut", bars=request.progress))

    def visit(cut: Cut, crossing: list[torch.Tensor]) -> None:
        wanted = [CodecSpec.parse(c) for c in codecs[cut.id]]
        tail = tails.get(cut.id) or split(graph, cut).tail
        samples = cut_samples(tail, crossing, wanted, outputs, task=task)
        for codec in codecs[cut.id]:
            found[(cut.id, codec)] = samples[CodecSpec.parse(codec)]
        next(bar, None)

    stream_cuts(graph, inputs, cuts, visit)
    for _ in bar:  # the progress log's last line
        pass
    return found


def decide(
    measurements: Sequence[Measurement], request: PlanRequest
) -> tuple[tuple[LinkDecision, ...], Measurement, float | None]:
    """Decide on every link, then choose: the single link's pick, or the robust pick."""
    decisions = tuple(
        decide_link(
            measurements,
            link,
            objective=request.objective,
            accuracy_budget=request.budget.max_cost,
            window=request.window,
        )
        for link in request.link_states()
    )
    if len(decisions) == 1:
        return decisions, decisions[0].pick.measurement, None
    choice, ratio = robust_pick(
        decisions, objective=request.objective, accuracy_budget=request.budget.max_cost
    )
    return decisions, choice, ratio


def provenance(outcome: PlanOutcome) -> dict[str, Any]:
    """Where a plan's figures come from (``plan.yaml``'s ``provenance`` section)."""
    request = outcome.request

    def device(profile: Profile) -> dict[str, Any]:
        d = profile.device
        return {
            "description": d.description,
            "threads": d.threads,
            "torch_version": str(d.torch_version),
            "slowdown": d.slowdown,
            "emulated": d.emulated,
        }

    return {
        "splitwire_version": __version__,
        "torch_version": str(torch.__version__),
        "edge": device(outcome.edge),
        "cloud": device(outcome.cloud),
        "calibration": f"{request.calibration} × {describe_calibration(request.calibration_data)}",
        "trained_weights": outcome.trained_weights,
        "accuracy_budget": request.budget.text,
        "window": request.window,
    }


def cache_key(
    request: PlanRequest, model_hash: str, cuts: Sequence[Cut], *, task: str | None
) -> CacheKey:
    """What this request's measurements depend on (``task``: the model's, as resolved)."""
    return CacheKey(
        model_hash,
        request.input_shape,
        request.calibration,
        tuple(str(c) for c in request.camera_codecs) if is_image(request.input_shape) else (),
        versions=f"splitwire {__version__}, torch {torch.__version__}",
        crossings=crossings_digest(cuts),
        calibration_data=request.calibration_data or SYNTHETIC,
        task=task,
    )


SYNTHETIC = "synthetic"


def describe_calibration(data: str | None) -> str:
    """What calibration data a plan was measured on, in words (its provenance)."""
    if data in (None, SYNTHETIC):
        return (
            "synthetic camera frames (uint8, seed 1234) for image inputs, else standard normal "
            "values"
        )
    if data == "skimage":
        return "crops of the photos bundled with scikit-image (seed 1234)"
    return f"crops of the photos in {data} (seed 1234)"


def is_image(input_shape: Sequence[int]) -> bool:
    """Whether the input is an ``(N, 1|3, H, W)`` image, what a camera gives."""
    return len(input_shape) == 4 and input_shape[1] in (1, 3)


def calibration_frames(
    input_shape: Sequence[int], count: int, *, data: str, preprocess: Preprocess | None
) -> torch.Tensor | None:
    """The uint8 camera frames ``(count, C, H, W)`` the calibration inputs are preprocessed
    from, or None when the input is no image with preprocessing (and ``data`` is synthetic).

    ``data`` ``synthetic``: :func:`~splitwire.partitioner.baselines.synthetic_frames` (seed
    1234). ``skimage`` or a directory: real photos
    (:func:`~splitwire.partitioner.photos.photo_frames`: centre crops, then seeded random crops
    and flips).

    Raises:
        PartitionerError: photos for an input that is not an image, or without preprocessing;
            no photos at the source.
    """
    if not is_image(input_shape) or preprocess is None:
        if data == SYNTHETIC:
            return None
        raise PartitionerError(
            f"--calibration-data {data}: photos need an (N, 1|3, H, W) image input with its "
            f"preprocessing; this input is {list(input_shape)}"
        )
    _, channels, height, width = input_shape
    if data == SYNTHETIC:
        return synthetic_frames(count, input_shape[1:], preprocess=preprocess, seed=1234)
    return photo_frames(data, count, height=height, width=width, channels=channels, seed=1234)


def calibration_inputs(
    input_shape: Sequence[int], count: int, *, data: str, preprocess: Preprocess | None
) -> torch.Tensor:
    """Calibration inputs of ``input_shape`` (batch replaced by ``count``).

    Image inputs with ``preprocess``: :func:`calibration_frames` (synthetic or real), turned
    into the input by ``preprocess``. Otherwise (``data`` must be ``synthetic``): synthetic
    images for (N, C, H, W) inputs, standard normal values for others.

    Raises:
        PartitionerError: as :func:`calibration_frames`.
    """
    frames = calibration_frames(input_shape, count, data=data, preprocess=preprocess)
    if frames is not None:
        assert preprocess is not None  # calibration_frames returns frames only with it
        return preprocess.apply(frames)
    if data == SYNTHETIC:
        if len(input_shape) == 4:
            return synthetic_images(count, input_shape[1:], seed=1234)
        return torch.randn((count, *input_shape[1:]), generator=torch.Generator().manual_seed(1234))
    raise AssertionError("calibration_frames refuses photos without an image input")


def write_plan_directory(
    outcome: PlanOutcome, directory: Path, *, signing_key: Ed25519PrivateKey | None = None
) -> Plan:
    """Export the halves of every cut the plan refers to (the picks, ``--ship``, and the
    all-on-edge cut, the edge's local fallback, unless ``request.local_fallback`` is False)
    and write ``plan.yaml``, signed with
    ``signing_key`` when one is given (``plan.yaml.sig``, :mod:`splitwire.partitioner.signing`).
    Re-planning into ``directory`` removes the cut folders an earlier plan left that this one
    does not ship (:func:`~splitwire.partitioner.outputs.remove_stale_cuts`).

    Returns:
        The plan as written.
    """
    request = outcome.request
    by_id = {cut.id: cut for cut in outcome.cuts}
    choices = [_link_choice(d) for d in outcome.decisions]
    single = len(outcome.decisions) == 1
    chosen = choices[0] if single else _robust_choice(outcome.choice, outcome.decisions)
    plan_cuts: dict[str, PlanCut] = {}
    shipped = [chosen.cut, *(c.cut for c in choices), *_shipped(request.ship, outcome.cuts)]
    if request.local_fallback:
        shipped += [m.cut for m in outcome.measurements if m.baseline == ALL_ON_EDGE]
    for cut_id in dict.fromkeys(shipped):
        plan_cuts[cut_id] = _export_cut(outcome, by_id[cut_id], directory)
    plan = Plan(
        model_spec=request.model_spec,
        model_hash=outcome.model_hash,
        input_shape=request.input_shape,
        objective=request.objective,
        accuracy_budget=request.budget.max_cost,
        accuracy_metric=request.budget.metric,
        choice=chosen,
        links=tuple(choices),
        cuts=plan_cuts,
        options=tuple(plan_option(m) for m in outcome.measurements if m.cut in plan_cuts),
        preprocess=(
            request.preprocess or outcome.preprocess or default_preprocess(request.input_shape)
        ),
        provenance=provenance(outcome),
        task=outcome.task,
    )
    write_plan(plan, directory, signing_key=signing_key)
    # After plan.yaml: until it is replaced, the old plan's cuts are what it refers to.
    remove_stale_cuts(directory, keep=plan_cuts)
    save_measurements(
        directory,
        cache_key(request, outcome.model_hash, outcome.cuts, task=outcome.task),
        outcome.measurements,
        edge_slowdown=outcome.edge.device.slowdown,
        cloud_slowdown=outcome.cloud.device.slowdown,
    )
    return plan


def _shipped(names: Sequence[str], cuts: Sequence[Cut]) -> list[str]:
    """The ids of the cuts ``--ship`` names (ids, names, or ``all``).

    Raises:
        PartitionerError: a name that is no cut of this graph.
    """
    if "all" in names:
        return [cut.id for cut in cuts]
    by_name = {cut.id: cut.id for cut in cuts} | {cut.name: cut.id for cut in cuts}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise PartitionerError(
            f"--ship {', '.join(unknown)}: no such cut; expected ids c0000..c{len(cuts) - 1:04d} "
            "or cut names (splitwire plan --json lists them)"
        )
    return [by_name[name] for name in names]


def default_preprocess(input_shape: Sequence[int]) -> Preprocess | None:
    """ImageNet normalisation for (N, 1|3, H, W) image inputs; None for other inputs."""
    if len(input_shape) != 4 or input_shape[1] not in (1, 3):
        return None
    return IMAGENET if input_shape[1] == 3 else IMAGENET_GREY


def plan_option(m: Measurement) -> PlanOption:
    """A shipped (cut, codec) with its link-independent figures."""
    sends = m.sends
    return PlanOption(
        cut=m.cut,
        codec=m.codec,
        baseline=m.baseline,
        edge_ms=m.edge_ms,
        cloud_ms=m.cloud_ms,
        bytes_up=m.bytes_wire if sends else 0.0,
        bytes_down=float(m.result_bytes) if sends else 0.0,
        accuracy_cost=m.accuracy_cost,
    )


def _link_choice(decision: LinkDecision) -> LinkChoice:
    """A link's entry in the plan: its pick with the predicted figures."""
    c, m = decision.pick, decision.pick.measurement
    predicted = {
        "latency_ms": c.latency_ms,
        "throughput_fps": c.throughput_fps,
        "bytes_wire": m.bytes_wire,
        "edge_ms": c.edge_ms,
        "accuracy_cost": m.accuracy_cost,
    }
    return LinkChoice(str(decision.link), m.cut, m.codec, m.baseline, predicted)


def _robust_choice(measurement: Measurement, decisions: Sequence[LinkDecision]) -> LinkChoice:
    """The robust pick's entry: its worst latency and throughput over every link."""
    mine = [
        c
        for d in decisions
        for c in d.candidates
        if (c.measurement.cut, c.measurement.codec) == (measurement.cut, measurement.codec)
    ]
    predicted = {
        "worst_latency_ms": max(c.latency_ms for c in mine),
        "worst_throughput_fps": min(c.throughput_fps for c in mine),
        "bytes_wire": measurement.bytes_wire,
        "accuracy_cost": measurement.accuracy_cost,
    }
    return LinkChoice("robust", measurement.cut, measurement.codec, measurement.baseline, predicted)


def _export_cut(outcome: PlanOutcome, cut: Cut, directory: Path) -> PlanCut:
    relative = Path(CUTS_FOLDER) / cut.id
    head_path, tail_path = export_split(
        split(outcome.graph, cut), outcome.graph, directory / relative
    )
    batch = outcome.request.input_shape[0]
    outputs = tuple(
        TensorSpec(f"output{i}", (batch, *o.shape[1:]), DTYPE_NAMES[o.dtype])
        for i, o in enumerate(outcome.reference.outputs)
    )
    if outcome.result_codecs:
        outputs = _with_result_codecs(outputs, outcome.result_codecs, outcome.request.model_spec)
    crossing = tuple(TensorSpec(t.node, t.shape, t.dtype) for t in cut.crossing)
    return PlanCut(
        id=cut.id,
        name=cut.name,
        head=str(relative / head_path.name),
        tail=str(relative / tail_path.name),
        inputs=(TensorSpec("input", outcome.request.input_shape, "float32"),),
        crossing=crossing if cut.crossing else outputs,
        outputs=outputs,
        head_sha256=sha256_file(head_path),
        tail_sha256=sha256_file(tail_path),
    )


def _with_result_codecs(
    outputs: tuple[TensorSpec, ...], codecs: Sequence[str], spec: str
) -> tuple[TensorSpec, ...]:
    """The model's outputs with the result codecs it declares, checked against them.

    Raises:
        PlanError: not one codec per output, or a codec an output cannot travel with.
    """
    if len(codecs) != len(outputs):
        raise PlanError(
            f"{spec} declares {len(codecs)} result codecs ({', '.join(codecs)}) for "
            f"{len(outputs)} outputs; expected one per output"
        )
    out = []
    for tensor, text in zip(outputs, codecs, strict=True):
        try:
            codec = ResultCodec.parse(text)
            codec.check(tensor.shape, tensor.dtype)
        except CodecSpecError as exc:
            raise PlanError(f"{spec}: {tensor.name}: {exc.message}") from exc
        out.append(dataclasses.replace(tensor, result_codec=codec))
    return tuple(out)


def _profiles(
    request: PlanRequest, graph: CapturedGraph, digest: str, nodes: Sequence[str]
) -> tuple[Profile, Profile]:
    """The edge and cloud profiles: given ones are checked, missing ones measured here once."""
    for given in (request.edge_profile, request.cloud_profile):
        if given is not None:
            check_profile_matches(
                given, model_hash=digest, input_shape=request.input_shape, node_names=nodes
            )
    local: Profile | None = None
    if request.edge_profile is None or request.cloud_profile is None:
        local = profile_graph(
            graph,
            model_spec=request.model_spec,
            model_hash=digest,
            threads=request.threads,
            repeats=request.repeats,
            # The raw baseline is on every table, so its codec is timed whatever was asked.
            codecs=list(dict.fromkeys([str(RAW_CODEC), *(str(c) for c in request.codecs)])),
            progress=request.progress,
        )
    edge = request.edge_profile or _required(local)
    if request.edge_slowdown is not None:
        edge = edge.scaled(request.edge_slowdown)
    cloud = request.cloud_profile or _required(local)
    return edge, cloud


def _required(profile: Profile | None) -> Profile:
    assert profile is not None  # measured above whenever a side had no profile
    return profile


# Each phase logs its start and duration (splitwire.partitioner.progress).
_timed = phase
