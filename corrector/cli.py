"""``splitwire corrector``: train and evaluate the delay corrector on the synthetic video task.

    splitwire corrector train --out out/corrector                 # ~5 min on one core
    splitwire corrector eval --ckpt out/corrector                 # the table
    splitwire corrector eval --ckpt out/corrector --json --plot docs/corrector-miou.png
    splitwire corrector eval --ckpt out/corrector --speed 4,6 --max-delay 12
    splitwire corrector latency --ckpt out/corrector
    splitwire corrector ablation --ckpt out/c0 --ckpt out/c1 --ckpt out/c2 --speed 0,4

Exit codes: 0 success; 2 bad input (flags, a checkpoint that does not load); 3 training that
stayed below its held-out quality bar (nothing is written then).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from splitwire.corrector.errors import TaskConfigError

logger = logging.getLogger("splitwire.corrector")


def register(subparsers: Any) -> None:
    """Add ``splitwire corrector`` to the ``splitwire`` parser."""
    corrector = subparsers.add_parser(
        "corrector",
        help="train and evaluate the delay corrector (local model + stale remote features)",
        description=(
            "The delay corrector fuses a light local model on the current frame with features "
            "a heavy remote model computed from a frame DELAY frames older (Dedelayed). It is "
            "trained and evaluated on a synthetic video task generated from seeds."
        ),
    )
    sub = corrector.add_subparsers(dest="corrector_command", metavar="COMMAND", required=True)
    _register_train(sub)
    _register_eval(sub)
    _register_latency(sub)
    _register_ablation(sub)


def _register_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train the heavy model, then the fusion variants",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Phase 1 trains the heavy model on current frames; phase 2 freezes it and trains "
            "one local model per fusion variant (lockstep, same batches) with remote features "
            "from frame t-d, d uniform in 0..--tau-max, plus a local-only loss term. Each phase "
            "must reach a held-out mIoU bar; below it, training continues (up to --extensions "
            "half-phases) and then fails with exit code 3."
        ),
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="checkpoint directory")
    p.add_argument(
        "--steps", type=int, metavar="N",
        help="steps per phase (default: 400 heavy, 800 fusion)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    p.add_argument(
        "--tau-max", type=int, metavar="N", help="delays drawn from 0..N frames (default 12)",
    )  # fmt: skip
    p.add_argument(
        "--fusion", action="append", metavar="NAME",
        help="a fusion variant to train (repeat; default: add, gate, add-nodelay)",
    )  # fmt: skip
    p.add_argument(
        "--min-miou", type=float, nargs=2, metavar=("HEAVY", "FUSED"),
        help="held-out mIoU bars (default 0.85 0.6; 0 0 disables the checks)",
    )  # fmt: skip
    p.add_argument(
        "--extensions", type=int, metavar="K",
        help="extra half-phases allowed below a bar (default 2)",
    )  # fmt: skip
    p.add_argument(
        "--speed", metavar="LO,HI",
        help="object speeds of the training clips, px/frame (default 0,3)",
    )  # fmt: skip
    p.set_defaults(func=_train)


def _register_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="mIoU against delay: local-only, remote-only, fused (every trained variant)",
        description=(
            "Score held-out clips: for each delay 0..--max-delay, the local model alone on "
            "frame t, the heavy model's answer for frame t-d, and each fusion variant. By "
            "default in three regimes: static (0 px/frame), low (0.5-1.5) and high (2-4)."
        ),
    )
    p.add_argument("--ckpt", required=True, type=Path, metavar="DIR", help="checkpoint directory")
    p.add_argument("--speed", metavar="LO,HI", help="one regime with this speed range instead")
    p.add_argument(
        "--max-delay", type=int, default=16, metavar="N", help="delays 0..N (default %(default)s)"
    )
    p.add_argument("--clips", type=int, default=64, metavar="N", help="clips per regime (64)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="plot mIoU against delay")
    p.set_defaults(func=_eval)


def _register_latency(sub: Any) -> None:
    p = sub.add_parser(
        "latency",
        help="single-thread batch-1 latency: heavy, local, local + fusion",
    )
    p.add_argument("--ckpt", required=True, type=Path, metavar="DIR", help="checkpoint directory")
    p.add_argument("--fusion", metavar="NAME", help="variant (default: the checkpoint's primary)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_latency)


def _register_ablation(sub: Any) -> None:
    p = sub.add_parser(
        "ablation",
        help="what the delay embedding buys: add against add-nodelay over training seeds",
        description=(
            "Evaluate add and add-nodelay of every checkpoint (one per training seed) on held-out "
            "clips of mixed speeds at delays 0..tau_max, and report add − add-nodelay per delay: "
            "per seed, mean, standard deviation and range."
        ),
    )
    p.add_argument(
        "--ckpt", required=True, type=Path, action="append", metavar="DIR",
        help="a checkpoint with add and add-nodelay (repeat: one per training seed)",
    )  # fmt: skip
    p.add_argument("--speed", default="0,4", metavar="LO,HI",
                   help="object speeds, px/frame (default %(default)s: mixed)")  # fmt: skip
    p.add_argument("--clips", type=int, default=64, metavar="N", help="held-out clips (64)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_ablation)


def _train(args: argparse.Namespace) -> int:
    from splitwire.corrector.training import DEFAULT_FUSIONS, TrainConfig, train

    if not args.quiet and args.verbose == 0:
        logging.getLogger("splitwire").setLevel(logging.INFO)
    options: dict[str, Any] = {
        "seed": args.seed,
        "fusions": tuple(args.fusion) if args.fusion else DEFAULT_FUSIONS,
    }
    if args.tau_max is not None:
        options["tau_max"] = args.tau_max
    if args.extensions is not None:
        options["extensions"] = args.extensions
    if args.steps is not None:
        options.update(heavy_steps=args.steps, fusion_steps=args.steps)
    if args.min_miou is not None:
        options.update(min_heavy_miou=args.min_miou[0], min_fused_miou=args.min_miou[1])
    if args.speed is not None:
        options["speed"] = parse_speed(args.speed)
    result = train(TrainConfig(**options), args.out, progress=sys.stderr.isatty())
    phases = result.meta["phases"]
    print(
        f"wrote {args.out}: heavy mIoU {phases['heavy']['validation_miou']:.3f}, fused "
        + ", ".join(
            f"{k} {v:.3f}" for k, v in phases["fusion"]["validation_miou_by_fusion"].items()
        )
        + f" (held-out, delays 0..{result.meta['tau_max']}); {result.meta['seconds']:.0f} s wall, "
        f"{result.meta['cpu_seconds']:.0f} s CPU"
    )
    return 0


def parse_speed(text: str) -> tuple[float, float]:
    """``"2,4"`` → (2.0, 4.0); a single number is a fixed speed."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1]:
        raise TaskConfigError(
            f"--speed {text!r}: expected LO,HI pixels per frame with 0 <= LO <= HI (e.g. 2,4)"
        )
    return parts[0], parts[1]


def _eval(args: argparse.Namespace) -> int:
    from splitwire.corrector.checkpoint import load_checkpoint
    from splitwire.corrector.evaluation import DEFAULT_REGIMES, Regime, evaluate
    from splitwire.corrector.report import format_table

    regimes: tuple[Regime, ...] = DEFAULT_REGIMES
    if args.speed is not None:
        lo, hi = parse_speed(args.speed)
        regimes = (Regime(f"{lo:g}-{hi:g}", (lo, hi)),)
    checkpoint = load_checkpoint(args.ckpt)
    records = evaluate(
        checkpoint, regimes=regimes, max_delay=args.max_delay, clips=args.clips, seed=args.seed
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
    else:
        print(format_table(records, checkpoint=checkpoint))
    if args.plot is not None:
        from splitwire.corrector.report import plot_curves

        plot_curves(records, args.plot, tau_max=checkpoint.tau_max)
        logger.info("wrote %s", args.plot)
    return 0


def _ablation(args: argparse.Namespace) -> int:
    from splitwire.corrector.ablation import ablation, format_ablation
    from splitwire.corrector.checkpoint import load_checkpoint

    speed = parse_speed(args.speed)
    checkpoints = [load_checkpoint(d, fusions=["add", "add-nodelay"]) for d in args.ckpt]
    rows = ablation(checkpoints, speed=speed, clips=args.clips, seed=args.seed)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(format_ablation(rows, seeds=len(checkpoints), speed=speed))
    return 0


def _latency(args: argparse.Namespace) -> int:
    from splitwire.corrector.latency import measure_latency
    from splitwire.corrector.runtime import load_corrector

    result = measure_latency(load_corrector(args.ckpt, fusion=args.fusion))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(
            f"heavy {result.heavy_ms:.2f} ms, local {result.local_ms:.2f} ms "
            f"({100 * result.local_ratio:.0f} % of heavy; target <= 25 %), local + fusion "
            f"{result.fused_ms:.2f} ms ({100 * result.fusion_overhead:+.1f} %; target <= 15 %); "
            "batch 1, 1 thread, medians of interleaved rounds\n"
            f"conv MACs: heavy {result.heavy_macs / 1e6:.1f} M, local "
            f"{result.local_macs / 1e6:.2f} M "
            f"({100 * result.local_macs / result.heavy_macs:.0f} %), local + fusion "
            f"{result.fused_macs / 1e6:.2f} M "
            f"({100 * (result.fused_macs / result.local_macs - 1):+.1f} %)"
        )
    return 0
