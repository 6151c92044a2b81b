"""Strings a peer sent, made safe for a log line: escaped, quoted and truncated.

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
"""

from __future__ import annotations

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
