"""The ``splitwire`` command. Each package owns its subcommands; this module only gathers them.

    splitwire --help
    splitwire models
    splitwire plan show plans/resnet18
    splitwire bench codec --json
    splitwire netem --upstream 127.0.0.1:50051 --link lte

Exit codes: 0 success, 1 an unexpected failure (a bug: the traceback is printed), 2 bad input
(a spec, a file, a flag: the message says what was expected), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from splitwire import __version__
from splitwire.errors import SplitwireError

logger = logging.getLogger("splitwire")

# Modules that contribute subcommands, each with ``register(subparsers)``. They import their
# heavy dependencies (torch, grpc) inside the handlers, so ``--help`` stays fast.
COMMAND_MODULES = (
    "splitwire.partitioner.cli",
    "splitwire.partitioner.show",
    "splitwire.partitioner.keygen",
    "splitwire.cloud.cli",
    "splitwire.edge.cli",
    "splitwire.netem.cli",
    "splitwire.benchmarks.cli",
    "splitwire.corrector.cli",
)


def join_compound_commands(argv: Sequence[str]) -> list[str]:
    """``argv`` with a two-word command joined into the one argument its parser is registered
    under (``plan show DIR`` -> ``"plan show" DIR``). A module declares them in
    ``COMPOUND_COMMANDS``; ``splitwire plan`` keeps every flag of its own this way.

    The command is the first argument that is no option (the global options take no value).
    """
    argv = list(argv)
    compounds = [
        words
        for name in COMMAND_MODULES
        for words in getattr(importlib.import_module(name), "COMPOUND_COMMANDS", ())
    ]
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            continue
        for words in compounds:
            if tuple(argv[i : i + len(words)]) == tuple(words):
                return [*argv[:i], " ".join(words), *argv[i + len(words) :]]
        break
    return argv


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every package's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="splitwire",
        description=(
            "Split a neural network between an edge device and a server: plan the cut, "
            "stream compressed activations, and keep every frame on time."
        ),
        epilog="Run 'splitwire COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"splitwire {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(join_compound_commands(sys.argv[1:] if argv is None else argv))
    level = (
        logging.ERROR
        if args.quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    )
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        code: int = args.func(args)
    except SplitwireError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except BrokenPipeError:  # `splitwire ... | head` closed our stdout: not an error
        return 0
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
