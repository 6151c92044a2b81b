"""What ``splitwire cloud`` was asked to do, validated once in ``main()``.

Nothing below the command line reads the environment or the arguments: the service gets a
frozen :class:`CloudConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from splitwire.cloud.errors import ConfigError
from splitwire.protocol import address as protocol_address
from splitwire.protocol.errors import AddressError

# Defaults an operator can override with flags (see `splitwire cloud --help`).
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_WAIT_MS = 2.0
DEFAULT_MAX_SESSIONS = 256
DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_GRACE_S = 10.0
DEFAULT_MAX_QUEUED_FRAMES = 512
DEFAULT_MAX_FRAME_BYTES = 32 << 20
# Bytes one session may hold (its partial frames as far as they arrived, its frames in flight,
# encoded and decoded, and its answers until gRPC has taken them): two of the largest frames.
DEFAULT_MAX_SESSION_BYTES = 2 * DEFAULT_MAX_FRAME_BYTES
# The same over all sessions: what a flood of hostile sessions can make the server hold, kept
# well under the 200 MB of growth the service is held to. Honest frames fit hundreds of times
# (a 224² fp32 input is 0.6 MB), and more frames than that in the server would outwait the
# edge's budget (2 s) before the tail got to them.
DEFAULT_MAX_BUFFERED_BYTES = 128 << 20
# An edge writes its Hello as soon as the stream opens; 10 s covers a congested link, and a
# stream that says nothing costs ~20 kB for that long.
DEFAULT_HELLO_TIMEOUT_S = 10.0
# Five times the edge's default frame budget (2 s): a frame slower to arrive is useless to it.
DEFAULT_FRAME_TIMEOUT_S = 10.0
# A minute without a frame (an edge running all-on-edge and not probing): the slot is given
# back and the edge reconnects, once a minute at most.
DEFAULT_IDLE_TIMEOUT_S = 60.0
# An answer the edge has not taken (HTTP/2 flow control) in five frame budgets is one it will
# not take: the session ends rather than hold its frames.
DEFAULT_WRITE_TIMEOUT_S = 10.0
# Frames one session may have refused for what they carry (a shape, batch or codec the plan does
# not allow, more in flight than Accept gave) within REFUSED_WINDOW_S before it ends: an honest
# edge gets none, and a misconfigured one is better told once than answered frame by frame. A
# peer that floods refused frames costs the service a Hello per this many frames.
DEFAULT_MAX_REFUSED_FRAMES = 32
REFUSED_WINDOW_S = 10.0
# A peer whose session ended for misbehaving waits this long before its next one (see
# splitwire.cloud.cooldown): one such session per refusal window at most.
DEFAULT_VIOLATION_COOLDOWN_S = REFUSED_WINDOW_S


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
        max_frame_batch: most samples one frame may carry (its tensors' first dimension),
            checked on its headers before anything is decoded; None: the plan's own input
            batch (1 for a plan of one image), so a frame costs what the edge's head sends.
        max_session_bytes: bytes one session may hold: partial frames as far as they arrived,
            frames in flight (encoded and decoded), answers until gRPC has taken them.
        max_buffered_bytes: the same over all sessions.
        hello_timeout_s: how long a new stream may take to send its Hello.
        frame_timeout_s: how long a frame may take from its first chunk to its last.
        idle_timeout_s: how long a session may go without a frame while nothing is in flight;
            it then ends with ``SessionEnd UNAVAILABLE`` and a retry delay.
        write_timeout_s: how long an answer may wait for the edge to take it (HTTP/2 flow
            control); the session then ends.
        max_refused_frames: frames of one session refused for the edge's fault within
            ``REFUSED_WINDOW_S`` before the session ends ``PROTOCOL_VIOLATION``.
        violation_cooldown_s: how long a peer (token and host) whose session ended for
            breaking the protocol or not taking its answers waits before its next session;
            0 turns it off.
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
    max_frame_batch: int | None = None
    max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    hello_timeout_s: float = DEFAULT_HELLO_TIMEOUT_S
    frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    max_refused_frames: int = DEFAULT_MAX_REFUSED_FRAMES
    violation_cooldown_s: float = DEFAULT_VIOLATION_COOLDOWN_S

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
            "--max-frame-batch": 1 if self.max_frame_batch is None else self.max_frame_batch,
            "--max-session-bytes": self.max_session_bytes,
            "--max-buffered-bytes": self.max_buffered_bytes,
            "--max-refused-frames": self.max_refused_frames,
        }
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} {value}: expected at least 1")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms {self.max_wait_ms}: expected >= 0")
        if self.grace_s < 0:
            raise ConfigError(f"--grace-s {self.grace_s}: expected >= 0")
        if not self.violation_cooldown_s >= 0:
            raise ConfigError(
                f"--violation-cooldown-s {self.violation_cooldown_s}: expected >= 0 (0: off)"
            )
        timeouts = {
            "--hello-timeout-s": self.hello_timeout_s,
            "--frame-timeout-s": self.frame_timeout_s,
            "--idle-timeout-s": self.idle_timeout_s,
            "--write-timeout-s": self.write_timeout_s,
        }
        for flag, seconds in timeouts.items():
            if not seconds > 0:
                raise ConfigError(f"{flag} {seconds}: expected a positive number of seconds")
        if self.max_session_bytes < self.max_frame_bytes:
            raise ConfigError(
                f"--max-session-bytes {self.max_session_bytes} is below --max-frame-bytes "
                f"{self.max_frame_bytes}: the largest frame could never be held; raise it"
            )
        if self.max_buffered_bytes < self.max_session_bytes:
            raise ConfigError(
                f"--max-buffered-bytes {self.max_buffered_bytes} is below --max-session-bytes "
                f"{self.max_session_bytes}: one session could never use its share; raise it"
            )


def split_address(text: str, *, flag: str) -> tuple[str, int]:
    """``"127.0.0.1:8500"`` → ``("127.0.0.1", 8500)``; ``[::1]:8500`` for IPv6; port 0 picks a
    free one. The protocol's one parser (:func:`splitwire.protocol.address.split_address`).

    Raises:
        ConfigError: not ``HOST:PORT`` with a port in 0..65535.
    """
    try:
        return protocol_address.split_address(text, flag=flag, listening=True)
    except AddressError as exc:
        raise ConfigError(str(exc)) from exc
