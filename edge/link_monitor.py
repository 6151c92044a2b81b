"""What the link is doing, measured on the edge's clock only.

Each answered frame gives, all on the edge's ``perf_counter``:

* its **network round trip**: result arrival − send start − the durations the cloud reports
  (queue, decode, compute, encode). No clock of the cloud is ever read, only its durations.
* its **uplink bound**: ``bytes_up / round trip``. The frame's bytes crossed within its round
  trip, so the uplink is at least this fast (exact when the RTT is small next to the bytes).
* when the uplink was busy the whole time (the frame was already being sent when the previous
  frames reached the cloud), a **delivery rate** over the last few frames: bytes sent between
  their arrivals at the cloud / the time between those arrivals. Arrival at the cloud is
  estimated as result arrival − the cloud's durations, which keeps batching in the tail (two
  results leaving at once) from looking like a fast link.

The uplink estimate is the maximum of these samples over a sliding time window, as BBR does
(each sample is a lower bound; the maximum tracks the link, and old samples age out when the
link slows down). Samples only come with answers, so a link that has just slowed down (or
stopped) would keep its old estimate for the whole window while frames pile up unanswered.
The oldest unanswered frame therefore gives an **upper bound**: if it is still unanswered
``age`` seconds after it was sent, its bytes (and those of earlier frames still on their way
when it left) have not crossed in ``age`` − base RTT − the cloud's usual time, so the
uplink is at most their bits over that. The estimate is the smaller of the two.

A window of samples forgets a faster past only when it ends, and for the whole window the
old round trips keep the base RTT low too. So when the last few answered frames all took
``CHANGE_FACTOR`` × the smallest earlier round trip *and* none of them reached
1 / ``CHANGE_FACTOR`` of the earlier best rate, the link has got worse and the earlier samples go
at once. Both must hold: a bigger frame takes longer but also shows a higher rate, and our own
frames queued behind each other are not a slower link unless the rate falls with them.

The base RTT is the smallest round trip once the estimated serialisation of
the frame's bytes is taken off; the mean extra over it, among frames that had the uplink to
themselves, is reported as jitter. The downlink is
assumed to be as fast as the uplink: results of classifiers are a few kB, so this matters
little, and it errs on the slow side for asymmetric links.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass

from splitwire.partitioner.link import LinkModel

# Frames spanned by one delivery-rate sample: more smooths bursty arrivals, fewer reacts faster.
DELIVERY_SPAN = 4
# A worse link (see the module docstring): this many answered frames in a row, each this many
# times slower in round trip and rate than the best before them.
CHANGE_SAMPLES = 3
CHANGE_FACTOR = 2.0


@dataclass(frozen=True)
class FrameTiming:
    """One answered frame, on the edge's clock (nanoseconds of ``time.perf_counter_ns``).

    ``cloud_ns`` is the sum of the durations the cloud reported for the frame.
    """

    sent_ns: int
    received_ns: int
    cloud_ns: int
    bytes_up: int
    bytes_down: int

    @property
    def network_s(self) -> float:
        """The frame's network round trip (never negative)."""
        return max(self.received_ns - self.sent_ns - self.cloud_ns, 0) / 1e9

    @property
    def arrival_ns(self) -> int:
        """When the frame reached the cloud, roughly: the result's arrival less the cloud's time."""
        return self.received_ns - self.cloud_ns


@dataclass(frozen=True)
class Unanswered:
    """The oldest frame sent and not yet answered: when it was sent (``perf_counter_ns``) and
    its bytes."""

    sent_ns: int
    bytes_up: int


@dataclass
class _Sample:
    at_s: float
    uplink_bps: float
    network_s: float
    bytes_up: int
    bytes_down: int
    queued: bool  # sent while an earlier frame was still on its way: its trip includes a wait
    cloud_s: float


class LinkMonitor:
    """Turns answered frames into a :class:`LinkModel` (see the module docstring).

    Args:
        window_s: how long samples count; the estimate forgets a faster past after this.
        min_samples: answered frames needed before :meth:`link` gives an estimate.
        smoothing: weight of a new round trip in the smoothed RTT that telemetry reports.
    """

    def __init__(self, *, window_s: float = 5.0, min_samples: int = 3, smoothing: float = 0.2):
        self.window_s = window_s
        self.min_samples = min_samples
        self.smoothing = smoothing
        self._samples: deque[_Sample] = deque()
        self._recent: deque[FrameTiming] = deque(maxlen=DELIVERY_SPAN + 1)
        self.smoothed_rtt_s: float | None = None

    def observe(self, timing: FrameTiming, *, now_s: float | None = None) -> None:
        """Record one answered frame."""
        now = time.monotonic() if now_s is None else now_s
        network = timing.network_s
        bound = timing.bytes_up * 8.0 / network if network > 0 else math.inf
        rate = max(bound, self._delivery_rate(timing))
        queued = bool(self._recent) and timing.sent_ns < self._recent[-1].arrival_ns
        self._recent.append(timing)
        self._samples.append(
            _Sample(
                now,
                rate,
                network,
                timing.bytes_up,
                timing.bytes_down,
                queued,
                timing.cloud_ns / 1e9,
            )
        )
        self._forget_a_faster_past()
        self._expire(now)
        if self.smoothed_rtt_s is None:
            self.smoothed_rtt_s = network
        else:
            self.smoothed_rtt_s += self.smoothing * (network - self.smoothed_rtt_s)

    def _delivery_rate(self, timing: FrameTiming) -> float:
        if len(self._recent) < DELIVERY_SPAN:
            return 0.0
        span = [*list(self._recent)[-DELIVERY_SPAN:], timing]
        start = span[0].arrival_ns
        # Only while the uplink never idled: each frame was on its way before the one ahead of
        # it arrived. Otherwise the spacing measures the edge's pace, not the link.
        if any(later.sent_ns > earlier.arrival_ns for earlier, later in itertools.pairwise(span)):
            return 0.0
        elapsed = (timing.arrival_ns - start) / 1e9
        if elapsed <= 0:
            return 0.0
        return sum(t.bytes_up for t in span[1:]) * 8.0 / elapsed

    def _forget_a_faster_past(self) -> None:
        samples = list(self._samples)
        recent, older = samples[-CHANGE_SAMPLES:], samples[:-CHANGE_SAMPLES]
        if len(recent) < CHANGE_SAMPLES or len(older) < self.min_samples:
            return
        slower = min(s.network_s for s in recent) > CHANGE_FACTOR * min(s.network_s for s in older)
        finite = [s.uplink_bps for s in older if math.isfinite(s.uplink_bps)]
        if slower and finite and CHANGE_FACTOR * max(s.uplink_bps for s in recent) < max(finite):
            self._samples = deque(recent)

    def _expire(self, now_s: float) -> None:
        while self._samples and now_s - self._samples[0].at_s > self.window_s:
            self._samples.popleft()

    @property
    def uplink_bps(self) -> float | None:
        """The uplink estimate (bits/s), or None before any finite sample."""
        finite = [s.uplink_bps for s in self._samples if math.isfinite(s.uplink_bps)]
        return max(finite) if finite else None

    def link(
        self, *, now_s: float | None = None, oldest: Unanswered | None = None,
        now_ns: int | None = None,
    ) -> LinkModel | None:  # fmt: skip
        """The measured link as the cost model takes it, or None with too few samples.

        Args:
            now_s: ``time.monotonic()`` (for the sample window).
            oldest: the oldest frame still unanswered, whose age bounds the uplink from above.
            now_ns: ``time.perf_counter_ns()``, the clock of ``oldest.sent_ns``.
        """
        self._expire(time.monotonic() if now_s is None else now_s)
        if len(self._samples) < self.min_samples:
            return None
        uplink = self.uplink_bps
        if uplink is None:
            # Round trips too short to time (a loopback): call it 10 Gbit/s rather than infinity,
            # which LinkModel (rightly) refuses.
            uplink = 10e9
        if oldest is not None:
            now = time.perf_counter_ns() if now_ns is None else now_ns
            uplink = min(uplink, self._stall_bound(oldest, now, uplink))
        residuals = [
            (max(s.network_s - (s.bytes_up + s.bytes_down) * 8.0 / uplink, 0.0), s.queued)
            for s in self._samples
        ]
        base = min(r for r, _ in residuals)
        # Jitter from frames that had the uplink to themselves: a frame queued behind our own
        # earlier frames waited because of the window, which the cost model prices apart.
        alone = [r for r, queued in residuals if not queued]
        jitter = (sum(alone) / len(alone) - base) / 2.0 if alone else 0.0
        return LinkModel(
            name="measured", uplink_bps=uplink, downlink_bps=uplink, rtt_s=base, jitter_s=jitter
        )

    def _stall_bound(self, oldest: Unanswered, now_ns: int, uplink_bps: float) -> float:
        """The uplink's upper bound from the oldest unanswered frame (see the module
        docstring), or ``inf`` while its age is within what the samples explain."""
        base = min(
            max(s.network_s - (s.bytes_up + s.bytes_down) * 8.0 / uplink_bps, 0.0)
            for s in self._samples
        )
        cloud = sorted(s.cloud_s for s in self._samples)[len(self._samples) // 2]
        # Our own earlier frames still crossing when it left were ahead of it in the queue.
        ahead = sum(t.bytes_up for t in self._recent if t.sent_ns < oldest.sent_ns
                    and t.arrival_ns > oldest.sent_ns)  # fmt: skip
        crossing_s = (now_ns - oldest.sent_ns) / 1e9 - base - cloud
        bits = (oldest.bytes_up + ahead) * 8.0
        if crossing_s <= 0 or bits / crossing_s >= uplink_bps:
            return math.inf
        return max(bits / crossing_s, 1.0)  # LinkModel needs a positive rate


def describe_link(link: LinkModel) -> str:
    """``link`` rounded for people, for log lines and switch reasons (``str(link)`` stays the
    exact spec ``parse_link`` reads back)::

        51.7 Mbit/s, rtt 0 ms, jitter 0.5 ms
        lte: up 10 Mbit/s, down 40 Mbit/s, rtt 40 ms, jitter 10 ms, loss 0.1%

    A link's name leads, unless it says nothing the figures do not (``measured``, the monitor's
    links; ``custom``, a spec without a name).
    """
    if link.uplink_bps == link.downlink_bps:
        items = [_rate(link.uplink_bps)]
    else:
        items = [f"up {_rate(link.uplink_bps)}", f"down {_rate(link.downlink_bps)}"]
    items.append(f"rtt {_milliseconds(link.rtt_s)}")
    if link.jitter_s:
        items.append(f"jitter {_milliseconds(link.jitter_s)}")
    if link.loss:
        items.append(f"loss {link.loss * 100:.2g}%")
    prefix = "" if link.name in ("measured", "custom") else f"{link.name}: "
    return prefix + ", ".join(items)


def _rate(bps: float) -> str:
    """Bits per second in the largest unit that keeps a figure of at least 1, three
    significant digits (``51.7 Mbit/s``, ``850 kbit/s``)."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def _milliseconds(seconds: float) -> str:
    """One decimal below 100 ms, none above, no trailing ``.0`` (``0 ms``, ``0.5 ms``,
    ``40 ms``, ``250 ms``)."""
    ms = seconds * 1000.0
    text = f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}".removesuffix(".0")
    return f"{text} ms"
