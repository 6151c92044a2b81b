"""Errors of the wire format: codec specs, tensor headers, payloads and chunking::

    SplitwireError
    ├── CodecError            anything wrong with an encoded tensor or frame
    │   ├── CodecSpecError    a codec string that does not parse ("int9+zstd1")
    │   ├── EncodeError       a tensor that the chosen codec cannot encode (NaN into int8, ...)
    │   ├── HeaderError       a header field that is invalid or disagrees with another
    │   │   └── LimitError    a header that asks for more than the configured bounds
    │   ├── PayloadError      payload bytes that disagree with their header
    │   │   └── ChecksumError the payload's CRC-32 does not match
    │   └── ChunkError        chunks that do not make up a frame (order, count, sizes)
    └── AddressError          an address that is not HOST:PORT (protocol/address.py)

Every error names the field it is about (``field``, e.g. ``"tensors[1].shape"``), and, when it
concerns one frame, that frame's ``seq``, so a server can answer that frame and keep the session.
"""

from __future__ import annotations

from splitwire.errors import SplitwireError


class CodecError(SplitwireError):
    """Root of the wire-format errors.

    Attributes:
        field: the header field or part of the frame at fault, e.g. ``"tensors[0].raw_size"``.
        seq: the frame's sequence number, when the error concerns one frame.
    """

    def __init__(self, message: str, *, field: str = "", seq: int | None = None) -> None:
        self.message = message
        self.field = field
        self.seq = seq
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.field}: " if self.field else ""
        frame = f"frame {self.seq}: " if self.seq is not None else ""
        return f"{frame}{where}{self.message}"

    def within(self, *, prefix: str = "", seq: int | None = None) -> CodecError:
        """Return the same error re-anchored inside a larger structure.

        ``HeaderError("expected ...", field="shape").within(prefix="tensors[2]")`` reports
        ``tensors[2].shape``; the class (and so the kind of failure) is kept.
        """
        field = f"{prefix}.{self.field}" if prefix and self.field else (prefix or self.field)
        moved = type(self).__new__(type(self))
        CodecError.__init__(moved, self.message, field=field, seq=self.seq if seq is None else seq)
        return moved


class CodecSpecError(CodecError):
    """A codec spec string that is not one of the known forms."""


class EncodeError(CodecError):
    """A tensor that cannot be encoded with the requested codec."""


class HeaderError(CodecError):
    """A tensor header field that is invalid, or inconsistent with the rest of the header."""


class LimitError(HeaderError):
    """A header asks for more (rank, elements, bytes, chunks) than the receiver allows."""


class PayloadError(CodecError):
    """Payload bytes that do not match their header (size, compression)."""


class ChecksumError(PayloadError):
    """The payload's CRC-32 differs from the header's: corrupted in transit."""


class ChunkError(CodecError):
    """Frame chunks out of order, missing, duplicated or larger than announced."""


class AddressError(SplitwireError):
    """An address on a command line that is not ``HOST:PORT`` (each runtime turns it into its
    own usage error)."""
