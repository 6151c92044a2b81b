"""``splitwire bench adaptive``: the agent's cut switch on a link that drops, against staying on
the first plan. The flags, their checks and the printed report; the measurement is
:mod:`splitwire.benchmarks.adaptive`.

    splitwire bench adaptive --model SPEC --trace FILE [--edge-slowdown K] [--fps F] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``adaptive`` to ``splitwire bench``."""
    adaptive = benchmarks.add_parser(
        "adaptive",
        help="the agent's cut switch on a link that drops, against staying on the first plan",
        description=(
            "Plan the model for each state of a link trace, then replay the trace in the link "
            "emulator twice while the real agent streams paced frames to a `splitwire cloud` "
            "child process: once with --policy auto, once fixed on the first state's pick. "
            "Prints p50/p95 latency before and after the first change, the options the auto "
            "run moved to, and the target: p95 after the change, fixed / auto >= 1.5."
        ),
        epilog="trace example (YAML): [{t: 0, bw: 50mbit, rtt: 20ms}, {t: 10, bw: 2mbit, "
        "rtt: 60ms}]; a trace with 'end: S' runs S seconds",
    )
    adaptive.add_argument("--model", default="zoo:resnet18", metavar="SPEC")
    adaptive.add_argument("--input-shape", default="1,3,224,224", metavar="N,C,H,W")
    adaptive.add_argument(
        "--trace",
        type=Path,
        required=True,
        metavar="FILE",
        help="a link trace (.yaml/.csv; stall entries are outages)",
    )
    adaptive.add_argument(
        "--plan",
        type=Path,
        metavar="DIR",
        help="use this plan instead of planning for the trace's states",
    )
    adaptive.add_argument("--edge-slowdown", type=float, default=1.0, metavar="K")
    adaptive.add_argument("--fps", type=float, default=10.0, metavar="F")
    adaptive.add_argument(
        "--duration", type=float, metavar="S", help="seconds per run (default: the trace's length)"
    )
    adaptive.add_argument(
        "--hold",
        type=float,
        default=1.0,
        metavar="S",
        help="the auto policy's hold before a switch (default %(default)s)",
    )
    adaptive.add_argument("--json", action="store_true", help="print the result as JSON")
    adaptive.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    adaptive.set_defaults(func=_adaptive)


def _adaptive(args: argparse.Namespace) -> int:
    from splitwire.benchmarks.adaptive import run_adaptive, table
    from splitwire.errors import SplitwireError
    from splitwire.partitioner.cli import parse_shape

    if args.fps <= 0 or args.edge_slowdown < 1 or args.hold < 0:
        raise SplitwireError("expected --fps > 0, --edge-slowdown >= 1, --hold >= 0")
    result = run_adaptive(
        model=args.model, input_shape=parse_shape(args.input_shape), trace_path=args.trace,
        edge_slowdown=args.edge_slowdown, fps=args.fps, duration_s=args.duration,
        hold_s=args.hold, plan_dir=args.plan,
        progress=lambda m: print(f"... {m}", file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 1 if args.check and not result["check"]["met"] else 0
