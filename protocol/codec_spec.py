"""The codec a tensor is sent with, written as a short string: ``int8+zstd1``.

Grammar: ``SCHEME[+zstdLEVEL]`` where SCHEME is one of

=========  ====================================================  ========
scheme     what travels                                           lossless
=========  ====================================================  ========
``fp32``   the tensor's own bytes (any dtype)                     yes
``fp16``   IEEE half (values beyond ±65504 become ±inf)           no
``bf16``   bfloat16 (fp32 range, 8 bits of mantissa)              no
``int8``   per-channel affine 8-bit: ``x ≈ q * scale + offset``   no
``int4``   per-channel affine 4-bit, two values per byte          no
=========  ====================================================  ========

and LEVEL is a zstd level (1..22). Non-float tensors (indices, masks) are always sent losslessly,
whatever the scheme: a codec only ever approximates floating-point values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from splitwire.protocol.errors import CodecSpecError

Scheme = Literal["fp32", "fp16", "bf16", "int8", "int4"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
MAX_ZSTD_LEVEL = 22

_SPEC_RE = re.compile(r"^(?P<scheme>[a-z0-9]+)(?:\+zstd(?P<level>-?\d+))?$")


@dataclass(frozen=True)
class CodecSpec:
    """How to encode activations: a value scheme, then optionally zstd at ``zstd_level``.

    ``zstd_level == 0`` means no entropy coding. Construct from text with :meth:`parse`.
    """

    scheme: Scheme
    zstd_level: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise CodecSpecError(
                f"unknown scheme {self.scheme!r}; expected one of {', '.join(SCHEMES)}",
                field="scheme",
            )
        if not 0 <= self.zstd_level <= MAX_ZSTD_LEVEL:
            raise CodecSpecError(
                f"zstd level {self.zstd_level} out of range; expected 1..{MAX_ZSTD_LEVEL} "
                "(or no '+zstd' suffix for none)",
                field="zstd_level",
            )

    @classmethod
    def parse(cls, text: str | CodecSpec) -> CodecSpec:
        """Parse ``"int8+zstd1"``-style text (a :class:`CodecSpec` is returned unchanged).

        Raises:
            CodecSpecError: the text is not ``SCHEME[+zstdLEVEL]`` with a known scheme and level.
        """
        if isinstance(text, CodecSpec):
            return text
        match = _SPEC_RE.match(text.strip().lower())
        if match is None:
            raise CodecSpecError(
                f"cannot parse codec {text!r}; expected SCHEME[+zstdLEVEL] with SCHEME one of "
                f"{', '.join(SCHEMES)}, e.g. 'int8+zstd1' or 'fp16'",
                field="codec",
            )
        level = int(match["level"]) if match["level"] is not None else 0
        if match["level"] is not None and level == 0:
            raise CodecSpecError(
                f"zstd level 0 in {text!r}; expected 1..{MAX_ZSTD_LEVEL} (drop '+zstd0' for none)",
                field="zstd_level",
            )
        if match["scheme"] not in SCHEMES:
            raise CodecSpecError(
                f"unknown scheme {match['scheme']!r} in {text!r}; expected one of "
                f"{', '.join(SCHEMES)}",
                field="scheme",
            )
        return cls(scheme=cast(Scheme, match["scheme"]), zstd_level=level)

    @property
    def lossless(self) -> bool:
        """True when every dtype round-trips bit-exactly."""
        return self.scheme == "fp32"

    def __str__(self) -> str:
        return self.scheme + (f"+zstd{self.zstd_level}" if self.zstd_level else "")
