"""Bearer tokens and TLS against a real server: who may open a session, and over what.

The certificates come from :mod:`tests.pki` (the ``pki`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitwire.cloud import CloudServer
from splitwire.cloud.config import TlsConfig
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import PROTOCOL_VERSION
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import SessionClient, SessionError, open_channel

from ..pki import Pki
from .conftest import encoded, inputs, result

TOKENS = ("edge-fleet-2026-3q2+7wZ", "bench-Kx9/42")


def _hello(plan: RunnablePlan) -> pb.Hello:
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        edge_id="security",
        model_hash=plan.model_hash,
        cut_id="c0000",
        codec="fp32",
        max_in_flight=4,
    )


@contextlib.asynccontextmanager
async def session_to(
    server: CloudServer, *, token: str | None = None, **tls: Path | None
) -> AsyncIterator[SessionClient]:
    """A session client on its own channel (``tls_ca``/``tls_cert``/``tls_key`` as given)."""
    channel = open_channel(server.address, **tls)
    session = SessionClient(channel, token=token)
    try:
        yield session
    finally:
        session.cancel()
        await channel.close()


async def works(server: CloudServer, plan: RunnablePlan, **client: Any) -> None:
    """A session opens and one frame gets its result."""
    async with session_to(server, **client) as session:
        await session.open(_hello(plan))
        await session.send(1, time.time_ns(), encoded([inputs(1)], "fp32"))
        assert result(await session.receive()).seq == 1


async def refused(server: CloudServer, plan: RunnablePlan, **client: Any) -> SessionError:
    """Opening a session fails as a whole; the error (with its gRPC status)."""
    async with session_to(server, **client) as session:
        with pytest.raises(SessionError) as caught:
            await session.open(_hello(plan), timeout_s=10)
    return caught.value


# -- tokens --------------------------------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(
        "# edge fleet, rotated 2026-11\n"
        f"{TOKENS[0]}\n"
        "\n"
        "   # the load benchmark\n"
        f"  {TOKENS[1]}  \r\n"
    )
    path.chmod(0o600)
    return path


def _samples(server: CloudServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric family ``name``, by labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in server.metrics.registry.collect()
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_sessions_need_a_listed_token(
    start_server, plan: RunnablePlan, token_file: Path
) -> None:
    server = await start_server(token_file=token_file)
    value = server.metrics.registry.get_sample_value
    wrong = [None, "", "not-a-token", TOKENS[0] + "x", TOKENS[0][:-1], "# edge fleet, rotated"]
    for token in wrong:
        error = await refused(server, plan, token=token)
        assert error.status == grpc.StatusCode.UNAUTHENTICATED, (token, error)
        assert "authorization: Bearer <token>" in str(error)  # quoted: a peer's text
    # A frame chunk sent first with a wrong token: the servicer never reads it either.
    async with session_to(server, token="not-a-token") as session:
        with pytest.raises(SessionError) as caught:
            await session.send_message(pb.EdgeMessage(chunk=pb.FrameChunk(seq=1)))
            await session.receive()
        assert caught.value.status == grpc.StatusCode.UNAUTHENTICATED
    # The token in the wrong scheme, or in the wrong metadata key.
    async with open_channel(server.address) as channel:
        stub_call = channel.stream_stream(
            "/splitwire.v1.SplitSession/Session",
            request_serializer=pb.EdgeMessage.SerializeToString,
            response_deserializer=pb.CloudMessage.FromString,
        )
        for metadata in (
            (("authorization", f"Basic {TOKENS[0]}"),),
            (("authorization", TOKENS[0]),),
            (("x-token", f"Bearer {TOKENS[0]}"),),
        ):
            call = stub_call(metadata=metadata)
            # Refused before or during the write: which one is a race, the status is not.
            with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                await call.write(pb.EdgeMessage(hello=_hello(plan)))
            assert await call.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
    refusals = len(wrong) + 1 + 3
    assert value("splitwire_unauthenticated_calls_total") == refusals
    # Not one of those calls reached the servicer: no session began in any way, nothing read.
    assert _samples(server, "splitwire_sessions") == {}
    assert value("splitwire_bytes_received_total") == 0
    assert value("splitwire_open_sessions") == 0

    # Either listed token works (comments, blanks and surrounding whitespace ignored).
    for token in TOKENS:
        await works(server, plan, token=token)
    assert _samples(server, "splitwire_sessions") == {(("outcome", "accepted"),): 2}
    assert value("splitwire_unauthenticated_calls_total") == refusals


async def test_health_needs_no_token(start_server, token_file: Path) -> None:
    server = await start_server(token_file=token_file)
    async with open_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "splitwire.v1.SplitSession"):
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    assert server.metrics.registry.get_sample_value("splitwire_unauthenticated_calls_total") == 0


# -- TLS -----------------------------------------------------------------------------------


async def test_tls(start_server, plan: RunnablePlan, pki: Pki) -> None:
    server = await start_server(tls=TlsConfig(pki.server_cert, pki.server_key))
    assert server.address.startswith("127.0.0.1:")  # the certificate's IP SAN
    await works(server, plan, tls_ca=pki.ca)
    # A client presenting a certificate the server did not ask for still works.
    await works(server, plan, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    # Plaintext to a TLS port, or a server certificate from a CA the client does not trust.
    for client in ({}, {"tls_ca": pki.other_ca}):
        assert (await refused(server, plan, **client)).status == grpc.StatusCode.UNAVAILABLE
    # The server still serves.
    await works(server, plan, tls_ca=pki.ca)


async def test_tls_server_certificate_must_match(
    start_server, plan: RunnablePlan, pki: Pki
) -> None:
    """A server presenting a certificate of another CA is refused by a client that pins ours."""
    server = await start_server(tls=TlsConfig(pki.impostor_server_cert, pki.impostor_server_key))
    assert (await refused(server, plan, tls_ca=pki.ca)).status == grpc.StatusCode.UNAVAILABLE
    await works(server, plan, tls_ca=pki.other_ca)


async def test_mutual_tls(start_server, plan: RunnablePlan, pki: Pki) -> None:
    server = await start_server(tls=TlsConfig(pki.server_cert, pki.server_key, client_ca=pki.ca))
    await works(server, plan, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    for client in (
        {"tls_ca": pki.ca},  # no client certificate
        {"tls_ca": pki.ca, "tls_cert": pki.impostor_client_cert,
         "tls_key": pki.impostor_client_key},  # one from another CA
        {},  # plaintext
    ):  # fmt: skip
        error = await refused(server, plan, **client)
        assert error.status == grpc.StatusCode.UNAVAILABLE, (client, error)
    # No refused handshake ever reached the servicer.
    assert _samples(server, "splitwire_sessions") == {(("outcome", "accepted"),): 1}
    await works(server, plan, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)


async def test_tls_and_tokens_together(
    start_server, plan: RunnablePlan, pki: Pki, token_file: Path
) -> None:
    server = await start_server(
        tls=TlsConfig(pki.server_cert, pki.server_key, client_ca=pki.ca), token_file=token_file
    )
    client = {"tls_ca": pki.ca, "tls_cert": pki.client_cert, "tls_key": pki.client_key}
    error = await refused(server, plan, **client)  # a certificate is not a token
    assert error.status == grpc.StatusCode.UNAUTHENTICATED
    await works(server, plan, token=TOKENS[0], **client)


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o440, False), (0o644, True)])
def test_a_token_file_everyone_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    from splitwire.cloud.auth import load_tokens

    path = tmp_path / "tokens"
    path.write_text(f"{TOKENS[0]}\n")
    path.chmod(mode)
    assert load_tokens(path) == (TOKENS[0].encode(),)
    # Group-readable (a Kubernetes secret volume with fsGroup) is fine; world-readable is not.
    assert ("readable by every user" in caplog.text) == warned
    assert TOKENS[0] not in caplog.text
