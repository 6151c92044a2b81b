"""Fixtures of the tail service tests: one real plan (ResNet-18 at 64², exported halves of the
input cut, two splits and the all-on-edge cut), a real server on 127.0.0.1:0 per test, and
real sessions through :class:`~splitwire.protocol.client.SessionClient`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import torch

from splitwire.cloud import CloudServer
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import PROTOCOL_VERSION, EncodedTensor, encode
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import (
    SessionClient,
    SessionEvent,
    SessionResult,
    open_channel,
)

from ..conftest import INPUT


def head_outputs(plan: RunnablePlan, cut: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the edge's head sends for input ``x`` at ``cut``."""
    with torch.inference_mode():
        out = plan.head(cut)(x)
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def tail_outputs(
    plan: RunnablePlan, cut: str, tensors: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """The tail run locally on ``tensors`` (the reference a result must match)."""
    with torch.inference_mode():
        out = plan.tail(cut)(*tensors)
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def inputs(seed: int, batch: int = 1) -> torch.Tensor:
    """A deterministic model input."""
    return torch.randn((batch, *INPUT[1:]), generator=torch.Generator().manual_seed(seed))


def encoded(tensors: Sequence[torch.Tensor], codec: str) -> list[EncodedTensor]:
    """Encode a frame's tensors as the edge would."""
    return [encode(t, codec, name=f"t{i}") for i, t in enumerate(tensors)]


SessionFactory = Callable[..., Awaitable[SessionClient]]


@pytest.fixture
async def connect(plan: RunnablePlan) -> AsyncIterator[Callable[..., Any]]:
    """``await connect(server, cut=..., codec=...)``: an open, accepted session (``hello=``
    overrides Hello fields; ``open=False`` returns it before the Hello)."""
    channels = []
    sessions: list[SessionClient] = []

    async def make(
        server: CloudServer,
        *,
        cut: str = "c0000",
        codec: str = "int8+zstd1",
        token: str | None = None,
        open: bool = True,
        max_in_flight: int = 8,
        **hello: Any,
    ) -> SessionClient:
        channel = open_channel(server.address)
        channels.append(channel)
        session = SessionClient(channel, token=token)
        sessions.append(session)
        if open:
            fields: dict[str, Any] = {
                "protocol_version": PROTOCOL_VERSION,
                "edge_id": f"test-{len(sessions)}",
                "model_hash": plan.model_hash,
                "cut_id": cut,
                "codec": codec,
                "max_in_flight": max_in_flight,
            }
            fields.update(hello)
            await session.open(pb.Hello(**fields))
        return session

    yield make
    for session in sessions:
        session.cancel()
    for channel in channels:
        await channel.close()


async def exchange(
    session: SessionClient,
    frames: Sequence[Sequence[EncodedTensor]],
    *,
    first_seq: int = 1,
    **send: Any,
) -> dict[int, SessionEvent]:
    """Send every frame, then read one answer per frame; returns them by seq."""
    for i, frame in enumerate(frames):
        await session.send(first_seq + i, time.time_ns(), frame, **send)
    answers: dict[int, SessionEvent] = {}
    while len(answers) < len(frames):
        event = await session.receive()
        assert event is not None, f"stream ended with answers for {sorted(answers)} only"
        seq = getattr(event, "seq", None)
        assert seq is not None, f"session ended early: {event}"
        assert seq not in answers, f"frame {seq} answered twice"
        answers[seq] = event
    return answers


def result(event: SessionEvent | None) -> SessionResult:
    """``event`` as a result, failing the test with the server's message otherwise."""
    assert isinstance(event, SessionResult), f"expected a result, got {event}"
    return event
