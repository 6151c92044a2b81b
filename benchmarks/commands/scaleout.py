"""``splitwire bench scaleout``: tail replicas behind nginx with a fleet of real agents. The flags,
their checks and the printed report; the measurement is :mod:`splitwire.benchmarks.scaleout`.

    splitwire bench scaleout --plan DIR [--scenario spread|kill|rolling|soak] [--sessions N] \\
        [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``scaleout`` to ``splitwire bench``."""
    scaleout = benchmarks.add_parser(
        "scaleout",
        help="tail replicas behind nginx with a fleet of real agents: spread, kill -9, "
        "rolling restart, soak",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start --replicas splitwire cloud processes on loopback, nginx in front of them "
            "(deploy/nginx/grpc-balancer.conf, grpc_pass), and --sessions edge agents in this "
            "process that reach the tails only through nginx. Scenarios:\n"
            "  spread   nothing injected: how sessions spread over the replicas\n"
            "  kill     SIGKILL one replica a third into the run; its sessions move through the "
            "agents' reconnect\n"
            "  rolling  SIGTERM each replica in turn, start it again, wait until SERVING\n"
            "  soak     nothing injected; the replicas' RSS is sampled every 5 s\n"
            "Every frame of every agent is accounted for from the agents' own frame lines."
        ),
        epilog="example: splitwire bench scaleout --plan plans/resnet18 --cut c0023 "
        "--scenario soak --sessions 256 --fps 0.5 --duration 600",
    )
    scaleout.add_argument("--plan", required=True, metavar="DIR", help="a plan directory")
    scaleout.add_argument("--scenario", choices=("spread", "kill", "rolling", "soak"),
                          default="spread")  # fmt: skip
    scaleout.add_argument("--sessions", type=int, default=16, metavar="N", help="default 16")
    scaleout.add_argument("--replicas", type=int, default=2, metavar="N", help="default 2")
    scaleout.add_argument("--fps", type=float, default=5.0, help="per agent (default 5)")
    scaleout.add_argument("--duration", type=float, default=30.0, metavar="S", help="default 30")
    scaleout.add_argument("--window", type=int, default=4, metavar="N", help="per agent (4)")
    scaleout.add_argument("--budget-ms", type=float, default=3000.0, metavar="MS",
                          help="each frame's budget from capture (default 3000)")  # fmt: skip
    scaleout.add_argument("--cut", metavar="ID", help="cut (default: the plan's choice)")
    scaleout.add_argument("--codec", metavar="CODEC", help="codec (default: the plan's choice)")
    scaleout.add_argument("--json", action="store_true", help="print the run as JSON")
    scaleout.set_defaults(func=_scaleout)


def _scaleout(args: argparse.Namespace) -> int:

    from splitwire.benchmarks.scaleout import ScaleoutLoad, report, run_scaleout, targets

    load = ScaleoutLoad(
        plan_dir=Path(args.plan), scenario=args.scenario, sessions=args.sessions,
        replicas=args.replicas, fps=args.fps, duration_s=args.duration, window=args.window,
        budget_ms=args.budget_ms, cut=args.cut, codec=args.codec,
    )  # fmt: skip
    run = run_scaleout(load, progress=lambda text: print(text, file=sys.stderr, flush=True))
    checks = targets(run)
    if args.json:
        print(json.dumps({**run.as_json(), "targets": checks}, indent=1))
        return 0
    print(report(run))
    for check in checks:
        mark = "met" if check["met"] else "MISS"
        print(f"  target {check['name']}: {check['measured']} ({check['target']}) {mark}")
    return 0
