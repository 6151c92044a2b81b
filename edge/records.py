"""What the agent says about each frame (one JSON line, exactly once per ``seq``) and about a
whole run (the summary).

``source`` is where the frame's output came from: ``remote`` (the tail's result), ``local``
(computed on the edge: an all-on-edge option, or the fallback while the cloud is away),
``fused`` (local and stale remote features, with the delay corrector), ``dropped`` (no
output). ``reason`` says why a frame is not ``remote``: ``disconnected``, ``stale`` (its
budget ran out), ``window_full`` (a newer frame took its place), ``error:CODE`` (the cloud
refused it), ``all-on-edge`` (the plan runs it locally), ``shutdown`` (still unanswered when
the grace period ended); with a corrector, ``no_features`` (no remote answer yet) and
``stale_features`` (nothing of the newest answer is usable: another scene, or past the
corrector's range with no thumbnail of its frame left to measure motion); ``unanswered`` (a
``local`` frame: the tail held it until only the time to compute it on the edge was left of its
budget, or its session was declared unresponsive while it held it); ``disconnected`` on a
``local`` frame also covers a session on probation (it has not answered since one stopped
answering); ``error:BAD_RESULT`` (the tail's answer disagreed with the plan and was refused before
it was decoded; ``local`` when the edge computed it instead). ``delay_frames`` is the
age, in frames, of the remote answer a corrected frame could use, ``downlink_bytes`` what that
answer took on the downlink as it arrived (its result messages, headers included: the class map
and the feature map as the plan's result codecs send them). ``probe`` names the option
(``c0000 jpeg50``) a frame answered on the edge was also sent with, to keep the link measured
while the agent runs all-on-edge; its remote answer is not its output.

Lines are strict JSON (RFC 8259): a value that is not a finite number (NaN logits from a tail,
say) is written as ``null``, never as the bare ``NaN`` that strict parsers refuse.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from splitwire.stats import percentile

SOURCES = ("remote", "local", "fused", "dropped")
# Latencies kept for the summary's percentiles: a daemon runs for days, memory must not grow.
LATENCY_SAMPLES = 100_000


@dataclass(frozen=True)
class FrameRecord:
    """One frame's output line.

    Times: ``capture_ts_ns``/``emit_ts_ns`` are wall-clock (for correlating with other logs);
    ``latency_ms`` is measured on the monotonic clock; ``rtt_ms`` is the frame's network round
    trip (arrival − send − the cloud's reported durations), all on the edge's clock.
    """

    seq: int
    capture_ts_ns: int
    emit_ts_ns: int
    latency_ms: float
    source: str
    reason: str | None
    cut: str | None
    codec: str | None
    bytes_up: int
    rtt_ms: float | None
    result: dict[str, Any] | None
    head_ms: float | None = None
    encode_ms: float | None = None
    cloud_ms: float | None = None
    batch_size: int | None = None
    delay_frames: int | None = None
    downlink_bytes: int | None = None
    probe: str | None = None
    # The tail replica that answered (its server_id), for remote answers.
    server: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as printed, times rounded to microseconds."""
        record = asdict(self)
        for key in ("latency_ms", "rtt_ms", "head_ms", "encode_ms", "cloud_ms"):
            if record[key] is not None:
                record[key] = round(record[key], 3)
        return record


class RecordWriter:
    """Writes records as JSON lines to ``stream`` (or nowhere) and flushes each, so a reader
    following the file sees every frame as it is emitted."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream

    def write(self, record: FrameRecord) -> None:
        """Write one line."""
        if self._stream is not None:
            self._stream.write(strict_json(record.as_json(), separators=(",", ":")) + "\n")
            self._stream.flush()


def strict_json(value: Any, **dumps_args: Any) -> str:
    """``json.dumps(value)`` as strict JSON: every float that is not finite becomes ``null``
    (Python would write ``NaN``/``Infinity``, which is not JSON).

    Args:
        value: dicts, lists, tuples, strings, numbers, booleans and None, nested.
        dumps_args: passed to :func:`json.dumps` (``indent``, ``separators``).

    Raises:
        TypeError: a value JSON cannot hold.
    """
    return json.dumps(_finite(value), allow_nan=False, **dumps_args)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


@dataclass
class RunStats:
    """Counts and latencies over a run, for telemetry and the closing summary."""

    by_source: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    bytes_up: int = 0
    uplink_frames: int = 0  # frames whose output rests on what they sent (remote or fused)
    duplicates_ignored: int = 0
    answers_after_output: int = 0  # remote answers that arrived after a corrected output
    # How long after a corrected frame's output its own answer arrived (> 0: it did not wait).
    answer_lags_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    uplink_skipped: int = 0  # corrected frames not sent: the uplink was a window behind
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    rtts_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def add(self, record: FrameRecord) -> None:
        """Count one emitted frame."""
        self.by_source[record.source] += 1
        if record.reason is not None:
            self.by_reason[record.reason] += 1
        if record.source != "dropped":
            self.latencies_ms.append(record.latency_ms)
        if record.source in ("remote", "fused") and record.bytes_up:
            self.uplink_frames += 1
            self.bytes_up += record.bytes_up
        if record.rtt_ms is not None:
            self.rtts_ms.append(record.rtt_ms)

    @property
    def frames(self) -> int:
        """Frames emitted so far (every source)."""
        return sum(self.by_source.values())

    def summary(self, duration_s: float) -> dict[str, Any]:
        """The run's figures: frames by source and reason, latency percentiles of frames that
        got an output, output rate, mean uplink bytes per remote or fused frame."""
        answered = self.frames - self.by_source["dropped"]
        return {
            "frames": self.frames,
            "by_source": {s: self.by_source[s] for s in SOURCES},
            "by_reason": dict(sorted(self.by_reason.items())),
            "latency_p50_ms": _percentile(self.latencies_ms, 50),
            "latency_p95_ms": _percentile(self.latencies_ms, 95),
            "rtt_p50_ms": _percentile(self.rtts_ms, 50),
            "fps": round(answered / duration_s, 3) if duration_s > 0 else None,
            "bytes_per_frame": (
                round(self.bytes_up / self.uplink_frames, 1) if self.uplink_frames else None
            ),
            "duplicates_ignored": self.duplicates_ignored,
            "answers_after_output": self.answers_after_output,
            "answer_lag_min_ms": _percentile(self.answer_lags_ms, 0),
            "answer_lag_p50_ms": _percentile(self.answer_lags_ms, 50),
            "uplink_skipped": self.uplink_skipped,
            "duration_s": round(duration_s, 3),
        }


def _percentile(values: deque[float], q: int) -> float | None:
    """The summary's rounded figure; None (printed n/a) without values."""
    return round(percentile(values, q), 3) if values else None


def figure(value: float | None, unit: str, *, digits: int = 1) -> str:
    """A summary figure for people: ``value`` rounded to ``digits`` decimals with its unit, or
    ``n/a`` when the run had nothing to measure it on (``None``, or not a finite number).

    >>> figure(35.25, "ms"), figure(None, "ms"), figure(12.0, "fps", digits=0)
    ('35.2 ms', 'n/a', '12 fps')
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f} {unit}"


def byte_figure(value: float | None, per: str = "") -> str:
    """A byte count for people, in B, kB, MB or GB (powers of 1000, three significant digits
    from kB on), or ``n/a``: ``byte_figure(12345.6, "/frame")`` is ``'12.3 kB/frame'``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}{per}"
    return f"{value:.0f} B{per}"


def summary_line(summary: Mapping[str, Any]) -> str:
    """The run's summary as the one log line a person reads: frames by source and reason,
    latency and round-trip percentiles, output rate, uplink bytes per frame, the option it
    ended on; every figure with its unit, or ``n/a`` where the run had nothing to measure.

    Args:
        summary: the agent's summary (:meth:`RunStats.summary` and the agent's fields).
    """
    sources = ", ".join(f"{k} {v}" for k, v in summary["by_source"].items() if v) or "none"
    reasons = ", ".join(f"{k} {v}" for k, v in summary["by_reason"].items())
    parts = [
        # Reasons apart from sources: a local frame has one too (all-on-edge, disconnected).
        f"{summary['frames']} frames ({sources}{'; ' + reasons if reasons else ''})",
        f"latency p50 {figure(summary['latency_p50_ms'], 'ms')}, "
        f"p95 {figure(summary['latency_p95_ms'], 'ms')}",
        f"rtt p50 {figure(summary['rtt_p50_ms'], 'ms')}",
        figure(summary["fps"], "fps"),
        f"uplink {byte_figure(summary['bytes_per_frame'], '/frame')}",
    ]
    scores = summary.get("segmentation", {}).get("miou")
    if scores:
        parts.append("mIoU " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    switches, reconnects = len(summary.get("switches", ())), summary.get("reconnects", 0)
    parts.append(
        f"on {summary.get('cut')} {summary.get('codec')} ({summary.get('policy')} policy), "
        f"{switches} switch{'es' if switches != 1 else ''}, "
        f"{reconnects} reconnect{'s' if reconnects != 1 else ''}"
    )
    skipped = summary.get("source_skipped", 0)
    if skipped:
        parts.append(f"{skipped} unreadable input{'s' if skipped != 1 else ''} skipped")
    slowdown = summary.get("edge_slowdown", 1.0)
    if slowdown != 1.0:
        parts.append(f"edge emulated {slowdown:g}x slower")
    return "; ".join(parts)
