"""The tail's Prometheus metrics, on their own registry (several servers may share a process).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). Labels
are bounded: ``model`` is the first 12 hex digits of a served plan's hash, ``cut`` one of its
cuts, ``code`` a wire ``ErrorCode`` name: all fixed when the server starts.

``splitwire_frames_in_flight`` and ``splitwire_queue_wait_seconds`` are what an autoscaler
should watch (see ``deploy/``): they rise before latency does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Service-time buckets from 100 µs to 2.5 s.
_SECONDS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass
class CloudMetrics:
    """Every metric the service exports; create one per server."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.sessions = Gauge("splitwire_open_sessions", "Sessions open now", registry=r)
        self.sessions_total = Counter(
            "splitwire_sessions_total", "Sessions by how they began", ["outcome"], registry=r
        )
        self.unauthenticated = Counter(
            "splitwire_unauthenticated_calls_total",
            "Calls refused for a missing or wrong token",
            registry=r,
        )
        self.frames = Counter(
            "splitwire_frames_total", "Frames received complete", ["model", "cut"], registry=r
        )
        self.results = Counter(
            "splitwire_results_total", "Frames answered with a result", ["model", "cut"], registry=r
        )
        self.bytes_in = Counter(
            "splitwire_bytes_received_total", "Chunk payload bytes received", registry=r
        )
        self.bytes_out = Counter(
            "splitwire_bytes_sent_total", "Result payload bytes sent", registry=r
        )
        self.errors = Counter(
            "splitwire_frame_errors_total",
            "Frames answered with a FrameError",
            ["code"],
            registry=r,
        )
        self.stale = Counter(
            "splitwire_stale_frames_total",
            "Frames not computed because they outwaited their queue budget",
            registry=r,
        )
        self.in_flight = Gauge(
            "splitwire_frames_in_flight", "Frames received and not yet answered", registry=r
        )
        self.queued = Gauge("splitwire_queued_frames", "Frames waiting for the tail", registry=r)
        self.buffered_bytes = Gauge(
            "splitwire_buffered_bytes",
            "Bytes sessions hold: partial frames, frames in flight, answers not yet taken",
            registry=r,
        )
        self.timeouts = Counter(
            "splitwire_timeouts_total",
            "Waits on an edge that ran out (hello, frame, idle, write)",
            ["kind"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "splitwire_queue_wait_seconds", "Time a frame waits for the tail", buckets=_SECONDS,
            registry=r,
        )  # fmt: skip
        self.decode_time = Histogram(
            "splitwire_decode_seconds", "Decoding and checking one frame", buckets=_SECONDS,
            registry=r,
        )  # fmt: skip
        self.compute_time = Histogram(
            "splitwire_compute_seconds", "One tail call (a whole batch)", ["model", "cut"],
            buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.encode_time = Histogram(
            "splitwire_encode_seconds", "Encoding one frame's results", buckets=_SECONDS,
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "splitwire_batch_size", "Frames per tail call", ["model", "cut"], buckets=_BATCH,
            registry=r,
        )  # fmt: skip
