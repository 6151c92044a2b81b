"""Link model, spec parsing and link traces (splitwire.partitioner.link).

Run: .venv/bin/python -m pytest tests/partitioner/test_link.py -q
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitwire.partitioner.errors import LinkError, PartitionerError
from splitwire.partitioner.link import (
    MSS_BYTES,
    PRESETS,
    LinkModel,
    LinkTrace,
    Outage,
    load_trace,
    parse_link,
)


def link(text: str) -> LinkModel:
    parsed = parse_link(text)
    assert isinstance(parsed, LinkModel)
    return parsed


# --- presets and spec strings -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_parse(name: str) -> None:
    assert link(name) == PRESETS[name]
    assert link(name.upper()) == PRESETS[name]
    assert link(f"  {name} ").name == name


def test_preset_figures() -> None:
    assert PRESETS["ethernet"] == LinkModel("ethernet", 1e9, 1e9, 0.0005)
    assert PRESETS["paretopipe"] == LinkModel("paretopipe", 3.5e6, 3.5e6, 0.2)
    lte = PRESETS["lte"]
    assert lte.uplink_bps < lte.downlink_bps


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("bw=500bit,rtt=1ms", "uplink_bps", 500.0),
        ("bw=64kbit,rtt=1ms", "uplink_bps", 64e3),
        ("bw=20mbit,rtt=1ms", "uplink_bps", 20e6),
        ("bw=1.5gbit,rtt=1ms", "uplink_bps", 1.5e9),
        ("bw=800bps,rtt=1ms", "uplink_bps", 800.0),
        ("bw=100kbps,rtt=1ms", "uplink_bps", 100e3),
        ("bw=20Mbps,rtt=1ms", "uplink_bps", 20e6),
        ("bw=2GBPS,rtt=1ms", "uplink_bps", 2e9),
        ("bw=10mbit/s,rtt=1ms", "uplink_bps", 10e6),
        ("bw=20 mbit,rtt=1ms", "uplink_bps", 20e6),
        ("bw=2e6bit,rtt=1ms", "uplink_bps", 2e6),
        ("BW=20MBIT,RTT=1MS", "uplink_bps", 20e6),
        ("bw=1mbit,rtt=1s", "rtt_s", 1.0),
        ("bw=1mbit,rtt=40ms", "rtt_s", 0.04),
        ("bw=1mbit,rtt=0.5ms", "rtt_s", 0.0005),
        ("bw=1mbit,rtt=250us", "rtt_s", 250e-6),
        ("bw=1mbit,rtt=250µs", "rtt_s", 250e-6),
        ("bw=1mbit,rtt=1e-3s", "rtt_s", 0.001),
        ("bw=1mbit,rtt=7ms", "rtt_s", 0.007),
        ("bw=1mbit,rtt=1ms,jitter=5ms", "jitter_s", 0.005),
        ("bw=1mbit,rtt=1ms,loss=0.5%", "loss", 0.005),
        ("bw=1mbit,rtt=1ms,loss=0.005", "loss", 0.005),
        ("bw=1mbit,rtt=1ms,loss=0", "loss", 0.0),
        ("bw=1mbit,rtt=1ms", "loss", 0.0),
        ("bw=1mbit,rtt=1ms", "jitter_s", 0.0),
        ("bw=1mbit,rtt=1ms", "name", "custom"),
        ("name=office,bw=1mbit,rtt=1ms", "name", "office"),
        (" bw = 1mbit , rtt=1ms , name = my link ", "name", "my link"),
    ],
)
def test_explicit_forms_and_units(text: str, field: str, value: object) -> None:
    assert getattr(link(text), field) == value


def test_up_and_down() -> None:
    parsed = link("up=2mbit,down=10mbit,rtt=60ms,jitter=5ms,loss=1%")
    assert parsed == LinkModel("custom", 2e6, 10e6, 0.06, jitter_s=0.005, loss=0.01)
    assert link("bw=20mbit,rtt=40ms") == LinkModel("custom", 20e6, 20e6, 0.04)


@pytest.mark.parametrize(
    ("text", "changes"),
    [
        ("lte,rtt=80ms", {"rtt_s": 0.08}),
        ("lte,bw=5mbit", {"uplink_bps": 5e6, "downlink_bps": 5e6}),
        ("lte,up=1mbit", {"uplink_bps": 1e6}),
        ("lte,loss=0,jitter=0ms", {"loss": 0.0, "jitter_s": 0.0}),
        ("lte,name=car", {"name": "car"}),
        ("lte,rtt=80ms,name=car", {"rtt_s": 0.08, "name": "car"}),
    ],
)
def test_preset_overrides(text: str, changes: dict[str, Any]) -> None:
    expected = dataclasses.replace(PRESETS["lte"], **{"name": "lte-modified", **changes})
    assert link(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *sorted(PRESETS),
        "lte,rtt=80ms",
        "up=1.25mbit,down=7kbit,rtt=0.3ms,jitter=1us,loss=0.0125",
        "bw=123456789bit,rtt=1.234567s,loss=33.3%",
        "bw=0.1bit,rtt=0ms",
    ],
)
def test_str_round_trip(text: str) -> None:
    parsed = link(text)
    assert link(str(parsed)) == parsed


def test_canonical_strings() -> None:
    assert str(PRESETS["lte"]) == "name=lte,up=10mbit,down=40mbit,rtt=40ms,jitter=10ms,loss=0.1%"
    assert str(PRESETS["ethernet"]) == "name=ethernet,bw=1gbit,rtt=500us"
    assert str(PRESETS["3g"]) == "name=3g,up=1mbit,down=3mbit,rtt=150ms,jitter=30ms,loss=1%"


@given(
    up=st.floats(min_value=1e-3, max_value=1e12),
    down=st.floats(min_value=1e-3, max_value=1e12),
    rtt=st.floats(min_value=0.0, max_value=100.0),
    jitter=st.floats(min_value=0.0, max_value=10.0),
    loss=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    name=st.from_regex(r"[A-Za-z0-9_@.+-][A-Za-z0-9_@.+ -]{0,10}[A-Za-z0-9]", fullmatch=True),
)
def test_str_round_trip_property(
    up: float, down: float, rtt: float, jitter: float, loss: float, name: str
) -> None:
    original = LinkModel(name, up, down, rtt, jitter_s=jitter, loss=loss)
    assert link(str(original)) == original


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["empty", "ethernet, wifi, lte, 3g, paretopipe"]),
        ("lte,", ["empty item at position 2"]),
        ("satellite", ["unknown preset 'satellite'", "ethernet, wifi, lte, 3g, paretopipe"]),
        ("bw=20,rtt=40ms", ["bw='20' has no unit", "mbit", "e.g. bw=20mbit"]),
        ("bw=20mb,rtt=40ms", ["bw='20mb' is not a number with a unit", "kbit", "gbps"]),
        ("bw=fast,rtt=40ms", ["bw='fast' is not a number with a unit"]),
        ("bw=20mbit,rtt=40", ["rtt='40' has no unit", "s, ms, us"]),
        ("bw=20mbit,rtt=40mbit", ["rtt='40mbit' is not a number with a unit", "s, ms, us"]),
        ("bw=20mbit,rtt=1ms,jitter=2", ["jitter='2' has no unit"]),
        ("bw=20mbit,rtt=40ms,loss=5x", ["loss='5x' is not a loss rate", "0.5%"]),
        ("bw=20mbit,rtt=40ms,loss=100%", ["loss=1.0", "< 1"]),
        ("bw=20mbit,rtt=-1ms", ["rtt_s=-0.001", ">= 0"]),
        ("bw=0mbit,rtt=1ms", ["uplink_bps=0.0", "> 0"]),
        ("bw=20mbit", ["missing rtt"]),
        ("up=20mbit,rtt=1ms", ["missing down"]),
        ("rtt=1ms", ["missing up, down"]),
        ("lte,bw=1mbit,up=2mbit", ["either bw= or up=/down="]),
        ("lte,speed=1mbit", ["unknown key 'speed'", "bw, up, down, rtt, jitter, loss, name"]),
        ("lte,rtt=1ms,rtt=2ms", ["key 'rtt' given twice"]),
        ("lte,3g", ["'3g' is not key=value", "only the first item may name a preset"]),
        ("name=a=b,bw=1mbit,rtt=1ms", ["name='a=b'", "without ',' or '='"]),
        ("no/such/trace.yaml", ["no/such/trace.yaml", "cannot read"]),
    ],
)
def test_invalid_specs(text: str, fragments: list[str]) -> None:
    with pytest.raises(LinkError) as info:
        parse_link(text)
    for fragment in fragments:
        assert fragment in str(info.value)
    if text:
        assert repr(text) in str(info.value) or text in str(info.value)


def test_link_error_is_a_partitioner_error() -> None:
    assert issubclass(LinkError, PartitionerError)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"uplink_bps": -1.0}, "uplink_bps=-1.0"),
        ({"downlink_bps": math.inf}, "downlink_bps=inf"),
        ({"rtt_s": math.nan}, "rtt_s=nan"),
        ({"jitter_s": -0.001}, "jitter_s=-0.001"),
        ({"loss": 1.0}, "loss=1.0"),
        ({"loss": -0.1}, "loss=-0.1"),
        ({"uplink_bps": True}, "uplink_bps=True"),
        ({"name": ""}, "name=''"),
        ({"name": "a,b"}, "name='a,b'"),
        ({"name": " padded"}, "name=' padded'"),
    ],
)
def test_construction_validates(kwargs: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {"name": "x", "uplink_bps": 1e6, "downlink_bps": 1e6, "rtt_s": 0.01}
    with pytest.raises(LinkError) as info:
        LinkModel(**{**fields, **kwargs})  # type: ignore[arg-type]
    assert fragment in str(info.value)


# --- the transfer model ---------------------------------------------------------------------


def test_lossless_numbers_by_hand() -> None:
    # 8 Mbit/s = 1 MB/s: 1 000 000 bytes take 1 s, 1 000 bytes take 1 ms.
    lan = LinkModel("lan", 8e6, 8e6, 0.010)
    assert lan.uplink_s(1_000_000) == pytest.approx(1.0)
    assert lan.downlink_s(1_000) == pytest.approx(0.001)
    assert lan.loss_penalty_s(1_000_000) == 0.0
    assert lan.transfer_s(1_000_000, 1_000) == pytest.approx(0.010 + 1.0 + 0.001)
    assert lan.max_frames_per_s(100_000) == pytest.approx(10.0)
    assert lan.max_frames_per_s(0) == math.inf
    assert lan.transfer_s(0, 0) == pytest.approx(0.010)

    # Jitter adds its mean once per direction.
    jittery = dataclasses.replace(lan, jitter_s=0.002)
    assert jittery.transfer_s(1_000_000, 1_000) == pytest.approx(0.014 + 1.0 + 0.001)

    # Asymmetric: 125 000 bytes up at 1 Mbit/s = 1 s; 50 000 bytes down at 4 Mbit/s = 0.1 s.
    cell = LinkModel("cell", 1e6, 4e6, 0.050)
    assert cell.transfer_s(125_000, 50_000) == pytest.approx(0.050 + 1.0 + 0.1)
    assert cell.max_frames_per_s(125_000) == pytest.approx(1.0)


def test_lossy_numbers_match_the_documented_example() -> None:
    lossy = link("bw=20mbit,rtt=40ms,jitter=5ms,loss=0.5%")
    mean_rtt = 0.040 + 2 * 0.005
    mathis_bps = 8 * MSS_BYTES / (mean_rtt * math.sqrt(2 * 0.005 / 3))
    assert lossy.effective_uplink_bps == pytest.approx(mathis_bps)
    assert mathis_bps == pytest.approx(4.01e6, rel=1e-3)
    rto = mean_rtt + 0.2
    # 100 000 bytes = 70 packets (3 at the tail), 4 000 bytes = 3 packets (all tail).
    up_penalty = (1 - 0.995**3) * rto + (1 - 0.995**67) * mean_rtt
    down_penalty = (1 - 0.995**3) * rto
    assert lossy.loss_penalty_s(100_000) == pytest.approx(up_penalty)
    assert lossy.loss_penalty_s(4_000) == pytest.approx(down_penalty)
    expected = mean_rtt + 800_000 / mathis_bps + 32_000 / mathis_bps + up_penalty + down_penalty
    assert lossy.transfer_s(100_000, 4_000) == pytest.approx(expected)
    assert lossy.transfer_s(100_000, 4_000) == pytest.approx(0.279, abs=5e-4)
    assert lossy.max_frames_per_s(100_000) == pytest.approx(mathis_bps / 8 / 100_000)


def test_mathis_cap_only_binds_below_the_link_rate() -> None:
    slow = link("bw=1mbit,rtt=10ms,loss=0.1%")  # Mathis ≈ 45 Mbit/s: the link rate binds
    assert slow.effective_uplink_bps == 1e6
    assert link("lte").effective_uplink_bps == pytest.approx(7.48e6, rel=1e-2)


def test_transfer_is_monotone_in_loss_bytes_and_rtt() -> None:
    by_loss = [link(f"bw=20mbit,rtt=40ms,loss={p}%").transfer_s(50_000, 1_000) for p in
               (0, 0.01, 0.1, 1, 5, 20)]  # fmt: skip
    assert by_loss == sorted(by_loss) and len(set(by_loss)) == len(by_loss)
    lossy = link("bw=20mbit,rtt=40ms,loss=1%")
    sizes = [0, 1, MSS_BYTES, MSS_BYTES + 1, 5 * MSS_BYTES, 1e6]
    by_bytes = [lossy.transfer_s(n, 0) for n in sizes]
    assert by_bytes == sorted(by_bytes) and len(set(by_bytes)) == len(by_bytes)
    assert [lossy.transfer_s(0, n) for n in sizes] == sorted(lossy.transfer_s(0, n) for n in sizes)
    by_rtt = [link(f"bw=20mbit,rtt={r}ms,loss=1%").transfer_s(50_000, 1_000) for r in
              (0, 1, 10, 100, 1000)]  # fmt: skip
    assert by_rtt == sorted(by_rtt) and len(set(by_rtt)) == len(by_rtt)


@given(
    rtt=st.floats(0.0, 1.0),
    jitter=st.floats(0.0, 0.1),
    loss=st.floats(0.0, 0.5),
    up=st.floats(0.0, 1e7),
    down=st.floats(0.0, 1e7),
    extra=st.floats(0.0, 1.0),
)
def test_transfer_never_decreases_when_one_input_grows(
    rtt: float, jitter: float, loss: float, up: float, down: float, extra: float
) -> None:
    base = LinkModel("x", 10e6, 20e6, rtt, jitter_s=jitter, loss=loss)
    cost = base.transfer_s(up, down)
    worse = [
        dataclasses.replace(base, rtt_s=rtt + extra).transfer_s(up, down),
        dataclasses.replace(base, jitter_s=jitter + extra / 10).transfer_s(up, down),
        dataclasses.replace(base, loss=min(0.99, loss + extra / 4)).transfer_s(up, down),
        base.transfer_s(up + extra * 1e5, down),
        base.transfer_s(up, down + extra * 1e5),
    ]
    assert all(w >= cost * (1 - 1e-12) for w in worse)


@pytest.mark.parametrize("nbytes", [-1, math.nan, math.inf])
def test_bad_byte_counts(nbytes: float) -> None:
    with pytest.raises(ValueError, match="byte count"):
        PRESETS["wifi"].transfer_s(nbytes, 0)


# --- traces ---------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_trace(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "commute.yaml",
        "- {t: 0, bw: 20mbit, rtt: 40ms, jitter: 5ms, loss: 0.5%}\n"
        "- {t: 30, link: 3g}\n"
        "- {t: 60, link: lte, rtt: 80ms}\n"
        "- {t: 75.5, link: 'bw=1mbit,rtt=1ms', loss: 0.01}\n",
    )
    trace = parse_link(str(path))
    assert isinstance(trace, LinkTrace)
    assert trace == load_trace(path)
    assert trace.name == "commute"
    first, second, third, fourth = trace.states()
    assert first == LinkModel("commute@0s", 20e6, 20e6, 0.04, jitter_s=0.005, loss=0.005)
    assert second == PRESETS["3g"]
    assert third == dataclasses.replace(PRESETS["lte"], name="lte-modified", rtt_s=0.08)
    assert fourth == LinkModel("commute@75.5s", 1e6, 1e6, 0.001, loss=0.01)
    # Intervals 30, 30, 15.5; the last state lasts their mean, 75.5 / 3.
    durations = [30.0, 30.0, 15.5, 75.5 / 3]
    assert trace.durations_s() == pytest.approx(durations)
    assert trace.duration_weights() == pytest.approx([d / sum(durations) for d in durations])
    assert [t for t, _ in trace.points] == [0.0, 30.0, 60.0, 75.5]
    assert trace.at(0) == first and trace.at(29.9) == first and trace.at(30) == second
    assert trace.at(1000) == fourth


def test_yaml_trace_mapping_with_end(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.yml",
        "name: tunnel\nend: 100\npoints:\n"
        "  - {t: 0, link: wifi}\n  - {t: 10, link: 3g}\n  - {t: 40, link: ethernet}\n",
    )
    trace = load_trace(path)
    assert trace.name == "tunnel"
    assert trace.states() == [PRESETS["wifi"], PRESETS["3g"], PRESETS["ethernet"]]
    assert trace.duration_weights() == pytest.approx([0.1, 0.3, 0.6])


def test_csv_trace(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "trip.csv",
        "# recorded on the bus\n"
        "t,bw,rtt,jitter,loss\n"
        "0,20mbit,40ms,5ms,0.5%\n"
        "\n"
        "10,1mbit,150ms,,\n"
        "25.5,50mbit,5ms,2ms,0.001\n",
    )
    trace = parse_link(str(path))
    assert isinstance(trace, LinkTrace)
    assert trace.states() == [
        LinkModel("trip@0s", 20e6, 20e6, 0.04, jitter_s=0.005, loss=0.005),
        LinkModel("trip@10s", 1e6, 1e6, 0.15),
        LinkModel("trip@25.5s", 50e6, 50e6, 0.005, jitter_s=0.002, loss=0.001),
    ]
    assert trace.durations_s() == pytest.approx([10.0, 15.5, 12.75])


def test_csv_trace_up_down_and_name(tmp_path: Path) -> None:
    path = write(tmp_path, "a.CSV", "T,Up,Down,RTT,name\n0,1mbit,4mbit,50ms,start\n")
    trace = load_trace(path)
    assert trace.states() == [LinkModel("start", 1e6, 4e6, 0.05)]
    assert trace.duration_weights() == [1.0]


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        (
            "t.yaml",
            "- {t: 0, link: wifi}\n- {t: 30, link: lte}\n- {t: 20, link: 3g}\n",
            ["entry 3", "t=20 is not after the previous t=30"],
        ),
        ("t.yaml", "- {t: 5, link: wifi}\n", ["entry 1", "first point must be at t=0"]),
        (
            "t.yaml",
            "- {t: 0, link: wifi}\n- {t: 1, bw: 20, rtt: 4ms}\n",
            ["entry 2", "bw='20' has no unit"],
        ),
        ("t.yaml", "- {t: 0, link: wifi}\n- {link: lte}\n", ["entry 2", "mapping with t"]),
        ("t.yaml", "- {t: 0, link: wifi, speed: 3}\n", ["entry 1", "unknown key 'speed'"]),
        ("t.yaml", "- {t: '0', link: wifi}\n", ["entry 1", "t='0' is not a finite number"]),
        ("t.yaml", "- {t: 0, link: wifi, rtt: [1]}\n", ["entry 1", "rtt=[1]"]),
        ("t.yaml", "- {t: 0, link: moon}\n", ["entry 1", "unknown preset 'moon'"]),
        ("t.yaml", "hello\n", ["expected a non-empty list"]),
        ("t.yaml", "[]\n", ["expected a non-empty list"]),
        ("t.yaml", "- {t: 0\n", ["not valid YAML"]),
        ("t.yaml", "points: [{t: 0, link: wifi}]\nstart: 3\n", ["got keys"]),
        ("t.yaml", "end: 0\npoints: [{t: 0, link: wifi}]\n", ["end", "t=0 is not after"]),
        ("t.csv", "t,bw\n0,1mbit\n", ["line 1", "missing column rtt"]),
        ("t.csv", "# note\nt,rtt\n0,1ms\n", ["line 2", "missing column bw"]),
        ("t.csv", "t,bw,rtt,speed\n", ["line 1", "unknown column 'speed'"]),
        ("t.csv", "t,bw,rtt\n", ["no points"]),
        ("t.csv", "", ["empty"]),
        (
            "t.csv",
            "t,bw,rtt\n0,1mbit,1ms\n# gap\n5,1mbit,1ms\n5,2mbit,1ms\n",
            ["line 5", "t=5.0 is not after the previous t=5.0"],
        ),
        ("t.csv", "t,bw,rtt\n0,1mbit,1ms\n1,1mbit,40\n", ["line 3", "rtt='40' has no unit"]),
        ("t.csv", "t,bw,rtt\n0,1mbit\n", ["line 2", "2 fields, the header has 3"]),
        ("t.csv", "t,bw,rtt\nsoon,1mbit,1ms\n", ["line 2", "t is not a number"]),
        ("t.csv", "t,up,down,rtt\n0,,1mbit,1ms\n", ["line 2", "missing up"]),
        ("t.csv", "t,bw,rtt\n0,1mbit,1ms\n1,1mbit,1ms,\n", ["line 3", "4 fields"]),
        # outages
        (
            "t.yaml",
            "- {t: 0, stall: true}\n- {t: 1, bw: 0, rtt: 1ms}\n",
            ["every entry is an outage"],
        ),
        (
            "t.yaml",
            "- {t: 0, link: wifi}\n- {t: 3, stall: true}\n",
            ["entry 2", "outage at t=3 is the last entry", "'end'"],
        ),
        ("t.csv", "t,bw,rtt\n0,1mbit,1ms\n4,0,1ms\n", ["line 3", "add a line after it"]),
        ("t.yaml", "- {t: 0, link: wifi, stall: maybe}\n", ["entry 1", "stall='maybe'"]),
        (
            "t.yaml",
            "- {t: 0, link: wifi}\n- {t: 3, stall: true}\n- {t: 2, link: lte}\n",
            ["entry 3", "t=2 is not after the previous t=3"],
        ),
        ("t.yaml", "end: 3\npoints: [{t: 0, link: wifi}, {t: 3, stall: true}]\n", ["end", "t=3"]),
        ("t.csv", "t,bw,rtt,stall\n0,1mbit,1ms,often\n", ["line 2", "expected true or false"]),
    ],
)
def test_bad_traces(tmp_path: Path, name: str, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(LinkError) as info:
        load_trace(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


# --- outages ---------------------------------------------------------------------------------


def test_yaml_trace_with_outages(tmp_path: Path) -> None:
    """A stall entry and a zero bandwidth are outages until the next entry (or the end); the
    state before each lasts through it, and nothing else of the trace changes."""
    path = write(
        tmp_path,
        "tunnel.yaml",
        "end: 20\npoints:\n"
        "  - {t: 0, bw: 20mbit, rtt: 40ms}\n"
        "  - {t: 5, stall: true}\n"
        "  - {t: 6, link: 3g, stall: false}\n"
        "  - {t: 10, bw: 0mbit, rtt: 40ms}\n"
        "  - {t: 12.5, up: 0, down: 10mbit, rtt: 40ms}\n"
        "  - {t: 13, link: lte}\n",
    )
    trace = load_trace(path)
    assert trace.outages == (Outage(5, 6), Outage(10, 12.5), Outage(12.5, 13))
    assert [t for t, _ in trace.points] == [0.0, 6.0, 13.0]
    assert trace.states()[1:] == [PRESETS["3g"], PRESETS["lte"]]
    assert trace.durations_s() == pytest.approx([6.0, 7.0, 7.0])  # outages inside their state
    assert trace.at(5.5) == trace.states()[0] and trace.at(11) == PRESETS["3g"]
    # A byte sent in an outage moves when it ends; back-to-back outages hold it through both.
    assert trace.held_until(4.9) == 4.9 and trace.held_until(5.0) == 6.0
    assert trace.held_until(10.2) == 13.0 and trace.held_until(13.0) == 13.0
    assert parse_link(str(path)) == trace  # the planner's spec parser reads the same trace


def test_csv_trace_with_outages(tmp_path: Path) -> None:
    path = write(tmp_path, "drop.csv", "t,bw,rtt\n0,20mbit,40ms\n2,0,40ms\n3,5mbit,80ms\n")
    trace = load_trace(path)
    assert trace.outages == (Outage(2.0, 3.0),)
    assert isinstance(trace, LinkTrace) and trace.name == "drop"
    assert trace.at(3.5).uplink_bps == 5e6 and trace.at(2.5).uplink_bps == 20e6
    stalls = write(tmp_path, "s.csv", "t,bw,rtt,stall\n0,1mbit,4ms,\n1,,,true\n2,2mbit,4ms,no\n")
    assert load_trace(stalls).outages == (Outage(1.0, 2.0),)
    # Without outages a trace has none.
    plain = write(tmp_path, "plain.yaml", "- {t: 0, link: lte}\n- {t: 10, link: 3g}\n")
    assert load_trace(plain).outages == ()


def test_trace_starting_with_an_outage(tmp_path: Path) -> None:
    """The first state is there behind an outage at t=0."""
    path = write(tmp_path, "late.yaml", "- {t: 0, stall: true}\n- {t: 2, link: wifi}\n")
    trace = load_trace(path)
    assert trace.outages == (Outage(0, 2),)
    assert trace.points == ((0.0, PRESETS["wifi"]),)
    assert trace.held_until(0.0) == 2.0


def test_outages_validate() -> None:
    wifi = PRESETS["wifi"]
    for start, end in ((1, 1), (-1, 2), (0, math.inf), (2, 1)):
        with pytest.raises(LinkError, match="expected 0 <= start < end"):
            Outage(start, end)
    with pytest.raises(LinkError, match="starts before"):
        LinkTrace("x", ((0, wifi),), outages=(Outage(0, 2), Outage(1, 3)))
    assert LinkTrace("x", ((0, wifi),), outages=(Outage(0, 1), Outage(1, 3))).held_until(0) == 3


def test_trace_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match=r"ending in \.yaml, \.yml, \.csv"):
        load_trace(write(tmp_path, "t.json", "[]"))


def test_trace_construction_validates() -> None:
    wifi = PRESETS["wifi"]
    with pytest.raises(LinkError, match="no points"):
        LinkTrace("x", ())
    with pytest.raises(LinkError, match="point 1: t=0 is not after"):
        LinkTrace("x", ((0, wifi), (0, wifi)))
    with pytest.raises(LinkError, match="end: t=0 is not after"):
        LinkTrace("x", ((0, wifi),), end=0)
    with pytest.raises(ValueError, match=">= 0"):
        LinkTrace("x", ((0, wifi),)).at(-1)
