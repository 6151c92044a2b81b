"""Network links between edge and cloud: a cost model, presets, a spec parser and link traces.

Units everywhere: **seconds** for times, **bytes** for message sizes, **bits per second** for
bandwidths (the ``_bps`` fields). A link is written as a spec string::

    parse_link("lte,rtt=80ms")                  # a preset with an override
    parse_link("bw=20mbit,rtt=40ms,jitter=5ms,loss=0.5%")
    parse_link("up=2mbit,down=10mbit,rtt=60ms,name=office")
    parse_link("traces/commute.yaml")           # a LinkTrace (a link that changes over time,
                                                # with its outages)
    link.transfer_s(up_bytes, down_bytes)       # expected seconds for one exchange

The transfer model
------------------
One request/response exchange (edge sends ``up`` bytes, cloud answers ``down`` bytes) over a warm,
long-lived TCP connection (a gRPC stream: no handshake, no slow start) is expected to take::

    transfer_s = mean_rtt + up·8/eff_up + down·8/eff_down + penalty(up) + penalty(down)

* ``mean_rtt = rtt + 2·jitter``. ``rtt_s`` is the base (unloaded) round trip; ``jitter_s`` is the
  mean extra one-way queueing delay above it. If that extra delay is exponential with mean J, the
  RFC 3550 jitter estimate (mean |difference| of consecutive transit times) also converges to J,
  so a measured RFC 3550 jitter can be used as ``jitter_s``. Each direction adds J on average.
* ``eff = min(link rate, Mathis bound)``: a loss-limited TCP flow sustains at most
  ``MSS / (mean_rtt · sqrt(2p/3))`` bytes/s (Mathis et al., CCR 1997), MSS = 1448 bytes (MTU
  1500 minus IP, TCP and timestamp headers). Headers are not added to ``nbytes``.
* ``penalty(n)``: a message is ``k = max(1, ceil(n / 1448))`` packets. A loss among its last
  ``min(k, 3)`` packets cannot collect three duplicate ACKs, so it waits for the retransmission
  timeout ``rto = mean_rtt + max(200 ms, 4·jitter)`` (Linux: srtt + rttvar, rttvar ≥ 200 ms);
  a loss earlier in the message is repaired by fast retransmit in about one ``mean_rtt``::

      penalty(n) = (1 - (1-p)^tail)·rto + (1 - (1-p)^(k-tail))·mean_rtt

  This ignores tail-loss probes (which often repair a tail loss in ~2 RTT): it is conservative.

Worked example, ``bw=20mbit,rtt=40ms,jitter=5ms,loss=0.5%``, 100 000 bytes up, 4 000 bytes down:
mean_rtt = 0.040 + 2·0.005 = 0.050 s; Mathis = 8·1448 / (0.050·sqrt(0.01/3)) = 4.01 Mbit/s,
below 20 Mbit/s, so eff = 4.01 Mbit/s both ways; serialisation 0.1994 s up + 0.0080 s down;
up is 70 packets (tail 3, body 67): penalty = 0.0149·0.250 + 0.285·0.050 = 0.0180 s; down is
3 packets (all tail): 0.0149·0.250 = 0.0037 s. transfer_s ≈ 0.050 + 0.1994 + 0.0080 + 0.0180
+ 0.0037 = 0.279 s. The same link without loss: 0.050 + 0.040 + 0.0016 = 0.0916 s.

Presets (typical figures, **assumptions, not measurements**)
-------------------------------------------------------------
=============  =====================  ========  =======  ======  ==================================
name           up / down              rtt       jitter   loss    why
=============  =====================  ========  =======  ======  ==================================
ethernet       1 Gbit / 1 Gbit        0.5 ms    0        0       switched gigabit LAN
wifi           50 Mbit / 50 Mbit      5 ms      2 ms     0.1 %   802.11ac at moderate range
lte            10 Mbit / 40 Mbit      40 ms     10 ms    0.1 %   4G; uplink well below downlink
3g             1 Mbit / 3 Mbit        150 ms    30 ms    1 %     HSPA
paretopipe     3.5 Mbit / 3.5 Mbit    200 ms    0        0       ParetoPipe's fixed link
=============  =====================  ========  =======  ======  ==================================

The loss figures are the TCP-visible loss after the radio's own retransmissions (HARQ/RLC), and
drive the Mathis cap: effective uplinks are about 50 (wifi), 7.5 (lte) and 0.68 Mbit/s (3g).
ParetoPipe emulates its link with ``tc netem delay 200ms`` on one host and a 3.5 Mbit/s rate;
one-sided netem delay adds 200 ms to the round trip, so the preset uses 200 ms as the RTT.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import yaml

from splitwire.partitioner.errors import LinkError

MSS_BYTES = 1448
# Linux's floor on the variance term of the retransmission timeout (TCP_RTO_MIN).
MIN_RTO_S = 0.2
# Packets at the end of a message whose loss no later packet reports through duplicate ACKs.
TAIL_PACKETS = 3
TRACE_SUFFIXES = (".yaml", ".yml", ".csv")


class _Units(NamedTuple):
    """A family of units: ``table`` maps a unit to (multiplier, divisor) to the base unit."""

    table: Mapping[str, tuple[float, float]]
    canonical: tuple[str, ...]  # what ``str(link)`` may write, base unit included
    help: str
    example: str


# Division by an exact power of ten rounds correctly (7 / 1e3 == 0.007, while 7 * 1e-3 !=
# 0.007), which keeps str -> parse exact.
_PREFIXES = (("", 1.0), ("k", 1e3), ("m", 1e6), ("g", 1e9))
_BANDWIDTH = _Units(
    table={f"{p}{form}": (m, 1.0) for p, m in _PREFIXES for form in ("bit", "bit/s", "bps")},
    canonical=("gbit", "mbit", "kbit", "bit"),
    help="bit, kbit, mbit, gbit (also kbit/s, ..., and bps, kbps, mbps, gbps: all bits)",
    example="20mbit",
)
_TIME = _Units(
    table={"s": (1.0, 1.0), "ms": (1.0, 1e3), "us": (1.0, 1e6), "µs": (1.0, 1e6)},
    canonical=("s", "ms", "us"),
    help="s, ms, us",
    example="40ms",
)
_KEYS = ("bw", "up", "down", "rtt", "jitter", "loss", "name")
_QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S*)")
# No commas or '=' (they delimit the spec), no surrounding whitespace (stripped when parsed).
_NAME = re.compile(r"[^,=\s](?:[^,=]*[^,=\s])?")


@dataclass(frozen=True)
class LinkModel:
    """A network link's steady state. See the module docstring for the transfer model.

    Attributes:
        name: a label (no ``,`` or ``=``).
        uplink_bps: edge → cloud rate in bits per second.
        downlink_bps: cloud → edge rate in bits per second.
        rtt_s: base round-trip time in seconds.
        jitter_s: mean extra one-way queueing delay in seconds.
        loss: packet loss probability per packet, 0 ≤ loss < 1, both directions.

    Raises:
        LinkError: on construction, naming the offending field and value.
    """

    name: str
    uplink_bps: float
    downlink_bps: float
    rtt_s: float
    jitter_s: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise LinkError(
                f"link name={self.name!r}: expected a non-empty label without ',' or '=' "
                "and without surrounding spaces"
            )
        ranges = {
            "uplink_bps": (0.0, False, math.inf),
            "downlink_bps": (0.0, False, math.inf),
            "rtt_s": (0.0, True, math.inf),
            "jitter_s": (0.0, True, math.inf),
            "loss": (0.0, True, 1.0),
        }
        for field, (low, low_ok, high) in ranges.items():
            value = getattr(self, field)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= low if low_ok else value > low)
            if not ok or value >= high:
                want = "a finite number " + (f">= {low:g}" if low_ok else f"> {low:g}")
                want += f" and < {high:g}" if high != math.inf else ""
                raise LinkError(f"link {self.name!r}: {field}={value!r}, expected {want}")
            object.__setattr__(self, field, float(value))

    @property
    def mean_rtt_s(self) -> float:
        """Expected round trip: base RTT plus the mean queueing delay both ways."""
        return self.rtt_s + 2.0 * self.jitter_s

    @property
    def rto_s(self) -> float:
        """Expected retransmission timeout (Linux: srtt + max(200 ms, 4·rttvar))."""
        return self.mean_rtt_s + max(MIN_RTO_S, 4.0 * self.jitter_s)

    @property
    def effective_uplink_bps(self) -> float:
        """Uplink rate a TCP flow sustains: the link rate, capped by the Mathis bound."""
        return min(self.uplink_bps, self._mathis_bps())

    @property
    def effective_downlink_bps(self) -> float:
        """Downlink rate a TCP flow sustains: the link rate, capped by the Mathis bound."""
        return min(self.downlink_bps, self._mathis_bps())

    def _mathis_bps(self) -> float:
        # Zero when lossless, with no delay, or when tiny values underflow: then no TCP cap.
        per_packet_s = self.mean_rtt_s * math.sqrt(2.0 * self.loss / 3.0)
        return 8.0 * MSS_BYTES / per_packet_s if per_packet_s > 0.0 else math.inf

    def uplink_s(self, nbytes: float) -> float:
        """Seconds to serialise ``nbytes`` onto the uplink at the effective rate.

        Raises:
            ValueError: for a negative or non-finite byte count.
        """
        return _check_bytes(nbytes) * 8.0 / self.effective_uplink_bps

    def downlink_s(self, nbytes: float) -> float:
        """Seconds to serialise ``nbytes`` onto the downlink at the effective rate.

        Raises:
            ValueError: for a negative or non-finite byte count.
        """
        return _check_bytes(nbytes) * 8.0 / self.effective_downlink_bps

    def loss_penalty_s(self, nbytes: float) -> float:
        """Expected retransmission delay added to one message of ``nbytes`` (0 when lossless).

        Raises:
            ValueError: for a negative or non-finite byte count.
        """
        packets = max(1, math.ceil(_check_bytes(nbytes) / MSS_BYTES))
        tail = min(packets, TAIL_PACKETS)
        keep = 1.0 - self.loss
        tail_hit = 1.0 - keep**tail
        body_hit = 1.0 - keep ** (packets - tail)
        return tail_hit * self.rto_s + body_hit * self.mean_rtt_s

    def transfer_s(self, up_bytes: float, down_bytes: float) -> float:
        """Expected seconds for one exchange: ``up_bytes`` to the cloud, ``down_bytes`` back.

        Compute time at either end is not included.

        Args:
            up_bytes: request size in bytes (edge → cloud).
            down_bytes: response size in bytes (cloud → edge).

        Returns:
            mean RTT + serialisation both ways + expected loss penalties (module docstring).

        Raises:
            ValueError: for a negative or non-finite byte count.
        """
        return (
            self.mean_rtt_s
            + self.uplink_s(up_bytes)
            + self.downlink_s(down_bytes)
            + self.loss_penalty_s(up_bytes)
            + self.loss_penalty_s(down_bytes)
        )

    def max_frames_per_s(self, up_bytes: float) -> float:
        """Uplink-limited throughput of a pipelined stream: effective uplink / frame size.

        Args:
            up_bytes: bytes sent per frame; 0 gives ``inf``.

        Raises:
            ValueError: for a negative or non-finite byte count.
        """
        nbytes = _check_bytes(up_bytes)
        return math.inf if nbytes == 0 else self.effective_uplink_bps / 8.0 / nbytes

    def max_results_per_s(self, down_bytes: float) -> float:
        """Downlink-limited throughput of a pipelined stream: effective downlink / result size.

        Args:
            down_bytes: bytes answered per frame; 0 gives ``inf``.

        Raises:
            ValueError: for a negative or non-finite byte count.
        """
        nbytes = _check_bytes(down_bytes)
        return math.inf if nbytes == 0 else self.effective_downlink_bps / 8.0 / nbytes

    def __str__(self) -> str:
        """The canonical spec; ``parse_link(str(link)) == link``."""
        if self.uplink_bps == self.downlink_bps:
            rates = [f"bw={_format(self.uplink_bps, _BANDWIDTH)}"]
        else:
            rates = [
                f"up={_format(self.uplink_bps, _BANDWIDTH)}",
                f"down={_format(self.downlink_bps, _BANDWIDTH)}",
            ]
        items = [
            f"name={self.name}",
            *rates,
            f"rtt={_format(self.rtt_s, _TIME)}",
        ]
        if self.jitter_s:
            items.append(f"jitter={_format(self.jitter_s, _TIME)}")
        if self.loss:
            items.append(f"loss={_format_loss(self.loss)}")
        return ",".join(items)


def _check_bytes(nbytes: float) -> float:
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | float):
        raise ValueError(f"byte count must be a number, got {nbytes!r}")
    if not math.isfinite(nbytes) or nbytes < 0:
        raise ValueError(f"byte count must be finite and >= 0, got {nbytes!r}")
    return float(nbytes)


PRESETS: Mapping[str, LinkModel] = MappingProxyType(
    {
        "ethernet": LinkModel("ethernet", 1e9, 1e9, 0.0005),
        "wifi": LinkModel("wifi", 50e6, 50e6, 0.005, jitter_s=0.002, loss=0.001),
        "lte": LinkModel("lte", 10e6, 40e6, 0.040, jitter_s=0.010, loss=0.001),
        "3g": LinkModel("3g", 1e6, 3e6, 0.150, jitter_s=0.030, loss=0.01),
        "paretopipe": LinkModel("paretopipe", 3.5e6, 3.5e6, 0.200),
    }
)

_ACCEPTED = (
    f"accepted: a preset ({', '.join(PRESETS)}) optionally followed by overrides, or "
    "key=value items: bw= or up= and down= (units bit, kbit, mbit, gbit, or bps, kbps, mbps, "
    "gbps), rtt= and jitter= (units s, ms, us), loss= (0.5% or a fraction 0.005), name=; "
    f"or a trace file ending in {', '.join(TRACE_SUFFIXES)}. "
    "Example: 'lte,rtt=80ms' or 'bw=20mbit,rtt=40ms,loss=0.5%'"
)


def parse_link(text: str) -> LinkModel | LinkTrace:
    """Parse a link spec: a preset, ``key=value`` items, both, or a trace file path.

    Args:
        text: e.g. ``"wifi"``, ``"lte,rtt=80ms"``, ``"up=2mbit,down=10mbit,rtt=60ms"``,
            ``"trace.yaml"``. Keys, units and preset names are case-insensitive.

    Returns:
        A :class:`LinkModel`, or a :class:`LinkTrace` for a ``.yaml``/``.yml``/``.csv`` path.

    Raises:
        LinkError: quoting the bad part and listing what is accepted.
    """
    spec = text.strip()
    if not spec:
        raise LinkError(f"link spec is empty; {_ACCEPTED}")
    if spec.lower().endswith(TRACE_SUFFIXES):
        return load_trace(spec)
    return _link_from_items(spec.split(","), where=f"link {text!r}", default_name="custom")


def _link_from_items(items: Sequence[str], *, where: str, default_name: str) -> LinkModel:
    preset: str | None = None
    values: dict[str, str] = {}
    for position, raw in enumerate(items):
        item = raw.strip()
        if not item:
            raise LinkError(f"{where}: empty item at position {position + 1}; {_ACCEPTED}")
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            if position > 0:
                raise LinkError(
                    f"{where}: {item!r} is not key=value (only the first item may name a "
                    f"preset); {_ACCEPTED}"
                )
            preset = key
            continue
        if key not in _KEYS:
            raise LinkError(f"{where}: unknown key {key!r} in {item!r}; keys: {', '.join(_KEYS)}")
        if key in values:
            raise LinkError(f"{where}: key {key!r} given twice")
        values[key] = value.strip()
    return _build_link(preset, values, where=where, default_name=default_name)


def _build_link(
    preset: str | None, values: Mapping[str, str], *, where: str, default_name: str
) -> LinkModel:
    fields: dict[str, float] = {"jitter_s": 0.0, "loss": 0.0}
    name = default_name
    if preset is not None:
        if preset not in PRESETS:
            raise LinkError(
                f"{where}: unknown preset {preset!r}; presets: {', '.join(PRESETS)} "
                f"(a trace file must end in {', '.join(TRACE_SUFFIXES)}); {_ACCEPTED}"
            )
        base = PRESETS[preset]
        fields = {f: getattr(base, f) for f in ("uplink_bps", "downlink_bps", "rtt_s")} | {
            "jitter_s": base.jitter_s,
            "loss": base.loss,
        }
        # An overridden preset is no longer the preset: do not let it pass for one in reports.
        name = base.name if not values else f"{base.name}-modified"
    if "bw" in values and ("up" in values or "down" in values):
        raise LinkError(f"{where}: give either bw= or up=/down=, not both")
    for key, value in values.items():
        if key in ("bw", "up"):
            fields["uplink_bps"] = _quantity(value, key, _BANDWIDTH, where)
        if key in ("bw", "down"):
            fields["downlink_bps"] = _quantity(value, key, _BANDWIDTH, where)
        if key in ("rtt", "jitter"):
            fields[f"{key}_s"] = _quantity(value, key, _TIME, where)
        if key == "loss":
            fields["loss"] = _loss(value, where)
    required = {"uplink_bps": "up", "downlink_bps": "down", "rtt_s": "rtt"}
    missing = [key for field, key in required.items() if field not in fields]
    if missing:
        raise LinkError(
            f"{where}: missing {', '.join(missing)} (a spec without a preset needs bw= "
            f"or up= and down=, and rtt=); {_ACCEPTED}"
        )
    try:
        return LinkModel(name=values.get("name", name), **fields)
    except LinkError as err:
        raise LinkError(f"{where}: {err}") from None


def _quantity(raw: str, key: str, units: _Units, where: str) -> float:
    match = _QUANTITY.fullmatch(raw.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in units.table:
        problem = "has no unit" if match and not unit else "is not a number with a unit"
        raise LinkError(
            f"{where}: {key}={raw!r} {problem}; units: {units.help} (e.g. {key}={units.example})"
        )
    multiplier, divisor = units.table[unit]
    return float(match.group(1)) * multiplier / divisor


def _loss(raw: str, where: str) -> float:
    match = _QUANTITY.fullmatch(raw.strip())
    if match is None or match.group(2) not in ("", "%"):
        raise LinkError(
            f"{where}: loss={raw!r} is not a loss rate; write a percentage (0.5%) or a "
            "fraction (0.005)"
        )
    value = float(match.group(1))
    return value / 100.0 if match.group(2) == "%" else value


def _format(value: float, units: _Units) -> str:
    """The shortest exact rendering of ``value``, preferring a number in [1, 1000)."""
    candidates = []
    for position, unit in enumerate(units.canonical):
        multiplier, divisor = units.table[unit]
        number = value * divisor / multiplier
        text = _format_number(number)
        # The base unit (multiplier = divisor = 1) is always exact: repr round-trips a float.
        if float(text) * multiplier / divisor == value:
            candidates.append((not 1 <= abs(number) < 1000, len(text), position, text + unit))
    return min(candidates)[-1]


def _format_loss(loss: float) -> str:
    percent = _format_number(loss * 100.0)
    return percent + "%" if float(percent) / 100.0 == loss else _format_number(loss)


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Outage:
    """``[start_s, end_s)`` of trace time during which the link carries nothing: every byte sent
    then waits until it ends (a tunnel, a failed handover, a cable pulled).

    Raises:
        LinkError: on construction, unless ``0 <= start_s < end_s`` and both are finite.
    """

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in (self.start_s, self.end_s)
        )
        if not (numbers and 0 <= self.start_s < self.end_s):
            raise LinkError(
                f"outage [{self.start_s!r}, {self.end_s!r}): expected 0 <= start < end, both a "
                "finite number of seconds"
            )
        object.__setattr__(self, "start_s", float(self.start_s))
        object.__setattr__(self, "end_s", float(self.end_s))


@dataclass(frozen=True)
class LinkTrace:
    """A link that changes over time: ``points[i] = (t, link)`` holds from ``t`` seconds on,
    except during ``outages``, when nothing moves.

    A planner can optimise the expected cost (weighting each state by
    :meth:`duration_weights`) or the worst case (the maximum over :meth:`states`). An outage
    does not end the state it falls in: that state's duration includes it, and it is the state
    again when the outage ends (unless the next point starts there). A planner has nothing to
    choose during an outage (only the edge's own model answers), so outages only matter to
    whoever replays the trace (the link emulator, ``splitwire netem``).

    Attributes:
        name: a label, usually the trace file's stem.
        points: ``(t, LinkModel)`` pairs, times strictly increasing from 0.
        end: when the last state stops, in seconds; ``None`` lets it last as long as the mean
            of the earlier intervals (or 1 s, if there is only one point: then its weight is 1).
        outages: intervals of trace time during which the link holds every byte, in time
            order and not overlapping.

    Raises:
        LinkError: on construction, for an empty trace, times that do not start at 0 or do not
            increase strictly, an ``end`` not after the last time, or overlapping outages.
    """

    name: str
    points: tuple[tuple[float, LinkModel], ...]
    end: float | None = None
    outages: tuple[Outage, ...] = ()

    def __post_init__(self) -> None:
        where = f"link trace {self.name!r}"
        if not self.points:
            raise LinkError(f"{where}: no points; a trace needs at least one, at t=0")
        previous = None
        for index, (time, _) in enumerate(self.points):
            _check_time(time, previous, where=f"{where}, point {index}")
            previous = time
        if self.end is not None:
            _check_time(self.end, previous, where=f"{where}, end")
        object.__setattr__(self, "points", tuple((float(t), link) for t, link in self.points))
        if self.end is not None:
            object.__setattr__(self, "end", float(self.end))
        outages = tuple(self.outages)
        for before, after in itertools.pairwise(outages):
            if after.start_s < before.end_s:
                raise LinkError(
                    f"{where}: outage [{after.start_s:g}, {after.end_s:g}) starts before "
                    f"[{before.start_s:g}, {before.end_s:g}) ends; expected outages in time "
                    "order, not overlapping"
                )
        object.__setattr__(self, "outages", outages)

    def states(self) -> list[LinkModel]:
        """The link states in time order (one per point)."""
        return [link for _, link in self.points]

    def durations_s(self) -> list[float]:
        """How long each state holds, in seconds (the last one as described for ``end``)."""
        times = [t for t, _ in self.points]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if self.end is not None:
            last = self.end - times[-1]
        else:
            last = sum(gaps) / len(gaps) if gaps else 1.0
        return [*gaps, last]

    def duration_weights(self) -> list[float]:
        """The fraction of the trace's time each state holds, aligned with :meth:`states`."""
        durations = self.durations_s()
        total = sum(durations)
        return [d / total for d in durations]

    def at(self, t: float) -> LinkModel:
        """The link state at ``t`` seconds (the last state holds after the trace ends).

        Raises:
            ValueError: for a negative ``t``.
        """
        if t < 0:
            raise ValueError(f"trace time must be >= 0, got {t!r}")
        index = bisect.bisect_right([start for start, _ in self.points], t) - 1
        return self.points[index][1]

    def held_until(self, t: float) -> float:
        """When a byte sent at ``t`` seconds can move: ``t``, or the end of the outage ``t``
        falls in (of the last one, where outages follow each other without a gap)."""
        for outage in self.outages:
            if outage.start_s <= t < outage.end_s:
                t = outage.end_s
        return t


def _check_time(time: object, previous: float | None, *, where: str) -> None:
    """Raise unless ``time`` is a finite number, 0 for the first point, else after ``previous``."""
    if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
        raise LinkError(f"{where}: t={time!r} is not a finite number of seconds")
    if previous is None and time != 0:
        raise LinkError(f"{where}: t={time!r}; the first point must be at t=0")
    if previous is not None and time <= previous:
        raise LinkError(
            f"{where}: t={time!r} is not after the previous t={previous!r}; "
            "times must increase strictly"
        )


def load_trace(path: str | Path) -> LinkTrace:
    """Read a link trace from YAML or CSV.

    YAML is a list of entries, or a mapping ``{name:, end:, points: [entries]}``. An entry is a
    mapping with ``t`` (seconds) and link keys, optionally a ``link:`` spec string that the
    other keys override::

        - {t: 0, bw: 20mbit, rtt: 40ms, jitter: 5ms, loss: 0.5%}
        - {t: 30, link: 3g}
        - {t: 60, stall: true}          # an outage: nothing moves from 60 s to 62 s
        - {t: 62, link: lte, rtt: 80ms}

    CSV has a header ``t,bw,rtt[,jitter,loss]`` (``up,down`` instead of ``bw``, an optional
    ``name``); empty cells of optional columns take the defaults; lines starting with ``#`` and
    blank lines are skipped. A CSV trace has no ``end``.

    Outages: an entry with ``stall: true`` (a YAML key or a CSV column; ``false`` or an empty
    cell is no outage) or a zero bandwidth (``bw``, ``up`` or ``down`` of 0) is an
    :class:`Outage` from its ``t`` to the next entry's (or the YAML ``end``); its other keys are
    ignored. It is no point of the trace: the state before it lasts through it (see
    :class:`LinkTrace`), and where the trace starts with one, the first state is there behind
    it from t=0.

    Args:
        path: a ``.yaml``, ``.yml`` or ``.csv`` file.

    Returns:
        The trace, named after the file's stem unless the YAML names it.

    Raises:
        LinkError: for an unreadable file or a bad entry, naming the entry (YAML, 1-based) or
            line (CSV, 1-based, header included); a trace whose entries are all outages, or
            whose last entry is an outage with no ``end`` to stop it.
    """
    file = Path(path)
    where = f"link trace {str(file)!r}"
    suffix = file.suffix.lower()
    if suffix not in TRACE_SUFFIXES:
        raise LinkError(f"{where}: expected a file ending in {', '.join(TRACE_SUFFIXES)}")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise LinkError(f"{where}: cannot read it ({err.strerror or err})") from err
    # The stem becomes part of each point's name, which may not hold ',' or '='.
    name = re.sub(r"[,=\s]+", "_", file.stem) or "trace"
    if suffix == ".csv":
        return _trace_from_csv(text, name=name, where=where)
    return _trace_from_yaml(text, name=name, where=where)


class _Entry(NamedTuple):
    """One entry of a trace file: a link state from ``time`` on, or an outage (``link`` None)."""

    time: float
    link: LinkModel | None
    where: str


_STALL_TRUE = ("true", "yes", "1")
_STALL_FALSE = ("false", "no", "0", "")


def _pop_outage(fields: dict[str, object], *, where: str) -> bool:
    """Whether an entry's ``fields`` make it an outage (see :func:`load_trace`); removes the
    ``stall`` key, which no link state has."""
    stall = fields.pop("stall", None)
    if stall is not None:
        text = str(stall).strip().lower()
        if text in _STALL_TRUE:
            return True
        if text not in _STALL_FALSE:
            raise LinkError(f"{where}: stall={stall!r}; expected true or false")
    for key in ("bw", "up", "down"):
        value = fields.get(key)
        if value is None or isinstance(value, bool):
            continue
        match = _QUANTITY.fullmatch(str(value).strip())
        if match is not None and float(match.group(1)) == 0.0:
            return True
    return False


def _assemble(
    entries: Sequence[_Entry], *, name: str, end: float | None, where: str, missing_end: str
) -> LinkTrace:
    """The trace of ``entries`` (in time order, times already checked): its link states as
    points, its outage entries as outages, each lasting until the next entry or ``end``."""
    if all(entry.link is None for entry in entries):
        raise LinkError(
            f"{where}: every entry is an outage; a trace needs at least one link state "
            "(e.g. {t: 0, bw: 20mbit, rtt: 40ms})"
        )
    outages = []
    for index, entry in enumerate(entries):
        if entry.link is not None:
            continue
        stop = entries[index + 1].time if index + 1 < len(entries) else end
        if stop is None:
            raise LinkError(
                f"{entry.where}: the outage at t={entry.time:g} is the last entry and the trace "
                f"has no end to stop it; {missing_end}"
            )
        outages.append(Outage(entry.time, stop))
    points = [(entry.time, entry.link) for entry in entries if entry.link is not None]
    points[0] = (0.0, points[0][1])  # an outage from t=0: the first state is there behind it
    return LinkTrace(name=name, points=tuple(points), end=end, outages=tuple(outages))


def _trace_from_yaml(text: str, *, name: str, where: str) -> LinkTrace:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise LinkError(f"{where}: not valid YAML ({err})") from err
    end = None
    if isinstance(doc, dict):
        if set(doc) - {"name", "end", "points"} or "points" not in doc:
            raise LinkError(
                f"{where}: a mapping needs 'points' and may have 'name' and 'end'; "
                f"got keys {sorted(map(str, doc))}"
            )
        name, end, doc = str(doc.get("name", name)), doc.get("end"), doc["points"]
    if not isinstance(doc, list) or not doc:
        raise LinkError(
            f"{where}: expected a non-empty list of entries like {{t: 0, bw: 20mbit, rtt: 40ms}}"
            f", got {doc!r:.80}"
        )
    entries: list[_Entry] = []
    for number, entry in enumerate(doc, start=1):
        entry_where = f"{where}, entry {number}"
        if not isinstance(entry, dict) or "t" not in entry:
            raise LinkError(
                f"{entry_where}: expected a mapping with t and link keys, got {entry!r}"
            )
        fields = {str(key).lower(): value for key, value in entry.items()}
        time = fields.pop("t")
        _check_time(time, entries[-1].time if entries else None, where=entry_where)
        if _pop_outage(fields, where=entry_where):
            entries.append(_Entry(time, None, entry_where))
            continue
        spec = fields.pop("link", None)
        items = [] if spec is None else str(spec).split(",")
        for key, value in fields.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise LinkError(f"{entry_where}: {key}={value!r}; expected text like 20mbit")
            items.append(f"{key}={value}")
        link = _link_from_items(items, where=entry_where, default_name=f"{name}@{time:g}s")
        entries.append(_Entry(time, link, entry_where))
    if end is not None:
        _check_time(end, entries[-1].time, where=f"{where}, end")
    return _assemble(
        entries, name=name, end=end, where=where,
        missing_end="add an entry after it or an 'end' (the mapping form: {end: S, points: [...]})",
    )  # fmt: skip


def _trace_from_csv(text: str, *, name: str, where: str) -> LinkTrace:
    rows = [
        (number, next(csv.reader([line])))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    accepted = "a trace CSV has columns t,bw,rtt[,jitter,loss,stall] (or up,down instead of bw)"
    if not rows:
        raise LinkError(f"{where}: empty; {accepted}")
    header_line, header = rows[0]
    header_where = f"{where}, line {header_line}"
    columns = [column.strip().lower() for column in header]
    for column in columns:
        if column not in ("t", "stall") and column not in _KEYS:
            raise LinkError(f"{header_where}: unknown column {column!r}; {accepted}")
    has_rate = "bw" in columns or {"up", "down"} <= set(columns)
    missing = [c for c in ("t", "rtt") if c not in columns] + ([] if has_rate else ["bw"])
    if missing:
        raise LinkError(f"{header_where}: missing column {', '.join(missing)}; {accepted}")
    if len(rows) == 1:
        raise LinkError(f"{header_where}: a header but no points; the first must be at t=0")
    entries: list[_Entry] = []
    for number, row in rows[1:]:
        line_where = f"{where}, line {number}"
        if len(row) != len(columns):
            raise LinkError(f"{line_where}: {len(row)} fields, the header has {len(columns)}")
        cells: dict[str, object] = dict(zip(columns, (cell.strip() for cell in row), strict=True))
        try:
            time = float(str(cells.pop("t")))
        except ValueError:
            raise LinkError(f"{line_where}: t is not a number of seconds") from None
        _check_time(time, entries[-1].time if entries else None, where=line_where)
        if _pop_outage(cells, where=line_where):
            entries.append(_Entry(time, None, line_where))
            continue
        items = [f"{key}={value}" for key, value in cells.items() if value]
        link = _link_from_items(items, where=line_where, default_name=f"{name}@{time:g}s")
        entries.append(_Entry(time, link, line_where))
    return _assemble(
        entries, name=name, end=None, where=where,
        missing_end="a CSV trace has no end: add a line after it, where the link is back",
    )  # fmt: skip
