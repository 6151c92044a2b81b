"""The cost model: what one (cut, codec) costs on one link.

Everything link-independent about a (cut, codec) pair is *measured* once into a
:class:`Measurement` (compute per side from the profiles, wire bytes from encoding real
activations, accuracy from running the tail on decoded activations). :func:`evaluate` then prices
it on a :class:`~splitwire.partitioner.link.LinkModel` with closed-form arithmetic, which is what
makes sweeping many links cheap::

    edge_ms       = head compute + encode                    (edge profile)
    transfer_ms   = link.transfer_s(bytes_wire, result_bytes) (RTT, both directions, loss, jitter)
    cloud_ms      = decode + tail compute                    (cloud profile)
    latency_ms    = edge_ms + transfer_ms + cloud_ms
    throughput    = 1 / max(edge_ms, uplink_ms, cloud_ms)    (pipelined: frames overlap)

Worked example: a cut whose head takes 30 ms and encodes in 2 ms, sending 50 kB over 20 Mbit/s
with 40 ms RTT (uplink 20 ms), a 5 ms tail: latency = 32 + (40 + 20 + …) + 5 ≈ 97 ms, while the
pipelined throughput is 1 / max(32, 20, 5) ms ≈ 31 frames/s, because while frame t is on the
wire the edge already computes frame t+1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

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


@dataclass(frozen=True)
class Measurement:
    """What one (cut, codec) pair costs, independent of the link.

    Attributes:
        cut: the cut's id; ``cut_name`` its readable position; ``cut_index`` its position.
        codec: the codec of the crossing tensors (``jpeg90`` for the JPEG baseline, ``none``
            when nothing is sent).
        baseline: which baseline this is, or None for a split.
        crossing: the tensors sent (shapes at the plan's batch).
        bytes_raw: their size uncompressed; ``bytes_wire`` the mean encoded size per frame
            (headers included) over the calibration inputs.
        result_bytes: the encoded model outputs the cloud sends back.
        head_ms / tail_ms: compute on each side, from that side's profile.
        encode_ms / decode_ms: the codec's time on the edge / the cloud.
        accuracy_cost: relative error of the model output caused by the codec (0 = exact).
        top1_agreement: for classifiers, the fraction of calibration inputs whose top-1 class
            is unchanged by the codec.
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

    @property
    def sends(self) -> bool:
        """False for all-on-edge, where nothing crosses the network."""
        return self.baseline != ALL_ON_EDGE


@dataclass(frozen=True)
class Candidate:
    """A measurement priced on one link; ``pareto`` is filled in by the planner.

    ``link`` is the link's full spec, ``str(LinkModel)`` (the text plan.yaml records): a name
    alone could be shared, e.g. every ``bw=...,rtt=...`` link is named ``custom``.
    """

    measurement: Measurement
    link: str
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    latency_ms: float
    throughput_fps: float
    pareto: bool = False

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
            "accuracy_cost": m.accuracy_cost,
            "top1_agreement": m.top1_agreement,
            "pareto": self.pareto,
        }


@dataclass(frozen=True)
class Price:
    """What a (cut, codec) costs on one link (see the module docstring for the formulas)."""

    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    latency_ms: float
    throughput_fps: float


def price(
    *, edge_ms: float, cloud_ms: float, bytes_up: float, bytes_down: float, link: LinkModel,
    sends: bool = True,
) -> Price:  # fmt: skip
    """Price a (cut, codec) from its link-independent figures: what the planner does for every
    candidate, and what a runtime does again for a plan's options under the link it measures.

    Args:
        edge_ms: head compute + encode; ``cloud_ms``: decode + tail compute.
        bytes_up: encoded frame size; ``bytes_down``: encoded results.
        link: the link to price on.
        sends: False for all-on-edge (nothing crosses, the cloud does nothing).
    """
    if not sends:
        return Price(edge_ms, 0.0, 0.0, edge_ms, 1000.0 / max(edge_ms, 1e-9))
    transfer_ms = 1000.0 * link.transfer_s(round(bytes_up), round(bytes_down))
    uplink_ms = 1000.0 / link.max_frames_per_s(round(bytes_up))
    bottleneck = max(edge_ms, uplink_ms, cloud_ms, 1e-9)
    return Price(
        edge_ms=edge_ms,
        transfer_ms=transfer_ms,
        cloud_ms=cloud_ms,
        latency_ms=edge_ms + transfer_ms + cloud_ms,
        throughput_fps=1000.0 / bottleneck,
    )


def price_option(option: PlanOption, link: LinkModel) -> Price:
    """Price a plan's shipped option on ``link`` (an edge re-pricing under a measured link)."""
    return price(
        edge_ms=option.edge_ms,
        cloud_ms=option.cloud_ms,
        bytes_up=option.bytes_up,
        bytes_down=option.bytes_down,
        link=link,
        sends=option.codec != "none",
    )


def evaluate(measurement: Measurement, link: LinkModel) -> Candidate:
    """Price ``measurement`` on ``link`` (see the module docstring for the formulas)."""
    m = measurement
    p = price(
        edge_ms=m.head_ms + m.encode_ms,
        cloud_ms=m.decode_ms + m.tail_ms,
        bytes_up=m.bytes_wire,
        bytes_down=m.result_bytes,
        link=link,
        sends=m.sends,
    )
    return Candidate(m, str(link), p.edge_ms, p.transfer_ms, p.cloud_ms, p.latency_ms,
                     p.throughput_fps)  # fmt: skip
