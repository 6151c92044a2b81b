"""The plan directory: what the edge and the cloud need to run a split, and nothing else.

    DIR/plan.yaml              versioned: model, input, the chosen (cut, codec), a per-link table
    DIR/cuts/<cut>/head.pt2    the edge's half (torch.export archive; no model source needed)
    DIR/cuts/<cut>/tail.pt2    the cloud's half

Every cut the plan refers to (the choice and each link's best) has its halves on disk, so the
edge can switch plans when its link changes without re-planning. ``plan.yaml`` records each
half's tensor order: the head returns the ``crossing`` tensors in order, the tail takes them in
the same order and returns ``outputs``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from splitwire.partitioner.errors import PlanError

PLAN_SCHEMA = 1
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
    schema: int = PLAN_SCHEMA

    def cut(self, cut_id: str) -> PlanCut:
        """The cut named ``cut_id``.

        Raises:
            PlanError: the plan has no such cut.
        """
        if cut_id not in self.cuts:
            raise PlanError(f"plan has no cut {cut_id!r}; it has {sorted(self.cuts)}")
        return self.cuts[cut_id]


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
        raise PlanError(f"{file}: schema {schema} is not supported; expected {PLAN_SCHEMA}")
    model = reader.section("model")
    cuts = {}
    for cut_id, raw in reader.mapping("cuts").items():
        cut = _read_cut(str(cut_id), _Reader(raw, f"{file}: cuts.{cut_id}"))
        for half, digest in ((cut.head, cut.head_sha256), (cut.tail, cut.tail_sha256)):
            if half is None:
                continue
            half_path = file.parent / half
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
    return Plan(
        model_spec=model.text("spec"),
        model_hash=model.text("hash"),
        input_shape=tuple(model.integers("input_shape")),
        objective=reader.section("objective").text("name"),
        accuracy_budget=reader.section("objective").number("accuracy_budget"),
        choice=choice,
        links=links,
        cuts=cuts,
        schema=schema,
    )


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

    return {
        "schema": plan.schema,
        "model": {
            "spec": plan.model_spec,
            "hash": plan.model_hash,
            "input_shape": list(plan.input_shape),
        },
        "objective": {"name": plan.objective, "accuracy_budget": plan.accuracy_budget},
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
