"""What all sessions of one server share: the tails, the batcher, the codec threads, the
metrics and the shutdown state; and the thin gRPC servicer that hands each stream to a
:class:`~splitwire.cloud.session.SessionHandler`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grpc import aio

from splitwire.cloud.batcher import TailBatcher
from splitwire.cloud.config import CloudConfig
from splitwire.cloud.metrics import CloudMetrics
from splitwire.cloud.registry import TailRegistry
from splitwire.cloud.session import SessionHandler
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc


@dataclass
class TailService:
    """The state shared by every session of one server.

    Attributes:
        sessions: the sessions open now (admission counts them).
        drained: set when the server starts shutting down: sessions finish their frames in
            flight and end with ``SessionEnd UNAVAILABLE``; new hellos are rejected.
    """

    config: CloudConfig
    registry: TailRegistry
    batcher: TailBatcher
    codec_pool: ThreadPoolExecutor
    metrics: CloudMetrics
    sessions: set[SessionHandler] = field(default_factory=set)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

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
