"""The edge's errors, one tree under :class:`~splitwire.errors.SplitwireError`::

    SplitwireError
    ├── EdgeConfigError       the agent cannot start with this configuration (exit 2)
    ├── CloudRefused          the cloud refused the session for good (exit 3)
    ├── ControlConfigError    the MQTT control plane's settings are unusable (exit 2)
    └── DesiredPlanError      a plan/desired payload that is not a desired plan
                              (splitwire.edge.desired; answered on plan/reported, never raised
                              out of the control loop)

Foreign errors are converted where they arise: gRPC's in :mod:`splitwire.protocol.client`
(``SessionError``), the session's into :class:`CloudRefused` by the uplink
(:mod:`splitwire.edge.uplink`), aiomqtt's in :mod:`splitwire.edge.control`.
"""

from __future__ import annotations

from splitwire.errors import SplitwireError

__all__ = ["CloudRefused", "ControlConfigError", "EdgeConfigError"]


class EdgeConfigError(SplitwireError):
    """The agent cannot start with this configuration (the message names the setting)."""


class CloudRefused(SplitwireError):
    """The cloud refused the session for a reason retrying cannot fix (wrong plan, wrong
    token, unsupported protocol): the agent stops rather than retry forever.

    ``code`` is the refusal's name (``PLAN_MISMATCH``, ``UNAUTHENTICATED``, ...): every frame
    still in flight is emitted ``dropped`` with reason ``error:CODE``.
    """

    exit_code = 3

    def __init__(self, message: str, *, code: str = "REFUSED") -> None:
        super().__init__(message)
        self.code = code


class ControlConfigError(SplitwireError):
    """The control plane's configuration is unusable (bad value, unreadable password or CA)."""
