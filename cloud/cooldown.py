"""Peers whose last session ended for misbehaving wait before their next one.

A session that broke the protocol (``--max-refused-frames``, a second Hello, no Hello in time, a
seq reused) or stopped taking its answers has cost the server slots, reads and compute; a peer
that reconnects at once repeats that cost as often as it likes, and every other session pays
for it in latency. So the next streams of that peer within ``--violation-cooldown-s`` are ended
at once, before their Hello is read, with ``SessionEnd RESOURCE_EXHAUSTED`` and the time left as
``retry_after_ms``: a stream and one message instead of a session. An honest edge never
misbehaves, and a misconfigured one is better told to stop than served refusals.

Who "the peer" is: the bearer token it presented (as a SHA-256 prefix, never the token) and the
host it connects from. Give each device its own token (``--token-file`` holds several) so that
one device's cooldown is not its fleet's; behind a balancer every peer has the balancer's host,
so without tokens all of them share one cooldown.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from splitwire.cloud.config import DEFAULT_VIOLATION_COOLDOWN_S
from splitwire.protocol.transport import AUTH_METADATA_KEY

# A stream of a peer in its cooldown is held this long (at most the time it has left) before it
# is ended: a peer that reconnects the moment it is refused then costs the server one stream per
# second per connection, not as many as it can open. Held streams cost no CPU (~20 kB each) and
# are bounded by --max-sessions; past that they are ended at once.
HOLD_S = 1.0
# Peers remembered at once; the longest-remembered is forgotten first. 4096 keys of ~100 bytes.
MAX_PEERS = 4096


def peer_key(peer: str, metadata: object) -> str:
    """The cooldown's key for a call: ``context.peer()`` without its port, and the presented
    bearer token's SHA-256 prefix (or ``-``). The token never appears in the key."""
    kind, _, address = peer.partition(":")
    host = address.rpartition(":")[0] if kind in ("ipv4", "ipv6") else address
    token = "-"
    for key, value in metadata if isinstance(metadata, tuple | list) else ():
        if key == AUTH_METADATA_KEY and isinstance(value, str):
            token = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{host or peer} {token}"


@dataclass
class ViolationCooldown:
    """Which peers must wait, and how long (see the module docstring).

    Attributes:
        cooldown_s: how long a peer waits after misbehaving; 0 turns the cooldown off.
        max_peers: peers remembered at once (bounded: each costs a dictionary entry).
        clock: seconds, monotonic (tests pass their own).
    """

    cooldown_s: float = DEFAULT_VIOLATION_COOLDOWN_S
    max_peers: int = MAX_PEERS
    clock: Callable[[], float] = time.monotonic
    _until: OrderedDict[str, float] = field(default_factory=OrderedDict, init=False)

    def remaining_s(self, key: str) -> float:
        """Seconds ``key`` must still wait (0: it may open a session)."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._until[key]
            return 0.0
        return left

    def punish(self, key: str) -> None:
        """``key``'s session ended for misbehaving: its next ones wait ``cooldown_s``."""
        if self.cooldown_s <= 0:
            return
        self._until.pop(key, None)
        self._until[key] = self.clock() + self.cooldown_s
        while len(self._until) > self.max_peers:
            self._until.popitem(last=False)

    def __len__(self) -> int:
        return len(self._until)
