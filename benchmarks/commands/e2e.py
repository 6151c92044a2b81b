"""``splitwire bench e2e``: the planner's predictions against the real agent and tail behind
emulated links. The flags, their checks and the printed report; the measurement is
:mod:`splitwire.benchmarks.e2e`.

    splitwire bench e2e --model SPEC --link LINK [--link ...] [--edge-slowdown K] [--frames N] \\
        [--camera plan|synthetic|skimage|dir:PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``e2e`` to ``splitwire bench``."""
    e2e = benchmarks.add_parser(
        "e2e",
        help="the planner's predictions against the real agent and tail behind emulated links",
        description=(
            "Plan the model for the links (or take --plan), then on each link, behind the link "
            "emulator (splitwire netem), run the real agent against a `splitwire cloud` child "
            "process for each measured cut with the planner's best codec there, the planner's "
            "pick and the baselines (all-on-edge, all-in-cloud raw and JPEG): p50/p95 latency "
            "with one frame in flight, throughput with the plan's window, each next to the "
            "planner's prediction. Cuts: all of them on models with at most 12, else each "
            "link's pick, 5 front cuts per link and an even spread of 10 more. PyTorch RPC "
            "(TensorPipe, pickled fp32 tensors) runs beside the agent at the pick's cut and "
            "window, no slowdown, on loopback and through the emulator on each 20 Mbit/s link. "
            "Targets: fidelity (predicted within 15 %% of measured p50 for >= 80 %% of options "
            "per link), choice (pick within 10 %% of the measured best within the accuracy "
            "budget), >= 1.3x p50 over all-on-edge and JPEG on one link, >= 2x torch RPC "
            "throughput on 20 Mbit/s and >= 1x on loopback, the agent's uplink estimate within "
            "20 %% of the emulator's achieved rate on runs that kept the uplink busy."
        ),
    )
    e2e.add_argument("--model", default="zoo:resnet18", metavar="SPEC")
    e2e.add_argument("--input-shape", default="1,3,224,224", metavar="N,C,H,W")
    e2e.add_argument(
        "--link",
        action="append",
        metavar="LINK",
        help="a link to run on (repeatable; default bw=20mbit,rtt=40ms and lte)",
    )
    e2e.add_argument(
        "--edge-slowdown",
        type=float,
        default=1.0,
        metavar="K",
        help="emulate an edge K times slower: planned so, heads sleep (K-1)x",
    )
    e2e.add_argument(
        "--frames",
        type=int,
        default=30,
        metavar="N",
        help="measured frames per run (two runs per option; default %(default)s)",
    )
    e2e.add_argument("--warmup", type=int, default=5, metavar="N")
    e2e.add_argument(
        "--max-run-s", type=float, default=20.0, metavar="S",
        help="stop taking frames after S seconds per run (slow options on slow links)",
    )  # fmt: skip
    e2e.add_argument(
        "--plan",
        type=Path,
        metavar="DIR",
        help="use this plan (its shipped cuts) instead of planning",
    )
    e2e.add_argument(
        "--keep-plan",
        type=Path,
        metavar="DIR",
        help="write the plan made here to DIR and keep it (for --plan DIR in a later run)",
    )
    e2e.add_argument(
        "--reuse-measurements",
        type=Path,
        metavar="DIR",
        help="plan with the bytes and accuracy of an earlier plan of the same model (e.g. a "
        "--keep-plan DIR of another run): no tail runs",
    )
    e2e.add_argument("--cuts", nargs="+", metavar="ID", help="measure these cuts only")
    e2e.add_argument(
        "--camera",
        default="plan",
        metavar="SOURCE",
        help="what the agent's camera shows: 'plan' (default: the kind of frames the plan was "
        "calibrated on, synthetic frames or photo crops, seed 1234, since bytes follow the "
        "content), 'synthetic' (the agent's own scene), 'skimage' (scikit-image's photos; a plan "
        "made here is then calibrated on them too) or "
        "'dir:PATH' (crops of the images in PATH)",
    )
    e2e.add_argument(
        "--picks-only",
        action="store_true",
        help="measure each link's pick and the baselines only (no other cut)",
    )
    e2e.add_argument("--no-rpc", action="store_true", help="skip the PyTorch RPC comparison")
    e2e.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="predicted vs measured p50 per link"
    )
    e2e.add_argument("--json", action="store_true", help="print records and checks as JSON")
    e2e.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="FILE.json",
        help="measure nothing: print the 'does a split win?' table of these saved --json "
        "results (runs with --picks-only)",
    )
    e2e.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    e2e.set_defaults(func=_e2e)


def _e2e(args: argparse.Namespace) -> int:
    from splitwire.benchmarks.e2e import plot, run_e2e, table
    from splitwire.errors import SplitwireError
    from splitwire.partitioner.cli import parse_shape

    if args.frames < 2 or args.warmup < 0 or args.edge_slowdown < 1:
        raise SplitwireError("expected --frames >= 2, --warmup >= 0, --edge-slowdown >= 1")
    if args.plan is not None and (args.keep_plan or args.reuse_measurements):
        raise SplitwireError(
            "--keep-plan and --reuse-measurements are for the plan made here; with --plan DIR "
            "there is none"
        )

    if args.table:
        from splitwire.benchmarks.e2e import split_table

        results = []
        for path in args.table:
            try:
                results.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise SplitwireError(
                    f"--table {path}: expected a saved `splitwire bench e2e --json` result: {exc}"
                ) from exc
        try:
            print(split_table(results))
        except (KeyError, StopIteration) as exc:
            raise SplitwireError(
                f"--table: a result lacks {exc}: expected `splitwire bench e2e --json` output"
            ) from exc
        return 0

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    result = run_e2e(
        model=args.model, input_shape=parse_shape(args.input_shape),
        links=args.link or ["bw=20mbit,rtt=40ms", "lte"], edge_slowdown=args.edge_slowdown,
        frames=args.frames, warmup=args.warmup, plan_dir=args.plan, cuts=args.cuts,
        rpc=not args.no_rpc, max_run_s=args.max_run_s, camera=args.camera, keep_plan=args.keep_plan,
        reuse=args.reuse_measurements, picks_only=args.picks_only, progress=progress,
    )  # fmt: skip
    if args.plot is not None:
        plot(result, args.plot)
    print(json.dumps(result, indent=1) if args.json else table(result))
    failed = [c for c in result["checks"] if not c["met"] and not c["needed_on_one_link"]]
    per_link = [c for c in result["checks"] if c["needed_on_one_link"]]
    return 1 if args.check and (failed or (per_link and not any(c["met"] for c in per_link))) else 0
