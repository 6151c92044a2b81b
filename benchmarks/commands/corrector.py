"""``splitwire bench corrector``: the delay corrector in the running agent, against its offline
evaluation. The flags, their checks and the printed report; the measurement is
:mod:`splitwire.benchmarks.corrector_live`.

    splitwire bench corrector --ckpt DIR --plan DIR --cut ID [--rtt-ms MS] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``corrector`` to ``splitwire bench``."""
    corrector = benchmarks.add_parser(
        "corrector",
        help="the delay corrector in the running agent, against its offline evaluation",
        description=(
            "Serve a plan of the corrector's heavy model from a `splitwire cloud` child "
            "process, run the agent with --corrector behind the link emulator (a fixed "
            "delay on loopback) on the labelled video task, and compare the mIoU it scores "
            "(fused, local-only, remote-only) with `splitwire corrector eval` at the "
            "delays it measured."
        ),
    )
    corrector.add_argument("--ckpt", type=Path, required=True, metavar="DIR",
                           help="a `splitwire corrector train` directory")  # fmt: skip
    corrector.add_argument("--plan", type=Path, required=True, metavar="DIR",
                           help="a plan of its heavy model that ships --cut")  # fmt: skip
    corrector.add_argument("--cut", required=True, metavar="ID", help="the split to run")
    corrector.add_argument("--codec", default="int8+zstd1", metavar="SPEC")
    corrector.add_argument("--rtt-ms", type=float, default=100.0, metavar="MS",
                           help="round trip the emulator adds (default %(default)s)")  # fmt: skip
    corrector.add_argument("--fps", type=float, default=30.0, metavar="F")
    corrector.add_argument("--frames", type=int, default=900, metavar="N")
    corrector.add_argument("--speed", default="2-4", metavar="LO-HI",
                           help="object speed, px/frame (default %(default)s)")  # fmt: skip
    corrector.add_argument("--scene-frames", type=int, default=90, metavar="F",
                           help="a new scene every F frames (default %(default)s)")  # fmt: skip
    corrector.add_argument("--seed", type=int, default=0)
    corrector.add_argument("--clips", type=int, default=64, metavar="N",
                           help="held-out clips of the offline evaluation")  # fmt: skip
    corrector.add_argument("--json", action="store_true", help="print the result as JSON")
    corrector.add_argument("--check", action="store_true", help="exit 1 if a check is missed")
    corrector.set_defaults(func=_corrector)


def _corrector(args: argparse.Namespace) -> int:
    import torch

    from splitwire.benchmarks.corrector_live import run_live, table
    from splitwire.errors import SplitwireError

    lo, _, hi = args.speed.partition("-")
    try:
        speed = (float(lo), float(hi or lo))
    except ValueError as exc:
        raise SplitwireError(f"--speed {args.speed!r}: expected LO-HI, e.g. 2-4") from exc
    if args.frames < 10 or args.fps <= 0 or args.rtt_ms < 0 or args.clips < 1:
        raise SplitwireError("expected --frames >= 10, --fps > 0, --rtt-ms >= 0, --clips >= 1")
    torch.set_num_threads(1)
    result = run_live(
        ckpt=args.ckpt, plan_dir=args.plan, cut=args.cut, codec=args.codec, rtt_ms=args.rtt_ms,
        fps=args.fps, frames=args.frames, speed=speed, scene_frames=args.scene_frames,
        seed=args.seed, clips=args.clips,
    )  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if args.check and not all(c["met"] for c in result["checks"]) else 0
