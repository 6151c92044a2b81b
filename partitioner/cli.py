"""Subcommands owned by the partitioner.

splitwire models                      # the zoo and the spec forms
splitwire models zoo:resnet18 --json  # what a spec resolves to
splitwire profile --model zoo:resnet18 --input-shape 1,3,224,224 --threads 1 --out edge.yaml
splitwire plan --model zoo:resnet18 --input-shape 1,3,224,224 --edge-slowdown 4 \
    --link wifi --link lte --out plans/resnet18 --plot plans/resnet18.png \
    --sign-key keys/plans.key
splitwire plan pack plans/resnet18 --side edge --out packs/resnet18-edge   # one side's files
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitwire.partitioner.errors import InputShapeError, PartitionerError

# ``splitwire plan pack DIR`` is parsed as the command ``"plan pack"`` (see splitwire/cli.py), so
# ``plan``'s own flags stay as they are.
PLAN_PACK = "plan pack"
COMPOUND_COMMANDS = (("plan", "pack"),)

if TYPE_CHECKING:  # torch-heavy; the handlers import it when they run
    from torch import nn

    from splitwire.partitioner.pack import PackResult
    from splitwire.partitioner.profile_format import Profile


def register(subparsers: Any) -> None:
    """Add the partitioner's subcommands to the ``splitwire`` parser."""
    models = subparsers.add_parser(
        "models",
        help="list the reference models, or show what a model spec resolves to",
        description=(
            "Without SPEC, list the zoo. With SPEC (zoo:NAME, path/file.py:callable, "
            "path/model.pt2, hf:ClassName; optional ?key=value&... options and @weights.pt), "
            "build the model and print its parameter count, input shape and hash. The hash "
            "(the one plan.yaml records) covers the captured graph and its weights, so the model "
            "is captured for it at --input-shape or the model's own input shape."
        ),
    )
    models.add_argument("spec", nargs="?", help="a model spec, e.g. zoo:resnet18?num_classes=10")
    models.add_argument(
        "--input-shape",
        metavar="N,C,H,W",
        help="input shape to capture the model at for its hash (default: the model's own)",
    )
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=_models)
    _register_profile(subparsers)
    _register_plan(subparsers)
    _register_pack(subparsers)


def _models(args: argparse.Namespace) -> int:
    from splitwire.partitioner.models import load_model, zoo_entry, zoo_names

    if args.spec is None:
        entries = [zoo_entry(name) for name in zoo_names()]
        if args.json:
            rows = [
                {
                    "spec": f"zoo:{e.name}",
                    "input_shape": list(e.input_shape),
                    "task": e.task,
                    "description": e.description,
                }
                for e in entries
            ]
            print(json.dumps(rows, indent=2))
        else:
            for e in entries:
                shape = "x".join(map(str, e.input_shape))
                print(f"zoo:{e.name:<19} {shape:<14} {e.task:<15} {e.description}")
        return 0
    asked = parse_shape(args.input_shape) if args.input_shape is not None else None
    loaded = load_model(args.spec)
    # A shape the user gave must capture (exit 2 otherwise); the model's own may fail quietly.
    digest, note = _hash_at(loaded.module, asked or loaded.input_shape, strict=asked is not None)
    info = {
        "spec": loaded.spec,
        "class": type(loaded.module).__name__,
        "parameters": sum(p.numel() for p in loaded.module.parameters()),
        "input_shape": list(loaded.input_shape) if loaded.input_shape else None,
        "task": loaded.task,
        "hash": digest,
        "hash_of": note,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:<12} {'-' if value is None else value}")
    return 0


def _hash_at(
    module: nn.Module, shape: tuple[int, ...] | None, *, strict: bool
) -> tuple[str | None, str]:
    """The model's hash captured at ``shape``, and what it is of (or why there is none).

    Raises:
        CaptureError: ``strict`` and the model cannot be captured at ``shape``.
    """
    from splitwire.partitioner.capture import capture
    from splitwire.partitioner.errors import CaptureError
    from splitwire.partitioner.models import model_hash

    if shape is None:
        return None, "none: the model declares no input shape; give --input-shape to hash it"
    try:
        graph = capture(module, shape)
    except CaptureError as exc:
        if strict:
            raise
        return None, f"none: {str(exc).splitlines()[0]}"
    at = ",".join(map(str, shape))
    return model_hash(graph), f"graph and weights, captured at input shape {at}"


def _preprocess(mean: str | None, std: str | None, shape: tuple[int, ...]) -> Any:
    """The ``--input-mean``/``--input-std`` preprocessing, or None for the default.

    Raises:
        PlanError: only one of them given, a value that is not a number, or the wrong count.
    """
    from splitwire.partitioner.errors import PlanError
    from splitwire.partitioner.plan_file import Preprocess

    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise PlanError("--input-mean and --input-std go together; give both or neither")
    try:
        means = tuple(float(v) for v in mean.split(","))
        stds = tuple(float(v) for v in std.split(","))
    except ValueError as exc:
        raise PlanError(
            f"--input-mean {mean!r} / --input-std {std!r}: expected comma-separated numbers, "
            "e.g. 0.485,0.456,0.406"
        ) from exc
    channels = shape[1] if len(shape) == 4 else None
    if channels not in (1, 3) or len(means) != channels:
        raise PlanError(
            f"--input-mean has {len(means)} values for input shape {list(shape)}; expected one "
            "per channel of an (N, 1|3, H, W) image input"
        )
    return Preprocess(means, stds)


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape written as ``"1,3,224,224"`` (spaces allowed).

    Args:
        text: comma-separated positive integers, batch first.

    Returns:
        The shape as a tuple, e.g. ``(1, 3, 224, 224)``.

    Raises:
        InputShapeError: a part is empty, not an integer, or not positive.
    """
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise InputShapeError(
            f"input shape {text!r}: expected positive integers separated by commas, batch "
            "first, e.g. 1,3,224,224"
        )
    return tuple(int(part) for part in parts)


def _register_profile(subparsers: Any) -> None:
    profile = subparsers.add_parser(
        "profile",
        help="measure how long each node of a model takes on this machine",
        description=(
            "Capture the model, time every compute node (median of --repeats passes after "
            "--warmup), the whole graph and the per-call overhead, time the codecs on real "
            "activations and what a frame costs beyond them (the camera preprocessing, the "
            "transport's round trip over gRPC on loopback, the agent's hand-off to its compute "
            "thread), and write the profile as YAML for the planner. Run it on the device "
            "it describes, idle, with the thread count that device will use. --slowdown K "
            "instead *emulates* a device K times slower by scaling the measured numbers; the "
            "profile records that it is emulated."
        ),
    )
    profile.add_argument("--model", required=True, metavar="SPEC", help="e.g. zoo:resnet50")
    profile.add_argument(
        "--input-shape",
        metavar="N,C,H,W",
        help="input shape, batch first (default: the model's own, e.g. 1,3,224,224)",
    )
    profile.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads, as the device will run the model (default 1, like `plan`; more "
        "threads than idle cores make timings unstable)",
    )
    profile.add_argument(
        "--repeats", type=int, default=20, metavar="R", help="measured passes (default 20)"
    )
    profile.add_argument(
        "--warmup", type=int, default=3, metavar="W", help="unmeasured passes first (default 3)"
    )
    profile.add_argument(
        "--slowdown",
        type=float,
        default=1.0,
        metavar="K",
        help="emulate a device K times slower (times ×K, codec speeds ÷K); default 1",
    )
    profile.add_argument("--out", required=True, metavar="PATH", help="profile YAML to write")
    profile.add_argument("--json", action="store_true", help="print a JSON summary")
    profile.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    import math

    from splitwire.partitioner.errors import ProfileError

    # Everything the user typed is checked before torch loads and the measuring starts.
    shape = parse_shape(args.input_shape) if args.input_shape is not None else None
    if not (math.isfinite(args.slowdown) and args.slowdown > 0):
        raise ProfileError(f"--slowdown {args.slowdown}: expected a number > 0, e.g. 4")
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        raise ProfileError(
            f"--threads {args.threads} --repeats {args.repeats} --warmup {args.warmup}: "
            "expected threads >= 1, repeats >= 1, warmup >= 0"
        )

    from splitwire.partitioner.capture import capture
    from splitwire.partitioner.models import load_model, model_hash
    from splitwire.partitioner.profiling import profile_graph

    loaded = load_model(args.model)
    shape = shape or loaded.input_shape
    if shape is None:
        raise InputShapeError(
            f"{args.model} does not declare its input shape; give --input-shape, e.g. 1,3,224,224"
        )
    graph = capture(loaded.module, shape)
    result = profile_graph(
        graph,
        model_spec=loaded.spec,
        model_hash=model_hash(graph),
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        progress=not getattr(args, "quiet", False),
    )
    if args.slowdown != 1.0:
        result = result.scaled(args.slowdown)
    path = result.save(args.out)
    _print_profile(result, path, as_json=args.json)
    return 0


def _jpeg_qualities(text: str) -> tuple[int, ...]:
    """``--jpeg-quality 50,75,90`` as qualities (PlanRequest checks their range).

    Raises:
        PartitionerError: a part that is not an integer.
    """
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise PartitionerError(
            f"--jpeg-quality {text!r}: expected comma-separated integers in 1..95, e.g. 50,75,90"
        ) from exc


def _print_profile(result: Profile, path: Path, *, as_json: bool) -> None:
    from dataclasses import asdict

    top = sorted(result.nodes, key=lambda n: n.ms, reverse=True)[:5]
    if as_json:
        summary = {
            "out": str(path),
            "model_spec": result.model_spec,
            "model_hash": result.model_hash,
            "input_shape": list(result.input_shape),
            "device": asdict(result.device),
            "total_ms": result.total_ms,
            "call_overhead_ms": result.call_overhead_ms,
            "nodes": len(result.nodes),
            "top_nodes": [{"name": n.name, "op": n.op, "ms": n.ms} for n in top],
            "codecs": [asdict(c) for c in result.codecs],
            "frame": asdict(result.frame),
        }
        print(json.dumps(summary, indent=2))
        return
    device = result.device
    threads = f"{device.threads} thread" + ("s" if device.threads != 1 else "")
    emulated = f", emulated {device.slowdown:g}× slower" if device.emulated else ""
    print(
        f"{result.model_spec} at {','.join(map(str, result.input_shape))} on "
        f"{device.description}, {threads}{emulated}"
    )
    node_sum = sum(n.ms for n in result.nodes)
    print(
        f"total {result.total_ms:.2f} ms = {len(result.nodes)} nodes {node_sum:.2f} ms "
        f"+ call overhead {result.call_overhead_ms:.2f} ms"
    )
    f = result.frame
    print(
        f"per frame: preprocess {f.preprocess_ms:.2f} ms, transport round trip "
        f"{f.message_call_ms:.2f} ms + {f.message_ms_per_mb:.2f} ms/MB, hand-off "
        f"{f.handoff_ms:.2f} ms"
    )
    for n in top:
        share = 100 * n.ms / result.total_ms if result.total_ms else 0.0
        print(f"  {n.name:<24} {n.op:<32} {n.ms:8.2f} ms {share:5.1f} %")
    for c in result.codecs:
        speeds = (
            f"encode {c.encode_call_ms:6.3f} ms/call + {c.encode_mb_s:6.0f} MB/s  "
            f"decode {c.decode_call_ms:6.3f} ms/call + {c.decode_mb_s:6.0f} MB/s"
        )
        print(f"  codec {c.spec:<12} {speeds}")
    print(f"wrote {path}")


def _register_plan(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="find the Pareto-optimal split points of a model for an edge, a server and links",
        description=(
            "Capture the model, list every cut of its graph, profile both sides (or read their "
            "profiles), measure every (cut, codec) on calibration inputs — bytes on the wire and "
            "the codec's effect on the output — and price each on every link: edge ms, transfer "
            "ms, cloud ms, latency, pipelined throughput. Prints the exact Pareto front per link "
            "over latency, throughput, bytes, edge ms and accuracy cost, with the baselines "
            "(all-on-edge; all in the cloud with the camera's uint8 frame raw or as JPEG at "
            "each --jpeg-quality, 4:2:0 and 4:4:4) on the same table, picks one, "
            "and writes a plan directory with the halves the edge and the cloud run."
        ),
        epilog=(
            "links: presets ethernet, wifi, lte, 3g, paretopipe; or bw=20mbit,rtt=40ms,"
            "jitter=5ms,loss=0.5%; or a preset with overrides (lte,rtt=80ms); or a trace file "
            "(.yaml/.csv). `splitwire plan show DIR [--json]` prints what a plan directory "
            "ships; `splitwire plan pack DIR --side edge|cloud --out OUT` writes one side's "
            "files; `splitwire cuts --model SPEC` lists a model's cuts without planning. "
            "Exit codes: 0 planned, 2 bad input (--out and --plot are checked first)."
        ),
    )
    plan.add_argument("--model", required=True, metavar="SPEC", help="e.g. zoo:resnet50")
    plan.add_argument(
        "--input-shape", metavar="N,C,H,W", help="input shape, batch first (default: the model's)"
    )
    edge = plan.add_mutually_exclusive_group()
    edge.add_argument(
        "--edge-profile", metavar="FILE", help="the edge's profile (splitwire profile)"
    )
    edge.add_argument(
        "--edge-slowdown",
        type=float,
        metavar="K",
        help="emulate the edge as this machine K times slower (an emulation, not a measurement)",
    )
    plan.add_argument(
        "--cloud-profile", metavar="FILE", help="the server's profile (default: measure here)"
    )
    plan.add_argument(
        "--link", action="append", required=True, metavar="LINK", help="a link; repeat for several"
    )
    plan.add_argument(
        "--codec",
        nargs="+",
        default=["auto"],
        metavar="CODEC",
        help="codecs to consider: auto (fp32, fp32+zstd1, fp16+zstd1, int8+zstd1, int4+zstd1) "
        "or specs like int8+zstd1",
    )
    plan.add_argument(
        "--objective",
        choices=["latency", "throughput", "bytes", "edge"],
        default="latency",
        help="what the pick optimises, within the accuracy budget (default latency)",
    )
    plan.add_argument(
        "--accuracy-budget",
        metavar="METRIC=V",
        help="what a pick may cost in accuracy, against the uncompressed model: kl=1e-3 (mean "
        "KL divergence), top1=0.99 / top5=0.999 (agreement), pixel=0.99 / miou=0.98 "
        "(segmentation), rel=0.01 or a bare number (relative output error). Default: kl=1e-3 "
        "for classifiers, pixel=0.99 for segmentation (see --task), rel=0.01 for other or "
        "unknown tasks and for zoo:/hf: models without weights (random: no task metric means "
        "anything there)",
    )
    plan.add_argument(
        "--task",
        choices=["classification", "segmentation", "regression"],
        help="what the model's outputs mean, for any spec (file.py:build, .pt2, @weights.pt): "
        "classification ((N, K) logits: kl, top1, top5 budgets), segmentation ((N, K, H, W) "
        "logits: pixel, miou), regression (rel). Default: the model's own for zoo: and hf: "
        "models, else unknown (rel only). Recorded in plan.yaml; the edge labels results with it",
    )
    plan.add_argument(
        "--jpeg-quality",
        default="50,75,90",
        metavar="Q[,Q...]",
        help="the JPEG baselines' qualities (1..95), each priced with 4:2:0 (codec jpegQ) and "
        "4:4:4 chroma (jpegQs444) on the camera's uint8 frames (default %(default)s)",
    )
    plan.add_argument(
        "--calibration-data",
        metavar="skimage|DIR|synthetic",
        help="what the codecs' bytes and accuracy are measured on: the photos bundled with "
        "scikit-image (pip install 'splitwire[pretrained]'), a directory of your own images "
        "(crops and flips to reach --calibration), or synthetic images. Default: the bundled "
        "photos for a trained image model when installed, else synthetic",
    )
    plan.add_argument(
        "--window",
        type=int,
        default=4,
        metavar="N",
        help="frames the edge keeps in flight (splitwire edge --window): pipelined throughput "
        "is at most N / latency (default %(default)s)",
    )
    plan.add_argument(
        "--calibration", type=int, default=32, metavar="N",
        help="calibration inputs every front member's and pick's accuracy is measured on "
        "(default 32; lossy candidates are screened on the first 4)",
    )  # fmt: skip
    plan.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch threads for profiling (1)"
    )
    plan.add_argument("--repeats", type=int, default=10, metavar="R", help="profiling passes")
    plan.add_argument(
        "--reuse-measurements",
        metavar="DIR",
        help="reuse the bytes and accuracy measured by an earlier plan of the same model, "
        "shape, --calibration, --calibration-data and --jpeg-quality (DIR/measurements.json): "
        "no tail runs",
    )
    plan.add_argument(
        "--no-prune",
        action="store_true",
        help="run the tail for every lossy (cut, codec), even those an exact candidate beats on "
        "every link (by default they are listed as not measured: they cannot be on a front or "
        "picked); measurements made with --no-prune can be reused for any link",
    )
    plan.add_argument(
        "--input-mean",
        metavar="M,M,M",
        help="how camera pixels become the input: input = (pixels/255 - mean) / std, per "
        "channel (default for image inputs: ImageNet's 0.485,0.456,0.406); give with --input-std",
    )
    plan.add_argument(
        "--input-std", metavar="S,S,S", help="see --input-mean (ImageNet: 0.229,0.224,0.225)"
    )
    plan.add_argument(
        "--ship",
        action="append",
        default=[],
        metavar="CUT",
        help="also ship this cut's halves (an id like c0017 or a name like layer3.0; repeat, or "
        "'all'), so the runtimes can switch to it without re-planning",
    )
    plan.add_argument(
        "--no-local",
        action="store_true",
        help="do not ship the all-on-edge option (the whole model as the edge's head) unless "
        "it is a pick: by default every plan ships it as the edge's local fallback, so a frame "
        "the cloud cannot answer in time is computed on the edge instead of dropped",
    )
    plan.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="plan directory to write (new, or an earlier plan's: the cut folders the new plan "
        "does not ship are removed)",
    )
    plan.add_argument(
        "--sign-key",
        type=Path,
        metavar="KEY",
        help="sign plan.yaml with this Ed25519 private key (from `splitwire keygen`): writes "
        "DIR/plan.yaml.sig, which `splitwire cloud/edge --plan-public-key` require",
    )
    plan.add_argument("--json", action="store_true", help="print candidates and choice as JSON")
    plan.add_argument(
        "--plot",
        metavar="FILE.png",
        help="plot latency against throughput per link (.png, .svg, .pdf, ...; its folder is "
        "created if missing)",
    )
    plan.add_argument("--all", action="store_true", help="list every candidate, not only the front")
    plan.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    import sys

    from splitwire.partitioner.outputs import check_plan_directory, check_plot_file

    # Where the results go is checked first, in the first second (before torch loads), not
    # after minutes of measuring; a missing plot folder is made.
    check_plan_directory(Path(args.out))
    if args.plot:
        check_plot_file(Path(args.plot))

    from splitwire.partitioner.link import parse_link
    from splitwire.partitioner.planner import (
        AUTO_CODECS,
        PlanRequest,
        plan_model,
        write_plan_directory,
    )
    from splitwire.partitioner.profile_format import Profile
    from splitwire.partitioner.progress import show_progress_lines
    from splitwire.partitioner.report import outcome_json, phase_summary, plot, print_tables
    from splitwire.partitioner.signing import load_signing_key
    from splitwire.protocol import CodecSpec

    # A key that cannot sign is found now, not after minutes of measuring.
    signing_key = load_signing_key(args.sign_key) if args.sign_key else None
    show_progress_lines(quiet=getattr(args, "quiet", False))
    links = tuple(parse_link(text) for text in args.link)
    codecs = (
        AUTO_CODECS
        if args.codec == ["auto"]
        else tuple(dict.fromkeys(CodecSpec.parse(c) for c in args.codec))
    )
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if shape is None:
        from splitwire.partitioner.models import load_model

        shape = load_model(args.model).input_shape
        if shape is None:
            raise InputShapeError(
                f"{args.model} does not declare its input shape; give --input-shape"
            )
    request = PlanRequest(
        model_spec=args.model,
        input_shape=shape,
        links=links,
        codecs=codecs,
        objective=args.objective,
        accuracy_budget=args.accuracy_budget,
        jpeg_qualities=_jpeg_qualities(args.jpeg_quality),
        window=args.window,
        calibration_data=args.calibration_data,
        calibration=args.calibration,
        edge_profile=Profile.load(args.edge_profile) if args.edge_profile else None,
        cloud_profile=Profile.load(args.cloud_profile) if args.cloud_profile else None,
        edge_slowdown=args.edge_slowdown,
        threads=args.threads,
        repeats=args.repeats,
        progress=not args.json,
        reuse_measurements=Path(args.reuse_measurements) if args.reuse_measurements else None,
        ship=tuple(args.ship),
        local_fallback=not args.no_local,
        preprocess=_preprocess(args.input_mean, args.input_std, shape),
        prune=not args.no_prune,
        task=args.task,
    )
    outcome = plan_model(request)
    plan_path = Path(args.out) / "plan.yaml"
    start = time.perf_counter()
    write_plan_directory(outcome, Path(args.out), signing_key=signing_key)
    outcome.seconds["export"] = time.perf_counter() - start
    print(phase_summary(outcome), file=sys.stderr)
    if args.json:
        print(json.dumps(outcome_json(outcome, plan_path), indent=1))
    else:
        print_tables(outcome, sys.stdout, show_all=args.all)
        signed = f" (signed: {plan_path}.sig)" if signing_key else ""
        print(f"wrote {plan_path}{signed}")
    # Last: the plan and the tables are out whatever happens to the plot.
    if args.plot:
        plot(outcome, Path(args.plot))
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def _register_pack(subparsers: Any) -> None:
    # No help=: like `plan show`, it is listed in `plan`'s epilog.
    pack = subparsers.add_parser(
        PLAN_PACK,
        description=(
            "Write a self-contained directory for one side of a plan: for the cloud, plan.yaml "
            "and the tails; for the edge, plan.yaml, the heads, and the whole model for the "
            "local fallback (the all-on-edge option's head) unless --no-local. plan.yaml (and "
            "plan.yaml.sig) are copied byte for byte, so a signature still holds; the other "
            "side's halves are left out. `splitwire cloud --plan OUT` and `splitwire edge --plan "
            "OUT` load a pack (or the full directory) and check only their own halves."
        ),
        epilog="Exit codes: 0 packed, 2 bad input (the plan, --out, the key).",
    )
    pack.add_argument("directory", metavar="DIR", type=Path, help="a plan directory")
    pack.add_argument(
        "--side", required=True, choices=["edge", "cloud"], help="the runtime the pack is for"
    )
    pack.add_argument(
        "--out", required=True, type=Path, metavar="OUT", help="the pack (a new or empty directory)"
    )
    pack.add_argument(
        "--no-local",
        action="store_true",
        help="edge only: leave out the whole model; frames the cloud cannot serve are then "
        "dropped with their reason instead of computed on the edge",
    )
    pack.add_argument(
        "--plan-public-key",
        type=Path,
        metavar="KEY",
        help="refuse DIR unless plan.yaml is signed by this Ed25519 public key, and check the "
        "pack's copy the same way",
    )
    pack.add_argument("--json", action="store_true", help="print what was packed as JSON")
    pack.set_defaults(func=_pack)


def _pack(args: argparse.Namespace) -> int:
    from splitwire.partitioner.pack import pack_plan
    from splitwire.partitioner.signing import PlanTrust

    trust = PlanTrust.from_public_key(args.plan_public_key)
    result = pack_plan(
        args.directory, args.out, side=args.side, local=not args.no_local, trust=trust
    )
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        _print_pack(result, verified=trust.signed)
    return 0


def _print_pack(result: PackResult, *, verified: bool) -> None:
    from splitwire.partitioner.show import size_text

    signed = (
        "plan.yaml.sig copied, verified"
        if verified
        else "plan.yaml.sig copied, not verified: give --plan-public-key"
        if result.signed
        else "plan.yaml not signed"
    )
    print(f"packed {result.source} for the {result.manifest.side} into {result.directory}:")
    width = max(len(f.path) for f in result.files)
    for f in result.files:
        print(f"  {f.path:<{width}}  {size_text(f.bytes):>9}  {f.role}")
    print(f"  {'total':<{width}}  {size_text(result.bytes):>9}  ({signed})")
    left_out = size_text(result.left_out_bytes)
    print(f"left out: {left_out} of halves the {result.manifest.side} never runs")
