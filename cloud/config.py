"""What ``splitwire cloud`` was asked to do, validated once in ``main()``.

Nothing below the command line reads the environment or the arguments: the service gets a
frozen :class:`CloudConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from splitwire.cloud.errors import ConfigError

# Defaults an operator can override with flags (see `splitwire cloud --help`).
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_WAIT_MS = 2.0
DEFAULT_MAX_SESSIONS = 256
DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_GRACE_S = 10.0
DEFAULT_MAX_QUEUED_FRAMES = 512
DEFAULT_MAX_FRAME_BYTES = 32 << 20


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate and key (PEM), and optionally the CA that client certificates must
    chain to (mutual TLS: a client without one is refused during the handshake)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class CloudConfig:
    """Everything the tail service needs; contradictions are refused on construction.

    Attributes:
        listen: ``HOST:PORT`` to serve gRPC on (port 0 picks a free one).
        plans: plan directories; every cut of each is served.
        metrics: ``HOST:PORT`` for the Prometheus endpoint, or None for none.
        tls: certificates for TLS / mutual TLS, or None for a plaintext port.
        token_file: a file of accepted bearer tokens (one per line), or None for no tokens.
        max_batch: most frames the tail computes in one call (1 = no batching).
        max_wait_ms: how long the first frame of a batch waits for company.
        threads: torch threads of the tail.
        max_sessions: concurrent sessions; the next hello is rejected ``RESOURCE_EXHAUSTED``.
        max_in_flight: most frames one session may have in the server at once.
        max_queued_frames: most frames waiting for the tail, over all sessions.
        max_frame_bytes: largest frame payload (all tensors, encoded) accepted.
        grace_s: on SIGTERM, how long frames in flight may take to finish.
        server_id: the replica's name in ``Accept.server_id`` and the logs.
        plan_public_key: an Ed25519 public key (PEM) every plan's ``plan.yaml`` must be signed
            by, or None to trust the plan directories as they are (logged as a warning).
    """

    listen: str
    plans: tuple[Path, ...]
    metrics: str | None = None
    tls: TlsConfig | None = None
    token_file: Path | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    threads: int = 1
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    grace_s: float = DEFAULT_GRACE_S
    server_id: str = field(default="")
    plan_public_key: Path | None = None

    def __post_init__(self) -> None:
        if not self.plans:
            raise ConfigError("no plan given; pass --plan DIR (a directory `splitwire plan` wrote)")
        split_address(self.listen, flag="--listen")
        if self.metrics is not None:
            split_address(self.metrics, flag="--metrics")
        positive = {
            "--max-batch": self.max_batch,
            "--threads": self.threads,
            "--max-sessions": self.max_sessions,
            "--max-in-flight": self.max_in_flight,
            "--max-queued-frames": self.max_queued_frames,
            "--max-frame-bytes": self.max_frame_bytes,
        }
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} {value}: expected at least 1")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms {self.max_wait_ms}: expected >= 0")
        if self.grace_s < 0:
            raise ConfigError(f"--grace-s {self.grace_s}: expected >= 0")


def split_address(text: str, *, flag: str) -> tuple[str, int]:
    """``"127.0.0.1:8500"`` → ``("127.0.0.1", 8500)``; ``[::1]:8500`` for IPv6.

    Raises:
        ConfigError: not ``HOST:PORT`` with a port in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8500")
    return host, int(port)
