"""A plan as the runtimes use it: its halves loaded once, and what crosses each (cut, codec).

    plan = open_plan(Path("plans/resnet18"), trust=PlanTrust.from_public_key(Path("plans.pub")))
    tail = plan.tail("c0017")                      # loaded on first use, then shared
    specs = plan.crossing("c0017", "int8+zstd1")   # what a frame must carry
    check_tensors(decoded, specs)                  # TensorSpecError naming the field

The edge and the cloud both go through this module, so they check a plan directory the same way
(its signature when a key is given, then ``plan.yaml``, then each half's sha256 and contents:
:mod:`splitwire.partitioner.signing`, :mod:`splitwire.partitioner.archive`) and agree on what a
frame of every plan kind carries:

=====================  ==============================  ==================================
plan kind              edge sends                      cloud runs
=====================  ==============================  ==================================
split (cut ``cNNNN``)  the head's crossing tensors     the cut's tail
all-in-cloud, input    the preprocessed input (cut 0)  cut 0's tail (the whole model)
all-in-cloud, frame    the uint8 camera frame, raw     :meth:`RunnablePlan.preprocess`, then
                       (``frame``, ``frame+zstdN``)    cut 0's tail
all-in-cloud, JPEG     the uint8 camera frame, JPEG    the same
                       (``jpegQ``, ``jpegQs444``)
all-on-edge (``none``) nothing                         nothing: no session is needed
=====================  ==============================  ==================================
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from splitwire.partitioner.archive import load_program
from splitwire.partitioner.errors import PlanError, TensorSpecError
from splitwire.partitioner.plan_file import (
    HALF_OF_SIDE,
    Plan,
    PlanCut,
    PlanOption,
    Side,
    TensorSpec,
    inside,
    load_plan,
)
from splitwire.partitioner.signing import TRUST_AS_IS, PlanTrust
from splitwire.protocol import CodecSpec, CodecSpecError
from splitwire.protocol.header import DTYPE_NAMES


@dataclass
class RunnablePlan:
    """A validated plan directory whose halves load on first use, once each (thread-safe).

    Attributes:
        plan: what ``plan.yaml`` says.
        directory: the plan directory (every half lies inside it).
        side: the runtime it was opened for, which loads only its own halves; None: both.
    """

    plan: Plan
    directory: Path
    _modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    side: Side | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model_hash(self) -> str:
        """The hash of the model both halves come from (the edge's Hello carries it)."""
        return self.plan.model_hash

    @property
    def options(self) -> tuple[PlanOption, ...]:
        """Every shipped (cut, codec), with the figures to price it under a measured link."""
        return self.plan.options

    def option(self, cut_id: str, codec: str) -> PlanOption:
        """The shipped option ``(cut_id, codec)`` (PlanError if the plan does not ship it)."""
        return self.plan.option(cut_id, codec)

    def head(self, cut_id: str) -> nn.Module:
        """The edge's half of ``cut_id``.

        Raises:
            PlanError: no such cut, or it has no head on disk, or the archive does not load.
        """
        return self._half(self.plan.cut(cut_id), "head")

    def tail(self, cut_id: str) -> nn.Module:
        """The cloud's half of ``cut_id`` (same errors as :meth:`head`)."""
        return self._half(self.plan.cut(cut_id), "tail")

    def crossing(self, cut_id: str, codec: str | CodecSpec) -> tuple[TensorSpec, ...]:
        """What a frame for ``(cut_id, codec)`` carries, before encoding (see the module table).

        Raises:
            PlanError: no such cut; ``codec`` does not parse; ``none`` (nothing crosses); a
                camera codec (``frame``, ``jpeg``) for anything but an image input sent whole.
        """
        cut = self.plan.cut(cut_id)
        spec = _codec(codec)
        if not spec.sends:
            raise PlanError(
                f"codec {spec} sends nothing: under it the edge runs the whole model and needs "
                "no cloud session"
            )
        if not spec.camera:
            return cut.crossing
        image = self.camera_frame()
        sends_input = [(t.shape, t.dtype) for t in cut.crossing] == [
            (t.shape, t.dtype) for t in cut.inputs
        ]
        if cut.name != "input" or not sends_input:
            raise PlanError(
                f"codec {spec} sends the camera frame, so it needs the cut that sends the input; "
                f"cut {cut.id} ({cut.name}) sends {[t.name for t in cut.crossing]}"
            )
        return (image,)

    def outputs(self, cut_id: str) -> tuple[TensorSpec, ...]:
        """The model outputs the tail of ``cut_id`` returns (the cloud sends them back)."""
        return self.plan.cut(cut_id).outputs

    def camera_frame(self) -> TensorSpec:
        """The uint8 frame a camera gives for this plan's input: ``(N, C, H, W)``.

        Raises:
            PlanError: the plan's input is not an image, or it records no preprocessing.
        """
        shape = self.plan.input_shape
        if len(shape) != 4 or shape[1] not in (1, 3) or self.plan.preprocess is None:
            raise PlanError(
                f"the plan's input {list(shape)} has no camera frame: expected an (N, 1|3, H, W) "
                "image input with preprocessing recorded in the plan"
            )
        return TensorSpec("image", shape, "uint8")

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """Turn uint8 camera frames ``(N, C, H, W)`` into the model's float input.

        Raises:
            PlanError: the plan records no preprocessing; TensorSpecError: wrong frames.
        """
        frame = self.camera_frame()
        check_tensors([pixels], [frame])
        prep = self.plan.preprocess
        assert prep is not None  # camera_frame() checked it
        return prep.apply(pixels)

    def load(self, cut_ids: Sequence[str] | None = None, *, side: str = "tail") -> None:
        """Load the ``side`` halves of ``cut_ids`` (default: every cut) now, not on first use."""
        for cut_id in self.plan.cuts if cut_ids is None else cut_ids:
            self._half(self.plan.cut(cut_id), side)

    def _half(self, cut: PlanCut, side: str) -> nn.Module:
        relative, digest = (
            (cut.head, cut.head_sha256) if side == "head" else (cut.tail, cut.tail_sha256)
        )
        if relative is None:
            raise PlanError(f"cut {cut.id} ({cut.name}) has no {side} in {self.directory}")
        if self.side is not None and HALF_OF_SIDE[self.side] != side:
            raise PlanError(
                f"{self.directory} is open for the {self.side}, which runs only the "
                f"{HALF_OF_SIDE[self.side]}s; cut {cut.id}'s {side} is not loaded here"
            )
        key = f"{cut.id}/{side}"
        with self._lock:
            module = self._modules.get(key)
            if module is None:
                path = inside(self.directory, relative, where=f"cut {cut.id} {side}")
                # Hashed again as it is read: what runs is what plan.yaml names, even if the
                # file changed since open_plan.
                module = load_program(path, sha256=digest)
                self._modules[key] = module
            return module


def open_plan(
    path: Path, *, trust: PlanTrust = TRUST_AS_IS, side: Side | None = None
) -> RunnablePlan:
    """Read and validate the plan at ``path`` (``plan.yaml`` or its directory); the halves
    load later, on first use or with :meth:`RunnablePlan.load`, through
    :func:`~splitwire.partitioner.archive.load_program`.

    Args:
        path: the plan directory or its ``plan.yaml``.
        trust: what ``plan.yaml`` must satisfy before it is parsed: the runtimes pass
            ``PlanTrust.from_public_key(...)`` for ``--plan-public-key``.
        side: ``"edge"`` or ``"cloud"``: the runtime opening it, which then checks and loads
            only its own halves, from a full plan directory or its side's pack
            (``splitwire plan pack``); None (tools): a full plan directory, both sides.

    Raises:
        PlanError: see :func:`~splitwire.partitioner.plan_file.load_plan`
            (``PlanSignatureError`` for a missing or wrong signature).
    """
    plan = load_plan(path, trust=trust, side=side)
    directory = path if path.is_dir() else path.parent
    return RunnablePlan(plan=plan, directory=directory.resolve(), side=side)


def check_tensors(tensors: Sequence[torch.Tensor], specs: Sequence[TensorSpec]) -> int:
    """Check ``tensors`` against ``specs``: count, dtype, and shape except the batch (dim 0),
    which must be the same for all. Never reshapes to fit.

    Returns:
        The batch size.

    Raises:
        TensorSpecError: the first disagreement, naming the tensor (``tensors[i].shape``), what
            was expected and what came.
    """
    described = [(tuple(t.shape), DTYPE_NAMES.get(t.dtype, str(t.dtype))) for t in tensors]
    return check_described(described, specs)


def check_described(
    tensors: Sequence[tuple[tuple[int, ...], str]], specs: Sequence[TensorSpec]
) -> int:
    """:func:`check_tensors` on (shape, wire dtype name) pairs, e.g. from tensor headers, so a
    frame can be refused before its payload is decoded.

    Raises:
        TensorSpecError: as :func:`check_tensors`.
    """
    if len(tensors) != len(specs):
        raise TensorSpecError(
            f"{len(tensors)} tensors; the plan expects {len(specs)} "
            f"({', '.join(s.name for s in specs)})",
            field="tensors",
        )
    batch: int | None = None
    for i, ((shape, dtype), spec) in enumerate(zip(tensors, specs, strict=True)):
        expected = ("N", *spec.shape[1:])
        if len(shape) != len(spec.shape) or shape[1:] != spec.shape[1:]:
            raise TensorSpecError(
                f"tensor {i} ({spec.name}): expected shape {_shape(expected)} {spec.dtype}, got "
                f"{_shape(shape)} {dtype}; edge and cloud run different plans",
                field=f"tensors[{i}].shape",
            )
        if dtype != spec.dtype:
            raise TensorSpecError(
                f"tensor {i} ({spec.name}): expected dtype {spec.dtype}, got {dtype}",
                field=f"tensors[{i}].dtype",
            )
        if batch is None:
            batch = shape[0]
        elif shape[0] != batch:
            raise TensorSpecError(
                f"tensor {i} ({spec.name}) has batch {shape[0]}, tensor 0 has {batch}; "
                "expected one batch size per frame",
                field=f"tensors[{i}].shape",
            )
    return batch or 0


def _shape(shape: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _codec(codec: str | CodecSpec) -> CodecSpec:
    try:
        return CodecSpec.parse(codec)
    except CodecSpecError as exc:
        raise PlanError(f"plan codec {codec!r}: {exc.message}") from exc
