"""What a person reads at the end of a run and in a switch reason: every figure with its unit or
``n/a``, links rounded (``51.7 Mbit/s, rtt 0 ms, jitter 0.5 ms``), never ``None B/frame``."""

from __future__ import annotations

from typing import Any

import pytest

from splitwire.edge.link_monitor import describe_link
from splitwire.edge.policy import CutPolicy
from splitwire.edge.records import FrameRecord, RunStats, byte_figure, figure, summary_line
from splitwire.partitioner.link import PRESETS, LinkModel, parse_link
from splitwire.partitioner.plan_file import PlanOption


def summary_of(records: list[FrameRecord], **agent_fields: Any) -> dict[str, Any]:
    stats = RunStats()
    for record in records:
        stats.add(record)
    fields = {"cut": "c0050", "codec": "int8+zstd1", "policy": "auto", "switches": [],
              "reconnects": 0, "edge_slowdown": 1.0, "source_skipped": 0}  # fmt: skip
    return stats.summary(2.0) | fields | agent_fields


def record(seq: int, source: str, reason: str | None, **fields: Any) -> FrameRecord:
    values: dict[str, Any] = {
        "seq": seq, "capture_ts_ns": 0, "emit_ts_ns": 0, "latency_ms": 40.0 + seq,
        "source": source, "reason": reason, "cut": "c0050", "codec": "int8+zstd1",
        "bytes_up": 0, "rtt_ms": None, "result": None,
    }  # fmt: skip
    return FrameRecord(**(values | fields))


def test_a_run_with_nothing_measured_says_n_a_not_none() -> None:
    """Every frame dropped: no latency, no round trip, no uplink bytes."""
    line = summary_line(summary_of([record(i, "dropped", "disconnected") for i in (1, 2, 3)]))
    assert "None" not in line
    assert line == (
        "3 frames (dropped 3; disconnected 3); latency p50 n/a, p95 n/a; rtt p50 n/a; 0.0 fps; "
        "uplink n/a; on c0050 int8+zstd1 (auto policy), 0 switches, 0 reconnects"
    )


def test_a_served_run_prints_each_figure_with_its_unit() -> None:
    records = [
        record(i, "remote", None, bytes_up=12_345, rtt_ms=1.25, latency_ms=30.0 + i)
        for i in range(1, 5)
    ]
    summary = summary_of(records, switches=[{}], reconnects=1, source_skipped=2, edge_slowdown=4.0)
    assert summary_line(summary) == (
        "4 frames (remote 4); latency p50 32.5 ms, p95 33.9 ms; rtt p50 1.2 ms; 2.0 fps; "
        "uplink 12.3 kB/frame; on c0050 int8+zstd1 (auto policy), 1 switch, 1 reconnect; "
        "2 unreadable inputs skipped; edge emulated 4x slower"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "n/a"), (float("nan"), "n/a"), (812.0, "812 B/frame"), (12_345.6, "12.3 kB/frame"),
     (2_500_000.0, "2.5 MB/frame")],
)  # fmt: skip
def test_byte_figures(value: float | None, expected: str) -> None:
    assert byte_figure(value, "/frame") == expected


def test_figures() -> None:
    assert figure(None, "ms") == "n/a"
    assert figure(float("inf"), "fps") == "n/a"
    assert figure(35.25, "ms") == "35.2 ms"
    assert figure(12.0, "fps", digits=0) == "12 fps"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bw=51.73644438371914mbit,rtt=0s,jitter=543.5798232079716us",
         "51.7 Mbit/s, rtt 0 ms, jitter 0.5 ms"),
        ("bw=850kbit,rtt=250ms", "850 kbit/s, rtt 250 ms"),
        ("up=2mbit,down=10mbit,rtt=60ms,loss=0.5%,name=office",
         "office: up 2 Mbit/s, down 10 Mbit/s, rtt 60 ms, loss 0.5%"),
    ],
)  # fmt: skip
def test_links_are_rounded_for_people(spec: str, expected: str) -> None:
    assert describe_link(parse_link(spec)) == expected


def test_presets_read_well() -> None:
    assert describe_link(PRESETS["lte"]) == (
        "lte: up 10 Mbit/s, down 40 Mbit/s, rtt 40 ms, jitter 10 ms, loss 0.1%"
    )
    assert describe_link(PRESETS["ethernet"]) == "ethernet: 1 Gbit/s, rtt 0.5 ms"


def test_a_switch_reason_names_the_link_rounded() -> None:
    """The policy's reason for a move, as the agent logs it and puts in the summary."""
    cloud = PlanOption("c0000", "fp32", None, 1.0, 5.0, 600_000, 100, 0.0)
    local = PlanOption("c0099", "none", "all-on-edge", 30.0, 0.0, 0, 0, 0.0)
    policy = CutPolicy((cloud, local), objective="latency", accuracy_budget=0.0)
    slow = LinkModel("measured", 2_345_678.9, 2_345_678.9, 0.0123456, jitter_s=0.000543)
    switch = None
    for now in (0.0, 1.0, 5.0):
        switch = switch or policy.consider(cloud, slow, now_s=now)
    assert switch is not None and switch.new == local
    assert switch.reason.endswith("on the measured link (2.35 Mbit/s, rtt 12.3 ms, jitter 0.5 ms)")
