"""``splitwire bench``: benchmarks that print measured figures next to their reference.

splitwire bench codec [--models resnet18 ...] [--specs int8+zstd1 ...] [--json] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``bench`` and its benchmarks to the ``splitwire`` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="run a benchmark (figures are printed with the reference they are compared with)",
        description="Benchmarks measure and print; they are not tests. Results vary ±10-30 % "
        "between runs on small machines: compare ratios measured in one run.",
    )
    which = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    codec = which.add_parser(
        "codec",
        help="wire bytes, error and speed of every codec on real activations",
        description=(
            "Encode activations of the zoo models at several depths with every codec and "
            "compare wire bytes with pickled float32 (what ParetoPipe-style tools send), "
            "relative RMS error, and encode/decode speed in MB/s of fp32-equivalent data."
        ),
    )
    codec.add_argument("--models", nargs="+", metavar="NAME", help="zoo models (default: all)")
    codec.add_argument("--specs", nargs="+", metavar="CODEC", help="codecs (default: a sweep)")
    codec.add_argument("--repeats", type=int, default=15, help="timed runs per figure (median)")
    codec.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    codec.add_argument("--json", action="store_true", help="print a JSON list of records")
    codec.add_argument(
        "--check", action="store_true", help="exit 1 if a target of the foundation issue is missed"
    )
    codec.set_defaults(func=_codec)

    fidelity = which.add_parser(
        "fidelity",
        help="predicted vs measured compute of exported halves (the partitioner's fidelity)",
        description=(
            "Profile a model, export the halves of every N-th cut with torch.export and time "
            "them; compare with the profile's prediction (sum of node times + call overhead)."
        ),
    )
    fidelity.add_argument("--model", default="zoo:resnet50", metavar="SPEC")
    fidelity.add_argument("--input-shape", default="1,3,224,224", metavar="N,C,H,W")
    fidelity.add_argument("--every", type=int, default=3, metavar="N", help="every N-th cut")
    fidelity.add_argument("--threads", type=int, default=1)
    fidelity.add_argument("--repeats", type=int, default=15)
    fidelity.add_argument("--json", action="store_true")
    fidelity.set_defaults(func=_fidelity)

    planning = which.add_parser(
        "planning",
        help="time each phase of splitwire plan (5 codecs x 4 links)",
        description="Run the planner once and time each phase; the decision phase is repeated.",
    )
    planning.add_argument("--model", default="zoo:resnet50", metavar="SPEC")
    planning.add_argument("--input-shape", default="1,3,224,224", metavar="N,C,H,W")
    planning.add_argument("--calibration", type=int, default=2)
    planning.add_argument("--threads", type=int, default=1)
    planning.add_argument("--repeats", type=int, default=3)
    planning.add_argument("--json", action="store_true")
    planning.set_defaults(func=_planning)


def _codec(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from splitwire.benchmarks.codec import (
        DEFAULT_SPECS,
        TAPS,
        CodecRecord,
        capture_activations,
        check_targets,
        measure,
    )
    from splitwire.protocol import CodecSpec
    from splitwire.errors import SplitwireError

    models = args.models or list(TAPS)
    unknown = [m for m in models if m not in TAPS]
    if unknown:
        raise SplitwireError(f"no activation taps for {unknown}; expected some of {list(TAPS)}")
    specs = [str(CodecSpec.parse(s)) for s in (args.specs or DEFAULT_SPECS)]
    if args.repeats < 1 or args.threads < 1:
        raise SplitwireError("--repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)

    records: list[CodecRecord] = []
    with tqdm(
        total=sum(len(TAPS[m]) for m in models),
        desc="activations",
        unit="act",
        file=sys.stderr,
        disable=None,
    ) as progress:
        for model in models:
            for layer, activation in capture_activations(model):
                records.extend(measure(model, layer, activation, specs, repeats=args.repeats))
                progress.update()
    checks = check_targets(records)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=1))
    else:
        _print_table(records)
        if checks:
            print("\nTargets (ResNet-18 stage outputs, one thread):")
            for check in checks:
                verdict = "PASS" if check.passed else "MISS"
                print(f"  {verdict}  {check.description}: {check.measured}")
    return 1 if args.check and not all(c.passed for c in checks) else 0


def _print_table(records: list[Any]) -> None:
    header = (
        f"{'model':<13} {'layer':<12} {'shape':<16} {'codec':<11} {'wire B':>9} "
        f"{'x pickle':>8} {'rel RMSE':>9} {'enc MB/s':>9} {'dec MB/s':>9}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for r in records:
        if last is not None and (r.model, r.layer) != last:
            print()
        last = (r.model, r.layer)
        shape = "x".join(map(str, r.shape))
        print(
            f"{r.model:<13} {r.layer:<12} {shape:<16} {r.spec:<11} {r.wire_bytes:>9} "
            f"{r.ratio_vs_pickle:>8.2f} {r.rel_rmse:>9.2e} {r.encode_mb_s:>9.0f} "
            f"{r.decode_mb_s:>9.0f}"
        )
    if records:
        print(
            f"\nreference: pickled fp32 (pickle.dumps + loads) runs at "
            f"{min(r.pickle_mb_s for r in records):.0f}-{max(r.pickle_mb_s for r in records):.0f} "
            "MB/s in this run; 'x pickle' = pickled bytes / wire bytes (header included)"
        )


def _fidelity(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from splitwire.benchmarks.fidelity import run_fidelity
    from splitwire.partitioner.cli import parse_shape

    with tqdm(desc="cuts", unit="cut", file=sys.stderr, disable=None) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        records = run_fidelity(
            args.model, parse_shape(args.input_shape), every=args.every, threads=args.threads,
            repeats=args.repeats, progress=advance,
        )  # fmt: skip
    within_raw = sum(r.error(corrected=False) <= 0.10 for r in records)
    within = sum(r.error(corrected=True) <= 0.10 for r in records)
    halves = sum(r.halves_within(0.10) for r in records)
    if args.json:
        print(json.dumps({
            "records": [r.__dict__ for r in records],
            "within_10pct_sum": within / len(records),
            "within_10pct_sum_raw": within_raw / len(records),
            "within_10pct_each_half": halves / len(records),
        }, indent=1))  # fmt: skip
        return 0
    print(f"{'cut':<6} {'name':<22} {'pred head':>9} {'head':>9} {'pred tail':>9} {'tail':>9} "
          f"{'drift':>6} {'err':>6}")  # fmt: skip
    for r in records:
        print(f"{r.cut:<6} {r.name[:22]:<22} {r.predicted_head_ms:>9.2f} {r.head_ms:>9.2f} "
              f"{r.predicted_tail_ms:>9.2f} {r.tail_ms:>9.2f} {r.drift:>6.2f} "
              f"{100 * r.error(corrected=True):>5.1f}%")  # fmt: skip
    n = len(records)
    print(f"\npredicted head+tail within 10 % of the exported halves: {within}/{n} cuts "
          f"({100 * within / n:.0f} %; target >= 80 %), without drift correction "
          f"{within_raw}/{n}; each half within 10 %: {halves}/{n}")  # fmt: skip
    return 0


def _planning(args: argparse.Namespace) -> int:
    from splitwire.benchmarks.planning import run_planning
    from splitwire.partitioner.cli import parse_shape

    result = run_planning(
        args.model, parse_shape(args.input_shape), calibration=args.calibration,
        threads=args.threads, repeats=args.repeats, progress=not args.json,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for key, value in result.items():
        print(f"{key:<22} {value:.3f}" if isinstance(value, float) else f"{key:<22} {value}")
    verdict = "PASS" if result["decide_s"] < 10 else "MISS"
    print(
        f"\n{verdict}  deciding {result['codecs']} codecs x {result['links']} links over "
        f"{result['cuts']} cuts: {result['decide_s']:.2f} s (target < 10 s after profiling); "
        f"measuring took {result['measure_s']:.1f} s, exporting {result['export_s']:.1f} s; "
        f"a re-plan with given profiles and reused measurements took "
        f"{result['replan_without_export_s']:.1f} s before exporting, {result['replan_s']:.1f} s "
        "in all"
    )
    return 0
