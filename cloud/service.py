"""What all sessions of one server share: the tails, the batcher, the codec threads, the
metrics and the shutdown state; and the thin gRPC servicer that hands each stream to a
:class:`~splitwire.cloud.session.SessionHandler`."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grpc import aio

from splitwire.cloud.batcher import TailBatcher
from splitwire.cloud.config import CloudConfig
from splitwire.cloud.cooldown import ViolationCooldown
from splitwire.cloud.metrics import CloudMetrics
from splitwire.cloud.registry import TailRegistry
from splitwire.cloud.session import SessionHandler
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
from splitwire.protocol.framing import ByteBudget
from splitwire.protocol.peer_text import RateLimitedLog

logger = logging.getLogger("splitwire.cloud.session")


@dataclass
class TailService:
    """The state shared by every session of one server.

    Attributes:
        sessions: the sessions open now (admission counts them).
        handshakes: streams waiting for their Hello now (bounded by ``max_sessions`` too).
        budget: the bytes all sessions hold (``--max-buffered-bytes``); each session's own
            budget draws on it.
        peer_log: where sessions log what a peer can cause at will (rate-limited).
        cooldown: peers whose last session ended for misbehaving, and until when they wait.
        held: streams of such peers being held before they are ended (bounded by
            ``max_sessions``, see :data:`~splitwire.cloud.cooldown.HOLD_S`).
        drained: set when the server starts shutting down: sessions finish their frames in
            flight and end with ``SessionEnd UNAVAILABLE``; new hellos are rejected.
    """

    config: CloudConfig
    registry: TailRegistry
    batcher: TailBatcher
    codec_pool: ThreadPoolExecutor
    metrics: CloudMetrics
    sessions: set[SessionHandler] = field(default_factory=set)
    handshakes: int = 0
    held: int = 0
    budget: ByteBudget = field(init=False)
    peer_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(logger))
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    cooldown: ViolationCooldown = field(init=False)

    def __post_init__(self) -> None:
        self.cooldown = ViolationCooldown(self.config.violation_cooldown_s)
        self.budget = ByteBudget(
            self.config.max_buffered_bytes, name="--max-buffered-bytes (all sessions)"
        )
        self.metrics.buffered_bytes.set_function(lambda: self.budget.held)

    @property
    def draining(self) -> bool:
        """True once shutdown has begun."""
        return self.drained.is_set()


class SplitSessionServicer(pb_grpc.SplitSessionServicer):
    """``SplitSession.Session``: one :class:`SessionHandler` per stream."""

    def __init__(self, service: TailService) -> None:
        self._service = service

    async def Session(self, request_iterator: Any, context: aio.ServicerContext) -> None:
        await SessionHandler(self._service, context).run()
