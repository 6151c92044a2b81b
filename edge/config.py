"""The edge agent's settings, and the errors it stops with."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

# The edge's errors live in errors.py; callers have always found these two here too.
from splitwire.edge.errors import CloudRefused, EdgeConfigError  # noqa: F401
from splitwire.protocol import address as protocol_address
from splitwire.protocol.errors import AddressError

DEFAULT_WINDOW = 4
DEFAULT_BUDGET_MS = 2000.0
DEFAULT_GRACE_S = 5.0
# The backoff cap between session attempts, and the most a tail's retry_after_ms makes the agent
# wait: a tail that asks for 2^32 - 1 ms must not keep it away for 50 days.
DEFAULT_RECONNECT_MAX_S = 5.0
# Frames in a row that may be lost to an open session without a single answer before the agent
# drops it: frames sent that ran out of their budget, and, once the tail holds every slot with
# such frames (nothing can be sent), frames that ran out or gave way waiting to be sent. Two
# windows of the default 4: one window can go stale when the tail stalls for a moment (its
# answers still come, late, and any answer resets the count); with the default budget, 8 means
# no answer for over 2 s and then 4 more frames lost: a tail that does not answer.
DEFAULT_MAX_UNANSWERED = 8
# A session whose frames go unanswered (since the oldest was sent and since its last answer) for
# longer than this many times the expected answer time (the p95 of the agent's last 64 answers)
# is declared unresponsive and dropped (edge/uplink.py). 3x the p95 is clearly not a slow answer:
# a link's jitter is in its p95 already, and a link that keeps answering, however slowly, is
# never silent (the silence counts from its last answer).
DEFAULT_UNRESPONSIVE_FACTOR = 3.0
# ... but never sooner than this: above the ~100 ms a loaded device or a batching tail may add to
# one answer now and then, and well under the 2 s default budget, so the frames a silent tail
# holds are still computed on the edge in time (a false alarm costs one reconnect: frames are
# answered on the edge meanwhile).
DEFAULT_UNRESPONSIVE_FLOOR_MS = 250.0
# Before the agent has timed a single answer it has only the plan's prediction, which a wrong
# profile or link name can make ten times too short: the floor is then 1 s, so a tail that
# answers within a second from its first frame is never taken for a silent one, and the frames a
# tail that never answers holds are still computed on the edge in half the default budget.
DEFAULT_UNRESPONSIVE_FIRST_MS = 1000.0


def split_address(text: str, *, flag: str) -> tuple[str, int]:
    """``"tail.example:8500"`` -> ``("tail.example", 8500)``, by the protocol's one parser
    (:func:`splitwire.protocol.address.split_address`: no scheme, a port in 1..65535).

    Raises:
        EdgeConfigError: not ``HOST:PORT`` (a usage error: exit 2).
    """
    try:
        return protocol_address.split_address(text, flag=flag)
    except AddressError as exc:
        raise EdgeConfigError(str(exc)) from exc


@dataclass(frozen=True)
class ClientTls:
    """TLS to the tail: the CA that signed its certificate; a client certificate and key for
    mutual TLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise EdgeConfigError("--tls-cert and --tls-key go together; give both or neither")


@dataclass(frozen=True)
class EdgeConfig:
    """Everything ``splitwire edge`` is told (see its ``--help`` for each field's meaning).

    ``cut``/``codec`` pick the starting option (default: the plan's choice); ``local_only``
    says that a plan whose choice runs in the cloud runs its all-on-edge option instead, with
    no ``cloud`` (without it, that is a usage error); ``frames`` None
    runs until stopped; ``fps`` None reads the source as fast as the pipeline takes frames.
    ``edge_slowdown`` K > 1 emulates a weaker device: every compute step on the edge (head,
    encode, the corrector's local model) takes K times its measured time.
    """

    plan: Path
    source: str = "synthetic"
    cloud: str | None = None
    local_only: bool = False
    frames: int | None = None
    fps: float | None = None
    window: int = DEFAULT_WINDOW
    budget_ms: float = DEFAULT_BUDGET_MS
    policy: str | None = None
    cut: str | None = None
    codec: str | None = None
    edge_id: str = field(default_factory=socket.gethostname)
    token_file: Path | None = None
    # An Ed25519 public key plan.yaml must be signed by (--plan-public-key); None: trusted as is.
    plan_public_key: Path | None = None
    tls: ClientTls | None = None
    threads: int = 1
    loop: bool = False
    seed: int = 0
    grace_s: float = DEFAULT_GRACE_S
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S
    max_unanswered: int = DEFAULT_MAX_UNANSWERED
    unresponsive_factor: float = DEFAULT_UNRESPONSIVE_FACTOR
    unresponsive_floor_ms: float = DEFAULT_UNRESPONSIVE_FLOOR_MS
    unresponsive_first_ms: float = DEFAULT_UNRESPONSIVE_FIRST_MS
    hold_s: float = 3.0
    margin: float = 0.15
    corrector: Path | None = None
    corrector_fusion: str | None = None
    edge_slowdown: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.window >= 1, f"--window {self.window}: expected at least 1 frame in flight"),
            (self.budget_ms > 0, f"--budget-ms {self.budget_ms}: expected a positive budget"),
            (self.frames is None or self.frames >= 1, f"--frames {self.frames}: expected >= 1"),
            (self.fps is None or self.fps > 0, f"--fps {self.fps}: expected > 0"),
            (self.threads >= 1, f"--threads {self.threads}: expected >= 1"),
            (
                self.edge_slowdown >= 1.0,
                f"--edge-slowdown {self.edge_slowdown}: expected a factor of at least 1",
            ),
            (self.grace_s >= 0, f"--grace-s {self.grace_s}: expected >= 0"),
            (
                self.policy in (None, "auto", "fixed"),
                f"--policy {self.policy}: expected auto or fixed",
            ),
            (
                0 < self.reconnect_initial_s <= self.reconnect_max_s,
                f"--reconnect-max-s {self.reconnect_max_s}: expected a cap of at least the first "
                f"backoff ({self.reconnect_initial_s} s)",
            ),
            (
                self.max_unanswered >= 1,
                f"--max-unanswered {self.max_unanswered}: expected at least 1 frame",
            ),
            (
                self.unresponsive_factor >= 1.0,
                f"--unresponsive-factor {self.unresponsive_factor}: expected at least 1 (a "
                "multiple of the expected answer time)",
            ),
            (
                self.unresponsive_floor_ms > 0,
                f"--unresponsive-floor-ms {self.unresponsive_floor_ms}: expected a positive time",
            ),
            (
                self.unresponsive_first_ms > 0,
                f"--unresponsive-first-ms {self.unresponsive_first_ms}: expected a positive time",
            ),
            (bool(self.edge_id) and "/" not in self.edge_id and "+" not in self.edge_id
             and "#" not in self.edge_id,
             f"--edge-id {self.edge_id!r}: expected a non-empty name without '/', '+' or '#' "
             "(it becomes an MQTT topic level)"),
        ]  # fmt: skip
        if self.corrector_fusion is not None and self.corrector is None:
            checks.append((False, "--corrector-fusion needs --corrector DIR"))
        if self.local_only and self.cloud is not None:
            both = f"--local-only and --cloud {self.cloud}: pick one (--local-only runs every "
            checks.append((False, both + "frame on this device, with no cloud)"))
        if self.cloud is not None:
            split_address(self.cloud, flag="--cloud")
        for ok, message in checks:
            if not ok:
                raise EdgeConfigError(message)

    def read_token(self) -> str | None:
        """The bearer token from ``token_file`` (its first non-empty line), if one is set.

        Raises:
            EdgeConfigError: the file cannot be read or holds no token.
        """
        if self.token_file is None:
            return None
        try:
            lines = self.token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgeConfigError(f"--token-file {self.token_file}: cannot read: {exc}") from exc
        for line in lines:
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
        raise EdgeConfigError(f"--token-file {self.token_file}: expected a token, found none")
