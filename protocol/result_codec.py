"""How one of the tail's outputs travels back to the edge, as ``plan.yaml`` declares it per
output (``result_codec``; absent: :data:`DEFAULT_RESULT_CODEC`, the output exactly as it is).

Grammar: any codec of :mod:`~splitwire.protocol.codec_spec` that encodes a model's values
(``fp32``, ``int8+zstd1``, ...; not the camera schemes, not ``none``), or ``classes[+zstdLEVEL]``:
the output is per-class scores (N, K, ...) and what travels is its arg-max over dim 1, the
class map (N, ...) as uint8 indices, losslessly (zstd when a level is given). A 64×64 map of
five classes takes a few hundred bytes against 80 KiB of fp32 logits::

    >>> codec = ResultCodec.parse("classes+zstd3")
    >>> codec.wire((1, 5, 64, 64), "float32")          # what the edge must receive
    ((1, 64, 64), 'uint8')
    >>> codec.encode(logits, name="output0").header.scheme   # the cloud's side
    'raw'

Both ends read the same (signed) plan: the cloud encodes each output with its codec
(:meth:`ResultCodec.encode`, through :func:`~splitwire.protocol.codec.encode`: one codec, one
header format), and the edge expects each result tensor's shape, dtype and wire scheme from it
(:meth:`ResultCodec.expect`) before anything of the result is buffered, and every class index
in 0..K-1 after decoding, so a tail that answers otherwise is refused with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from splitwire.protocol.codec import EncodedTensor, encode, wire_scheme
from splitwire.protocol.codec_spec import MAX_ZSTD_LEVEL, CodecSpec
from splitwire.protocol.errors import CodecSpecError
from splitwire.protocol.header import FLOAT_DTYPES
from splitwire.protocol.peer_text import peer_text
from splitwire.protocol.transport import RESULT_CODEC

__all__ = ["DEFAULT_RESULT_CODEC", "MAX_RESULT_CLASSES", "ExpectedTensor", "ResultCodec"]

# Class indices travel as uint8.
MAX_RESULT_CLASSES = 256
_CLASSES_RE = re.compile(r"^classes(?:\+zstd(?P<level>\d+))?$")


@dataclass(frozen=True)
class ExpectedTensor:
    """One tensor the answer to a frame must carry: its exact shape, batch included, and its
    wire dtype (``"float32"``); the header scheme it must travel with (None: any), and for a
    class map the largest class index (None: not a class map).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scheme: str | None = None
    max_class: int | None = None


@dataclass(frozen=True)
class ResultCodec:
    """How one tail output is encoded on the downlink.

    Attributes:
        codec: the value codec of what travels (for ``classes``: ``fp32``, i.e. raw, with the
            zstd level).
        classes: send the arg-max over dim 1 as uint8 class indices instead of the scores.
    """

    codec: CodecSpec = RESULT_CODEC
    classes: bool = False

    def __post_init__(self) -> None:
        if not self.codec.sends or self.codec.camera:
            raise CodecSpecError(
                f"result codec {self.codec}: a tail's output is a model value, not a camera "
                "frame, and is always sent; expected fp32, fp16, bf16, int8, int4 (with an "
                "optional +zstdLEVEL) or classes[+zstdLEVEL]",
                field="result_codec",
            )
        if self.classes and self.codec.scheme != "fp32":
            raise CodecSpecError(
                f"classes with scheme {self.codec.scheme}: class indices travel losslessly; "
                "expected classes or classes+zstdLEVEL",
                field="result_codec",
            )

    @classmethod
    def parse(cls, text: str) -> ResultCodec:
        """``"int8+zstd1"``, ``"classes+zstd3"``, ``"fp32"``, ...

        Raises:
            CodecSpecError: not a value codec or ``classes[+zstdLEVEL]`` (the message says why).
        """
        match = _CLASSES_RE.match(text.strip().lower())
        if match is None:
            try:
                return cls(codec=CodecSpec.parse(text))
            except CodecSpecError as exc:
                raise CodecSpecError(
                    f"result codec: {exc.message}, or classes[+zstdLEVEL] (the arg-max of class "
                    "scores as uint8 indices)",
                    field="result_codec",
                ) from exc
        digits = match["level"] or "0"
        level = int(digits) if len(digits) <= 2 else -1  # a digit string is not a level
        if match["level"] is not None and not 1 <= level <= MAX_ZSTD_LEVEL:
            raise CodecSpecError(
                f"zstd level {peer_text(digits)} in result codec {peer_text(text)}; expected "
                f"1..{MAX_ZSTD_LEVEL}",
                field="result_codec",
            )
        return cls(codec=CodecSpec(scheme="fp32", zstd_level=level), classes=True)

    def __str__(self) -> str:
        if self.classes:
            return "classes" + (f"+zstd{self.codec.zstd_level}" if self.codec.zstd_level else "")
        return str(self.codec)

    @property
    def default(self) -> bool:
        """Whether this is :data:`DEFAULT_RESULT_CODEC` (the output as it is)."""
        return self == DEFAULT_RESULT_CODEC

    def check(self, shape: tuple[int, ...], dtype: str) -> None:
        """Whether an output of ``shape`` and ``dtype`` can travel under this codec (at plan
        load, so that a plan that cannot be served fails there, not per frame).

        Raises:
            CodecSpecError: ``classes`` of an output that is not float scores (N, K, ...) with
                1 <= K <= 256 (a non-float output under a lossy codec travels losslessly, as
                every codec sends it).
        """
        scores = dtype in FLOAT_DTYPES and len(shape) >= 2
        if self.classes and not (scores and 1 <= shape[1] <= MAX_RESULT_CLASSES):
            raise CodecSpecError(
                f"result codec {self} of a {dtype} output of shape {tuple(shape)}: expected "
                f"float class scores (N, K, ...) with K in 1..{MAX_RESULT_CLASSES}",
                field="result_codec",
            )

    def wire(self, shape: tuple[int, ...], dtype: str) -> tuple[tuple[int, ...], str]:
        """The (shape, dtype) the edge receives for an output of ``shape`` and ``dtype``."""
        if self.classes:
            return (shape[0], *shape[2:]), "uint8"
        return tuple(shape), dtype

    def expect(self, name: str, shape: tuple[int, ...], dtype: str) -> ExpectedTensor:
        """What a result must carry for this output (checked by the edge's session client):
        the wire shape and dtype, the header scheme, and for ``classes`` the largest index."""
        wire_shape, wire_dtype = self.wire(shape, dtype)
        return ExpectedTensor(
            name,
            wire_shape,
            wire_dtype,
            scheme=wire_scheme(self.codec, wire_dtype),
            max_class=shape[1] - 1 if self.classes else None,
        )

    def encode(self, tensor: torch.Tensor, *, name: str) -> EncodedTensor:
        """The output as it travels (the cloud's side)."""
        if self.classes:
            tensor = tensor.argmax(dim=1).to(torch.uint8)
        return encode(tensor, self.codec, name=name)


DEFAULT_RESULT_CODEC = ResultCodec()
