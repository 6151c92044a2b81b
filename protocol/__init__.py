"""The wire: what an activation looks like on the network, and the session protocol.

* :func:`encode` / :func:`decode` turn a tensor into a validated header plus payload and back,
  with a :class:`CodecSpec` such as ``int8+zstd1`` (or ``jpeg90`` for uint8 camera images).
* :func:`frame_chunks` / :class:`FrameAssembler` split frames into ≤ 1 MiB messages and
  reassemble them within :class:`FrameLimits`.
* :data:`PROTOCOL_VERSION`, :data:`SERVER_OPTIONS` / :data:`CLIENT_OPTIONS` (message sizes,
  keepalive) and :func:`bearer` are what both ends of a session agree on.
* ``splitwire.protocol.splitwire_pb2`` / ``splitwire_pb2_grpc`` are the generated messages and
  service of ``splitwire.proto``.
"""

from typing import TYPE_CHECKING

from splitwire.lazy import lazy_exports

# Names are imported on first use (PEP 562): a health probe or `splitwire --help` must not pay
# for torch, which the codec needs. Type checkers see the real imports.
if TYPE_CHECKING:
    from splitwire.protocol.codec import DEFAULT_LIMITS, EncodedTensor, decode, encode
    from splitwire.protocol.codec_spec import (
        DEFAULT_JPEG_QUALITY,
        MAX_JPEG_QUALITY,
        SCHEMES,
        CodecSpec,
    )
    from splitwire.protocol.crossing import Crossing
    from splitwire.protocol.errors import (
        ChecksumError,
        ChunkError,
        CodecError,
        CodecSpecError,
        EncodeError,
        HeaderError,
        LimitError,
        PayloadError,
    )
    from splitwire.protocol.framing import (
        MAX_CHUNK_BYTES,
        AssembledFrame,
        FrameAssembler,
        FrameLimits,
        ResultTimings,
        decode_frame,
        frame_chunks,
        result_chunks,
    )
    from splitwire.protocol.header import DecodeLimits, TensorHeader
    from splitwire.protocol.transport import (
        CLIENT_OPTIONS,
        MAX_MESSAGE_BYTES,
        PROTOCOL_VERSION,
        SERVER_OPTIONS,
        bearer,
    )

_LOCATIONS = {
    "AssembledFrame": "splitwire.protocol.framing",
    "CLIENT_OPTIONS": "splitwire.protocol.transport",
    "ChecksumError": "splitwire.protocol.errors",
    "ChunkError": "splitwire.protocol.errors",
    "CodecError": "splitwire.protocol.errors",
    "CodecSpec": "splitwire.protocol.codec_spec",
    "CodecSpecError": "splitwire.protocol.errors",
    "Crossing": "splitwire.protocol.crossing",
    "DEFAULT_JPEG_QUALITY": "splitwire.protocol.codec_spec",
    "DEFAULT_LIMITS": "splitwire.protocol.codec",
    "DecodeLimits": "splitwire.protocol.header",
    "EncodeError": "splitwire.protocol.errors",
    "EncodedTensor": "splitwire.protocol.codec",
    "FrameAssembler": "splitwire.protocol.framing",
    "FrameLimits": "splitwire.protocol.framing",
    "HeaderError": "splitwire.protocol.errors",
    "LimitError": "splitwire.protocol.errors",
    "MAX_CHUNK_BYTES": "splitwire.protocol.framing",
    "MAX_JPEG_QUALITY": "splitwire.protocol.codec_spec",
    "MAX_MESSAGE_BYTES": "splitwire.protocol.transport",
    "PROTOCOL_VERSION": "splitwire.protocol.transport",
    "PayloadError": "splitwire.protocol.errors",
    "ResultTimings": "splitwire.protocol.framing",
    "SCHEMES": "splitwire.protocol.codec_spec",
    "SERVER_OPTIONS": "splitwire.protocol.transport",
    "TensorHeader": "splitwire.protocol.header",
    "bearer": "splitwire.protocol.transport",
    "decode": "splitwire.protocol.codec",
    "decode_frame": "splitwire.protocol.framing",
    "encode": "splitwire.protocol.codec",
    "frame_chunks": "splitwire.protocol.framing",
    "result_chunks": "splitwire.protocol.framing",
}
# Spelled out, so that tools reading the source see what is exported.
__all__ = [
    "CLIENT_OPTIONS",
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_LIMITS",
    "MAX_CHUNK_BYTES",
    "MAX_JPEG_QUALITY",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SCHEMES",
    "SERVER_OPTIONS",
    "AssembledFrame",
    "ChecksumError",
    "ChunkError",
    "CodecError",
    "CodecSpec",
    "CodecSpecError",
    "Crossing",
    "DecodeLimits",
    "EncodeError",
    "EncodedTensor",
    "FrameAssembler",
    "FrameLimits",
    "HeaderError",
    "LimitError",
    "PayloadError",
    "ResultTimings",
    "TensorHeader",
    "bearer",
    "decode",
    "decode_frame",
    "encode",
    "frame_chunks",
    "result_chunks",
]

__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
