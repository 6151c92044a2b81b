"""``splitwire bench fidelity``: each exported half's measured compute against the profile's
prediction. The flags, their checks and the printed report; the measurement is
:mod:`splitwire.benchmarks.fidelity`.

    splitwire bench fidelity [--model SPEC] [--every N] [--max-cuts N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``fidelity`` to ``splitwire bench``."""
    fidelity = benchmarks.add_parser(
        "fidelity",
        help="each exported half's measured compute against the profile's prediction",
        description=(
            "Profile a model, export and save the halves of every N-th cut as `splitwire plan` "
            "writes them, load each archive once and time it (median of --repeats, round-robin "
            "with the whole graph). Each half is compared with its own prediction, as the "
            "planner makes it: the profile's times of its nodes plus one call overhead. The "
            "headline is the fraction of cuts whose head and tail are both within 10 % "
            "(target >= 90 %), drift-corrected (the whole graph's time now against the "
            "profile's: how much the machine's speed moved); raw figures, per-half counts and "
            "the fractions without halves predicted under 1 ms (mostly call overhead) follow."
        ),
    )
    fidelity.add_argument("--model", default="zoo:resnet50", metavar="SPEC")
    fidelity.add_argument("--input-shape", default="1,3,224,224", metavar="N,C,H,W")
    fidelity.add_argument("--every", type=int, default=6, metavar="N", help="every N-th cut")
    fidelity.add_argument(
        "--max-cuts", type=int, metavar="N", help="at most N of those cuts, spread evenly"
    )
    fidelity.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    fidelity.add_argument(
        "--repeats", type=int, default=15, help="profile passes and timed rounds per cut"
    )
    fidelity.add_argument("--json", action="store_true", help="print records and fractions")
    fidelity.set_defaults(func=_fidelity)


def _fidelity(args: argparse.Namespace) -> int:
    import statistics
    from dataclasses import asdict

    from tqdm import tqdm

    from splitwire.benchmarks.fidelity import TINY_MS, TOLERANCE, run_fidelity, summarize
    from splitwire.errors import SplitwireError
    from splitwire.partitioner.cli import parse_shape

    if args.every < 1 or args.threads < 1 or args.repeats < 1:
        raise SplitwireError("--every, --threads and --repeats must be at least 1")
    if args.max_cuts is not None and args.max_cuts < 1:
        raise SplitwireError("--max-cuts must be at least 1")
    with tqdm(desc="cuts", unit="cut", file=sys.stderr, disable=None) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        records = run_fidelity(
            args.model, parse_shape(args.input_shape), every=args.every, threads=args.threads,
            repeats=args.repeats, progress=advance, max_cuts=args.max_cuts,
        )  # fmt: skip
    if not records:
        raise SplitwireError(f"no cut to benchmark with --every {args.every}; choose a smaller N")
    corrected = summarize(records, corrected=True)
    raw = summarize(records, corrected=False)
    if args.json:
        print(json.dumps({
            "model": args.model, "input_shape": args.input_shape, "tolerance": TOLERANCE,
            "tiny_ms": TINY_MS, "records": [r.as_json() for r in records],
            "within": {k: asdict(v) | {"fraction": v.value} for k, v in corrected.items()},
            "within_raw": {k: asdict(v) | {"fraction": v.value} for k, v in raw.items()},
        }, indent=1))  # fmt: skip
        return 0
    print(f"{args.model} at {args.input_shape}: predicted (profile) / measured (exported .pt2, "
          "drift-corrected) ms, ratio = predicted / measured; * = outside 10 %, "
          f"~ = predicted < {TINY_MS:g} ms\n")  # fmt: skip
    print(f"{'cut':<6} {'name':<24} {'head pred':>9} {'meas':>8} {'ratio':>6}  "
          f"{'tail pred':>9} {'meas':>8} {'ratio':>6}  {'drift':>5}")  # fmt: skip
    for r in records:
        cells = []
        for half in ("head", "tail"):
            mark = ("" if r.within(half) else "*") + ("~" if r.tiny(half) else "")
            cells.append(
                f"{r.predicted(half):>9.2f} {r.measured(half):>8.2f} {r.ratio(half):>6.3f}{mark:<2}"
            )
        print(f"{r.cut:<6} {r.name[:24]:<24} {cells[0]} {cells[1]} {r.drift:>5.2f}")  # fmt: skip
    tiny = sum(r.tiny(h) for r in records for h in ("head", "tail"))
    print(
        f"\nboth halves within 10 % of their exported archive: {corrected['cuts']} of the "
        f"cuts benchmarked (target >= 90 %); heads {corrected['heads']}, tails "
        f"{corrected['tails']}  [drift-corrected]\n"
        f"without halves predicted under {TINY_MS:g} ms ({tiny} of them): cuts "
        f"{corrected['cuts_without_tiny']}, heads {corrected['heads_without_tiny']}, tails "
        f"{corrected['tails_without_tiny']}\n"
        f"raw (no drift correction): cuts {raw['cuts']}, heads {raw['heads']}, tails "
        f"{raw['tails']}; without tiny halves: cuts {raw['cuts_without_tiny']}\n"
        f"drift (whole graph now / the profile's {records[0].whole_ms / records[0].drift:.1f} "
        f"ms; each round's corrects that round's halves): median "
        f"{statistics.median(r.drift for r in records):.3f}, per cut "
        f"{min(r.drift for r in records):.3f}-{max(r.drift for r in records):.3f}"
    )
    return 0
