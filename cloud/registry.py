"""The plans a server serves: every tail loaded once, found by (model hash, cut).

A session's Hello names a model hash, a cut and a codec; :meth:`TailRegistry.resolve` either
finds what serves them or explains what differs, in the words the edge's operator needs::

    edge runs model 3f2a9c0d11e4, cut c0042, int8+zstd1; this server has model 3f2a9c0d11e4
    with cuts c0000, c0017
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from splitwire.cloud.errors import ConfigError, FrameRefused
from splitwire.partitioner.errors import PlanError, SigningKeyError
from splitwire.partitioner.plan_file import TensorSpec
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.partitioner.signing import PlanTrust, log_trust
from splitwire.protocol import CodecSpec, CodecSpecError
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.crossing import Crossing
from splitwire.protocol.peer_text import peer_text

logger = logging.getLogger(__name__)


def short_hash(model_hash: str) -> str:
    """The first 12 hex digits: enough to tell models apart in messages and metric labels."""
    return model_hash[:12]


@dataclass(frozen=True)
class Route:
    """What serves one (model, cut, codec): the tail, what frames carry (``crossing``, checked
    on the headers), and how a decoded frame becomes the tail's inputs (``wire``)."""

    model_hash: str
    cut: str
    codec: CodecSpec
    crossing: tuple[TensorSpec, ...]
    wire: Crossing
    outputs: tuple[TensorSpec, ...]
    tail: nn.Module
    plan: RunnablePlan

    @property
    def key(self) -> tuple[str, str]:
        """Frames with the same key can share a batch: the same tail on the same inputs."""
        return (self.model_hash, self.cut + ("/camera" if self.from_camera else ""))

    @property
    def from_camera(self) -> bool:
        """Frames carry the camera's uint8 pixels, which the cloud preprocesses (decided by
        :class:`~splitwire.protocol.crossing.Crossing`)."""
        return self.wire.camera

    def tail_inputs(self, decoded: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The tail's inputs from a decoded frame."""
        return self.wire.tail_inputs(decoded, preprocess=self.plan.preprocess)


class TailRegistry:
    """Every cut of every plan given, with its tail loaded (at construction, not per session).

    ``public_key`` (``--plan-public-key``): every ``plan.yaml`` must be signed by it, checked
    before anything else of the directory is read; None trusts the directories as they are
    (logged once as a warning).

    Raises:
        ConfigError: the key cannot be read, a plan is unsigned or wrongly signed, a plan does
            not load, or two plans disagree about the same model.
    """

    def __init__(self, directories: Sequence[Path], *, public_key: Path | None = None) -> None:
        self._plans: dict[str, RunnablePlan] = {}
        try:
            trust = PlanTrust.from_public_key(public_key)
        except SigningKeyError as exc:
            raise ConfigError(f"--plan-public-key: {exc}") from exc
        log_trust(trust, directories)
        for directory in directories:
            try:
                plan = open_plan(directory, trust=trust, side="cloud")
            except PlanError as exc:
                raise ConfigError(f"--plan {directory}: {exc}") from exc
            digest = plan.model_hash
            if digest in self._plans:
                known = self._plans[digest]
                if set(known.plan.cuts) != set(plan.plan.cuts):
                    raise ConfigError(
                        f"--plan {directory}: model {short_hash(digest)} is already served from "
                        f"{known.directory} with cuts {sorted(known.plan.cuts)}; give one plan "
                        "per model"
                    )
                continue  # the same plan twice: its tails are loaded already
            try:
                plan.load(side="tail")
            except PlanError as exc:
                raise ConfigError(f"--plan {directory}: {exc}") from exc
            self._plans[digest] = plan
            logger.info(
                "serving model %s (%s) from %s: cuts %s",
                short_hash(digest),
                plan.plan.model_spec,
                directory,
                ", ".join(sorted(plan.plan.cuts)),
            )

    @property
    def plans(self) -> tuple[RunnablePlan, ...]:
        """The served plans, one per model."""
        return tuple(self._plans.values())

    def cuts(self, model_hash: str) -> tuple[str, ...]:
        """The cuts served for ``model_hash`` (empty if the model is not served)."""
        plan = self._plans.get(model_hash)
        return tuple(sorted(plan.plan.cuts)) if plan else ()

    def resolve(self, model_hash: str, cut: str, codec: str) -> Route:
        """What serves frames of ``model_hash`` at ``cut`` encoded with ``codec``.

        Raises:
            FrameRefused: ``PLAN_MISMATCH`` naming what differs; ``INVALID_ARGUMENT`` for a
                codec that does not parse.
        """
        plan = self._plans.get(model_hash)
        if plan is None or cut not in plan.plan.cuts:
            raise FrameRefused(pb.PLAN_MISMATCH, self._mismatch(model_hash, cut, codec))
        try:
            spec = CodecSpec.parse(codec)
        except CodecSpecError as exc:
            raise FrameRefused(pb.INVALID_ARGUMENT, exc.message, field="codec") from exc
        try:
            crossing = plan.crossing(cut, spec)
        except PlanError as exc:
            raise FrameRefused(pb.PLAN_MISMATCH, str(exc), field="codec") from exc
        return Route(
            model_hash=model_hash,
            cut=cut,
            codec=spec,
            crossing=crossing,
            wire=Crossing(spec, tuple(t.name for t in crossing)),
            outputs=plan.outputs(cut),
            tail=plan.tail(cut),
            plan=plan,
        )

    def _mismatch(self, model_hash: str, cut: str, codec: str) -> str:
        # The edge's names are a peer's strings: quoted, escaped and truncated.
        edge = (
            f"edge runs model {peer_text(short_hash(model_hash))}, cut {peer_text(cut)}, "
            f"{peer_text(codec)}"
        )
        if not self._plans:
            return f"{edge}; this server has no model"
        served = "; ".join(
            f"model {short_hash(d)} with cuts {', '.join(sorted(p.plan.cuts))}"
            for d, p in self._plans.items()
        )
        return f"{edge}; this server has {served}"
