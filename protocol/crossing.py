"""The frame ↔ wire crossing of one (cut, codec): what the edge computes and encodes from a
camera frame, and what the cloud decodes back into the tail's inputs. Both sides go through
this one class, so they cannot disagree about it.

    crossing = Crossing(CodecSpec.parse("int8+zstd1"), names=("layer2",))
    sent = crossing.sent(pixels, preprocess=plan.preprocess, head=plan.head("c0017"))  # edge
    encoded = crossing.encode(sent)                                                  # edge
    inputs = crossing.tail_inputs(decode_frame(frame), preprocess=plan.preprocess)   # cloud

Who preprocesses a camera frame is decided here and nowhere else (:attr:`Crossing.camera`):

===========================  ==============================  ===============================
codec                        the edge sends                  the cloud gives the tail
===========================  ==============================  ===============================
``frame``, ``jpegQ`` (a      the uint8 ``(N, C, H, W)``      ``preprocess(decoded frame)``
camera codec)                frame as captured
any other                    ``head(preprocess(frame))``,    the decoded tensors as they are
                             each tensor under the codec
===========================  ==============================  ===============================

``none`` crosses nothing: there is no :class:`Crossing` for it (the edge runs the whole model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from splitwire.protocol.codec import EncodedTensor, encode
from splitwire.protocol.codec_spec import CodecSpec
from splitwire.protocol.errors import CodecSpecError

# A plan's camera preprocessing (uint8 frames to the model's float input), and a head.
Preprocess = Callable[[torch.Tensor], torch.Tensor]
Head = Callable[[torch.Tensor], object]


@dataclass(frozen=True)
class Crossing:
    """What crosses one (cut, codec): the codec and the crossing tensors' names, in order.

    Raises:
        CodecSpecError: ``codec`` is ``none`` (nothing crosses), or no names are given.
    """

    codec: CodecSpec
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.codec.sends:
            raise CodecSpecError(
                f"codec {self.codec} sends nothing: no tensor crosses, so there is no crossing",
                field="codec",
            )
        if not self.names:
            raise CodecSpecError("a crossing carries at least one tensor; got none", field="names")

    @property
    def camera(self) -> bool:
        """True when the camera's frame crosses as captured and the cloud preprocesses it;
        false when the edge preprocesses it and runs the head."""
        return self.codec.camera

    def sent(
        self, pixels: torch.Tensor, *, preprocess: Preprocess, head: Head
    ) -> tuple[torch.Tensor, ...]:
        """The edge's side: the tensors that cross for camera ``pixels`` (uint8 ``(N, C, H,
        W)``), before encoding. Call under ``torch.inference_mode()``."""
        if self.camera:
            return (pixels,)
        out = head(preprocess(pixels))
        if isinstance(out, tuple | list):
            return tuple(out)
        assert isinstance(out, torch.Tensor)
        return (out,)

    def encode(self, tensors: Sequence[torch.Tensor]) -> list[EncodedTensor]:
        """The edge's side: ``tensors`` (from :meth:`sent`) encoded, each under its name.

        Raises:
            EncodeError: a tensor the codec cannot take; ValueError: not one per name.
        """
        return [
            encode(t, self.codec, name=name) for t, name in zip(tensors, self.names, strict=True)
        ]

    def tail_inputs(
        self, decoded: Sequence[torch.Tensor], *, preprocess: Preprocess
    ) -> list[torch.Tensor]:
        """The cloud's side: the tail's inputs from a frame's decoded tensors (checked against
        the plan before decoding)."""
        if self.camera:
            return [preprocess(decoded[0])]
        return list(decoded)
