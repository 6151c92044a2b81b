"""``splitwire edge``: the edge agent daemon.

    splitwire edge --cloud 10.0.0.2:8500 --plan plans/resnet18 --source synthetic --fps 15
    splitwire edge --plan plans/resnet18 --source dir:photos --loop --output frames.jsonl \\
        --cloud tail.example:8500 --tls-ca ca.pem --token-file token \\
        --mqtt broker.example:8883 --mqtt-username cam7 --mqtt-password-file pw --mqtt-tls-ca ca.pem

Exit codes: 0 after ``--frames``, the end of the source, or SIGTERM/SIGINT (frames in flight
drained); 2 for a configuration it cannot start with; 3 when the cloud refused the session
for a reason retrying cannot fix (wrong plan, wrong token).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import IO, Any

from splitwire.edge import config as defaults

logger = logging.getLogger("splitwire.edge")


def register(subparsers: Any) -> None:
    """Add ``splitwire edge`` to the ``splitwire`` parser."""
    edge = subparsers.add_parser(
        "edge",
        help="run the edge agent: head on this device, tail in the cloud, one output per frame",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read frames from --source, run the plan's head, encode the activations and stream "
            "them to a `splitwire cloud` tail; emit exactly one JSON line per frame (--output) "
            "with its source: remote, local, or dropped with the reason.\n\n"
            "Up to --window frames are in flight, so the head, the network and the tail "
            "overlap. When the window is full the newest frame replaces the oldest one not yet "
            "sent. A frame not answered within --budget-ms of its capture is dropped (stale). "
            "Lost sessions are reopened with exponential backoff; frames in flight are sent "
            "again while their budget lasts.\n\n"
            "--policy auto (the default when the plan ships several cut/codec options) prices "
            "every option on the link the agent measures and switches when another is better "
            "by a margin for --hold-s. With --mqtt, status, telemetry and desired plans travel "
            "over MQTT under splitwire/v1/edges/EDGE_ID/; the data path never waits on it.\n\n"
            "SIGTERM/SIGINT: stop the source, drain within --grace-s, publish offline, exit 0."
        ),
        epilog=(
            "examples:\n"
            "  splitwire edge --cloud 127.0.0.1:8500 --plan out/r18 --source synthetic "
            "--fps 30 --frames 300\n"
            "  splitwire edge --plan out/r18 --source npy:frames.npy --output - "
            "(an all-on-edge plan needs no --cloud)"
        ),
    )
    edge.add_argument("--plan", required=True, type=Path, metavar="DIR", help="plan directory")
    edge.add_argument(
        "--cloud", metavar="HOST:PORT", help="the tail service (optional for all-on-edge plans)"
    )
    src = edge.add_argument_group("frames")
    src.add_argument(
        "--source",
        default="synthetic",
        metavar="SPEC",
        help="synthetic (moving shapes, from --seed), dir:PATH (images, sorted), npy:FILE "
        "(.npy/.npz of uint8 frames), video[:seed=N,speed=LO-HI,scene=F] (the delay "
        "corrector's labelled task: the summary scores mIoU); default %(default)s",
    )
    src.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    src.add_argument(
        "--fps", type=float, metavar="F", help="pace the source like a camera (default: as fast "
        "as the pipeline takes frames)"
    )  # fmt: skip
    src.add_argument("--loop", action="store_true", help="repeat a dir:/npy: source")
    src.add_argument("--seed", type=int, default=0, help="seed of the synthetic source")
    pipe = edge.add_argument_group("pipeline")
    pipe.add_argument(
        "--window",
        type=int,
        default=defaults.DEFAULT_WINDOW,
        metavar="N",
        help="frames in flight (default %(default)s)",
    )
    pipe.add_argument(
        "--budget-ms",
        type=float,
        default=defaults.DEFAULT_BUDGET_MS,
        metavar="B",
        help="a frame unanswered this long after capture is dropped (default %(default)s)",
    )
    pipe.add_argument(
        "--policy",
        choices=("auto", "fixed"),
        help="auto: move the cut with the measured link (default when the plan ships several "
        "options); fixed: stay on the starting option",
    )
    pipe.add_argument("--cut", metavar="ID", help="starting cut (default: the plan's choice)")
    pipe.add_argument("--codec", metavar="SPEC", help="starting codec (with --cut)")
    pipe.add_argument(
        "--hold-s", type=float, default=3.0, metavar="S",
        help="auto policy: how long a better option must stay better (default %(default)s)",
    )  # fmt: skip
    pipe.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads")
    pipe.add_argument(
        "--edge-slowdown", type=float, default=1.0, metavar="K",
        help="emulate a device K times slower than this one: each edge compute step (head, "
        "encode, the corrector's local model) sleeps (K-1) times its measured time; plan with "
        "the same K (splitwire plan --edge-slowdown). Default %(default)s: no emulation",
    )  # fmt: skip
    pipe.add_argument(
        "--grace-s",
        type=float,
        default=defaults.DEFAULT_GRACE_S,
        metavar="S",
        help="on stop, how long frames in flight may take (default %(default)s)",
    )
    pipe.add_argument(
        "--reconnect-max-s",
        type=float,
        default=defaults.DEFAULT_RECONNECT_MAX_S,
        metavar="S",
        help="the cap of the reconnect backoff, and the longest a tail's retry hint makes the "
        "agent wait (default %(default)s)",
    )
    pipe.add_argument(
        "--max-unanswered",
        type=int,
        default=defaults.DEFAULT_MAX_UNANSWERED,
        metavar="N",
        help="drop a session after N frames in a row were lost to it without any answer from "
        "the tail (sent and out of time, or stuck behind such frames), and reconnect "
        "(default %(default)s)",
    )
    corr = edge.add_argument_group("delay corrector")
    corr.add_argument(
        "--corrector",
        type=Path,
        metavar="DIR",
        help="answer every frame at once: fuse the newest remote features with a local model "
        "(a 'splitwire corrector train' directory; the plan must split its heavy model)",
    )
    corr.add_argument(
        "--corrector-fusion",
        metavar="NAME",
        help="which trained fusion variant to run (default: the checkpoint's primary)",
    )
    out = edge.add_argument_group("output")
    out.add_argument(
        "--output", metavar="FILE.jsonl|-", help="one JSON line per frame to FILE or stdout (-)"
    )
    out.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    out.add_argument(
        "--log-every", type=float, default=10.0, metavar="S",
        help="log a progress line every S seconds (0: never; default %(default)s)",
    )  # fmt: skip
    out.add_argument("--edge-id", metavar="ID", help="this device's name (default: hostname)")
    sec = edge.add_argument_group("security")
    sec.add_argument("--token-file", type=Path, metavar="F", help="bearer token for the tail")
    sec.add_argument(
        "--plan-public-key",
        type=Path,
        metavar="PUB",
        help="refuse a plan whose plan.yaml is not signed by this Ed25519 public key "
        "(`splitwire keygen`, `splitwire plan --sign-key`); without it the plan directory is "
        "trusted as it is",
    )
    sec.add_argument("--tls-ca", type=Path, metavar="F", help="TLS to the tail, trusting this CA")
    sec.add_argument("--tls-cert", type=Path, metavar="F", help="client certificate (mutual TLS)")
    sec.add_argument("--tls-key", type=Path, metavar="F", help="its private key")
    mqtt = edge.add_argument_group("control plane (MQTT)")
    mqtt.add_argument("--mqtt", metavar="HOST:PORT", help="broker for status/telemetry/plans")
    mqtt.add_argument("--mqtt-username", metavar="U")
    mqtt.add_argument("--mqtt-password-file", type=Path, metavar="F")
    mqtt.add_argument("--mqtt-tls-ca", type=Path, metavar="F", help="TLS to the broker")
    mqtt.add_argument(
        "--telemetry-s", type=float, default=5.0, metavar="S",
        help="telemetry period (default %(default)s)",
    )  # fmt: skip
    edge.set_defaults(func=_edge)


def edge_config(args: argparse.Namespace) -> Any:
    """The :class:`~splitwire.edge.config.EdgeConfig` a parsed ``splitwire edge`` command line
    runs with (validated; cross-flag mistakes raise ``EdgeConfigError``)."""
    from splitwire.edge.config import ClientTls, EdgeConfig, EdgeConfigError

    if args.tls_ca is None and (args.tls_cert or args.tls_key):
        raise EdgeConfigError("--tls-cert/--tls-key need --tls-ca (the CA of the tail)")
    if args.json and args.output == "-":
        raise EdgeConfigError("--json and --output - both write to stdout; pick one")
    if args.mqtt is None and (args.mqtt_username or args.mqtt_password_file or args.mqtt_tls_ca):
        raise EdgeConfigError("--mqtt-username/--mqtt-password-file/--mqtt-tls-ca need --mqtt")
    tls = ClientTls(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    fields: dict[str, Any] = {}
    if args.edge_id:
        fields["edge_id"] = args.edge_id
    return EdgeConfig(
        plan=args.plan,
        source=args.source,
        cloud=args.cloud,
        frames=args.frames,
        fps=args.fps,
        window=args.window,
        budget_ms=args.budget_ms,
        policy=args.policy,
        cut=args.cut,
        codec=args.codec,
        token_file=args.token_file,
        plan_public_key=args.plan_public_key,
        tls=tls,
        threads=args.threads,
        edge_slowdown=args.edge_slowdown,
        loop=args.loop,
        seed=args.seed,
        grace_s=args.grace_s,
        reconnect_max_s=args.reconnect_max_s,
        max_unanswered=args.max_unanswered,
        hold_s=args.hold_s,
        corrector=args.corrector,
        corrector_fusion=args.corrector_fusion,
        **fields,
    )


def _edge(args: argparse.Namespace) -> int:
    import asyncio

    from splitwire.edge.config import EdgeConfigError

    # A daemon logs its lifecycle by default; -q keeps it to errors, -v adds debug.
    if not args.quiet and args.verbose == 0:
        logging.getLogger("splitwire").setLevel(logging.INFO)
    config = edge_config(args)
    if args.output in (None, "-"):
        return asyncio.run(_run(config, args, sys.stdout if args.output == "-" else None))
    try:
        stream = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise EdgeConfigError(f"--output {args.output}: cannot write: {exc.strerror}") from exc
    with stream:
        return asyncio.run(_run(config, args, stream))


async def _run(config: Any, args: argparse.Namespace, output: IO[str] | None) -> int:
    import asyncio
    import contextlib
    import signal

    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfigError
    from splitwire.edge.control import ControlPlane, MqttConfig, read_password_file
    from splitwire.edge.records import strict_json

    mqtt_config = None
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise EdgeConfigError(f"--mqtt {args.mqtt!r}: expected HOST:PORT")
        password = read_password_file(args.mqtt_password_file) if args.mqtt_password_file else None
        mqtt_config = MqttConfig(
            host=host,
            port=int(port),
            username=args.mqtt_username,
            password=password,
            tls_ca=args.mqtt_tls_ca,
            telemetry_s=args.telemetry_s,
        )
    agent = EdgeAgent(config, output=output)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    background: list[asyncio.Task[None]] = []
    control = ControlPlane(mqtt_config, agent) if mqtt_config else None
    if control is not None:
        background.append(asyncio.create_task(control.run(), name="edge-control"))
    if args.log_every > 0:
        background.append(asyncio.create_task(_progress(agent, args.log_every)))
    try:
        summary = await agent.run()
    finally:
        if control is not None:
            await control.stop()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    logger.info("%s", _summary_line(summary))
    if args.json:
        print(strict_json(summary, indent=2))
    return 0


async def _progress(agent: Any, every_s: float) -> None:
    import asyncio

    while True:
        await asyncio.sleep(every_s)
        t = agent.telemetry()
        logger.info(
            "%d frames (%s), %.1f fps, rtt %s ms, %s %s%s",
            t["frames"],
            ", ".join(f"{k} {v}" for k, v in sorted(t["by_source"].items())),
            t["fps"],
            t["rtt_ms"],
            t["cut"],
            t["codec"],
            "" if t["connected"] else ", no session",
        )


def _summary_line(s: dict[str, Any]) -> str:
    sources = ", ".join(f"{k} {v}" for k, v in s["by_source"].items() if v)
    reasons = ", ".join(f"{k} {v}" for k, v in s["by_reason"].items())
    scores = s.get("segmentation", {}).get("miou")
    miou = "; mIoU " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) if scores else ""
    return (
        f"{s['frames']} frames ({sources}{'; ' + reasons if reasons else ''}){miou}; latency p50 "
        f"{s['latency_p50_ms']} ms p95 {s['latency_p95_ms']} ms; {s['fps']} fps; "
        f"{s['bytes_per_frame']} B/frame; {s['cut']} {s['codec']}; {len(s['switches'])} "
        f"switches, {s['reconnects']} reconnects"
    )
