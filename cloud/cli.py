"""``splitwire cloud``: the tail service.

    splitwire cloud --listen 127.0.0.1:8500 --plan plans/resnet18 --metrics 127.0.0.1:9100
    splitwire cloud --listen 0.0.0.0:8500 --plan plans/a --plan plans/b \\
        --tls-cert server.pem --tls-key server.key --client-ca edges-ca.pem --token-file tokens \\
        --plan-public-key keys/plans.pub

Exit codes: 0 after a graceful shutdown (SIGTERM / SIGINT), 2 for a configuration the service
cannot start with (the message names the flag and what was expected).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from splitwire.cloud import config as defaults


def register(subparsers: Any) -> None:
    """Add ``splitwire cloud`` to the ``splitwire`` parser."""
    cloud = subparsers.add_parser(
        "cloud",
        help="serve the tail halves of plans to many edge sessions over gRPC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve every cut of every --plan to edge agents over one bidirectional gRPC stream "
            "per session (splitwire.v1.SplitSession). Frames from sessions on the same model "
            "and cut are batched (--max-batch, --max-wait-ms). Also serves grpc.health.v1, "
            "server reflection, and Prometheus metrics on --metrics.\n\n"
            "On SIGTERM or SIGINT: health goes NOT_SERVING, new sessions are rejected, frames "
            "in flight get their results within --grace-s, each session ends with SessionEnd "
            "UNAVAILABLE (the edge reconnects elsewhere), exit 0."
        ),
        epilog=(
            "example: splitwire cloud --listen 127.0.0.1:8500 --plan plans/resnet18 "
            "--metrics 127.0.0.1:9100 --token-file tokens.txt"
        ),
    )
    cloud.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="gRPC address (port 0: any free)"
    )
    cloud.add_argument(
        "--plan",
        required=True,
        action="append",
        type=Path,
        metavar="DIR",
        help="a plan directory from `splitwire plan` (repeat for several models)",
    )
    cloud.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here")
    tls = cloud.add_argument_group("security")
    tls.add_argument("--tls-cert", type=Path, metavar="F", help="server certificate (PEM)")
    tls.add_argument("--tls-key", type=Path, metavar="F", help="its private key (PEM)")
    tls.add_argument(
        "--client-ca",
        type=Path,
        metavar="F",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    tls.add_argument(
        "--plan-public-key",
        type=Path,
        metavar="PUB",
        help="refuse any plan whose plan.yaml is not signed by this Ed25519 public key "
        "(`splitwire keygen`, `splitwire plan --sign-key`); without it the plan directories "
        "are trusted as they are",
    )
    tls.add_argument(
        "--token-file",
        type=Path,
        metavar="F",
        help="accepted bearer tokens, one per line; calls without one get UNAUTHENTICATED",
    )
    tuning = cloud.add_argument_group("batching and limits")
    tuning.add_argument(
        "--max-batch",
        type=int,
        default=defaults.DEFAULT_MAX_BATCH,
        metavar="N",
        help="most frames per tail call (default %(default)s; 1 = no batching)",
    )
    tuning.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.DEFAULT_MAX_WAIT_MS,
        metavar="M",
        help="longest a frame waits for frames on their way to join its batch (default "
        "%(default)s)",
    )
    tuning.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch threads of the tail (default 1)"
    )
    tuning.add_argument(
        "--max-sessions",
        type=int,
        default=defaults.DEFAULT_MAX_SESSIONS,
        metavar="N",
        help="concurrent sessions (default %(default)s); more are rejected RESOURCE_EXHAUSTED",
    )
    tuning.add_argument(
        "--max-in-flight",
        type=int,
        default=defaults.DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help="frames one session may have in the server (default %(default)s)",
    )
    tuning.add_argument(
        "--max-queued-frames",
        type=int,
        default=defaults.DEFAULT_MAX_QUEUED_FRAMES,
        metavar="N",
        help="frames waiting for the tail over all sessions (default %(default)s)",
    )
    tuning.add_argument(
        "--max-frame-bytes",
        type=int,
        default=defaults.DEFAULT_MAX_FRAME_BYTES,
        metavar="B",
        help="largest encoded frame accepted (default %(default)s)",
    )
    tuning.add_argument(
        "--max-frame-batch",
        type=int,
        metavar="N",
        help="most samples one frame may carry, checked before decoding (default: the plan's "
        "input batch, 1 for a plan of one image)",
    )
    tuning.add_argument(
        "--max-refused-frames",
        type=int,
        default=defaults.DEFAULT_MAX_REFUSED_FRAMES,
        metavar="N",
        help="a session with N frames refused for what they carry (a shape, batch or codec the "
        f"plan does not allow, more in flight than Accept gave) within "
        f"{defaults.REFUSED_WINDOW_S:g} s ends PROTOCOL_VIOLATION (default %(default)s)",
    )
    tuning.add_argument(
        "--violation-cooldown-s",
        type=float,
        default=defaults.DEFAULT_VIOLATION_COOLDOWN_S,
        metavar="S",
        help="a peer (its token and host) whose session ended for breaking the protocol or not "
        "taking its answers has its next streams ended at once, RESOURCE_EXHAUSTED with the "
        "time left, for S seconds; give each device its own token so one device's cooldown "
        "is not its fleet's; 0: off (default %(default)s)",
    )
    tuning.add_argument(
        "--max-session-bytes",
        type=int,
        default=defaults.DEFAULT_MAX_SESSION_BYTES,
        metavar="B",
        help="bytes one session may hold: partial frames as they arrive, frames in flight, "
        "answers the edge has not taken (default %(default)s)",
    )
    tuning.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=defaults.DEFAULT_MAX_BUFFERED_BYTES,
        metavar="B",
        help="the same over all sessions (default %(default)s)",
    )
    timeouts = cloud.add_argument_group("timeouts")
    timeouts.add_argument(
        "--hello-timeout-s",
        type=float,
        default=defaults.DEFAULT_HELLO_TIMEOUT_S,
        metavar="S",
        help="a new stream must send its Hello within S s (default %(default)s)",
    )
    timeouts.add_argument(
        "--frame-timeout-s",
        type=float,
        default=defaults.DEFAULT_FRAME_TIMEOUT_S,
        metavar="S",
        help="a frame must arrive whole within S s of its first chunk (default %(default)s)",
    )
    timeouts.add_argument(
        "--idle-timeout-s",
        type=float,
        default=defaults.DEFAULT_IDLE_TIMEOUT_S,
        metavar="S",
        help="a session without a frame for S s and nothing in flight ends with SessionEnd "
        "UNAVAILABLE; the edge reconnects (default %(default)s)",
    )
    timeouts.add_argument(
        "--write-timeout-s",
        type=float,
        default=defaults.DEFAULT_WRITE_TIMEOUT_S,
        metavar="S",
        help="a session whose edge takes no answer for S s ends (default %(default)s)",
    )
    tuning.add_argument(
        "--grace-s",
        type=float,
        default=defaults.DEFAULT_GRACE_S,
        metavar="S",
        help="on shutdown, how long frames in flight may take (default %(default)s)",
    )
    cloud.add_argument("--server-id", default="", help="this replica's name (default: HOST:PORT)")
    cloud.set_defaults(func=_cloud)

    health = subparsers.add_parser(
        "health",
        help="ask a tail (or a load balancer in front of tails) whether it serves",
        description=(
            "Ask the grpc.health.v1 service at ADDRESS whether it serves new sessions; prints "
            "SERVING, NOT_SERVING (starting or draining), SERVICE_UNKNOWN or UNREACHABLE. "
            "For container health checks and scripts that wait for a tail."
        ),
        epilog="exit codes: 0 SERVING, 1 anything else. example: splitwire health 127.0.0.1:8500 "
        "--wait 60",
    )
    health.add_argument("address", metavar="HOST:PORT")
    health.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="keep asking for up to S seconds until it answers SERVING (default: ask once)",
    )
    health.add_argument("--timeout", type=float, default=1.0, metavar="S", help="per probe")
    health.add_argument("--tls-ca", type=Path, metavar="F", help="CA for a TLS tail (PEM)")
    health.add_argument("--json", action="store_true", help='print {"address":..,"status":..}')
    health.set_defaults(func=_health)


def _cloud(args: argparse.Namespace) -> int:
    import asyncio

    from splitwire.cloud.config import CloudConfig, TlsConfig
    from splitwire.cloud.errors import ConfigError
    from splitwire.cloud.server import serve

    # A daemon logs its lifecycle by default; -q keeps it to errors, -v adds debug.
    if not args.quiet and args.verbose == 0:
        logging.getLogger("splitwire").setLevel(logging.INFO)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; give both or neither")
    if args.client_ca is not None and args.tls_cert is None:
        raise ConfigError("--client-ca needs TLS; give --tls-cert and --tls-key too")
    tls = TlsConfig(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    config = CloudConfig(
        listen=args.listen,
        plans=tuple(args.plan),
        metrics=args.metrics,
        tls=tls,
        token_file=args.token_file,
        plan_public_key=args.plan_public_key,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        threads=args.threads,
        max_sessions=args.max_sessions,
        max_in_flight=args.max_in_flight,
        max_queued_frames=args.max_queued_frames,
        max_frame_bytes=args.max_frame_bytes,
        max_frame_batch=args.max_frame_batch,
        max_session_bytes=args.max_session_bytes,
        max_buffered_bytes=args.max_buffered_bytes,
        hello_timeout_s=args.hello_timeout_s,
        frame_timeout_s=args.frame_timeout_s,
        idle_timeout_s=args.idle_timeout_s,
        write_timeout_s=args.write_timeout_s,
        max_refused_frames=args.max_refused_frames,
        violation_cooldown_s=args.violation_cooldown_s,
        grace_s=args.grace_s,
        server_id=args.server_id or args.listen,
    )
    return asyncio.run(serve(config))


def _health(args: argparse.Namespace) -> int:
    import json

    from splitwire.protocol.health import check_health, wait_until_serving

    if args.wait > 0:
        wait_until_serving(args.address, timeout_s=args.wait, tls_ca=args.tls_ca)
    status = check_health(args.address, timeout_s=args.timeout, tls_ca=args.tls_ca)
    print(json.dumps({"address": args.address, "status": status}) if args.json else status)
    return 0 if status == "SERVING" else 1
