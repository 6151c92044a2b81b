"""``splitwire bench pipeline``: the edge agent's pipelining, against its stages alone and against
PyTorch RPC. The flags, their checks and the printed report; the measurement is
:mod:`splitwire.benchmarks.pipeline`.

    splitwire bench pipeline [--model SPEC] [--after BLOCK] [--window N] [--frames N] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(benchmarks: Any) -> None:
    """Add ``pipeline`` to ``splitwire bench``."""
    pipeline = benchmarks.add_parser(
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
