"""Ask a tail's ``grpc.health.v1`` service whether it serves: the one probe that scripts,
container health checks, load-balancer tests and ``splitwire health`` share.

A tail answers ``SERVING`` once every shipped tail half is loaded and ``NOT_SERVING`` from the
moment it starts a graceful shutdown, so a probe tells "ready for new sessions", not only
"the port listens".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# What a probe reports when no answer came: the port is closed, TLS failed, or it timed out.
UNREACHABLE = "UNREACHABLE"


def check_health(
    address: str,
    *,
    timeout_s: float = 1.0,
    tls_ca: Path | None = None,
    service: str = "",
) -> str:
    """One health check of ``address``: ``"SERVING"``, ``"NOT_SERVING"``, ``"SERVICE_UNKNOWN"``
    or :data:`UNREACHABLE`. ``service`` "" asks about the server as a whole."""
    if tls_ca is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca.read_bytes()))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return UNREACHABLE
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def wait_until_serving(
    address: str,
    *,
    timeout_s: float,
    tls_ca: Path | None = None,
    still_starting: Callable[[], bool] = lambda: True,
    poll_s: float = 0.1,
) -> bool:
    """Probe ``address`` until it answers ``SERVING`` (True) or ``timeout_s`` passes (False).

    ``still_starting`` is asked between probes; when it returns False (say, the server's
    process exited) the wait ends at once with False.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not still_starting():
            return False
        if check_health(address, timeout_s=min(1.0, remaining), tls_ca=tls_ca) == "SERVING":
            return True
        time.sleep(poll_s)
