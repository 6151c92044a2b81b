"""Look without planning: what a plan directory ships, and where a model can be cut.

    splitwire plan show plans/resnet18                 # cuts, codecs, picks, halves, budget
    splitwire plan show plans/resnet18 --json --plan-public-key keys/plans.pub
    splitwire cuts --model zoo:resnet18 --input-shape 1,3,224,224 --json

``plan show`` reads the directory as the runtimes do (:func:`~splitwire.partitioner.plan_file.
load_plan`: bounded, every field checked, every half's sha256 compared), so what it prints is
what ``splitwire edge`` and ``splitwire cloud`` would run. It says whether the directory is a
full plan or one side's pack (``splitwire plan pack``), and reads a pack as its side does.
``cuts`` captures the model and enumerates its cuts exactly as ``splitwire plan`` does, and
stops there: nothing is profiled, measured or exported.

``splitwire plan`` plans and ``splitwire plan show`` shows: the command line joins the words
``plan show`` into one command before parsing (:data:`COMPOUND_COMMANDS`, gathered by
:mod:`splitwire.cli`), so ``plan``'s own flags are unchanged.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-heavy; the handlers import them when they run
    from splitwire.partitioner.cuts import Cut
    from splitwire.partitioner.plan_file import PackManifest, Plan

PLAN_SHOW = "plan show"
# Two-word commands: ``splitwire plan show DIR`` is parsed as the command ``"plan show"``.
COMPOUND_COMMANDS = (("plan", "show"),)


def register(subparsers: Any) -> None:
    """Add ``plan show`` and ``cuts`` to the ``splitwire`` parser."""
    # No help=: argparse lists it under `plan`'s epilog instead of as a command of its own.
    show = subparsers.add_parser(
        PLAN_SHOW,
        description=(
            "Print what a plan directory ships: the model, the task and accuracy budget, each "
            "link's pick and the plan's choice, every cut with its halves' sizes and the codecs "
            "shipped for it, whether plan.yaml is signed, whether the directory is the full "
            "plan or one side's pack, and where the figures come from. The directory is read "
            "and checked as the runtimes read it (sha256 of every half; a pack's own side's)."
        ),
    )
    show.add_argument("directory", metavar="DIR", type=Path, help="a plan directory")
    show.add_argument(
        "--plan-public-key",
        type=Path,
        metavar="KEY",
        help="verify plan.yaml's signature with this Ed25519 public key (as the runtimes do); "
        "without it a signature is reported as present, not verified",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=_plan_show)

    cuts = subparsers.add_parser(
        "cuts",
        help="list where a model can be split, without profiling or measuring",
        description=(
            "Capture the model and list every cut `splitwire plan` would consider: its id (for "
            "--ship), its name (the module of the last node on the edge), the tensors that "
            "cross it and their bytes per frame before any codec. Nothing is profiled or "
            "measured."
        ),
    )
    cuts.add_argument("--model", required=True, metavar="SPEC", help="e.g. zoo:resnet18")
    cuts.add_argument(
        "--input-shape", metavar="N,C,H,W", help="input shape, batch first (default: the model's)"
    )
    cuts.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cuts.set_defaults(func=_cuts)


def _plan_show(args: argparse.Namespace) -> int:
    from splitwire.partitioner.plan_file import load_plan, read_pack_manifest
    from splitwire.partitioner.signing import PlanTrust

    trust = PlanTrust.from_public_key(args.plan_public_key)
    # Read as the side it was packed for (read again, after the signature, by load_plan).
    pack = read_pack_manifest(args.directory) if args.directory.is_dir() else None
    plan = load_plan(args.directory, trust=trust, side=pack.side if pack else None)
    summary = plan_summary(
        plan, args.directory, verified=args.plan_public_key is not None, pack=pack
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_plan_summary(summary)
    return 0


def plan_summary(
    plan: Plan, directory: Path, *, verified: bool, pack: PackManifest | None = None
) -> dict[str, Any]:
    """What ``plan`` (read from ``directory``) ships, as the ``plan show --json`` document.

    Args:
        plan: the plan as :func:`~splitwire.partitioner.plan_file.load_plan` returned it.
        directory: its directory (the halves' sizes are read from there).
        verified: its signature was verified by a public key while loading.
        pack: the directory's pack manifest; None for a full plan directory.
    """
    from splitwire.partitioner.plan_file import PLAN_FILE, side_halves
    from splitwire.partitioner.signing import signature_path

    signature = signature_path(directory / PLAN_FILE)
    # A pack holds (and load_plan checked) its side's halves only: those are listed.
    held = {
        (h.cut, h.half): h.path
        for h in side_halves(plan, pack.side if pack else None, local=pack.local if pack else True)
    }
    cuts: list[dict[str, Any]] = []
    for cut in sorted(plan.cuts.values(), key=lambda c: c.id):
        halves = {
            half: {"path": rel, "bytes": (directory / rel).stat().st_size}
            for half in ("head", "tail")
            if (rel := held.get((cut.id, half))) is not None
        }
        cuts.append(
            {
                "id": cut.id,
                "name": cut.name,
                "crossing": [_tensor(t) for t in cut.crossing],
                "outputs": [_tensor(t) for t in cut.outputs],
                "codecs": [o.codec for o in plan.options if o.cut == cut.id],
                "halves": halves,
            }
        )
    return {
        "directory": str(directory),
        "kind": f"{pack.side} pack" if pack else "plan",
        "pack": {"side": pack.side, "local": pack.local} if pack else None,
        "schema": plan.schema,
        "model": {
            "spec": plan.model_spec,
            "hash": plan.model_hash,
            "input_shape": list(plan.input_shape),
            "task": plan.task,  # one of TASKS: load_plan checked it
        },
        "signed": signature.is_file(),
        "signature_verified": verified,
        "objective": plan.objective,
        "accuracy_budget": _budget_text(plan),
        "accuracy_metric": plan.accuracy_metric,
        "choice": _choice(plan.choice, plan),
        "links": [_choice(c, plan) for c in plan.links],
        "cuts": cuts,
        "bytes": sum(h["bytes"] for c in cuts for h in c["halves"].values()),
        "preprocess": (
            {"mean": list(plan.preprocess.mean), "std": list(plan.preprocess.std)}
            if plan.preprocess
            else None
        ),
        "provenance": _printable(plan.provenance),
    }


def print_plan_summary(summary: Mapping[str, Any]) -> None:
    """``plan show``'s text: the summary of :func:`plan_summary`, a section at a time."""
    model = summary["model"]
    signed = (
        "signed, verified"
        if summary["signature_verified"]
        else "signed (plan.yaml.sig; not verified: give --plan-public-key)"
        if summary["signed"]
        else "not signed"
    )
    print(f"plan {summary['directory']} (schema {summary['schema']}, {signed})")
    print(f"  holds       {_holds(summary['pack'])}")
    print(f"  model       {model['spec']}  input {_shape(model['input_shape'])}")
    print(f"  hash        {model['hash']}")
    print(f"  task        {model['task'] or 'not recorded'}")
    print(f"  objective   {summary['objective']}, accuracy budget {summary['accuracy_budget']}")
    preprocess = summary["preprocess"]
    if preprocess:
        print(f"  preprocess  mean {preprocess['mean']} std {preprocess['std']}")
    choice = summary["choice"]
    robust = f"robust over {len(summary['links'])} links: " if choice["link"] == "robust" else ""
    print(f"  choice      {robust}{_choice_text(choice)}")
    print("\nper-link picks:")
    width = max(len(c["link"]) for c in summary["links"])
    for c in summary["links"]:
        print(f"  {c['link']:<{width}}  {_choice_text(c)}")
    cuts = summary["cuts"]
    print(f"\ncuts shipped ({len(cuts)}, {size_text(summary['bytes'])} of halves):")
    name_width = max(len("name"), *(len(c["name"]) for c in cuts))
    print(f"  {'id':<6} {'name':<{name_width}} {'head':>9} {'tail':>9}  crossing / codecs")
    for c in cuts:
        halves = c["halves"]
        head = size_text(halves["head"]["bytes"]) if "head" in halves else "-"
        tail = size_text(halves["tail"]["bytes"]) if "tail" in halves else "-"
        crossing = ", ".join(
            f"{t['name']} {_shape(t['shape'])} {t['dtype']}" for t in c["crossing"]
        )
        print(f"  {c['id']:<6} {c['name']:<{name_width}} {head:>9} {tail:>9}  {crossing}")
        print(f"  {'':<6} {'':<{name_width}} {'':>9} {'':>9}  codecs: {', '.join(c['codecs'])}")
    if summary["provenance"]:
        print("\nprovenance:")
        for key, value in _flatten(summary["provenance"]):
            print(f"  {key:<24} {value}")


def _holds(pack: Mapping[str, Any] | None) -> str:
    if pack is None:
        return "the full plan: both sides' halves (`splitwire plan pack` writes one side's)"
    if pack["side"] == "cloud":
        return "the cloud's pack: plan.yaml and the tails (splitwire cloud runs it)"
    local = (
        "with the whole model for the local fallback"
        if pack["local"]
        else "without the whole model (--no-local: no local fallback)"
    )
    return f"the edge's pack: plan.yaml and the heads, {local} (splitwire edge runs it)"


def _cuts(args: argparse.Namespace) -> int:
    from splitwire.partitioner.capture import capture
    from splitwire.partitioner.cli import parse_shape
    from splitwire.partitioner.cuts import compute_nodes, enumerate_cuts
    from splitwire.partitioner.errors import InputShapeError
    from splitwire.partitioner.models import load_model

    shape = parse_shape(args.input_shape) if args.input_shape is not None else None
    loaded = load_model(args.model)
    shape = shape or loaded.input_shape
    if shape is None:
        raise InputShapeError(
            f"{args.model} does not declare its input shape; give --input-shape, e.g. 1,3,224,224"
        )
    graph = capture(loaded.module, shape)
    cuts = enumerate_cuts(graph)
    nodes = len(compute_nodes(graph))
    rows = [_cut_row(cut) for cut in cuts]
    if args.json:
        document = {
            "model": loaded.spec,
            "input_shape": list(shape),
            "compute_nodes": nodes,
            "cuts": rows,
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"{loaded.spec} at {_shape(shape)}: {len(cuts)} cuts over {nodes} compute nodes")
    width = max(len("name"), *(len(r["name"]) for r in rows))
    print(f"  {'id':<6} {'name':<{width}} {'edge nodes':>10} {'bytes':>10}  crossing")
    for r in rows:
        crossing = (
            ", ".join(f"{t['node']} {_shape(t['shape'])} {t['dtype']}" for t in r["crossing"])
            or "nothing (all on the edge)"
        )
        print(
            f"  {r['id']:<6} {r['name']:<{width}} {r['edge_nodes']:>10} {r['bytes']:>10}  "
            f"{crossing}"
        )
    return 0


def _cut_row(cut: Cut) -> dict[str, Any]:
    return {
        "id": cut.id,
        "index": cut.index,
        "name": cut.name,
        "edge_nodes": len(cut.edge_nodes),
        "bytes": cut.bytes_raw,
        "crossing": [
            {"node": t.node, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.nbytes}
            for t in cut.crossing
        ],
    }


def _tensor(t: Any) -> dict[str, Any]:
    tensor = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    if not t.result_codec.default:  # how a tail output travels back, when the plan says
        tensor["result_codec"] = str(t.result_codec)
    return tensor


def _choice(c: Any, plan: Plan) -> dict[str, Any]:
    return {
        "link": c.link,
        "cut": c.cut,
        "cut_name": plan.cuts[c.cut].name,
        "codec": c.codec,
        "baseline": c.baseline,
        "predicted": dict(c.predicted),
    }


# How a pick's predicted figures read (plan.yaml's keys); other keys print as key and value.
_FIGURES = {
    "latency_ms": "{:.1f} ms",
    "worst_latency_ms": "at worst {:.1f} ms",
    "throughput_fps": "{:.1f} fps",
    "worst_throughput_fps": "at worst {:.1f} fps",
    "edge_ms": "edge {:.2f} ms",
    "accuracy_cost": "accuracy cost {:.2g}",
}


def _choice_text(c: Mapping[str, Any]) -> str:
    where = c["baseline"] or f"cut {c['cut']} ({c['cut_name']})"
    figures = ", ".join(
        f"{size_text(v)} per frame"
        if k == "bytes_wire"
        else _FIGURES[k].format(v)
        if k in _FIGURES
        else f"{k} {v:.4g}"
        for k, v in c["predicted"].items()
    )
    return f"{where}, {c['codec']}: predicted {figures}"


def _budget_text(plan: Plan) -> str:
    """The budget as ``--accuracy-budget`` spells it (``top1=0.99``): plan.yaml stores it as
    the largest cost (0.01 for top1=0.99)."""
    from splitwire.partitioner.accuracy import AGREEMENTS, AccuracyBudget
    from splitwire.partitioner.errors import PartitionerError

    metric, cost = plan.accuracy_metric, plan.accuracy_budget
    try:
        return AccuracyBudget(metric, 1.0 - cost if metric in AGREEMENTS else cost).text
    except PartitionerError:  # a metric this version does not know: show what is there
        return f"{metric} cost <= {cost:g}"


def _printable(value: Any) -> Any:
    """Provenance as written, with any string that is not printable escaped (it is the only
    free-form part of plan.yaml: load_plan checks every other string)."""
    from splitwire.protocol.peer_text import peer_text

    if isinstance(value, Mapping):
        return {str(_printable(k)): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, str) and not (value.isprintable() and len(value) <= 1024):
        return peer_text(value, limit=256)
    return value


def _flatten(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, item in value.items():
        if isinstance(item, Mapping):
            out += _flatten(item, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", item))
    return out


def _shape(shape: list[int] | tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def size_text(value: float) -> str:
    """Bytes for people: ``45.1 MB``, ``103.4 kB``, ``64 B``."""
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"
