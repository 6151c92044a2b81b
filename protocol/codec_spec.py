"""The codec a tensor is sent with, written as a short string: ``int8+zstd1``.

Grammar: ``SCHEME[+zstdLEVEL]`` where SCHEME is one of

==============  ======================================================  ========
scheme          what travels                                            lossless
==============  ======================================================  ========
``fp32``        the tensor's own bytes (any dtype)                      yes
``fp16``        IEEE half (values beyond ±65504 become ±inf)            no
``bf16``        bfloat16 (fp32 range, 8 bits of mantissa)               no
``int8``        per-channel affine 8-bit: ``x ≈ q * scale + offset``    no
``int4``        per-channel affine 4-bit, two values per byte           no
``frame``       the uint8 (N, 1|3, H, W) camera frame's own bytes       yes
``jpegQ``       one JPEG stream per uint8 (N, 1|3, H, W) image at       no
                quality Q in 1..95, chroma subsampled 4:2:0 (``jpeg``
                alone is ``jpeg90``)
``jpegQs444``   the same at full chroma resolution (4:4:4)              no
``none``        nothing: the edge runs the whole model                  —
==============  ======================================================  ========

and LEVEL is a zstd level (1..22). Non-float tensors (indices, masks) are always sent losslessly,
whatever the scheme: a codec only ever approximates floating-point values. The exceptions are
``frame`` and ``jpeg``, which take uint8 camera images only (``jpeg`` takes no ``+zstd``: a JPEG
stream is already entropy-coded), and ``none``, which encodes nothing at all.

``frame`` and ``jpeg`` are the *camera* schemes (:attr:`CodecSpec.camera`): what travels is the
frame as the camera gave it, not the model's input, and the receiver applies the plan's
preprocessing. ``frame`` needs its own name rather than "``fp32`` on a uint8 tensor at cut 0":
a session's route (what a frame must carry, whether to preprocess) is fixed by the Hello's cut
and codec before any tensor arrives, and ``fp32`` at cut 0 already means "the preprocessed float
input". On the wire ``frame`` is the ``raw`` header scheme with dtype uint8, so headers and
their validation are unchanged; a peer that predates a codec name refuses the session with
``INVALID_ARGUMENT`` naming it, so new names need no protocol version. The subsampling is
spelled as a suffix of the scheme (``jpeg75s444``), one canonical spelling per meaning
(``jpeg75s420`` is refused: 4:2:0 is plain ``jpeg75``), because plans and frames name options
by their codec string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from splitwire.protocol.errors import CodecSpecError
from splitwire.protocol.peer_text import peer_text

Scheme = Literal["fp32", "fp16", "bf16", "int8", "int4", "frame", "jpeg", "none"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)
MAX_ZSTD_LEVEL = 22
# Pillow's own advice: above 95 the stream grows a lot for almost no gain in quality.
MAX_JPEG_QUALITY = 95
DEFAULT_JPEG_QUALITY = 90
# Chroma subsampling of colour JPEGs: 4:2:0 (half-resolution chroma both ways, what cameras and
# the web use) unless the codec says 4:4:4 (full-resolution chroma, bigger and more faithful).
Subsampling = Literal["4:2:0", "4:4:4"]
SUBSAMPLINGS: tuple[Subsampling, ...] = get_args(Subsampling)
# The schemes that carry the camera's uint8 frame instead of the model's input.
CAMERA_SCHEMES = ("frame", "jpeg")

_SPEC_RE = re.compile(r"^(?P<scheme>[a-z0-9]+)(?:\+zstd(?P<level>-?\d+))?$")
_JPEG_RE = re.compile(r"^jpeg(?P<quality>\d*)(?:s(?P<subsampling>\d+))?$")
# The schemes as a reader writes them, for error messages.
_SCHEME_HELP = ", ".join("jpegQ, jpegQs444" if s == "jpeg" else s for s in SCHEMES)


@dataclass(frozen=True)
class CodecSpec:
    """How to encode activations: a value scheme, then optionally zstd at ``zstd_level``.

    ``zstd_level == 0`` means no entropy coding. ``quality`` is the JPEG quality (1..95) for
    ``jpeg`` and 0 for every other scheme; ``subsampling`` is the JPEG chroma subsampling
    (``4:2:0`` when not given) and empty for every other scheme. Construct from text with
    :meth:`parse`.
    """

    scheme: Scheme
    zstd_level: int = 0
    quality: int = 0
    subsampling: Subsampling | Literal[""] = ""

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise CodecSpecError(
                f"unknown scheme {peer_text(self.scheme)}; expected one of {_SCHEME_HELP}",
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
            if not self.subsampling:  # frozen: the default is filled in once, here
                object.__setattr__(self, "subsampling", SUBSAMPLINGS[0])
            if self.subsampling not in SUBSAMPLINGS:
                raise CodecSpecError(
                    f"JPEG subsampling {self.subsampling!r}; expected one of "
                    f"{', '.join(SUBSAMPLINGS)}",
                    field="subsampling",
                )
        else:
            if self.quality:
                raise CodecSpecError(
                    f"quality {self.quality} given for scheme {self.scheme!r}; expected a "
                    "quality only for jpeg",
                    field="quality",
                )
            if self.subsampling:
                raise CodecSpecError(
                    f"subsampling {self.subsampling!r} given for scheme {self.scheme!r}; "
                    "expected a subsampling only for jpeg",
                    field="subsampling",
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
                f"cannot parse codec {peer_text(text)}; expected SCHEME[+zstdLEVEL] with SCHEME "
                f"one of {_SCHEME_HELP}, e.g. 'int8+zstd1' or 'fp16'",
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
            return cls(
                scheme="jpeg",
                zstd_level=level,
                quality=quality,
                subsampling=_subsampling(jpeg["subsampling"], text),
            )
        if match["scheme"] not in SCHEMES:
            raise CodecSpecError(
                f"unknown scheme {match['scheme']!r} in {text!r}; expected one of {_SCHEME_HELP}",
                field="scheme",
            )
        return cls(scheme=cast(Scheme, match["scheme"]), zstd_level=level)

    @property
    def lossless(self) -> bool:
        """True when every tensor the scheme takes round-trips bit-exactly (``frame`` takes
        uint8 camera frames only)."""
        return self.scheme in ("fp32", "frame")

    @property
    def camera(self) -> bool:
        """True for ``frame`` and ``jpeg``: what travels is the camera's uint8 frame, and the
        receiver applies the plan's preprocessing before the model."""
        return self.scheme in CAMERA_SCHEMES

    @property
    def sends(self) -> bool:
        """False for ``none``: the edge runs the whole model and no tensor crosses."""
        return self.scheme != "none"

    def __str__(self) -> str:
        scheme: str = self.scheme
        if self.scheme == "jpeg":
            scheme = f"jpeg{self.quality}" + ("s444" if self.subsampling == "4:4:4" else "")
        return scheme + (f"+zstd{self.zstd_level}" if self.zstd_level else "")


def _subsampling(digits: str | None, text: str) -> Subsampling:
    """The subsampling a ``jpegQsNNN`` suffix names (no suffix: 4:2:0)."""
    if digits is None:
        return "4:2:0"
    if digits == "444":
        return "4:4:4"
    if digits == "420":
        raise CodecSpecError(
            f"'s420' in {text!r}: 4:2:0 is the default, and every codec has one spelling; "
            "expected plain 'jpegQ' (e.g. 'jpeg75')",
            field="subsampling",
        )
    raise CodecSpecError(
        f"JPEG subsampling 's{digits}' in {text!r}; expected 's444' (4:4:4) or no suffix "
        "(4:2:0), e.g. 'jpeg75s444'",
        field="subsampling",
    )
