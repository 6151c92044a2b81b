"""``splitwire bench``: benchmarks that print measured figures next to their reference.

splitwire bench codec [--models resnet18 ...] [--specs int8+zstd1 ...] [--json] [--check]
splitwire bench tail --plan DIR [--cut ID] [--sessions N] [--duration S] [--max-batch N] [--json]
splitwire bench pipeline [--model SPEC] [--after BLOCK] [--window N] [--frames N] [--json]
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

    tail = which.add_parser(
        "tail",
        help="load a real splitwire cloud process with N sessions; batching gain, losses, RSS",
        description=(
            "Start splitwire cloud on a free loopback port, open N sessions from this process "
            "that send pre-encoded real activations (no head compute) and read the results; "
            "report frames/s, p50/p95/p99 latency (send to result, this process's clock), "
            "errors by code, frames lost, the server's RSS after warm-up and at the end, and "
            "the batch sizes seen. The same invocation runs again with --max-batch 1 and "
            "prints the batching gain, and measures the service's own cost per frame (one "
            "session, one frame in flight: round trip minus tail compute)."
        ),
    )
    tail.add_argument("--plan", required=True, metavar="DIR", help="a plan directory")
    tail.add_argument("--cut", metavar="ID", help="cut to load (default: the plan's split)")
    tail.add_argument(
        "--codec", default="int8+zstd1", metavar="CODEC", help="codec (default int8+zstd1)"
    )
    tail.add_argument("--sessions", type=int, default=32, metavar="N", help="default 32")
    tail.add_argument("--duration", type=float, default=60.0, metavar="S", help="default 60")
    tail.add_argument("--max-batch", type=int, default=8, metavar="N", help="default 8")
    tail.add_argument(
        "--window", type=int, default=2, metavar="N", help="frames in flight per session (2)"
    )
    tail.add_argument(
        "--queue-budget-ms", type=int, default=0, metavar="MS",
        help="each frame's queue budget (default 0: none)",
    )  # fmt: skip
    tail.add_argument("--threads", type=int, default=1, help="the server's torch threads (1)")
    tail.add_argument("--no-reference", action="store_true", help="skip the --max-batch 1 run")
    tail.add_argument(
        "--overhead-frames", type=int, default=300, metavar="N",
        help="frames of the service-cost measurement (0 skips it; default 300)",
    )  # fmt: skip
    tail.add_argument("--json", action="store_true", help="print the runs as JSON")
    tail.set_defaults(func=_tail)

    pipeline = which.add_parser(
        "pipeline",
        help="the edge agent's pipelining, against its stages alone and against PyTorch RPC",
        description=(
            "Run the real agent against a `splitwire cloud` child process on loopback: ResNet-50 "
            "cut after layer2 at window 1 and 4 (throughput against 1 / slowest stage), the "
            "same cut over PyTorch RPC (TensorPipe, fp32 tensors, same window), and the agent's "
            "own cost per frame on ResNet-18 cut after layer1. Plans are made once into "
            "out/bench/pipeline/."
        ),
    )
    pipeline.add_argument("--model", default="zoo:resnet50", metavar="SPEC")
    pipeline.add_argument("--after", default="layer2", metavar="BLOCK", help="cut after this block")
    pipeline.add_argument("--codec", default="int8+zstd1")
    pipeline.add_argument("--window", type=int, default=4, metavar="N")
    pipeline.add_argument("--frames", type=int, default=60, metavar="N", help="measured frames")
    pipeline.add_argument("--warmup", type=int, default=8, metavar="N")
    pipeline.add_argument("--overhead-model", default="zoo:resnet18", metavar="SPEC")
    pipeline.add_argument("--overhead-after", default="layer1", metavar="BLOCK")
    pipeline.add_argument("--no-rpc", action="store_true", help="skip the PyTorch RPC reference")
    pipeline.add_argument("--json", action="store_true", help="print records and checks as JSON")
    pipeline.add_argument(
        "--check", action="store_true", help="exit 1 if a target of the edge agent issue is missed"
    )
    pipeline.set_defaults(func=_pipeline)


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
    from splitwire.errors import SplitwireError
    from splitwire.protocol import CodecSpec

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


def _tail(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from splitwire.benchmarks.tail import (
        TailLoad,
        default_cut,
        median,
        run_load,
        service_overhead,
        summary,
    )
    from splitwire.errors import SplitwireError
    from splitwire.partitioner.runtime import open_plan

    for flag in ("sessions", "max_batch", "window", "threads"):
        if getattr(args, flag) < 1:
            raise SplitwireError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.duration <= 0:
        raise SplitwireError("--duration must be > 0")
    plan = open_plan(Path(args.plan))
    cut = args.cut or default_cut(plan)
    plan.crossing(cut, args.codec)  # a PlanError now, not in the server
    load = TailLoad(
        plan_dir=Path(args.plan), cut=cut, codec=args.codec, sessions=args.sessions,
        duration_s=args.duration, max_batch=args.max_batch, window=args.window,
        queue_budget_ms=args.queue_budget_ms, threads=args.threads,
    )  # fmt: skip
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.json else (
        lambda text: None
    )  # fmt: skip
    log(f"run 1: {load.sessions} sessions, max batch {load.max_batch}, {load.duration_s:.0f} s")
    runs = [run_load(load)]
    if not args.no_reference and load.max_batch != 1:
        log(f"run 2 (reference): {load.sessions} sessions, max batch 1")
        runs.append(run_load(dataclasses.replace(load, max_batch=1)))
    overhead = echo = None
    if args.overhead_frames > 0:
        log(f"service cost: 1 session, 1 frame in flight, {args.overhead_frames} frames")
        overhead, echo = service_overhead(load, frames=args.overhead_frames)
    gain = runs[0].fps / runs[1].fps if len(runs) > 1 and runs[1].fps else None
    if args.json:
        print(json.dumps({
            "cut": cut, "codec": args.codec, "runs": [r.as_json() for r in runs],
            "batching_gain": gain,
            "overhead": overhead.as_json() if overhead else None,
            "grpc_echo": echo.as_json() if echo else None,
        }, indent=1))  # fmt: skip
        return 0
    first = runs[0]
    print(
        f"cut {cut} ({plan.plan.cut(cut).name}), {args.codec}, {first.frame_bytes} B per "
        f"frame, window {load.window} per session, server with {load.threads} torch thread(s)\n"
    )
    print(summary(runs))
    print()
    errors = sum(first.errors.values())
    verdicts = [
        (first.lost == 0 and not first.session_failures,
         f"frames lost: {first.lost}, session failures: {len(first.session_failures)} "
         "(target 0)"),
        (errors == 0, f"errors: {errors} {dict(first.errors)} (target 0 at 32 sessions; at 256 "
                      "every frame answered, each counted)"),
        (first.rss_growth < 0.10,
         f"server RSS after warm-up {first.rss_warm_mb:.0f} MB, at the end "
         f"{first.rss_end_mb:.0f} MB: {100 * first.rss_growth:+.1f} % (target < +10 %)"),
    ]  # fmt: skip
    if gain is not None:
        verdicts.append((gain >= 1.5, f"batching gain: {first.fps:.1f} / {runs[1].fps:.1f} "
                         f"frames/s = {gain:.2f}x (max batch {load.max_batch} vs 1; target "
                         ">= 1.5x)"))  # fmt: skip
    if overhead is not None and echo is not None:
        cost = overhead.percentile(50, overhead.overheads_ms)
        floor = echo.percentile(50, echo.overheads_ms)
        steps = overhead.percentile(50, overhead.server_steps_ms)
        verdicts.append((cost <= 1.0, (
            f"service cost per frame (round trip - tail compute), {overhead.frame_bytes} B "
            f"frames: p50 {cost:.3f} ms, p95 {overhead.percentile(95, overhead.overheads_ms):.3f} "
            f"ms (target <= 1 ms p50); the same client and frames against a bare gRPC server "
            f"that only spends the tail's median compute ({median(overhead.compute_ms):.2f} ms) "
            f"in a worker thread take p50 {floor:.3f} ms beyond it (same run), so the service adds "
            f"{cost - floor:.3f} ms; its own steps (queue + decode + encode, server clock) take "
            f"p50 {steps:.3f} ms"
        )))  # fmt: skip
    for passed, text in verdicts:
        print(f"{'PASS' if passed else 'MISS'}  {text}")
    for failure in first.session_failures[:5]:
        print(f"  session failure: {failure}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    import torch

    from splitwire.benchmarks.pipeline import run, table
    from splitwire.errors import SplitwireError

    if args.window < 2 or args.frames < 2 or args.warmup < 0:
        raise SplitwireError("--window and --frames must be at least 2, --warmup at least 0")
    torch.set_num_threads(1)
    result = run(
        model=args.model, after=args.after, codec=args.codec, window=args.window,
        frames=args.frames, warmup=args.warmup, overhead_model=args.overhead_model,
        overhead_after=args.overhead_after, rpc=not args.no_rpc,
    )  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if args.check and not all(c["met"] for c in result["checks"]) else 0
