"""The remote answer on the downlink, exactly as it travels: the heavy model's outputs encoded
by the result codecs its plan declares (:attr:`TextureUNet.result_codecs
<splitwire.partitioner.models.texture_unet.TextureUNet.result_codecs>`: the class map as uint8
indices under zstd, the downlink map as ``int8+zstd1``), in the result messages the cloud
sends, and what the edge decodes from them.

    >>> answer = transmit(logits, downlink)      # (1, K, H, W), (1, C, H/4, W/4)
    >>> answer.wire_bytes                        # ~2.2 kB at 64x64, against ~90 kB in fp32
    >>> answer.classes, answer.downlink          # what the fusion reads on the edge

The evaluation prices and fuses what this returns, so its figures are those of the running
agent; the encoding is the protocol's own (:class:`~splitwire.protocol.result_codec.ResultCodec`
through :func:`~splitwire.protocol.codec.encode`), and so is the validation of a peer's answer
(the session client checks every header against the plan before decoding, and every class
index after).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitwire.partitioner.models.texture_unet import TextureUNet
from splitwire.protocol.codec import EncodedTensor, decode
from splitwire.protocol.framing import ResultTimings, result_chunks
from splitwire.protocol.result_codec import ResultCodec

__all__ = ["RESULT_CODECS", "DownlinkAnswer", "transmit"]

# What a plan of the heavy model sends back: (class logits, downlink map).
RESULT_CODECS: tuple[ResultCodec, ...] = tuple(
    ResultCodec.parse(text) for text in TextureUNet.result_codecs
)
_NO_TIMINGS = ResultTimings(0, 0, 0, 0)


@dataclass(frozen=True)
class DownlinkAnswer:
    """One frame's remote answer after the downlink.

    Attributes:
        classes: the class map (1, H, W), int64, as the edge decodes it.
        downlink: the feature map (1, C, h, w), float32, dequantised as the edge decodes it.
        class_map_bytes: the class map's payload.
        feature_bytes: the feature map's payload and quantisation parameters.
        wire_bytes: the result messages' bytes (both tensors with their headers; a live
            answer adds a few dozen for its frame's ids and the cloud's timings).
    """

    classes: torch.Tensor
    downlink: torch.Tensor
    class_map_bytes: int
    feature_bytes: int
    wire_bytes: int


def transmit(logits: torch.Tensor, downlink: torch.Tensor) -> DownlinkAnswer:
    """The heavy model's answer for one frame, through the downlink as a tail sends it."""
    encoded = [
        codec.encode(tensor, name=f"output{i}")
        for i, (codec, tensor) in enumerate(zip(RESULT_CODECS, (logits, downlink), strict=True))
    ]
    chunks = result_chunks(0, 0, encoded, timings=_NO_TIMINGS)
    classes, features = (decode(e.header, e.payload) for e in encoded)
    return DownlinkAnswer(
        classes=classes.long(),
        downlink=features.float(),
        class_map_bytes=_tensor_bytes(encoded[0]),
        feature_bytes=_tensor_bytes(encoded[1]),
        wire_bytes=sum(c.ByteSize() for c in chunks),
    )


def _tensor_bytes(encoded: EncodedTensor) -> int:
    # The quantisation parameters travel in the header: they are part of the price.
    return len(encoded.payload) + len(encoded.header.scales) + len(encoded.header.offsets)
