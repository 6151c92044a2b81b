"""``HOST:PORT``, the one way both runtimes take a peer's or a listening address.

    split_address("tail.example:8500", flag="--cloud")          # ("tail.example", 8500)
    split_address("[::1]:8500", flag="--cloud")                 # ("::1", 8500)
    split_address("0.0.0.0:0", flag="--listen", listening=True)  # port 0: any free port

An address is used as it is given, so anything that would be read as something else is refused
rather than guessed at: a scheme (``http://host:8500`` would be taken for a host named
``http``), a missing port (gRPC would silently dial 443), a port out of range, a host that is
not a name or an address. The runtimes turn :class:`~splitwire.protocol.errors.AddressError`
into their usage error (exit 2).
"""

from __future__ import annotations

import re

from splitwire.protocol.errors import AddressError

__all__ = ["split_address"]

# A host name or IPv4 address (letters, digits, '-', '_', '.'), or an IPv6 address in brackets.
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]")


def split_address(text: str, *, flag: str, listening: bool = False) -> tuple[str, int]:
    """``"tail.example:8500"`` -> ``("tail.example", 8500)``; ``"[::1]:8500"`` for IPv6.

    Args:
        text: the address as given.
        flag: the flag it came from, for the message (``--cloud``).
        listening: an address to listen on, where port 0 asks for any free port.

    Raises:
        AddressError: not ``HOST:PORT`` with a port in 1..65535 (0..65535 when listening).
    """
    expected = "expected HOST:PORT, e.g. 127.0.0.1:8500 or tail.example:8500"
    lowest = 0 if listening else 1
    if "://" in text:
        raise AddressError(
            f"{flag} {text!r}: {expected}, without a scheme (the address is used as it is: "
            "gRPC is spoken on it, and TLS is a flag of its own)"
        )
    host, sep, port = text.rpartition(":")
    if not sep or not port:
        raise AddressError(f"{flag} {text!r}: {expected}; the port is missing")
    if not port.isdigit() or not lowest <= int(port) <= 65535:
        raise AddressError(f"{flag} {text!r}: {expected}; {port!r} is not a port ({lowest}-65535)")
    if not _HOST.fullmatch(host):
        raise AddressError(f"{flag} {text!r}: {expected}; {host!r} is not a host name")
    return host.removeprefix("[").removesuffix("]"), int(port)
