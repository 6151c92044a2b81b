"""Conversion between :class:`~splitwire.protocol.header.TensorHeader` and its protobuf message.

Conversion copies fields only; what they mean is checked by ``validate_header`` when the tensor
is decoded, so a hostile message costs no more than its own size here.
"""

from __future__ import annotations

from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.header import TensorHeader


def header_to_proto(header: TensorHeader) -> pb.TensorHeader:
    """The protobuf form of ``header``."""
    return pb.TensorHeader(
        dtype=header.dtype,
        shape=header.shape,
        scheme=header.scheme,
        zstd_level=header.zstd_level,
        channel_axis=header.channel_axis,
        scales=header.scales,
        offsets=header.offsets,
        raw_size=header.raw_size,
        payload_size=header.payload_size,
        checksum=header.checksum,
        name=header.name,
        byte_shuffle=header.byte_shuffle,
        part_sizes=header.part_sizes,
        # float32 is proto3's empty default: it costs no bytes on the wire.
        param_dtype="" if header.param_dtype == "float32" else header.param_dtype,
    )


def header_from_proto(message: pb.TensorHeader) -> TensorHeader:
    """The :class:`TensorHeader` a protobuf message describes (not yet validated)."""
    return TensorHeader(
        dtype=message.dtype,
        shape=tuple(message.shape),
        scheme=message.scheme,
        zstd_level=message.zstd_level,
        channel_axis=message.channel_axis,
        scales=message.scales,
        offsets=message.offsets,
        raw_size=message.raw_size,
        payload_size=message.payload_size,
        checksum=message.checksum,
        name=message.name,
        byte_shuffle=message.byte_shuffle,
        part_sizes=tuple(message.part_sizes),
        param_dtype=message.param_dtype or "float32",
    )
