"""What the agent does with the tail's answer to a frame: the receive side of its pipeline.

    receive -> check -> emit (one line)

:class:`Answers` takes each :class:`~splitwire.edge.uplink.Answer` and
:class:`~splitwire.edge.uplink.FrameRefusal` the uplink yields, finds the frame it is for (a
late or duplicate answer is counted and ignored), times it for the link monitor, and emits the
frame's line: ``remote`` with its outputs, or ``dropped`` with the tail's reason. With a delay
corrector, an answer to a frame whose output is out already only feeds the frames after it.
The result's headers were checked against the plan's outputs before it was decoded
(:mod:`~splitwire.protocol.client`); a result that failed that check is the fallback's
(:meth:`~splitwire.edge.fallback.LocalFallback.bad_result`).
"""

from __future__ import annotations

import logging

from splitwire.edge.correction import FrameCorrector
from splitwire.edge.link_monitor import FrameTiming, LinkMonitor
from splitwire.edge.uplink import Answer, FrameRefusal, Uplink
from splitwire.edge.window import FrameWindow
from splitwire.protocol.client import server_text

logger = logging.getLogger("splitwire.edge")


class Answers:
    """The receive side (see the module docstring).

    Args:
        window: the frames in flight, where lines are emitted.
        monitor: the link estimator each answered frame feeds.
        corrector: the delay corrector, if any (it keeps the newest remote answer).
        uplink: the sessions (the replica each line names).
    """

    def __init__(
        self,
        *,
        window: FrameWindow,
        monitor: LinkMonitor,
        corrector: FrameCorrector | None,
        uplink: Uplink,
    ) -> None:
        self._window = window
        self._monitor = monitor
        self._corrector = corrector
        self._uplink = uplink

    def result(self, event: Answer) -> bool:
        """Emit the frame ``event`` answers; whether it was a frame in flight."""
        window, result = self._window, event.result
        frame = window.awaiting_answer(result.seq, result.capture_ts_ns, event.epoch)
        if frame is None:
            return False
        t = result.timings
        cloud_ns = t.queue_ns + t.decode_ns + t.compute_ns + t.encode_ns
        timing = FrameTiming(frame.sent_ns, result.received_ns, cloud_ns, frame.bytes_up,
                             result.wire_bytes)  # fmt: skip
        self._monitor.observe(timing)
        if self._corrector is not None and frame.emitted:
            # Its output went out long ago; its features serve the frames after it.
            self._corrector.remember(
                frame.seq, frame.captured_ns, result.outputs, wire_bytes=result.wire_bytes
            )
            stats = window.stats
            stats.answers_after_output += 1
            stats.answer_lags_ms.append((result.received_ns - frame.emitted_ns) / 1e6)
            stats.rtts_ms.append(timing.network_s * 1000.0)
            window.retire(frame)
            return True
        window.emit(frame, "remote", None, outputs=result.outputs,
                    rtt_ms=timing.network_s * 1000.0, cloud_ms=cloud_ns / 1e6,
                    batch_size=result.batch_size, server=self._uplink.server_id)  # fmt: skip
        return True

    def refusal(self, event: FrameRefusal) -> None:
        """The tail refused a frame: emit it ``dropped`` (``stale``, or ``error:CODE``)."""
        error = event.error
        frame = self._window.awaiting_answer(error.seq, error.capture_ts_ns, event.epoch)
        if frame is None:
            return
        stale = error.code_name == "STALE"
        if not stale:
            logger.warning("frame %d refused: %s: %s", frame.seq, error.code_name,
                           server_text(error.message))  # fmt: skip
        self._window.emit_dropped(frame, "stale" if stale else f"error:{error.code_name}")
