"""The codec a tensor is sent with, written as a short string: ``int8+zstd1``.

Grammar: ``SCHEME[+zstdLEVEL]`` where SCHEME is one of

=========  ======================================================  ========
scheme     what travels                                            lossless
=========  ======================================================  ========
``fp32``   the tensor's own bytes (any dtype)                      yes
``fp16``   IEEE half (values beyond ±65504 become ±inf)            no
``bf16``   bfloat16 (fp32 range, 8 bits of mantissa)               no
``int8``   per-channel affine 8-bit: ``x ≈ q * scale + offset``    no
``int4``   per-channel affine 4-bit, two values per byte           no
``jpegQ``  one JPEG stream per uint8 (N, 1|3, H, W) image at       no
           quality Q in 1..95 (``jpeg`` alone is ``jpeg90``)
``none``   nothing: the edge runs the whole model                  —
=========  ======================================================  ========

and LEVEL is a zstd level (1..22). Non-float tensors (indices, masks) are always sent losslessly,
whatever the scheme: a codec only ever approximates floating-point values. The exceptions are
``jpeg``, which takes uint8 camera images only and takes no ``+zstd`` (a JPEG stream is already
entropy-coded), and ``none``, which encodes nothing at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from splitwire.protocol.errors import CodecSpecError

Scheme = Literal["fp32", "fp16", "bf16", "int8", "int4", "jpeg", "none"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
MAX_ZSTD_LEVEL = 22
# Pillow's own advice: above 95 the stream grows a lot for almost no gain in quality.
MAX_JPEG_QUALITY = 95
DEFAULT_JPEG_QUALITY = 90

_SPEC_RE = re.compile(r"^(?P<scheme>[a-z0-9]+)(?:\+zstd(?P<level>-?\d+))?$")
_JPEG_RE = re.compile(r"^jpeg(?P<quality>\d*)$")
# The schemes as a reader writes them, for error messages.
_SCHEME_HELP = ", ".join("jpegQ" if s == "jpeg" else s for s in SCHEMES)


@dataclass(frozen=True)
class CodecSpec:
    """How to encode activations: a value scheme, then optionally zstd at ``zstd_level``.

    ``zstd_level == 0`` means no entropy coding. ``quality`` is the JPEG quality (1..95) for
    ``jpeg`` and 0 for every other scheme. Construct from text with :meth:`parse`.
    """

    scheme: Scheme
    zstd_level: int = 0
    quality: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise CodecSpecError(
                f"unknown scheme {self.scheme!r}; expected one of {_SCHEME_HELP}",
                field="scheme",
            )
        if not 0 <= self.zstd_level <= MAX_ZSTD_LEVEL:
            raise CodecSpecError(
                f"zstd level {self.zstd_level} out of range; expected 1..{MAX_ZSTD_LEVEL} "
                "(or no '+zstd' suffix for none)",
                field="zstd_level",
            )
        if self.scheme == "jpeg":
            if not 1 <= self.quality <= MAX_JPEG_QUALITY:
                raise CodecSpecError(
                    f"JPEG quality {self.quality} out of range; expected 1..{MAX_JPEG_QUALITY} "
                    f"(e.g. 'jpeg{DEFAULT_JPEG_QUALITY}')",
                    field="quality",
                )
            if self.zstd_level:
                raise CodecSpecError(
                    f"zstd level {self.zstd_level} with jpeg: JPEG streams are already "
                    "entropy-coded, so zstd would only cost time; expected no '+zstd' suffix",
                    field="zstd_level",
                )
        elif self.quality:
            raise CodecSpecError(
                f"quality {self.quality} given for scheme {self.scheme!r}; expected a quality "
                "only for jpeg",
                field="quality",
            )
        if self.scheme == "none" and self.zstd_level:
            raise CodecSpecError(
                f"zstd level {self.zstd_level} with none: nothing is sent, so there is nothing "
                "to compress; expected plain 'none'",
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
                f"{_SCHEME_HELP}, e.g. 'int8+zstd1' or 'fp16'",
                field="codec",
            )
        level = int(match["level"]) if match["level"] is not None else 0
        if match["level"] is not None and level == 0:
            raise CodecSpecError(
                f"zstd level 0 in {text!r}; expected 1..{MAX_ZSTD_LEVEL} (drop '+zstd0' for none)",
                field="zstd_level",
            )
        jpeg = _JPEG_RE.match(match["scheme"])
        if jpeg is not None:
            digits = jpeg["quality"]
            if len(digits) > 3:  # checked before int(): a long digit string is not a quality
                raise CodecSpecError(
                    f"JPEG quality {digits!r} in {text!r} out of range; expected "
                    f"1..{MAX_JPEG_QUALITY}",
                    field="quality",
                )
            quality = int(digits) if digits else DEFAULT_JPEG_QUALITY
            return cls(scheme="jpeg", zstd_level=level, quality=quality)
        if match["scheme"] not in SCHEMES:
            raise CodecSpecError(
                f"unknown scheme {match['scheme']!r} in {text!r}; expected one of {_SCHEME_HELP}",
                field="scheme",
            )
        return cls(scheme=cast(Scheme, match["scheme"]), zstd_level=level)

    @property
    def lossless(self) -> bool:
        """True when every dtype round-trips bit-exactly."""
        return self.scheme == "fp32"

    @property
    def sends(self) -> bool:
        """False for ``none``: the edge runs the whole model and no tensor crosses."""
        return self.scheme != "none"

    def __str__(self) -> str:
        scheme = f"jpeg{self.quality}" if self.scheme == "jpeg" else self.scheme
        return scheme + (f"+zstd{self.zstd_level}" if self.zstd_level else "")
