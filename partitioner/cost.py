"""The cost model: what one (cut, codec) costs on one link.

Everything link-independent about a (cut, codec) pair is *measured* once into a
:class:`Measurement` (compute per side from the profiles, wire bytes from encoding real
activations, accuracy from running the tail on decoded activations). :func:`evaluate` then prices
it on a :class:`~splitwire.partitioner.link.LinkModel` with closed-form arithmetic, which is what
makes sweeping many links cheap::

    edge_ms        = preprocess + head compute + encode + hand-off      (edge profile)
    transfer_ms    = link.transfer_s(bytes_up, bytes_down)     (RTT, both directions, loss, jitter)
    cloud_ms       = decode + tail compute + message           (cloud profile; message: both)
    latency_ms     = edge_ms + transfer_ms + cloud_ms
    uplink_ms      = bytes_up · 8 / effective uplink           (serialising one frame)
    downlink_ms    = bytes_down · 8 / effective downlink       (serialising one frame's results)
    throughput_fps = min(1000 / max(edge_ms, uplink_ms, downlink_ms, cloud_ms),
                         window · 1000 / latency_ms)

The per-frame terms beyond compute and codecs are measured in the profiles
(:class:`~splitwire.partitioner.profile_format.FrameCosts`; 0 from a schema 2 profile):
*preprocess* turns the camera's uint8 frame into the model's input before the head (splits and
all-on-edge; the camera baselines send the frame and the cloud preprocesses it, inside their
measured decode); *hand-off* is the agent's event loop passing the frame to its compute thread
and back; *message* is one frame's round trip through the transport stack (gRPC, protobuf,
chunking, both event loops: :meth:`~splitwire.partitioner.profile_format.FrameCosts.message_ms`
of the bytes sent, the mean of the edge's and the cloud's profile), charged with the cloud's
term because a plan's option carries an edge and a cloud time only (it is CPU on both ends,
not link time: it does not slow the uplink stage).

Frames are pipelined: while frame t is on the wire the edge already computes frame t+1, so the
slowest stage bounds the rate. But the edge agent keeps at most ``window`` frames in flight (from
the start of the head to the answer), and each is in flight for ``latency_ms``; by Little's law at
most ``window / latency`` frames per second complete. ``window`` defaults to
:data:`DEFAULT_WINDOW`, the edge agent's default ``--window``; ``math.inf`` gives unbounded
pipelining (the stage bound alone). All-on-edge sends nothing: its throughput is
``1000 / edge_ms`` whatever the window (the edge computes one frame at a time).
:attr:`Price.bottleneck` names the bound that limits: ``edge``, ``uplink``, ``downlink``,
``cloud`` or ``window``.

Worked example: a cut whose head takes 30 ms and encodes in 2 ms (edge 32 ms), sending 50 kB
and receiving 4 kB over a lossless 20 Mbit/s link with 40 ms RTT (uplink 20 ms, downlink 1.6 ms),
with a 5 ms decode + tail: latency = 32 + (40 + 20 + 1.6) + 5 = 98.6 ms. The stages allow
1000 / max(32, 20, 1.6, 5) = 31.25 frames/s; a window of 4 allows 4000 / 98.6 = 40.6 frames/s,
so the edge limits: 31.25 frames/s. With a window of 1 (no pipelining) it is 1000 / 98.6 =
10.1 frames/s, and with a 200 ms RTT (latency 258.6 ms) a window of 4 allows only
4000 / 258.6 = 15.5 frames/s: the window limits, not the edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from splitwire.partitioner.accuracy import Evidence, TaskMetrics
from splitwire.partitioner.cuts import CrossingTensor
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.pareto import Sense
from splitwire.partitioner.plan_file import PlanOption

# Objectives of the Pareto front, in the order candidates list them.
OBJECTIVES: tuple[tuple[str, Sense], ...] = (
    ("latency_ms", "min"),
    ("throughput_fps", "max"),
    ("bytes_wire", "min"),
    ("edge_ms", "min"),
    ("accuracy_cost", "min"),
)

ALL_ON_EDGE = "all-on-edge"
ALL_IN_CLOUD_RAW = "all-in-cloud-raw"
ALL_IN_CLOUD_JPEG = "all-in-cloud-jpeg"

# Frames in flight the edge agent allows by default (``splitwire edge --window``; kept equal to
# ``splitwire.edge.config.DEFAULT_WINDOW``, which a test checks): plans are priced for it.
DEFAULT_WINDOW = 4
# What can limit a pipelined stream (see :attr:`Price.bottleneck`).
BOTTLENECKS = ("edge", "uplink", "downlink", "cloud", "window")


@dataclass(frozen=True)
class Measurement:
    """What one (cut, codec) pair costs, independent of the link.

    Attributes:
        cut: the cut's id; ``cut_name`` its readable position; ``cut_index`` its position.
        codec: the codec of the crossing tensors (``frame`` or ``jpeg75s444`` for the camera
            baselines, which send the uint8 frame; ``none`` when nothing is sent).
        baseline: which baseline this is, or None for a split.
        crossing: the tensors sent (shapes at the plan's batch).
        bytes_raw: their size uncompressed; ``bytes_wire`` the mean encoded size per frame
            (headers included) over the calibration inputs.
        result_bytes: the encoded model outputs the cloud sends back.
        head_ms / tail_ms: compute on each side, from that side's profile.
        encode_ms / decode_ms: the codec's time on the edge / the cloud.
        preprocess_ms: the camera frame to the model's input on the edge (0 when the edge
            sends the camera frame).
        handoff_ms: the agent's hand-off of the frame to its compute thread and back.
        message_ms: the frame's round trip through the transport stack, both ends (0 when
            nothing is sent). These three are 0 for profiles that did not measure them.
        accuracy_cost: what the codec costs in the plan's accuracy metric, lower is better
            (:class:`~splitwire.partitioner.accuracy.AccuracyBudget.cost`; 0 = exact).
        top1_agreement: for classifiers, the fraction of calibration inputs whose top-1 class
            is unchanged by the codec.
        metrics: every task metric measured (relative error, KL, top-1/5, pixel agreement).
        dominated_by: ``"cut/codec"`` of an exact candidate that beats this lossy one on
            latency, throughput, bytes and edge ms on every link, so its tail was never run
            (:mod:`splitwire.partitioner.pruning`): its accuracy is unknown, ``accuracy_cost``
            is ``inf`` and ``metrics`` None, so it is neither on a front nor ever picked.
        evidence: how many calibration inputs the metrics were measured on and each metric's
            95 % interval (:class:`~splitwire.partitioner.accuracy.Evidence`); None when the
            accuracy is exact by construction (a lossless codec, nothing sent: no tail ran)
            or was never measured.
        accuracy_interval: the 95 % interval of the budget's metric (in the metric's units:
            an agreement, not its cost); a point for exact candidates, None unmeasured.
        bytes_frames: how many calibration frames ``bytes_wire`` is the mean of (fewer than
            the calibration inputs when the sizes agreed closely enough; see
            :func:`splitwire.partitioner.measure.measure_cut_bytes`).
    """

    cut: str
    cut_name: str
    cut_index: int
    codec: str
    baseline: str | None
    crossing: tuple[CrossingTensor, ...]
    bytes_raw: int
    bytes_wire: float
    result_bytes: int
    head_ms: float
    tail_ms: float
    encode_ms: float
    decode_ms: float
    accuracy_cost: float
    top1_agreement: float | None
    metrics: TaskMetrics | None = None
    dominated_by: str | None = None
    evidence: Evidence | None = None
    accuracy_interval: tuple[float, float] | None = None
    bytes_frames: int = 0
    preprocess_ms: float = 0.0
    handoff_ms: float = 0.0
    message_ms: float = 0.0

    @property
    def sends(self) -> bool:
        """False for all-on-edge, where nothing crosses the network."""
        return self.baseline != ALL_ON_EDGE

    @property
    def edge_ms(self) -> float:
        """The edge's time per frame: preprocess + head + encode + hand-off."""
        return self.preprocess_ms + self.head_ms + self.encode_ms + self.handoff_ms

    @property
    def cloud_ms(self) -> float:
        """The cloud's time per frame with the transport's round trip: decode + tail +
        message; 0 when nothing is sent."""
        return self.decode_ms + self.tail_ms + self.message_ms if self.sends else 0.0


@dataclass(frozen=True)
class Candidate:
    """A measurement priced on one link; ``pareto`` is filled in by the planner.

    ``link`` is the link's full spec, ``str(LinkModel)`` (the text plan.yaml records): a name
    alone could be shared, e.g. every ``bw=...,rtt=...`` link is named ``custom``.
    ``bottleneck`` names what limits ``throughput_fps`` (see :attr:`Price.bottleneck`).
    """

    measurement: Measurement
    link: str
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    latency_ms: float
    throughput_fps: float
    pareto: bool = False
    bottleneck: str = ""

    def objective(self, name: str) -> float:
        """The value of one objective of :data:`OBJECTIVES`."""
        if name == "bytes_wire":
            return self.measurement.bytes_wire
        if name == "accuracy_cost":
            return self.measurement.accuracy_cost
        value: float = getattr(self, name)
        return value

    def with_pareto(self, pareto: bool) -> Candidate:
        """A copy marked on (or off) the front."""
        return replace(self, pareto=pareto)

    def as_json(self) -> dict[str, Any]:
        """The candidate as the flat record ``splitwire plan --json`` prints."""
        m = self.measurement
        return {
            "cut": m.cut,
            "cut_name": m.cut_name,
            "cut_index": m.cut_index,
            "crossing": [asdict(t) | {"shape": list(t.shape)} for t in m.crossing],
            "codec": m.codec,
            "link": self.link,
            "baseline": m.baseline,
            "bytes_raw": m.bytes_raw,
            "bytes_wire": round(m.bytes_wire, 1),
            "result_bytes": m.result_bytes,
            "edge_ms": round(self.edge_ms, 4),
            "transfer_ms": round(self.transfer_ms, 4),
            "cloud_ms": round(self.cloud_ms, 4),
            "latency_ms": round(self.latency_ms, 4),
            "throughput_fps": round(self.throughput_fps, 4),
            "bottleneck": self.bottleneck,
            "accuracy_cost": None if m.dominated_by else m.accuracy_cost,
            "top1_agreement": m.top1_agreement,
            "metrics": asdict(m.metrics) if m.metrics is not None else None,
            # Null inputs with an interval: exact by construction (no tail ran).
            "accuracy_inputs": m.evidence.inputs if m.evidence is not None else None,
            "accuracy_interval": list(m.accuracy_interval) if m.accuracy_interval else None,
            "bytes_frames": m.bytes_frames,
            "pareto": self.pareto,
            "not_measured": (
                f"dominated by {m.dominated_by} on every link" if m.dominated_by else None
            ),
        }


@dataclass(frozen=True)
class Price:
    """What a (cut, codec) costs on one link (see the module docstring for the formulas).

    ``bottleneck`` is what limits ``throughput_fps``, one of :data:`BOTTLENECKS`: a pipeline
    stage (``edge``, ``uplink``, ``downlink``, ``cloud``) or the in-flight ``window``.
    """

    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    latency_ms: float
    throughput_fps: float
    bottleneck: str


def price(
    *, edge_ms: float, cloud_ms: float, bytes_up: float, bytes_down: float, link: LinkModel,
    sends: bool = True, window: float = DEFAULT_WINDOW,
) -> Price:  # fmt: skip
    """Price a (cut, codec) from its link-independent figures: what the planner does for every
    candidate, and what a runtime does again for a plan's options under the link it measures.

    Args:
        edge_ms: head compute + encode; ``cloud_ms``: decode + tail compute.
        bytes_up: encoded frame size; ``bytes_down``: encoded results.
        link: the link to price on.
        sends: False for all-on-edge (nothing crosses, the cloud does nothing, no window bound).
        window: frames in flight at most (the edge agent's ``--window``, default
            :data:`DEFAULT_WINDOW`); ``math.inf`` for unbounded pipelining.

    Raises:
        ValueError: for a window below 1 (or not a number).
    """
    if isinstance(window, bool) or not isinstance(window, int | float) or not window >= 1:
        raise ValueError(f"window={window!r}: expected at least 1 frame in flight")
    if not sends:
        return Price(edge_ms, 0.0, 0.0, edge_ms, 1000.0 / max(edge_ms, 1e-9), "edge")
    up, down = round(bytes_up), round(bytes_down)
    transfer_ms = 1000.0 * link.transfer_s(up, down)
    latency_ms = edge_ms + transfer_ms + cloud_ms
    stages = {
        "edge": edge_ms,
        "uplink": 1000.0 / link.max_frames_per_s(up),
        "downlink": 1000.0 / link.max_results_per_s(down),
        "cloud": cloud_ms,
    }
    stage = max(stages, key=lambda name: stages[name])  # the first of equals, in that order
    throughput_fps = 1000.0 / max(stages[stage], 1e-9)
    bottleneck = stage
    window_fps = window * 1000.0 / max(latency_ms, 1e-9)  # Little's law
    if window_fps < throughput_fps:
        throughput_fps, bottleneck = window_fps, "window"
    return Price(edge_ms, transfer_ms, cloud_ms, latency_ms, throughput_fps, bottleneck)


def price_option(option: PlanOption, link: LinkModel, *, window: float = DEFAULT_WINDOW) -> Price:
    """Price a plan's shipped option on ``link`` (an edge re-pricing under a measured link)
    with at most ``window`` frames in flight."""
    return price(
        edge_ms=option.edge_ms,
        cloud_ms=option.cloud_ms,
        bytes_up=option.bytes_up,
        bytes_down=option.bytes_down,
        link=link,
        sends=option.codec != "none",
        window=window,
    )


def evaluate(
    measurement: Measurement, link: LinkModel, *, window: float = DEFAULT_WINDOW
) -> Candidate:
    """Price ``measurement`` on ``link`` with at most ``window`` frames in flight (see the module
    docstring for the formulas)."""
    m = measurement
    p = price(
        edge_ms=m.edge_ms,
        cloud_ms=m.cloud_ms,
        bytes_up=m.bytes_wire,
        bytes_down=m.result_bytes,
        link=link,
        sends=m.sends,
        window=window,
    )
    return Candidate(
        m, str(link), p.edge_ms, p.transfer_ms, p.cloud_ms, p.latency_ms, p.throughput_fps,
        bottleneck=p.bottleneck,
    )  # fmt: skip
