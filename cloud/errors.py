"""Errors of the tail service::

    SplitwireError
    └── CloudError               anything the tail service refuses
        ├── ConfigError          a flag, a file or a certificate that cannot be used (exit 2)
        └── FrameRefused         one frame is answered with a FrameError; the session goes on
            └── SessionEnded     the session is over (protocol violation, shutdown)

:class:`FrameRefused` carries the wire's ``ErrorCode`` and the field at fault, so the servicer
turns it into a ``FrameError`` (or a ``SessionEnd``) without knowing where it came from.
"""

from __future__ import annotations

from splitwire.errors import SplitwireError
from splitwire.protocol import splitwire_pb2 as pb


class CloudError(SplitwireError):
    """Root of the tail service's errors."""


class ConfigError(CloudError):
    """A command-line value, plan, token file or certificate the service cannot start with."""


class FrameRefused(CloudError):
    """One frame cannot be answered with a result.

    Attributes:
        code: the wire ``ErrorCode`` value (e.g. ``pb.INVALID_ARGUMENT``, ``pb.STALE``).
        field: the header field or tensor at fault, when there is one.
        by_peer: the edge is at fault (what it sent breaks the plan or the limits Accept
            gave), not the server (a full queue, a budget, a shutdown); sessions count these.
    """

    def __init__(
        self, code: pb.ErrorCode, message: str, *, field: str = "", by_peer: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.by_peer = by_peer or code in (pb.INVALID_ARGUMENT, pb.PLAN_MISMATCH)


class SessionEnded(FrameRefused):
    """The session cannot go on; it ends with a ``SessionEnd`` carrying this code and reason."""
