"""Throughput bounded by every pipeline stage (the downlink included) and by the in-flight
window (Little's law), on hand-computed cases."""

from __future__ import annotations

import math
from typing import Any

import pytest

from splitwire.edge.config import DEFAULT_WINDOW as AGENT_DEFAULT_WINDOW
from splitwire.edge.policy import CutPolicy
from splitwire.partitioner.cost import (
    ALL_ON_EDGE,
    DEFAULT_WINDOW,
    Measurement,
    Price,
    evaluate,
    price,
    price_option,
)
from splitwire.partitioner.link import LinkModel, parse_link
from splitwire.partitioner.plan_file import PlanOption


def split(
    edge_ms: float, cloud_ms: float, up: float, down: float, link: LinkModel, **kw: Any
) -> Price:
    return price(edge_ms=edge_ms, cloud_ms=cloud_ms, bytes_up=up, bytes_down=down, link=link, **kw)


def test_the_default_window_is_the_edge_agents() -> None:
    assert DEFAULT_WINDOW == AGENT_DEFAULT_WINDOW == 4


def test_max_results_per_s_is_the_downlink_rate_over_the_result_size() -> None:
    link = parse_link("up=100mbit,down=2mbit,rtt=10ms")
    assert link.max_results_per_s(25_000) == pytest.approx(10)  # 200 kbit at 2 Mbit/s
    assert link.max_results_per_s(0) == math.inf
    with pytest.raises(ValueError):
        link.max_results_per_s(-1)


def test_uplink_bound() -> None:
    """1 Mbit/s, 10 ms RTT, 12.5 kB up: 100 ms on the wire. Latency 11 + 10 + 100 + 6 = 127 ms;
    the window of 4 allows 4000 / 127 = 31.5 fps, the uplink only 10."""
    p = split(11, 6, 12_500, 0, parse_link("bw=1mbit,rtt=10ms"))
    assert p.latency_ms == pytest.approx(127)
    assert p.throughput_fps == pytest.approx(10)
    assert p.bottleneck == "uplink"


def test_downlink_bound() -> None:
    """Small frames, big results: 1 kB up at 100 Mbit/s (0.08 ms), 25 kB down at 2 Mbit/s
    (100 ms). Latency 5 + 10 + 0.08 + 100 + 5 = 120.08 ms (window: 33.3 fps); the downlink
    allows 10 fps, where the old uplink-only bound said 1000 / 5 = 200."""
    p = split(5, 5, 1_000, 25_000, parse_link("up=100mbit,down=2mbit,rtt=10ms"))
    assert p.latency_ms == pytest.approx(120.08)
    assert p.throughput_fps == pytest.approx(10)
    assert p.bottleneck == "downlink"


def test_window_bound() -> None:
    """Edge 10 ms, cloud 10 ms, 200 ms RTT, 100 bytes each way at 1 Gbit/s (0.0008 ms): the
    stages allow 100 fps, but a frame takes 220.0016 ms, so 4 in flight give 18.2 fps and 1
    gives 4.5 fps; an unbounded window gives the stage bound back."""
    link = parse_link("bw=1gbit,rtt=200ms")
    latency = 10 + 200 + 0.0016 + 10
    p4 = split(10, 10, 100, 100, link, window=4)
    assert p4.latency_ms == pytest.approx(latency)
    assert p4.throughput_fps == pytest.approx(4000 / latency)
    assert p4.throughput_fps == pytest.approx(18.18, abs=0.01)
    assert p4.bottleneck == "window"
    p1 = split(10, 10, 100, 100, link, window=1)
    assert p1.throughput_fps == pytest.approx(4.545, abs=0.001)
    assert p1.bottleneck == "window"
    assert split(10, 10, 100, 100, link) == p4  # the default window is 4
    unbounded = split(10, 10, 100, 100, link, window=math.inf)
    assert (unbounded.throughput_fps, unbounded.bottleneck) == (pytest.approx(100), "edge")


def test_the_docstring_example() -> None:
    """cost.py's worked example: 32 ms edge, 50 kB up / 4 kB down at 20 Mbit/s, 5 ms cloud."""
    fast = parse_link("bw=20mbit,rtt=40ms")
    p = split(32, 5, 50_000, 4_000, fast)
    assert p.latency_ms == pytest.approx(98.6)
    assert (p.throughput_fps, p.bottleneck) == (pytest.approx(31.25), "edge")
    p1 = split(32, 5, 50_000, 4_000, fast, window=1)
    assert (p1.throughput_fps, p1.bottleneck) == (pytest.approx(1000 / 98.6), "window")
    far = split(32, 5, 50_000, 4_000, parse_link("bw=20mbit,rtt=200ms"))
    assert far.latency_ms == pytest.approx(258.6)
    assert (far.throughput_fps, far.bottleneck) == (pytest.approx(4000 / 258.6), "window")


def test_edge_and_cloud_bounds() -> None:
    link = parse_link("bw=1gbit,rtt=1ms")
    assert split(30, 5, 1_000, 1_000, link).bottleneck == "edge"
    cloud = split(5, 30, 1_000, 1_000, link)
    assert (cloud.throughput_fps, cloud.bottleneck) == (pytest.approx(1000 / 30), "cloud")


@pytest.mark.parametrize("window", [1, 4, math.inf])
def test_all_on_edge_is_unchanged(window: float) -> None:
    """Nothing in flight on the network: 1000 / edge_ms whatever the window."""
    p = split(50, 0, 0, 0, parse_link("paretopipe"), sends=False, window=window)
    assert (p.transfer_ms, p.cloud_ms, p.latency_ms) == (0, 0, 50)
    assert (p.throughput_fps, p.bottleneck) == (pytest.approx(20), "edge")


@pytest.mark.parametrize("window", [0, 0.5, -1, math.nan, True])
def test_a_window_below_one_is_refused(window: float) -> None:
    with pytest.raises(ValueError, match="window"):
        split(10, 10, 100, 100, parse_link("wifi"), window=window)


def test_planner_option_and_policy_price_alike() -> None:
    """evaluate (the planner), price_option and CutPolicy (the edge) use the same window bound."""
    link = parse_link("bw=1gbit,rtt=200ms")
    m = Measurement(
        cut="c1", cut_name="c1", cut_index=1, codec="fp32", baseline=None, crossing=(),
        bytes_raw=100, bytes_wire=100.0, result_bytes=100, head_ms=9.0, tail_ms=9.0,
        encode_ms=1.0, decode_ms=1.0, accuracy_cost=0.0, top1_agreement=None,
    )  # fmt: skip
    option = PlanOption("c1", "fp32", None, 10.0, 10.0, 100.0, 100.0, 0.0)
    local = PlanOption("c9", "none", ALL_ON_EDGE, 50.0, 0.0, 0.0, 0.0, 0.0)
    for window in (1, 4):
        c = evaluate(m, link, window=window)
        p = price_option(option, link, window=window)
        policy = CutPolicy([option, local], objective="throughput", accuracy_budget=0.0,
                           window=window)  # fmt: skip
        q = policy.prices(link)[option]
        assert c.throughput_fps == pytest.approx(p.throughput_fps) == q.throughput_fps
        assert c.bottleneck == p.bottleneck == q.bottleneck == "window"
        assert c.as_json()["bottleneck"] == "window"

    # With 4 frames in flight the split manages 18.2 fps, behind all-on-edge's 20 fps; with 8 it
    # manages 36.4 fps and wins: the agent's own window changes the choice.
    def best(window: int) -> PlanOption:
        policy = CutPolicy([option, local], objective="throughput", accuracy_budget=0.0,
                           window=window)  # fmt: skip
        prices = policy.prices(link)
        return min(policy.options, key=lambda o: policy.score(prices[o]))

    assert best(4) == local
    assert best(8) == option
    assert CutPolicy([option], objective="latency", accuracy_budget=0.0).window == DEFAULT_WINDOW
