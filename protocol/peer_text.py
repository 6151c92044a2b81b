"""What a peer sent, made safe for the logs: its strings escaped, quoted and truncated, and
the lines it causes limited in rate.

Anything read from the wire (``Hello.edge_id``, a cut id, a codec name, an MQTT payload) may
hold a newline that forges a log line, ANSI escapes that rewrite a terminal, or megabytes that
flood the disk. :func:`peer_text` renders it the way ``repr`` would, with every character that
is not printable escaped, and never longer than ``limit`` characters however long the value::

    >>> peer_text("edge-7")
    "'edge-7'"
    >>> peer_text("x\\n2026-01-01 INFO forged")
    "'x\\\\n2026-01-01 INFO forged'"
    >>> peer_text("\\x1b[2J" + "A" * 3_000_000, limit=40)
    "'\\\\x1b[2JAAAAAAAAAAAAA'...(3000004 chars)"

Only the first ``limit`` characters are ever looked at, so a 3 MiB value costs no more to log
than a short one. Use it for every peer string that reaches a log line or an error message.

A peer also decides how often the receiver refuses it. :class:`RateLimitedLog` lets a few
refusal lines of each kind through per interval and counts the rest, so a flood of bad hellos
costs a few lines, not gigabytes of log::

    refusals = RateLimitedLog(logger)
    refusals.log("hello", logging.INFO, "rejected session from %s: %s", peer_text(edge_id), why)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

# Refusal lines of one kind let through per interval (RateLimitedLog's defaults).
DEFAULT_BURST = 10
DEFAULT_INTERVAL_S = 10.0
# Below this a truncated value would show nothing but its length.
MIN_LIMIT = 32
DEFAULT_LIMIT = 64
_SPECIAL = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def peer_text(value: str | bytes, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` quoted and escaped like ``repr``, at most ``limit`` characters long.

    Printable characters stay as they are (non-ASCII letters included); control characters,
    format characters such as bidi overrides, and every other non-printable one become
    ``\\n``, ``\\x1b``, ``\\u202e`` escapes. A value that does not fit ends in
    ``'...(N chars)`` (``bytes`` for a bytes value) giving its full length.

    Args:
        value: the peer's string or bytes.
        limit: the longest result, at least :data:`MIN_LIMIT`.

    Raises:
        ValueError: ``limit`` is below :data:`MIN_LIMIT`.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"peer_text limit {limit}: expected at least {MIN_LIMIT}")
    # Never more than `limit` source characters: each yields at least one output character.
    if isinstance(value, bytes | bytearray):
        opener, unit = "b'", "bytes"
        pieces = [_escape_byte(b) for b in value[:limit]]
    else:
        opener, unit = "'", "chars"
        pieces = [_escape_char(c) for c in value[:limit]]
    if len(pieces) == len(value) and len(opener) + sum(map(len, pieces)) + 1 <= limit:
        return opener + "".join(pieces) + "'"
    closer = f"'...({len(value)} {unit})"
    room = limit - len(opener) - len(closer)
    kept = []
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return opener + "".join(kept) + closer


def _escape_char(char: str) -> str:
    special = _SPECIAL.get(char)
    if special is not None:
        return special
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _escape_byte(byte: int) -> str:
    if 0x20 <= byte < 0x7F:
        return _SPECIAL.get(chr(byte), chr(byte))
    return _SPECIAL.get(chr(byte)) or f"\\x{byte:02x}"


@dataclass
class _Window:
    started_s: float
    logged: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """A logger for lines a peer can cause at will (refusals, rejections, timeouts): of each
    kind, at most ``burst`` lines per ``interval_s`` reach ``logger``. The first line held back
    says so; the first line let through after the interval says how many were held back.

    Args:
        logger: where the lines go.
        burst: lines of one kind let through per interval.
        interval_s: the interval.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = DEFAULT_BURST,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        if burst < 1 or interval_s <= 0:
            raise ValueError(
                f"RateLimitedLog: expected burst >= 1 and interval_s > 0, got {burst}, {interval_s}"
            )
        self._logger = logger
        self._burst = burst
        self._interval_s = interval_s
        # Kinds are the callers' literals: a handful, never a peer's string.
        self._windows: dict[str, _Window] = {}

    def log(self, kind: str, level: int, message: str, *args: object) -> None:
        """Log ``message % args`` at ``level`` unless lines of ``kind`` exceed the rate.

        ``kind`` is a fixed word of the caller's (``"hello"``, ``"violation"``), never a
        peer's string: every kind has its own count.
        """
        if not self._logger.isEnabledFor(level):
            return
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is None or now - window.started_s >= self._interval_s:
            if window is not None and window.suppressed:
                self._logger.log(
                    level,
                    "%d %s lines of the %g s from %s were not logged",
                    window.suppressed,
                    kind,
                    self._interval_s,
                    time.strftime("%H:%M:%S", time.localtime(time.time() - now + window.started_s)),
                    stacklevel=2,
                )
            window = self._windows[kind] = _Window(started_s=now)
        if window.logged < self._burst:
            window.logged += 1
            self._logger.log(level, message, *args, stacklevel=2)
            return
        if not window.suppressed:
            self._logger.log(
                level,
                "more than %d %s lines in %g s; until the %g s are over, they are counted, "
                "not logged",
                self._burst,
                kind,
                self._interval_s,
                self._interval_s,
                stacklevel=2,
            )
        window.suppressed += 1
