"""Bearer tokens: read the accepted ones from a file, check each call before its first message.

The token file holds one token per line (blank lines and ``#`` comments ignored)::

    # edge fleet, rotated 2026-11
    3q2+7w...

A call to ``SplitSession`` must carry ``authorization: Bearer <token>`` in its metadata. The
check runs in a server interceptor, on the metadata alone: a call without a valid token is
aborted ``UNAUTHENTICATED`` before the servicer exists for it, so no message of an unknown peer
is ever read or parsed. Tokens are compared in constant time and never logged. The health
service stays open: load balancers and Kubernetes probe it without credentials.
"""

from __future__ import annotations

import hmac
import logging
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from splitwire.cloud.errors import ConfigError
from splitwire.protocol.transport import AUTH_METADATA_KEY, AUTH_SCHEME

logger = logging.getLogger(__name__)

# Fully-qualified method names that need a token.
PROTECTED_PREFIX = "/splitwire.v1.SplitSession/"


def load_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens in ``path``.

    Raises:
        ConfigError: the file cannot be read or holds no token.
    """
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from exc
    tokens = tuple(
        line.strip().encode()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    )
    if not tokens:
        raise ConfigError(f"token file {path} holds no token; expected one token per line")
    # Group-readable is how a Kubernetes secret volume (0440 with fsGroup) or a compose secret
    # reaches a non-root tail; readable by everyone is a leak.
    if mode & stat.S_IROTH:
        logger.warning("token file %s is readable by every user; chmod o-r it (or 600)", path)
    return tokens


def token_matches(presented: str | None, tokens: tuple[bytes, ...]) -> bool:
    """True when ``presented`` (an ``authorization`` value) is ``Bearer <one of tokens>``.

    Every token is compared, each in constant time, so the time taken says nothing about
    which token, or how much of it, matched.
    """
    if presented is None:
        return False
    scheme, _, token = presented.partition(" ")
    candidate = token.strip().encode()
    found = False
    for accepted in tokens:
        found |= hmac.compare_digest(candidate, accepted)
    return found and scheme == AUTH_SCHEME


class TokenInterceptor(aio.ServerInterceptor):
    """Aborts calls to the session service that lack a valid bearer token.

    Args:
        tokens: the accepted tokens.
        on_refused: called once per refused call (the metrics count them).
    """

    def __init__(self, tokens: tuple[bytes, ...], *, on_refused: Callable[[], None]) -> None:
        self._tokens = tokens
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if not method.startswith(PROTECTED_PREFIX):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        value = metadata.get(AUTH_METADATA_KEY)
        if token_matches(value if isinstance(value, str) else None, self._tokens):
            return await continuation(handler_call_details)
        self._on_refused()
        logger.warning("refused a call to %s: %s bearer token", method, "wrong" if value else "no")
        return grpc.stream_stream_rpc_method_handler(_refuse)


async def _refuse(request_iterator: Any, context: aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or wrong bearer token; expected metadata 'authorization: Bearer <token>' "
        "with a token from the server's --token-file",
    )
