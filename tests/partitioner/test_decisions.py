"""The cost model's arithmetic and the picks, on hand-computed cases."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from splitwire.partitioner.cost import ALL_IN_CLOUD_RAW, ALL_ON_EDGE, Measurement, evaluate
from splitwire.partitioner.decisions import best, decide_link, robust_pick
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.link import parse_link


def measurement(
    cut: str,
    *,
    codec: str = "int8+zstd1",
    head_ms: float = 10.0,
    tail_ms: float = 5.0,
    encode_ms: float = 1.0,
    decode_ms: float = 1.0,
    bytes_wire: float = 10_000.0,
    accuracy: float = 0.0,
    baseline: str | None = None,
) -> Measurement:
    return Measurement(
        cut=cut, cut_name=cut, cut_index=int(cut[1:]), codec=codec, baseline=baseline,
        crossing=(), bytes_raw=int(bytes_wire), bytes_wire=bytes_wire, result_bytes=0,
        head_ms=head_ms, tail_ms=tail_ms, encode_ms=encode_ms, decode_ms=decode_ms,
        accuracy_cost=accuracy, top1_agreement=None,
    )  # fmt: skip


def test_evaluate_by_hand() -> None:
    """20 Mbit/s, 40 ms RTT, lossless: 50 kB take 20 ms to serialise."""
    link = parse_link("bw=20mbit,rtt=40ms")
    m = measurement("c1", head_ms=30, encode_ms=2, tail_ms=5, decode_ms=1, bytes_wire=50_000)
    c = evaluate(m, link)
    assert c.edge_ms == pytest.approx(32)
    assert c.cloud_ms == pytest.approx(6)
    assert c.transfer_ms == pytest.approx(40 + 20)
    assert c.latency_ms == pytest.approx(32 + 60 + 6)
    # Pipelined: the slowest stage is the edge (32 ms), not the sum.
    assert c.throughput_fps == pytest.approx(1000 / 32)


def test_uplink_bound_throughput() -> None:
    link = parse_link("bw=1mbit,rtt=10ms")
    c = evaluate(measurement("c1", bytes_wire=12_500), link)  # 100 ms on the wire
    assert c.throughput_fps == pytest.approx(10)


def test_all_on_edge_sends_nothing() -> None:
    m = measurement("c9", codec="none", head_ms=50, encode_ms=0, bytes_wire=0, baseline=ALL_ON_EDGE)
    c = evaluate(m, parse_link("3g"))
    assert (c.transfer_ms, c.cloud_ms, c.latency_ms) == (0, 0, 50)
    assert c.throughput_fps == pytest.approx(20)


def test_front_and_pick_respect_the_accuracy_budget() -> None:
    link = parse_link("bw=10mbit,rtt=20ms")
    ms = [
        measurement("c0", codec="fp32", head_ms=0, tail_ms=40, bytes_wire=600_000,
                    baseline=ALL_IN_CLOUD_RAW),
        measurement("c3", bytes_wire=20_000, accuracy=0.002),
        measurement("c4", bytes_wire=5_000, accuracy=0.05),  # smallest but too lossy
        measurement("c5", bytes_wire=30_000, head_ms=20, accuracy=0.002),  # dominated by c3
        measurement("c9", codec="none", head_ms=80, tail_ms=0, bytes_wire=0,
                    baseline=ALL_ON_EDGE),
    ]  # fmt: skip
    decision = decide_link(ms, link, objective="latency", accuracy_budget=0.01)
    on_front = {c.measurement.cut for c in decision.candidates if c.pareto}
    assert on_front == {"c0", "c3", "c4", "c9"}
    assert decision.pick.measurement.cut == "c3"
    assert decision.split_wins
    # With a budget of 0 only lossless candidates qualify: the baselines win, and we say so.
    strict = decide_link(ms, link, objective="latency", accuracy_budget=0.0)
    assert strict.pick.measurement.baseline is not None and not strict.split_wins


def test_pick_for_other_objectives() -> None:
    link = parse_link("bw=10mbit,rtt=20ms")
    ms = [measurement("c3", bytes_wire=20_000), measurement("c4", bytes_wire=5_000, head_ms=40)]
    candidates = [evaluate(m, link) for m in ms]
    assert best(candidates, objective="bytes", accuracy_budget=1).measurement.cut == "c4"
    assert best(candidates, objective="edge", accuracy_budget=1).measurement.cut == "c3"
    with pytest.raises(PartitionerError, match="accuracy cost within"):
        best([evaluate(measurement("c3", accuracy=0.5), link)], objective="latency",
             accuracy_budget=0.01)  # fmt: skip


def test_robust_pick_minimises_the_worst_ratio() -> None:
    """A is best on the fast link, B on the slow one; C is close to best on both."""
    fast, slow = parse_link("bw=1gbit,rtt=1ms,name=fast"), parse_link("bw=1mbit,rtt=1ms,name=slow")
    ms = [
        measurement("c1", head_ms=1, bytes_wire=200_000),  # fast: 10.6 ms, slow: 1609 ms
        measurement("c8", head_ms=60, bytes_wire=100),  # fast: 68.0 ms, slow: 68.8 ms
        measurement("c5", head_ms=20, bytes_wire=8_000),  # fast: 28.1 ms, slow: 92 ms
    ]
    decisions = [
        decide_link(ms, link, objective="latency", accuracy_budget=1) for link in (fast, slow)
    ]
    assert [d.pick.measurement.cut for d in decisions] == ["c1", "c8"]
    chosen, ratio = robust_pick(decisions, objective="latency", accuracy_budget=1)
    assert chosen.cut == "c5"
    expected = max(
        evaluate(ms[2], fast).latency_ms / evaluate(ms[0], fast).latency_ms,
        evaluate(ms[2], slow).latency_ms / evaluate(ms[1], slow).latency_ms,
    )
    assert math.isclose(ratio, expected)


def test_candidates_name_their_link_by_its_full_spec() -> None:
    """Two custom links are both named "custom"; ``plan --json`` tells them apart by the spec
    plan.yaml records, and each link's candidates join its pick."""
    from splitwire.partitioner.planner import PlanOutcome, PlanRequest, decide
    from splitwire.partitioner.report import outcome_json

    links = (parse_link("bw=10mbit,rtt=30ms"), parse_link("bw=100mbit,rtt=5ms"))
    assert links[0].name == links[1].name == "custom"
    ms = [measurement("c1", bytes_wire=200_000), measurement("c5", head_ms=40, bytes_wire=1_000)]
    request = PlanRequest(model_spec="m", input_shape=(1, 3, 8, 8), links=links, edge_slowdown=1)
    decisions, choice, ratio = decide(ms, request)
    # Only the decision layer runs: the model-side fields are not needed for the JSON.
    outcome = PlanOutcome(
        request, "ab" * 32, graph=None, cuts=(), reference=None, measurements=tuple(ms),
        decisions=decisions, choice=choice, robust_ratio=ratio, edge=None, cloud=None,
    )  # fmt: skip
    data = outcome_json(outcome, None)
    by_link: dict[str, list[str]] = {}
    for c in data["candidates"]:
        by_link.setdefault(c["link"], []).append(c["cut"])
    assert list(by_link) == ["name=custom,bw=10mbit,rtt=30ms", "name=custom,bw=100mbit,rtt=5ms"]
    assert list(by_link) == [str(link) for link in links]
    assert all(cuts == ["c1", "c5"] for cuts in by_link.values())
    assert [pick["link"] for pick in data["choice"]["links"]] == list(by_link)


@pytest.mark.parametrize("link_text", ["bw=20mbit,rtt=40ms", "lte", "bw=2mbit,rtt=80ms,loss=1%"])
def test_a_plan_option_is_priced_like_its_candidate(link_text: str) -> None:
    """The edge re-prices a shipped (cut, codec) from plan.yaml's figures alone; it must get
    what the planner computed for the same link."""
    from splitwire.partitioner.cost import price_option
    from splitwire.partitioner.planner import plan_option

    link = parse_link(link_text)
    split = measurement("c7", head_ms=30, encode_ms=2, tail_ms=5, decode_ms=1, bytes_wire=50_000)
    split = replace(split, result_bytes=4_000)
    local = measurement("c9", head_ms=80, baseline="all-on-edge", codec="none")
    for m in (split, local):
        c, p = evaluate(m, link), price_option(plan_option(m), link)
        assert (p.latency_ms, p.throughput_fps) == pytest.approx((c.latency_ms, c.throughput_fps))
        assert (p.edge_ms, p.transfer_ms, p.cloud_ms) == pytest.approx(
            (c.edge_ms, c.transfer_ms, c.cloud_ms)
        )
