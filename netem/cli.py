"""``splitwire netem``: the link emulator as a command, a loopback TCP proxy across a link.

    splitwire netem --listen 127.0.0.1:9000 --upstream 127.0.0.1:50051 --link lte
    splitwire netem --upstream 127.0.0.1:50051 --trace drop.yaml --json

Exit codes: 0 when stopped (SIGINT/SIGTERM or --duration), 2 for a bad setting (a non-loopback
address, a bad link spec or trace).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from splitwire.errors import SplitwireError


def register(subparsers: Any) -> None:
    """Add ``splitwire netem`` to the ``splitwire`` parser."""
    netem = subparsers.add_parser(
        "netem",
        help="emulate a network link on loopback (rate, delay, jitter, loss, outages)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "A TCP proxy on loopback that carries every connection to --upstream across an "
            "emulated link (this kernel has no netem qdisc). Each direction (up = client to "
            "upstream) has a token bucket at the link's rate (with loss: the TCP rate the "
            "planner expects, capped by the Mathis bound) and a delay line adding rtt/2 plus "
            "jitter (mean = the link's jitter, at most 4x; bytes never reorder). A lost packet "
            "becomes the stall its retransmission would cost (rto for a tail loss, one round "
            "trip otherwise): TCP bytes cannot be dropped. A trace's 'stall: true' entries (or "
            "bandwidth 0) hold every byte until the next entry. Every --interval it prints "
            "the rate and delay it achieved per direction on stderr; --json prints its "
            "statistics on exit. SIGINT/SIGTERM stop it (exit 0). Loopback addresses only."
        ),
        epilog=(
            "examples:\n"
            "  splitwire netem --listen 127.0.0.1:9000 --upstream 127.0.0.1:50051 --link lte\n"
            "  splitwire netem --listen 127.0.0.1:9000 --upstream 127.0.0.1:50051 \\\n"
            "      --link bw=20mbit,rtt=40ms,jitter=5ms,loss=0.5%\n"
            "  splitwire netem --upstream 127.0.0.1:50051 --trace drop.yaml --json\n"
            "trace (YAML; CSV has the same columns plus an optional stall column):\n"
            "  end: 30\n"
            "  points:\n"
            "    - {t: 0, bw: 20mbit, rtt: 40ms}\n"
            "    - {t: 10, stall: true}        # an outage from 10 s to 12 s\n"
            "    - {t: 12, link: 3g}"
        ),
    )
    netem.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where clients connect (loopback; default a free port, printed)",
    )
    netem.add_argument(
        "--upstream",
        required=True,
        metavar="HOST:PORT",
        help="the real server, e.g. a splitwire cloud (loopback)",
    )
    link = netem.add_mutually_exclusive_group(required=True)
    link.add_argument(
        "--link",
        metavar="SPEC",
        help="a planner link: wifi, lte, 3g, 'lte,rtt=80ms', "
        "'bw=20mbit,rtt=40ms,jitter=5ms,loss=0.5%%', or "
        "'up=2mbit,down=10mbit,rtt=60ms'",
    )
    link.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="a time-varying link (.yaml/.csv, the planner's format, plus stall)",
    )
    netem.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between stderr reports (default %(default)s)",
    )
    netem.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    netem.add_argument("--seed", type=int, help="seed of the jitter and loss draws")
    netem.add_argument("--json", action="store_true", help="print statistics as JSON on exit")
    netem.set_defaults(func=_netem)


def _netem(args: argparse.Namespace) -> int:
    import asyncio

    from splitwire.netem.emulator import serve
    from splitwire.partitioner.link import LinkModel, LinkTrace, load_trace, parse_link

    if args.interval <= 0 or (args.duration is not None and args.duration <= 0):
        raise SplitwireError("expected --interval > 0 and --duration > 0")
    link: LinkModel | LinkTrace = (
        load_trace(args.trace) if args.trace is not None else parse_link(args.link)
    )
    stats = asyncio.run(serve(
        listen=args.listen, upstream=args.upstream, link=link, interval_s=args.interval,
        duration_s=args.duration, seed=args.seed, report=sys.stderr,
    ))  # fmt: skip
    if args.json:
        print(json.dumps(stats, indent=1))
    return 0
