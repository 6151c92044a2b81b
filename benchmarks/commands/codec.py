"""``splitwire bench codec``: wire bytes, error and speed of every codec on real activations. The
flags, their checks and the printed report; the measurement is
:mod:`splitwire.benchmarks.codec`.

    splitwire bench codec [--models resnet18 ...] [--specs int8+zstd1 ...] [--json] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``codec`` to ``splitwire bench``."""
    codec = benchmarks.add_parser(
        "codec",
        help="wire bytes, error and speed of every codec on real activations",
        description=(
            "Encode activations of the zoo models at several depths with every codec and "
            "compare wire bytes with pickled float32 (what ParetoPipe-style tools send), "
            "relative RMS error, and encode/decode speed in MB/s of fp32-equivalent data. "
            "On photos (--calibration-data, the default for trained weights such as "
            "zoo:efficientnet_lite0@pretrained) the rest of the network runs on each decoded "
            "activation and the model's output is compared with its uncompressed output "
            "(top-1/top-5 agreement, KL, relative error), next to the frames sent as JPEG q75."
        ),
    )
    codec.add_argument(
        "--models", nargs="+", metavar="SPEC",
        help="zoo names (resnet18) or zoo specs (zoo:efficientnet_lite0@pretrained); "
        "default: every zoo model with taps, random weights",
    )  # fmt: skip
    codec.add_argument("--specs", nargs="+", metavar="CODEC", help="codecs (default: a sweep)")
    codec.add_argument(
        "--calibration-data", metavar="skimage|DIR|synthetic",
        help="inputs: photos bundled with scikit-image, a directory of photos, or one synthetic "
        "image (default: skimage for trained weights, synthetic for random weights)",
    )  # fmt: skip
    codec.add_argument(
        "--count", type=int, default=None, metavar="N",
        help="photo crops (default 200; photos only)",
    )  # fmt: skip
    codec.add_argument(
        "--layers", nargs="+", metavar="MODULE", help="only these taps (default: every tap)"
    )
    codec.add_argument("--repeats", type=int, default=15, help="timed runs per figure (median)")
    codec.add_argument("--threads", type=int, default=1, help="torch threads for timing (1)")
    codec.add_argument(
        "--eval-threads", type=int, default=None, metavar="N",
        help="torch threads for the forward passes on photos (default: every core)",
    )  # fmt: skip
    codec.add_argument("--json", action="store_true", help="print a JSON list of records")
    codec.add_argument(
        "--check", action="store_true",
        help="exit 1 if a target is missed (the foundation issue's on ResNet-18; for trained "
        "classifiers on photos: int8+zstd1 top-1 >= 0.99 and KL <= 1e-4 at every layer, and a "
        "layer at <= JPEG q75 bytes with >= 10x lower KL)",
    )  # fmt: skip
    codec.set_defaults(func=_codec)


def _codec(args: argparse.Namespace) -> int:
    import os

    import torch
    from tqdm import tqdm

    from splitwire.benchmarks.codec import (
        DEFAULT_COUNT,
        DEFAULT_SPECS,
        PHOTOS_DEFAULT,
        SYNTHETIC,
        TAPS,
        CodecRecord,
        capture_activations,
        check_targets,
        measure,
        measure_on_photos,
        resolve_model,
    )
    from splitwire.errors import SplitwireError
    from splitwire.protocol import CodecSpec

    models = [resolve_model(m) for m in (args.models or list(TAPS))]
    specs = [str(CodecSpec.parse(s)) for s in (args.specs or DEFAULT_SPECS)]
    if args.repeats < 1 or args.threads < 1 or (args.eval_threads or 1) < 1:
        raise SplitwireError("--repeats, --threads and --eval-threads must be at least 1")
    count = DEFAULT_COUNT if args.count is None else args.count
    if count < 1:
        raise SplitwireError("--count must be at least 1")
    for model in models:
        unknown = [t for t in args.layers or () if t not in TAPS[model.zoo]]
        if unknown:
            raise SplitwireError(
                f"{model.label}: no taps {unknown}; expected some of {list(TAPS[model.zoo])}"
            )
    torch.set_num_threads(args.threads)

    def source(model: Any) -> str:
        if args.calibration_data is not None:
            return str(args.calibration_data)
        return PHOTOS_DEFAULT if model.trained else SYNTHETIC

    records: list[CodecRecord] = []
    for model in models:
        data = source(model)
        layers = [t for t in TAPS[model.zoo] if not args.layers or t in args.layers]
        if data == SYNTHETIC:
            for layer, activation in capture_activations(model.spec):
                if layer in layers:
                    records.extend(
                        measure(model.label, layer, activation, specs, repeats=args.repeats)
                    )
            continue
        with tqdm(
            total=count, desc=f"{model.label} photos", unit="frame", file=sys.stderr, disable=None
        ) as bar:

            def advance(done: int, _total: int, bar: Any = bar) -> None:
                bar.update(done - bar.n)

            records.extend(
                measure_on_photos(
                    model.spec,
                    specs,
                    source=data,
                    count=count,
                    repeats=args.repeats,
                    layers=layers,
                    eval_threads=args.eval_threads or os.cpu_count() or 1,
                    progress=advance,
                )
            )
    checks = check_targets(records)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=1))
    else:
        synthetic = [r for r in records if r.calibration == SYNTHETIC]
        if synthetic:
            _print_table(synthetic)
            print(
                "synthetic input, activation error only ('rel RMSE'); with random weights an "
                "accuracy figure would be output distortion, not a task metric"
            )
        for label in dict.fromkeys(r.model for r in records if r.calibration != SYNTHETIC):
            if synthetic:
                print()
            _print_task_table([r for r in records if r.model == label])
        scope = None
        for check in checks:
            if check.scope != scope:
                scope = check.scope
                print(f"\nTargets ({scope}):")
            verdict = "PASS" if check.passed else "MISS"
            print(f"  {verdict}  {check.description}: {check.measured}")
    return 1 if args.check and not all(c.passed for c in checks) else 0


def _print_table(records: list[Any]) -> None:
    width = max(13, *(len(r.model) for r in records)) if records else 13
    header = (
        f"{'model':<{width}} {'layer':<12} {'shape':<16} {'codec':<11} {'wire B':>9} "
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
            f"{r.model:<{width}} {r.layer:<12} {shape:<16} {r.spec:<11} {r.wire_bytes:>9} "
            f"{r.ratio_vs_pickle:>8.2f} {r.rel_rmse:>9.2e} {r.encode_mb_s:>9.0f} "
            f"{r.decode_mb_s:>9.0f}"
        )
    if records:
        print(
            f"\nreference: pickled fp32 (pickle.dumps + loads) runs at "
            f"{min(r.pickle_mb_s for r in records):.0f}-{max(r.pickle_mb_s for r in records):.0f} "
            "MB/s in this run; 'x pickle' = pickled bytes / wire bytes (header included)"
        )


def _print_task_table(records: list[Any]) -> None:
    """One model on photos: bytes against pickle and JPEG q75, and the output's agreement."""
    first = records[0]
    weights = "trained weights" if first.trained else "RANDOM weights"
    print(
        f"{first.model}: {first.frames} photo crops ({first.calibration}), {weights}; bytes are "
        "means per frame (batch 1, header included), speeds on the first frame, one thread"
    )
    classifier = first.top1 is not None
    task_cols = f"{'top-1':>6} {'top-5':>6} {'KL':>8} " if classifier else ""
    header = (
        f"{'layer':<11} {'shape':<15} {'codec':<11} {'wire B':>8} {'x pickle':>8} "
        f"{'x jpeg75':>8} {task_cols}{'rel out':>8} {'rel act':>8} {'enc MB/s':>8} "
        f"{'dec MB/s':>8}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for r in records:
        if last is not None and r.layer != last:
            print()
        last = r.layer
        shape = "x".join(map(str, r.shape))
        task = f"{r.top1:>6.3f} {r.top5:>6.3f} {r.kl:>8.1e} " if classifier else ""
        print(
            f"{r.layer:<11} {shape:<15} {r.spec:<11} {r.wire_bytes:>8} {r.ratio_vs_pickle:>8.2f} "
            f"{r.ratio_vs_jpeg75:>8.2f} {task}{r.rel:>8.1e} {r.rel_rmse:>8.1e} "
            f"{r.encode_mb_s:>8.0f} {r.decode_mb_s:>8.0f}"
        )
    jpeg_task = (
        f"top-1 {first.jpeg75_top1:.3f}, top-5 {first.jpeg75_top5:.3f}, KL {first.jpeg75_kl:.1e}, "
        if classifier
        else ""
    )
    print(
        f"\nreference: the frames as JPEG q75 (4:2:0): {first.jpeg75_bytes:.0f} B per frame, "
        f"model output on the decoded frames {jpeg_task}rel {first.jpeg75_rel:.1e}; "
        "'x jpeg75' = JPEG bytes / wire bytes, 'x pickle' = pickled fp32 bytes / wire bytes"
    )
    print(
        "top-1/top-5 = agreement with the uncompressed model's output (not accuracy against "
        "labels); 'rel out' = relative error of the output, 'rel act' = of the activation"
        + (
            ""
            if first.trained
            else "; RANDOM weights: these are output distortion, not a task metric"
        )
    )
