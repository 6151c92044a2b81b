"""``splitwire bench planning``: the time of each phase of ``splitwire plan``. The flags, their
checks and the printed report; the measurement is :mod:`splitwire.benchmarks.planning`.

    splitwire bench planning [--model SPEC] [--link LINK ...] [--target S] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``planning`` to ``splitwire bench``."""
    planning = benchmarks.add_parser(
        "planning",
        help="time each phase of splitwire plan (5 codecs x 4 links)",
        description="Run the planner once and time each phase, from capture to the written "
        "plan, against a target; the decision phase is repeated.",
    )
    planning.add_argument(
        "--model",
        metavar="SPEC",
        help="plan this model only (default: the three targets, ResNet-50, hf:ViTModel and "
        "the pretrained EfficientNet-Lite0, each against its target)",
    )
    planning.add_argument("--input-shape", default="1,3,224,224", metavar="N,C,H,W")
    planning.add_argument(
        "--link",
        action="append",
        metavar="LINK",
        help="links to plan for (repeatable; default ethernet, wifi, lte, 3g)",
    )
    planning.add_argument(
        "--target",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds from capture to the written plan (default 60: ResNet-50, 4 links)",
    )
    planning.add_argument(
        "--no-prune", action="store_true", help="measure every candidate (no pruning)"
    )
    planning.add_argument(
        "--calibration", type=int, metavar="N", help="calibration inputs (default: plan's, 32)"
    )
    planning.add_argument("--threads", type=int, default=1)
    planning.add_argument("--repeats", type=int, default=3)
    planning.add_argument("--json", action="store_true")
    planning.set_defaults(func=_planning)


def _planning(args: argparse.Namespace) -> int:
    from splitwire.benchmarks.planning import DEFAULT_LINKS, run_planning, run_targets, target_line
    from splitwire.partitioner.cli import parse_shape
    from splitwire.partitioner.planner import DEFAULT_CALIBRATION

    if args.model is None:  # the three targets, each against its own
        results = run_targets(repeats=args.repeats, progress=not args.json)
        if args.json:
            print(json.dumps(results, indent=1))
            return 0
        for result in results:
            print(target_line(result))
        return 0
    result = run_planning(
        args.model, parse_shape(args.input_shape),
        calibration=args.calibration or DEFAULT_CALIBRATION,
        threads=args.threads, repeats=args.repeats, progress=not args.json,
        links=tuple(args.link or DEFAULT_LINKS), prune=not args.no_prune,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for key, value in result.items():
        print(f"{key:<24} {value:.3f}" if isinstance(value, float) else f"{key:<24} {value}")
    total = result["capture_to_plan_s"]
    print(
        f"\n{'PASS' if total <= args.target else 'MISS'}  {args.model} at {args.input_shape}, "
        f"{result['links']} links: capture to written plan {total:.1f} s (target <= "
        f"{args.target:g} s); {result['not_measured']} of {result['lossy']} lossy candidates "
        "not measured (an exact one beats each on every link)"
    )
    verdict = "PASS" if result["decide_s"] < 10 else "MISS"
    print(
        f"{verdict}  deciding {result['codecs']} codecs x {result['links']} links over "
        f"{result['cuts']} cuts: {result['decide_s']:.2f} s (target < 10 s after profiling); "
        f"measuring took {result['measure_s']:.1f} s, exporting {result['export_s']:.1f} s; "
        f"a re-plan with given profiles and reused measurements took "
        f"{result['replan_without_export_s']:.1f} s before exporting, {result['replan_s']:.1f} s "
        "in all"
    )
    return 0
