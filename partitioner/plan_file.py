"""The plan directory: what the edge and the cloud need to run a split, and nothing else.

    DIR/plan.yaml              versioned: model, input, the chosen (cut, codec), a per-link table,
                               and every shipped (cut, codec) with the figures to price it again
    DIR/cuts/<cut>/head.pt2    the edge's half (torch.export archive; no model source needed)
    DIR/cuts/<cut>/tail.pt2    the cloud's half

Every cut the plan refers to (the choice and each link's best) has its halves on disk, so the
edge can switch plans when its link changes without re-planning. ``plan.yaml`` records each
half's tensor order: the head returns the ``crossing`` tensors in order, the tail takes them in
the same order and returns ``outputs``. Every path in it is relative and must stay inside the
directory. The runtimes load a plan with :func:`splitwire.partitioner.runtime.open_plan`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from splitwire.partitioner.errors import PlanError

# Schema 2 added `options` (every shipped (cut, codec) with its figures) and the camera
# preprocessing (`model.preprocess`).
PLAN_SCHEMA = 2
PLAN_FILE = "plan.yaml"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (at the plan's batch; dim 0 is the dynamic batch) and wire dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class PlanCut:
    """One cut's halves: file paths relative to the plan directory, with their tensor order."""

    id: str
    name: str
    head: str | None
    tail: str | None
    inputs: tuple[TensorSpec, ...]
    crossing: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    head_sha256: str | None
    tail_sha256: str | None


@dataclass(frozen=True)
class Preprocess:
    """How a camera's uint8 frame becomes the model's input, per channel::

        input = (pixels / 255 - mean) / std          pixels: (N, C, H, W) uint8

    The edge applies it before the head; under a camera codec (``frame``, ``jpegQ``,
    ``jpegQs444``: the all-in-cloud camera baselines) the cloud applies it to the decoded frames.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise PlanError(
                f"preprocess: {len(self.mean)} means and {len(self.std)} stds; expected one "
                "of each per input channel"
            )
        if any(not s > 0 for s in self.std):
            raise PlanError(f"preprocess: std {list(self.std)} must be > 0 for every channel")

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(N, C, H, W)`` as the model's float32 input (the formula above)."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (pixels.to(torch.float32) / 255.0 - mean) / std


# ImageNet statistics, what image classifiers are trained with (grey images: their mean).
IMAGENET = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
IMAGENET_GREY = Preprocess(mean=(0.449,), std=(0.226,))


@dataclass(frozen=True)
class PlanOption:
    """One shipped (cut, codec) and what it costs apart from the link, so a runtime can price
    it again under the link it measures (:func:`splitwire.partitioner.cost.price_option`).

    Attributes:
        edge_ms: head compute + encode on the edge (its profile). ``cloud_ms``: decode + tail.
        bytes_up: mean encoded frame size (headers included); ``bytes_down``: the results'.
        accuracy_cost: relative output error the codec causes (0 = exact).
    """

    cut: str
    codec: str
    baseline: str | None
    edge_ms: float
    cloud_ms: float
    bytes_up: float
    bytes_down: float
    accuracy_cost: float


@dataclass(frozen=True)
class LinkChoice:
    """The best (cut, codec) for one link, with its predicted figures."""

    link: str
    cut: str
    codec: str
    baseline: str | None
    predicted: Mapping[str, float]


@dataclass(frozen=True)
class Plan:
    """A deployable plan (see the module docstring for the directory layout)."""

    model_spec: str
    model_hash: str
    input_shape: tuple[int, ...]
    objective: str
    accuracy_budget: float
    choice: LinkChoice
    links: tuple[LinkChoice, ...]
    cuts: Mapping[str, PlanCut]
    options: tuple[PlanOption, ...] = ()
    preprocess: Preprocess | None = None
    # The metric accuracy_budget and every option's accuracy_cost are stated in (as a cost:
    # 1 - agreement for top1/top5/pixel/miou); "rel" in plans from before task metrics.
    accuracy_metric: str = "rel"
    # Where the figures come from: splitwire and torch versions, both devices (description,
    # threads, emulated slowdown), the calibration data, the window priced with. Informative.
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema: int = PLAN_SCHEMA

    def cut(self, cut_id: str) -> PlanCut:
        """The cut named ``cut_id``.

        Raises:
            PlanError: the plan has no such cut.
        """
        if cut_id not in self.cuts:
            raise PlanError(f"plan has no cut {cut_id!r}; it has {sorted(self.cuts)}")
        return self.cuts[cut_id]

    def option(self, cut_id: str, codec: str) -> PlanOption:
        """The shipped option ``(cut_id, codec)``.

        Raises:
            PlanError: the plan does not ship it.
        """
        for option in self.options:
            if (option.cut, option.codec) == (cut_id, codec):
                return option
        shipped = ", ".join(f"{o.cut} {o.codec}" for o in self.options)
        raise PlanError(f"plan ships no option {cut_id} {codec}; it ships {shipped}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_plan(plan: Plan, directory: Path) -> Path:
    """Write ``plan.yaml`` into ``directory`` (the halves must already be there).

    Returns:
        The path of ``plan.yaml``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PLAN_FILE
    path.write_text(yaml.safe_dump(_to_dict(plan), sort_keys=False))
    return path


def load_plan(path: Path) -> Plan:
    """Read and validate a plan (``path`` is ``plan.yaml`` or its directory).

    Every half the plan names must exist and match its recorded sha256.

    Raises:
        PlanError: the file is missing, is not a plan of a known schema, a field is missing or
            of the wrong type, or a half is missing or modified.
    """
    file = path / PLAN_FILE if path.is_dir() else path
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise PlanError(f"cannot read plan {file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PlanError(f"{file} is not valid YAML: {exc}") from exc
    reader = _Reader(data, str(file))
    schema = reader.integer("schema")
    if schema != PLAN_SCHEMA:
        raise PlanError(
            f"{file}: schema {schema} is not supported; expected {PLAN_SCHEMA} (plan again with "
            "this version of splitwire)"
        )
    model = reader.section("model")
    cuts = {}
    for cut_id, raw in reader.mapping("cuts").items():
        cut = _read_cut(str(cut_id), _Reader(raw, f"{file}: cuts.{cut_id}"))
        for half, digest in ((cut.head, cut.head_sha256), (cut.tail, cut.tail_sha256)):
            if half is None:
                continue
            half_path = inside(file.parent, half, where=f"{file}: cut {cut_id}")
            if not half_path.is_file():
                raise PlanError(f"{file}: cut {cut_id} needs {half}, which is missing")
            if digest is not None and sha256_file(half_path) != digest:
                raise PlanError(
                    f"{file}: {half} does not match its recorded sha256; the plan directory was "
                    "modified: plan again"
                )
        cuts[cut.id] = cut
    choice = _read_choice(reader.section("choice"))
    links = tuple(
        _read_choice(_Reader(raw, f"{file}: links[{i}]"))
        for i, raw in enumerate(reader.items("links"))
    )
    for entry in (choice, *links):
        if entry.cut not in cuts:
            raise PlanError(f"{file}: link {entry.link!r} refers to cut {entry.cut!r}, not in cuts")
    options = tuple(
        _read_option(_Reader(raw, f"{file}: options[{i}]"))
        for i, raw in enumerate(reader.items("options"))
    )
    for option in options:
        if option.cut not in cuts:
            raise PlanError(
                f"{file}: option {option.codec} refers to cut {option.cut!r}, not in cuts"
            )
    preprocess = None
    if model.data.get("preprocess") is not None:
        section = model.section("preprocess")
        preprocess = Preprocess(tuple(section.numbers("mean")), tuple(section.numbers("std")))
    return Plan(
        model_spec=model.text("spec"),
        model_hash=model.text("hash"),
        input_shape=tuple(model.integers("input_shape")),
        objective=reader.section("objective").text("name"),
        accuracy_budget=reader.section("objective").number("accuracy_budget"),
        accuracy_metric=reader.section("objective").optional_text("accuracy_metric") or "rel",
        provenance=reader.mapping("provenance") if "provenance" in reader.data else {},
        choice=choice,
        links=links,
        cuts=cuts,
        options=options,
        preprocess=preprocess,
        schema=schema,
    )


def inside(directory: Path, relative: str, *, where: str) -> Path:
    """``directory / relative``, refusing paths that leave ``directory`` (``..``, absolute
    paths, symbolic links pointing out).

    Raises:
        PlanError: the path escapes the directory.
    """
    root = directory.resolve()
    path = (root / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(root):
        raise PlanError(
            f"{where}: path {relative!r} leaves the plan directory {root}; expected a path "
            "relative to it"
        )
    return path


def _to_dict(plan: Plan) -> dict[str, Any]:
    def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in specs]

    def choice(c: LinkChoice) -> dict[str, Any]:
        return {
            "link": c.link,
            "cut": c.cut,
            "codec": c.codec,
            "baseline": c.baseline,
            "predicted": {k: float(v) for k, v in c.predicted.items()},
        }

    model: dict[str, Any] = {
        "spec": plan.model_spec,
        "hash": plan.model_hash,
        "input_shape": list(plan.input_shape),
    }
    if plan.preprocess is not None:
        model["preprocess"] = {"mean": list(plan.preprocess.mean), "std": list(plan.preprocess.std)}
    return {
        "schema": plan.schema,
        "model": model,
        "objective": {
            "name": plan.objective,
            "accuracy_budget": plan.accuracy_budget,
            "accuracy_metric": plan.accuracy_metric,
        },
        "provenance": dict(plan.provenance),
        "choice": choice(plan.choice),
        "links": [choice(c) for c in plan.links],
        "cuts": {
            cut.id: {
                "name": cut.name,
                "head": cut.head,
                "tail": cut.tail,
                "head_sha256": cut.head_sha256,
                "tail_sha256": cut.tail_sha256,
                "inputs": tensors(cut.inputs),
                "crossing": tensors(cut.crossing),
                "outputs": tensors(cut.outputs),
            }
            for cut in plan.cuts.values()
        },
        "options": [
            {
                "cut": o.cut,
                "codec": o.codec,
                "baseline": o.baseline,
                "edge_ms": float(o.edge_ms),
                "cloud_ms": float(o.cloud_ms),
                "bytes_up": float(o.bytes_up),
                "bytes_down": float(o.bytes_down),
                "accuracy_cost": float(o.accuracy_cost),
            }
            for o in plan.options
        ],
    }


class _Reader:
    """Typed access to a YAML mapping, with errors naming the key path and the bad value."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise PlanError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.where = where

    def _get(self, key: str) -> object:
        if key not in self.data:
            raise PlanError(f"{self.where}: missing key {key!r}")
        return self.data[key]

    def _typed(self, key: str, kind: type | tuple[type, ...], expected: str) -> Any:
        value = self._get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise PlanError(f"{self.where}: {key} = {value!r}; expected {expected}")
        return value

    def text(self, key: str) -> str:
        value: str = self._typed(key, str, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value: int = self._typed(key, int, "an integer")
        return value

    def number(self, key: str) -> float:
        return float(self._typed(key, (int, float), "a number"))

    def numbers(self, key: str) -> list[float]:
        values = self._typed(key, list, "a list of numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise PlanError(f"{self.where}: {key} = {values!r}; expected a list of numbers")
        return [float(v) for v in values]

    def integers(self, key: str) -> list[int]:
        values = self._typed(key, list, "a list of integers")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise PlanError(f"{self.where}: {key} = {values!r}; expected a list of integers")
        return list(values)

    def items(self, key: str) -> list[Any]:
        value: list[Any] = self._typed(key, list, "a list")
        return value

    def mapping(self, key: str) -> dict[Any, Any]:
        value: dict[Any, Any] = self._typed(key, dict, "a mapping")
        return value

    def section(self, key: str) -> _Reader:
        return _Reader(self.mapping(key), f"{self.where}: {key}")


def _read_tensors(reader: _Reader, key: str) -> tuple[TensorSpec, ...]:
    out = []
    for i, raw in enumerate(reader.items(key)):
        item = _Reader(raw, f"{reader.where}.{key}[{i}]")
        out.append(TensorSpec(item.text("name"), tuple(item.integers("shape")), item.text("dtype")))
    return tuple(out)


def _read_cut(cut_id: str, reader: _Reader) -> PlanCut:
    return PlanCut(
        id=cut_id,
        name=reader.text("name"),
        head=reader.optional_text("head"),
        tail=reader.optional_text("tail"),
        inputs=_read_tensors(reader, "inputs"),
        crossing=_read_tensors(reader, "crossing"),
        outputs=_read_tensors(reader, "outputs"),
        head_sha256=reader.optional_text("head_sha256"),
        tail_sha256=reader.optional_text("tail_sha256"),
    )


def _read_option(reader: _Reader) -> PlanOption:
    return PlanOption(
        cut=reader.text("cut"),
        codec=reader.text("codec"),
        baseline=reader.optional_text("baseline"),
        edge_ms=reader.number("edge_ms"),
        cloud_ms=reader.number("cloud_ms"),
        bytes_up=reader.number("bytes_up"),
        bytes_down=reader.number("bytes_down"),
        accuracy_cost=reader.number("accuracy_cost"),
    )


def _read_choice(reader: _Reader) -> LinkChoice:
    predicted = reader.mapping("predicted")
    if not all(isinstance(v, int | float) for v in predicted.values()):
        raise PlanError(f"{reader.where}: predicted values must be numbers")
    return LinkChoice(
        link=reader.text("link"),
        cut=reader.text("cut"),
        codec=reader.text("codec"),
        baseline=reader.optional_text("baseline"),
        predicted={str(k): float(v) for k, v in predicted.items()},
    )
