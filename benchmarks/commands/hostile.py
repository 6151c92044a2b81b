"""``splitwire bench hostile``: every attack of the threat model against real processes. The flags,
their checks and the printed report; the measurement is :mod:`splitwire.benchmarks.hostile`.

    splitwire bench hostile [--plan DIR] [--attack NAME ...] [--quiet-s S] [--attack-s S] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``hostile`` to ``splitwire bench``."""
    hostile = benchmarks.add_parser(
        "hostile",
        help="every attack of the threat model against real processes: memory, bystander, verdict",
        description=(
            "Run each attack against a fresh splitwire cloud process on a loopback port (and "
            "splitwire edge against a fake tail, and crafted plans against both) while a "
            "well-behaved session is served beside it. Per attack: what was sent, the attacked "
            "process's peak RSS growth (the kernel's VmHWM), the bystander's p95 latency during "
            "the attack against its quiet p95 just before (same run), and the verdict against "
            "the targets: RSS growth <= 200 MB, p95 ratio <= 2, the attack's own checks. Exit 1 "
            "if any attack is not refused or bounded."
        ),
    )
    hostile.add_argument(
        "--plan", metavar="DIR",
        help="plan directory to attack (default: plan ResNet-18 at 64x64 into a temporary "
        "directory first, ~10 s)",
    )  # fmt: skip
    hostile.add_argument("--cut", metavar="ID", help="cut the sessions use (default: a split)")
    hostile.add_argument(
        "--attack", action="append", metavar="NAME",
        help="run only this attack (repeatable; default: all; --list shows them)",
    )  # fmt: skip
    hostile.add_argument("--list", action="store_true", help="list the attacks and exit")
    hostile.add_argument(
        "--quiet-s", type=float, default=5.0, metavar="S",
        help="the bystander's quiet stretch before each attack (default 5)",
    )  # fmt: skip
    hostile.add_argument(
        "--attack-s", type=float, default=10.0, metavar="S",
        help="how long each attack lasts (default 10; some need longer and take it)",
    )  # fmt: skip
    hostile.add_argument("--json", action="store_true", help="print the records as JSON")
    hostile.set_defaults(func=_hostile)


def _hostile(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from splitwire.benchmarks.hostile import attack_names, default_plan, run_hostile, table
    from splitwire.benchmarks.tail import default_cut
    from splitwire.errors import SplitwireError
    from splitwire.partitioner.runtime import open_plan

    known = attack_names()
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.attack or ()) - set(known))
    if unknown:
        raise SplitwireError(f"--attack {', '.join(unknown)}: expected one of {', '.join(known)}")
    if args.quiet_s <= 0 or args.attack_s <= 0:
        raise SplitwireError("--quiet-s and --attack-s must be > 0")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="splitwire-hostile-plan-") as scratch:
        if args.plan:
            plan_dir = Path(args.plan)
        else:
            log("planning ResNet-18 at 64x64 for the attacks (~10 s)")
            plan_dir = default_plan(Path(scratch) / "plan")
        plan = open_plan(plan_dir)
        cut = args.cut or default_cut(plan)
        records = asyncio.run(
            run_hostile(
                plan_dir=plan_dir, plan=plan, cut=cut, attacks=args.attack or known,
                quiet_s=args.quiet_s, attack_s=args.attack_s, progress=log,
            )
        )  # fmt: skip
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2, allow_nan=False))
    else:
        print(table(records))
    return 1 if any(r.failures for r in records) else 0
