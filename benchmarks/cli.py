"""``splitwire bench``: benchmarks that print measured figures next to their reference. Each
benchmark's command registers itself (:mod:`splitwire.benchmarks.commands`); this module only
gathers them.

    splitwire bench --help
    splitwire bench codec --json
    splitwire bench e2e --model zoo:resnet18 --link lte
"""

from __future__ import annotations

import importlib
from typing import Any

# In the order `splitwire bench --help` lists them. Each module has ``register(benchmarks)``
# and imports its measurement (torch, grpc) inside its handler.
BENCHMARK_MODULES = tuple(
    f"splitwire.benchmarks.commands.{name}"
    for name in (
        "codec",
        "fidelity",
        "planning",
        "tail",
        "scaleout",
        "pipeline",
        "corrector",
        "hostile",
        "e2e",
        "adaptive",
    )
)


def register(subparsers: Any) -> None:
    """Add ``splitwire bench`` and every benchmark's subcommand to the ``splitwire`` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="run a benchmark (figures are printed with the reference they are compared with)",
        description="Benchmarks measure and print; they are not tests. Results vary ±10-30 % "
        "between runs on small machines: compare ratios measured in one run.",
    )
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name in BENCHMARK_MODULES:
        importlib.import_module(name).register(benchmarks)
