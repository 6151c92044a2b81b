"""Bearer tokens: read the accepted ones from a file, check each call before its first message.

The token file holds one token per line (blank lines and ``#`` comments ignored)::

    # edge fleet, rotated 2026-11
    3q2+7w...

A call to ``SplitSession`` must carry ``authorization: Bearer <token>`` in its metadata. The
check runs in a server interceptor, on the metadata alone: a call without a valid token is
answered ``UNAUTHENTICATED`` before the servicer exists for it, so no message of an unknown peer
is ever parsed. Tokens are compared in constant time and never logged. The health service stays
open: load balancers and Kubernetes probe it without credentials.

A refused call is answered once its caller has paused writing. Answered at once, the status
races with the caller's first write, and grpc's aio client, whose write then fails in its core,
reports ``INTERNAL`` ("Internal error from Core") in place of the status it was sent: 34 of 500
refused ``SessionClient.open`` calls against a loaded tail process did. So the refusal reads what
the caller sends, as bytes it drops unparsed, until the stream is quiet for
:data:`REFUSAL_QUIET_S` (or half-closed), within :data:`REFUSAL_MAX_S` and
:data:`REFUSAL_MAX_MESSAGES`; at most :data:`REFUSALS_AT_ONCE` calls wait so, later ones are
answered at once. Every refused call then gets ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from splitwire.cloud.errors import ConfigError
from splitwire.protocol.peer_text import RateLimitedLog, peer_text
from splitwire.protocol.transport import AUTH_METADATA_KEY, AUTH_SCHEME

logger = logging.getLogger(__name__)

# Fully-qualified method names that need a token.
PROTECTED_PREFIX = "/splitwire.v1.SplitSession/"
# A refused caller that wrote and then paused this long is reading: its status goes out now.
REFUSAL_QUIET_S = 0.2
# The longest a refused call is held, and the most messages taken from it (each at most gRPC's
# 4 MiB receive limit, dropped at once) ...
REFUSAL_MAX_S = 2.0
REFUSAL_MAX_MESSAGES = 16
# ... and how many are held at once: a flood of callers without a token costs ~20 kB each for
# at most REFUSAL_MAX_S, then they are answered without waiting.
REFUSALS_AT_ONCE = 256
_REFUSAL = (
    "missing or wrong bearer token; expected metadata 'authorization: Bearer <token>' with a "
    "token from the server's --token-file"
)


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
        self._log = RateLimitedLog(logger)
        self._refusing = 0  # refused calls being drained now

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
        self._log.log(
            "unauthenticated",
            logging.WARNING,
            "refused a call to %s: %s bearer token; expected metadata 'authorization: Bearer "
            "<token>' with a token from --token-file",
            peer_text(method),
            "wrong" if value else "no",
        )
        # No request_deserializer: what the caller sends is taken as bytes, never parsed.
        return grpc.stream_stream_rpc_method_handler(self._refuse)

    async def _refuse(self, requests: Any, context: aio.ServicerContext) -> None:
        """Answer ``UNAUTHENTICATED`` once the caller has paused writing (module docstring)."""
        if self._refusing < REFUSALS_AT_ONCE:
            self._refusing += 1
            try:
                await _until_quiet(context)
            finally:
                self._refusing -= 1
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)


async def _until_quiet(context: aio.ServicerContext) -> None:
    """Read and drop messages until none comes for REFUSAL_QUIET_S after one did, the caller
    half-closes or goes, or REFUSAL_MAX_S / REFUSAL_MAX_MESSAGES run out."""
    deadline = time.monotonic() + REFUSAL_MAX_S
    wait_s = REFUSAL_MAX_S  # for the first message: the caller may not have written yet
    for _ in range(REFUSAL_MAX_MESSAGES):
        wait_s = min(wait_s, deadline - time.monotonic())
        if wait_s <= 0:
            return
        try:
            async with asyncio.timeout(wait_s):
                message = await context.read()
        except (TimeoutError, aio.AioRpcError, aio.BaseError, grpc.RpcError):
            return
        if message is aio.EOF:
            return
        del message
        wait_s = REFUSAL_QUIET_S
