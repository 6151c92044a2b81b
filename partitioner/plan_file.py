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

    DIR/plan.yaml.sig          optional: an Ed25519 signature of plan.yaml's bytes
                               (:mod:`splitwire.partitioner.signing`)

A plan directory is input like any other. :func:`load_plan` checks, in this order: the signature
when its :class:`~splitwire.partitioner.signing.PlanTrust` holds a public key (before a byte is
parsed); the size of ``plan.yaml`` (:data:`MAX_PLAN_BYTES`), its YAML nesting depth
(:data:`MAX_PLAN_DEPTH`, no aliases); every field's type and range (shapes, counts, dtypes, the
sha256 of every half, which is mandatory); and last each half's sha256. The halves' contents are
checked when they load (:mod:`splitwire.partitioner.archive`).

Each side needs only its halves: a runtime loads with ``side="edge"`` or ``side="cloud"``, and
only that side's halves (:func:`side_halves`) must be there and are hashed; the other side's may
be missing. ``splitwire plan pack`` (:mod:`splitwire.partitioner.pack`) writes a directory for one
side, ``plan.yaml`` (and its signature) byte for byte, with a manifest, read after the signature::

    OUT/pack.yaml              side: edge|cloud, local: true|false (whether the edge's pack holds
                               the whole model, the all-on-edge option's head)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
import yaml

from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.signing import TRUST_AS_IS, PlanTrust, sign_file, signature_path
from splitwire.protocol.codec_spec import CodecSpec
from splitwire.protocol.errors import CodecSpecError
from splitwire.protocol.header import DTYPES
from splitwire.protocol.result_codec import DEFAULT_RESULT_CODEC, ResultCodec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

logger = logging.getLogger(__name__)

# Schema 2 added `options` (every shipped (cut, codec) with its figures) and the camera
# preprocessing (`model.preprocess`).
PLAN_SCHEMA = 2
PLAN_FILE = "plan.yaml"
# What a model's outputs mean (``model.task``; absent when the planner did not know): class
# logits (N, K), per-pixel logits (N, K, H, W), or values of no fixed meaning.
TASKS = ("classification", "segmentation", "regression")
# A pack's manifest (a directory for one side, see the module docstring).
PACK_FILE = "pack.yaml"
PACK_SCHEMA = 1
# The manifest holds three short keys; 4 KiB leaves room for comments.
MAX_PACK_BYTES = 4096
# Which runtime a directory is read for: the edge runs the heads, the cloud the tails.
Side = Literal["edge", "cloud"]
SIDES: tuple[Side, ...] = get_args(Side)
HALF_OF_SIDE: Mapping[Side, str] = {"edge": "head", "cloud": "tail"}

# Bounds on plan.yaml (the runtimes read nothing larger). The largest plan splitwire writes,
# ResNet-50 with --ship all and every codec, is about 0.4 MB (~540 bytes per cut, ~180 per
# option); 1 MiB parses in about a second with LibYAML on a loaded 2-core machine.
MAX_PLAN_BYTES = 1 << 20
# Plans nest 6 deep (cuts > c0042 > crossing > [0] > shape); 32 leaves room for provenance and
# stops "[[[[..." long before the parser's recursion limit.
MAX_PLAN_DEPTH = 32
MAX_PLAN_CUTS = 4096  # a graph's cuts; ResNet-50 has ~175
MAX_PLAN_OPTIONS = 16_384  # shipped (cut, codec) pairs
MAX_PLAN_LINKS = 256
MAX_PLAN_TENSORS = 256  # tensors in one of a cut's lists (inputs, crossing, outputs)
MAX_TENSOR_RANK = 8
MAX_TENSOR_DIM = 1 << 24
# 2^28 elements is 1 GiB of float32: a 4K camera frame is 25 M, a ResNet-50 crossing < 1 M.
MAX_TENSOR_ELEMENTS = 1 << 28
MAX_PLAN_TEXT = 1024  # characters of a string (model spec, link, codec, tensor name)
MAX_PREPROCESS_CHANNELS = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
# LibYAML when PyYAML has it: the pure-Python parser takes ~7 s per MiB on a loaded machine.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (at the plan's batch; dim 0 is the dynamic batch) and wire dtype; for a
    tail's output, how it travels back to the edge (``result_codec`` in plan.yaml, written only
    when it is not the default: the output exactly as it is)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    result_codec: ResultCodec = DEFAULT_RESULT_CODEC


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
    # The codec parsed once, here: runtimes ask the option, never the string (``spec.camera``).
    spec: CodecSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "spec", CodecSpec.parse(self.codec))
        except CodecSpecError as exc:
            raise PlanError(f"option {self.cut}: {exc}") from exc

    @property
    def local(self) -> bool:
        """True for the all-on-edge option (codec ``none``): nothing crosses, no session."""
        return not self.spec.sends


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
    # One of TASKS when the planner knew it (a zoo/hf model's, or --task); the edge labels its
    # results with it. None: a model of unknown task, or a plan written before tasks were kept.
    task: str | None = None

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


@dataclass(frozen=True)
class PackManifest:
    """What ``pack.yaml`` says of a directory written for one side.

    Attributes:
        side: the runtime it is for.
        local: for the edge, whether it holds the all-on-edge option's head (the whole model,
            the local fallback); without it the edge runs only the options that send. Always
            False for the cloud, which never runs the whole model.
    """

    side: Side
    local: bool = True

    def describe(self) -> str:
        """``"the edge's pack"`` (with ``", no local model"`` when it holds none)."""
        bare = self.side == "edge" and not self.local
        return f"the {self.side}'s pack" + (", no local model" if bare else "")


@dataclass(frozen=True)
class HalfFile:
    """One half a side runs: ``path`` relative to the plan directory, with its sha256."""

    cut: str
    half: str  # "head" or "tail"
    path: str
    sha256: str


def side_halves(plan: Plan, side: Side | None, *, local: bool = True) -> tuple[HalfFile, ...]:
    """The halves ``side`` runs, in the plan's cut order: the edge every head (with ``local``
    False, only those of cuts with an option that sends: the all-on-edge cut's head is the
    whole model), the cloud every tail; ``None``, both sides.

    Raises:
        PlanError: a half without its sha256 (plans written by ``splitwire plan`` have one).
    """
    halves = []
    for cut in plan.cuts.values():
        sends = any(not o.local for o in plan.options if o.cut == cut.id)
        for half, relative, digest in (
            ("head", cut.head, cut.head_sha256),
            ("tail", cut.tail, cut.tail_sha256),
        ):
            if relative is None or (side is not None and HALF_OF_SIDE[side] != half):
                continue
            if half == "head" and not local and not sends:
                continue
            if digest is None:
                raise PlanError(f"cut {cut.id}: {relative} has no sha256; plan again")
            halves.append(HalfFile(cut.id, half, relative, digest))
    return tuple(halves)


def read_pack_manifest(directory: Path) -> PackManifest | None:
    """``directory``'s ``pack.yaml``, or None for a full plan directory (no manifest).

    The manifest is not signed: it only narrows what a runtime loads (every half loaded is
    still named and hashed by ``plan.yaml``), so changing it can refuse a plan or leave out
    the local model, never run anything the plan does not name.

    Raises:
        PlanError: the manifest cannot be read, is larger than :data:`MAX_PACK_BYTES`, or is
            not a pack manifest of a known schema.
    """
    file = directory / PACK_FILE
    try:
        with file.open("rb") as f:
            data = f.read(MAX_PACK_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PlanError(f"cannot read {file}: {exc.strerror}") from exc
    if len(data) > MAX_PACK_BYTES:
        raise PlanError(
            f"{file} is larger than {MAX_PACK_BYTES} bytes; expected the manifest "
            "`splitwire plan pack` writes"
        )
    reader = _Reader(_parse_yaml(file, data), str(file))
    schema = reader.integer("pack")
    if schema != PACK_SCHEMA:
        raise PlanError(
            f"{file}: pack schema {schema} is not supported; expected {PACK_SCHEMA} (pack the "
            "plan again with this version of splitwire)"
        )
    side = reader.text("side")
    if side not in SIDES:
        raise PlanError(f"{file}: side = {_short(side)}; expected one of {', '.join(SIDES)}")
    local = reader.boolean("local")
    return PackManifest(side="edge" if side == "edge" else "cloud", local=local)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_plan(
    plan: Plan, directory: Path, *, signing_key: Ed25519PrivateKey | None = None
) -> Path:
    """Write ``plan.yaml`` into ``directory`` (the halves must already be there), and its
    signature ``plan.yaml.sig`` with ``signing_key``. Without a key, a signature left by an
    earlier plan in the directory is removed: it would no longer match.

    Returns:
        The path of ``plan.yaml``.

    Raises:
        PlanError: the plan is larger than the runtimes read (:data:`MAX_PLAN_BYTES`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PLAN_FILE
    text = yaml.dump(_to_dict(plan), Dumper=_PlanDumper, sort_keys=False)
    if len(text.encode()) > MAX_PLAN_BYTES:
        raise PlanError(
            f"{path} would be {len(text.encode())} bytes; the runtimes read at most "
            f"{MAX_PLAN_BYTES}: ship fewer cuts (--ship) or codecs"
        )
    path.write_text(text)
    if signing_key is not None:
        logger.info("signed %s: %s", path, sign_file(path, signing_key))
    else:
        signature_path(path).unlink(missing_ok=True)
    return path


class _PlanDumper(yaml.SafeDumper):
    """Writes no YAML aliases (the same object twice is written twice): readers refuse them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def load_plan(path: Path, *, trust: PlanTrust = TRUST_AS_IS, side: Side | None = None) -> Plan:
    """Read and validate a plan (``path`` is ``plan.yaml`` or its directory).

    Checks in this order (see the module docstring): the signature required by ``trust``, the
    pack manifest if there is one, the file's size and YAML structure, every field, then that
    every half ``side`` runs (:func:`side_halves`; both sides' when ``side`` is None) exists
    and matches its sha256, which each half must have.

    Args:
        path: the plan directory (full, or a pack for ``side``) or its ``plan.yaml``.
        trust: what ``plan.yaml`` must satisfy before it is parsed.
        side: the runtime reading it; None reads a full plan directory with both sides.

    Returns:
        The plan; read from an edge's pack without the local model, without the all-on-edge
        options (the edge cannot run them).

    Raises:
        PlanSignatureError: ``trust`` requires a signature and there is none or it does not match
            (nothing else of the directory has been read).
        PlanError: the file is missing or too large, is not a plan of a known schema, a field is
            missing, of the wrong type or out of range, a half ``side`` runs is missing or
            modified, or the directory is the other side's pack.
    """
    file = path / PLAN_FILE if path.is_dir() else path
    data = _read_plan_bytes(file)
    trust.verify(file, data)
    manifest = read_pack_manifest(file.parent)
    if manifest is not None and manifest.side != side:
        holds = f"plan.yaml and the {HALF_OF_SIDE[manifest.side]}s only"
        what = f"{file.parent} is {manifest.describe()} ({holds})"
        raise PlanError(
            f"{what}, not the {side}'s: `splitwire {side}` needs the full plan directory or "
            f"its own pack (splitwire plan pack PLAN --side {side} --out DIR)"
            if side
            else f"{what}: this needs the full plan directory (`splitwire {manifest.side}` "
            "runs the pack)"
        )
    reader = _Reader(_parse_yaml(file, data), str(file))
    schema = reader.integer("schema")
    if schema != PLAN_SCHEMA:
        raise PlanError(
            f"{file}: schema {schema} is not supported; expected {PLAN_SCHEMA} (plan again with "
            "this version of splitwire)"
        )
    model = reader.section("model")
    cuts = {}
    for cut_id, raw in reader.mapping("cuts", limit=MAX_PLAN_CUTS).items():
        if not isinstance(cut_id, str) or not _is_text(cut_id):
            raise PlanError(f"{file}: cut id {cut_id!r}; expected a printable string")
        cut = _read_cut(cut_id, _Reader(raw, f"{file}: cuts.{cut_id}"))
        cuts[cut.id] = cut
    choice = _read_choice(reader.section("choice"))
    links = tuple(
        _read_choice(_Reader(raw, f"{file}: links[{i}]"))
        for i, raw in enumerate(reader.items("links", limit=MAX_PLAN_LINKS))
    )
    for entry in (choice, *links):
        if entry.cut not in cuts:
            raise PlanError(f"{file}: link {entry.link!r} refers to cut {entry.cut!r}, not in cuts")
    options = tuple(
        _read_option(_Reader(raw, f"{file}: options[{i}]"))
        for i, raw in enumerate(reader.items("options", limit=MAX_PLAN_OPTIONS))
    )
    for option in options:
        if option.cut not in cuts:
            raise PlanError(
                f"{file}: option {option.codec} refers to cut {option.cut!r}, not in cuts"
            )
    preprocess = None
    if model.data.get("preprocess") is not None:
        section = model.section("preprocess")
        preprocess = Preprocess(
            tuple(section.numbers("mean", limit=MAX_PREPROCESS_CHANNELS)),
            tuple(section.numbers("std", limit=MAX_PREPROCESS_CHANNELS)),
        )
    plan = Plan(
        model_spec=model.text("spec"),
        model_hash=model.text("hash"),
        input_shape=model.shape("input_shape", smallest=1),
        objective=reader.section("objective").text("name"),
        accuracy_budget=reader.section("objective").number("accuracy_budget", smallest=0),
        accuracy_metric=reader.section("objective").optional_text("accuracy_metric") or "rel",
        provenance=reader.mapping("provenance") if "provenance" in reader.data else {},
        choice=choice,
        links=links,
        cuts=cuts,
        options=options,
        preprocess=preprocess,
        schema=schema,
        task=_read_task(model),
    )
    local = manifest is None or manifest.local
    if manifest is not None and manifest.side == "edge" and not manifest.local:
        # The edge's pack without the whole model: it runs only what it can send.
        sends = tuple(o for o in plan.options if not o.local)
        if not sends:
            raise PlanError(
                f"{file.parent} is {manifest.describe()}, but the plan ships no option that "
                "sends: the edge would have nothing to run; pack it without --no-local"
            )
        plan = dataclasses.replace(plan, options=sends)
    # Last, once the whole plan is known to be well-formed: hashing reads every half.
    runner, repack = (
        (f"the {side}", f", or pack it for the {side} (splitwire plan pack PLAN --side {side})")
        if side
        else ("the plan", "")
    )
    for half in side_halves(plan, side, local=local):
        half_path = inside(file.parent, half.path, where=f"{file}: cut {half.cut}")
        if not half_path.is_file():
            raise PlanError(
                f"{file}: {runner} needs {half.path}, which is missing (cut {half.cut}'s "
                f"{half.half}); copy the plan directory again{repack}"
            )
        if sha256_file(half_path) != half.sha256:
            raise PlanError(
                f"{file}: {half.path} does not match its recorded sha256; the plan directory "
                "was modified: plan again"
            )
    return plan


def _read_task(model: _Reader) -> str | None:
    """``model.task``: one of :data:`TASKS`, or None when the plan does not say."""
    task = model.optional_text("task")
    if task is not None and task not in TASKS:
        raise PlanError(
            f"{model.where}: task = {_short(task)}; expected one of {', '.join(TASKS)} (or no task)"
        )
    return task


def _read_plan_bytes(file: Path) -> bytes:
    try:
        with file.open("rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"cannot read plan {file}: {exc.strerror}") from exc
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(
            f"{file} is larger than {MAX_PLAN_BYTES} bytes, the most a plan may be; expected a "
            "plan.yaml written by `splitwire plan`"
        )
    return data


def _line(event: yaml.Event) -> str:
    return f"line {event.start_mark.line + 1}" if event.start_mark is not None else "?"


def _parse_yaml(file: Path, data: bytes) -> object:
    """``data`` as YAML, refusing aliases and nesting deeper than :data:`MAX_PLAN_DEPTH` in a
    first pass over the parser's events (iterative: no recursion however deep the input)."""
    try:
        text = data.decode("utf-8")
        depth = 0
        for event in yaml.parse(text, Loader=_YAML_LOADER):
            if isinstance(event, yaml.AliasEvent):
                raise PlanError(
                    f"{file}: {_line(event)}: a YAML alias (*{event.anchor}); "
                    "plans have none (an alias can expand a few bytes into gigabytes)"
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_PLAN_DEPTH:
                    raise PlanError(
                        f"{file}: {_line(event)}: nested more than "
                        f"{MAX_PLAN_DEPTH} deep; a plan nests at most 6 deep"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=_YAML_LOADER)
    except UnicodeDecodeError as exc:
        raise PlanError(f"{file} is not UTF-8 text (byte {exc.start}); expected YAML") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlanError(f"{file} is not valid YAML: {exc.problem}{where}") from exc
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Constructors raise ValueError for ints past Python's digit limit, TypeError for
        # unhashable keys.
        raise PlanError(f"{file} is not valid YAML: {type(exc).__name__}") from exc


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
        return [
            {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
            | ({} if t.result_codec.default else {"result_codec": str(t.result_codec)})
            for t in specs
        ]

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
    if plan.task is not None:
        model["task"] = plan.task
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
    """Typed, bounded access to a YAML mapping, with errors naming the key path and the value."""

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
            raise PlanError(f"{self.where}: {key} = {_short(value)}; expected {expected}")
        return value

    def text(self, key: str) -> str:
        value: str = self._typed(key, str, "a string")
        if not _is_text(value):
            raise PlanError(
                f"{self.where}: {key} = {_short(value)}; expected printable text of at most "
                f"{MAX_PLAN_TEXT} characters"
            )
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def sha256(self, key: str, *, half: str) -> str:
        """The hex sha256 of a half, which every half must have."""
        if self.data.get(key) is None:
            raise PlanError(
                f"{self.where}: {half} has no {key}; every half's sha256 is required (splitwire "
                "plan records it): plan again, or restore the line"
            )
        value = self.text(key)
        if not _SHA256.fullmatch(value):
            raise PlanError(
                f"{self.where}: {key} = {_short(value)}; expected 64 lowercase hex digits"
            )
        return value

    def boolean(self, key: str) -> bool:
        value: bool = self._typed(key, bool, "true or false")
        return value

    def integer(self, key: str) -> int:
        value: int = self._typed(key, int, "an integer")
        return value

    def number(self, key: str, *, smallest: float = -math.inf) -> float:
        value = float(self._typed(key, (int, float), "a number"))
        if math.isnan(value) or value < smallest:
            bound = f" >= {smallest:g}" if smallest > -math.inf else ""
            raise PlanError(f"{self.where}: {key} = {value}; expected a number{bound}")
        return value

    def numbers(self, key: str, *, limit: int) -> list[float]:
        values = self.items(key, limit=limit)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or any(
            not math.isfinite(v) for v in values
        ):
            raise PlanError(f"{self.where}: {key} = {_short(values)}; expected a list of numbers")
        return [float(v) for v in values]

    def shape(self, key: str, *, smallest: int = 0) -> tuple[int, ...]:
        """A tensor shape: rank 1 to :data:`MAX_TENSOR_RANK`, sizes ``smallest`` to
        :data:`MAX_TENSOR_DIM`, at most :data:`MAX_TENSOR_ELEMENTS` elements."""
        values = self._typed(key, list, "a list of integers")
        if (
            not 1 <= len(values) <= MAX_TENSOR_RANK
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            or not all(smallest <= v <= MAX_TENSOR_DIM for v in values)
            or math.prod(values) > MAX_TENSOR_ELEMENTS
        ):
            raise PlanError(
                f"{self.where}: {key} = {_short(values)}; expected a list of 1 to "
                f"{MAX_TENSOR_RANK} integers from {smallest} to {MAX_TENSOR_DIM}, at most "
                f"{MAX_TENSOR_ELEMENTS} elements in all"
            )
        return tuple(values)

    def items(self, key: str, *, limit: int) -> list[Any]:
        value: list[Any] = self._typed(key, list, "a list")
        if len(value) > limit:
            raise PlanError(f"{self.where}: {key} has {len(value)} entries; at most {limit}")
        return value

    def mapping(self, key: str, *, limit: int | None = None) -> dict[Any, Any]:
        value: dict[Any, Any] = self._typed(key, dict, "a mapping")
        if limit is not None and len(value) > limit:
            raise PlanError(f"{self.where}: {key} has {len(value)} entries; at most {limit}")
        return value

    def section(self, key: str) -> _Reader:
        return _Reader(self.mapping(key), f"{self.where}: {key}")


def _is_text(value: str) -> bool:
    # Plan strings reach log lines and messages: no newlines or escape sequences.
    return len(value) <= MAX_PLAN_TEXT and value.isprintable()


def _short(value: object) -> str:
    """A value for a message: repr, cut to 80 characters (a plan may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_tensors(reader: _Reader, key: str) -> tuple[TensorSpec, ...]:
    out = []
    for i, raw in enumerate(reader.items(key, limit=MAX_PLAN_TENSORS)):
        item = _Reader(raw, f"{reader.where}.{key}[{i}]")
        dtype = item.text("dtype")
        if dtype not in DTYPES:
            raise PlanError(
                f"{item.where}: dtype {_short(dtype)}; expected one of {', '.join(DTYPES)}"
            )
        shape = item.shape("shape")
        result = DEFAULT_RESULT_CODEC
        if key == "outputs" and isinstance(raw, Mapping) and "result_codec" in raw:
            try:
                result = ResultCodec.parse(item.text("result_codec"))
                result.check(shape, dtype)
            except CodecSpecError as exc:
                raise PlanError(f"{item.where}.result_codec: {exc.message}") from exc
        out.append(TensorSpec(item.text("name"), shape, dtype, result))
    return tuple(out)


def _read_cut(cut_id: str, reader: _Reader) -> PlanCut:
    head = reader.optional_text("head")
    tail = reader.optional_text("tail")
    return PlanCut(
        id=cut_id,
        name=reader.text("name"),
        head=head,
        tail=tail,
        inputs=_read_tensors(reader, "inputs"),
        crossing=_read_tensors(reader, "crossing"),
        outputs=_read_tensors(reader, "outputs"),
        head_sha256=None if head is None else reader.sha256("head_sha256", half=head),
        tail_sha256=None if tail is None else reader.sha256("tail_sha256", half=tail),
    )


def _read_option(reader: _Reader) -> PlanOption:
    return PlanOption(
        cut=reader.text("cut"),
        codec=reader.text("codec"),
        baseline=reader.optional_text("baseline"),
        edge_ms=reader.number("edge_ms", smallest=0),
        cloud_ms=reader.number("cloud_ms", smallest=0),
        bytes_up=reader.number("bytes_up", smallest=0),
        bytes_down=reader.number("bytes_down", smallest=0),
        # inf: measured bytes but not the tail's accuracy (never picked; see measure.py).
        accuracy_cost=reader.number("accuracy_cost", smallest=0),
    )


def _read_choice(reader: _Reader) -> LinkChoice:
    predicted = reader.mapping("predicted", limit=64)
    if not all(
        isinstance(k, str) and _is_text(k) and isinstance(v, int | float) and v == v
        for k, v in predicted.items()
    ):
        raise PlanError(f"{reader.where}: predicted values must be numbers, named by strings")
    return LinkChoice(
        link=reader.text("link"),
        cut=reader.text("cut"),
        codec=reader.text("codec"),
        baseline=reader.optional_text("baseline"),
        predicted={str(k): float(v) for k, v in predicted.items()},
    )
