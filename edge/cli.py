"""``splitwire edge``: the edge agent daemon.

    splitwire edge --cloud 10.0.0.2:8500 --plan plans/resnet18 --source synthetic --fps 15
    splitwire edge --plan plans/resnet18 --source dir:photos --loop --output frames.jsonl \\
        --cloud tail.example:8500 --tls-ca ca.pem --token-file token \\
        --mqtt broker.example:8883 --mqtt-username cam7 --mqtt-password-file pw --mqtt-tls-ca ca.pem

Frame lines go to stdout unless ``--output FILE`` (or ``--quiet``); logs, the summary line
included, go to stderr.

Exit codes (also in ``--help``): 0 after ``--frames``, the end of the source, or
SIGTERM/SIGINT (frames in flight drained); 2 for a configuration it cannot start with (checked
before anything starts or any file is written); 3 when the cloud refused the session for a
reason retrying cannot fix (wrong plan, wrong token); 4 (:data:`EXIT_CLOUD_SERVED_NOTHING`)
when ``--cloud`` was given and the cloud served none of the frames.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from splitwire.edge import config as defaults

if TYPE_CHECKING:
    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfig

logger = logging.getLogger("splitwire.edge")

# The exit code of a run that was given a cloud and got no frame served by it: every frame was
# dropped or answered on this device because the cloud was away (a wrong address, a dead tail).
# A run whose option is all-on-edge by choice never needed the cloud and exits 0.
EXIT_CLOUD_SERVED_NOTHING = 4

EXIT_CODES = (
    "exit codes:\n"
    "  0  done: --frames frames, the end of the source, or SIGTERM/SIGINT (in flight drained)\n"
    "  2  a usage or configuration error (nothing started, no file written)\n"
    "  3  the cloud refused the session for good (wrong plan, wrong token)\n"
    f"  {EXIT_CLOUD_SERVED_NOTHING}  --cloud was given but it served no frame: every frame was "
    "dropped or answered\n     on this device because the cloud was away (the summary says how "
    "many of each)"
)


def register(subparsers: Any) -> None:
    """Add ``splitwire edge`` to the ``splitwire`` parser."""
    edge = subparsers.add_parser(
        "edge",
        help="run the edge agent: head on this device, tail in the cloud, one output per frame",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read frames from --source, run the plan's head, encode the activations and stream "
            "them to a `splitwire cloud` tail; emit exactly one JSON line per frame with its "
            "source: remote, local, or dropped with the reason. The frame lines go to stdout "
            "unless --output FILE (or --quiet: none); logs and the closing summary go to "
            "stderr.\n\n"
            "Up to --window frames are in flight, so the head, the network and the tail "
            "overlap. When the window is full the newest frame replaces the oldest one not yet "
            "sent. A frame not answered within --budget-ms of its capture is dropped (stale). "
            "Lost sessions are reopened with exponential backoff; frames in flight are sent "
            "again while their budget lasts.\n\n"
            "--policy auto (the default when the plan ships several cut/codec options and "
            "neither --cut nor --codec pins one) prices every option on the link the agent "
            "measures and switches when another is better by a margin for --hold-s. With "
            "--mqtt, status, telemetry and desired plans travel over MQTT under "
            "splitwire/v1/edges/EDGE_ID/; the data path never waits on it.\n\n"
            "SIGTERM/SIGINT: stop the source, drain within --grace-s, publish offline, exit 0."
        ),
        epilog=(
            "examples:\n"
            "  splitwire edge --cloud 127.0.0.1:8500 --plan out/r18 --source synthetic "
            "--fps 30 --frames 300\n"
            "  splitwire edge --plan out/r18 --source npy:frames.npy --local-only "
            "--output frames.jsonl\n\n" + EXIT_CODES
        ),
    )
    edge.add_argument("--plan", required=True, type=Path, metavar="DIR", help="plan directory")
    edge.add_argument(
        "--cloud",
        metavar="HOST:PORT",
        help="the tail service, e.g. 127.0.0.1:8500 (no scheme: --tls-ca turns TLS on); needed "
        "unless the plan's choice runs all on the edge or --local-only is given",
    )
    edge.add_argument(
        "--local-only",
        action="store_true",
        help="run on this device alone, with no --cloud: the plan's all-on-edge option even "
        "where the plan's choice runs its tail in the cloud",
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
        "options and neither --cut nor --codec is given); fixed: stay on the starting option",
    )
    pipe.add_argument(
        "--cut", metavar="ID",
        help="run this cut (default: the plan's choice); it stays pinned unless --policy auto "
        "is also given, which makes it only the starting cut",
    )  # fmt: skip
    pipe.add_argument(
        "--codec", metavar="SPEC", help="run this codec (with --cut; pinned like --cut)"
    )
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
    pipe.add_argument(
        "--unresponsive-factor",
        type=float,
        default=defaults.DEFAULT_UNRESPONSIVE_FACTOR,
        metavar="X",
        help="declare a session unresponsive (drop it, answer its frames on the edge, reconnect) "
        "when its frames go unanswered X times longer than the p95 of the last 64 answers "
        "(default %(default)s)",
    )
    pipe.add_argument(
        "--unresponsive-floor-ms",
        type=float,
        default=defaults.DEFAULT_UNRESPONSIVE_FLOOR_MS,
        metavar="MS",
        help="... but never before its frames went unanswered this long (default %(default)s)",
    )
    pipe.add_argument(
        "--unresponsive-first-ms",
        type=float,
        default=defaults.DEFAULT_UNRESPONSIVE_FIRST_MS,
        metavar="MS",
        help="... and, before the agent has timed any answer, not before this long, nor before "
        "--unresponsive-factor times the plan's predicted answer time (default %(default)s)",
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
        "--output",
        metavar="FILE.jsonl|-",
        help="write the frame lines (one JSON line per frame) to FILE instead of stdout (-, the "
        "default); FILE is replaced only once every other input was checked",
    )
    out.add_argument(
        "--quiet",
        dest="no_frame_lines",
        action="store_true",
        help="write no frame lines at all (the summary is still logged; not the global -q, "
        "which keeps stderr to errors)",
    )
    out.add_argument(
        "--json",
        action="store_true",
        help="print the run's summary as JSON on stdout (with --output FILE or --quiet)",
    )
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
    if args.no_frame_lines and args.output is not None:
        raise EdgeConfigError(f"--quiet and --output {args.output}: pick one (--quiet writes "
                              "no frame lines)")  # fmt: skip
    if args.json and not args.no_frame_lines and args.output in (None, "-"):
        raise EdgeConfigError(
            "--json prints the summary on stdout, where the frame lines go: give --output FILE "
            "for the frame lines, or --quiet for none"
        )
    if args.mqtt is None and (args.mqtt_username or args.mqtt_password_file or args.mqtt_tls_ca):
        raise EdgeConfigError("--mqtt-username/--mqtt-password-file/--mqtt-tls-ca need --mqtt")
    tls = ClientTls(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    fields: dict[str, Any] = {}
    if args.edge_id:
        fields["edge_id"] = args.edge_id
    # A cut or codec the user names is the one they want: the auto policy may move away from it
    # only when they ask for auto as well.
    pinned = args.cut is not None or args.codec is not None
    return EdgeConfig(
        plan=args.plan,
        source=args.source,
        cloud=args.cloud,
        local_only=args.local_only,
        frames=args.frames,
        fps=args.fps,
        window=args.window,
        budget_ms=args.budget_ms,
        policy=args.policy or ("fixed" if pinned else None),
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
        unresponsive_factor=args.unresponsive_factor,
        unresponsive_floor_ms=args.unresponsive_floor_ms,
        unresponsive_first_ms=args.unresponsive_first_ms,
        hold_s=args.hold_s,
        corrector=args.corrector,
        corrector_fusion=args.corrector_fusion,
        **fields,
    )


def _edge(args: argparse.Namespace) -> int:
    import asyncio

    # A daemon logs its lifecycle by default; -q keeps it to errors, -v adds debug.
    if not args.quiet and args.verbose == 0:
        logging.getLogger("splitwire").setLevel(logging.INFO)
    config = edge_config(args)
    mqtt_config = _mqtt_config(args)
    results = None if args.no_frame_lines or args.output in (None, "-") else _ResultsFile(
        args.output
    )  # fmt: skip
    output: IO[str] | None = None if args.no_frame_lines else sys.stdout
    if results is not None:
        # The agent only writes and flushes it, which _ResultsFile does once it is open.
        output = cast(IO[str], results)
    try:
        return asyncio.run(_run(config, args, mqtt_config, output, results))
    finally:
        if results is not None:
            results.close()


def _mqtt_config(args: argparse.Namespace) -> Any:
    """The control plane's settings from ``--mqtt*``, or None without ``--mqtt``."""
    from splitwire.edge.config import split_address
    from splitwire.edge.control import MqttConfig, read_password_file

    if not args.mqtt:
        return None
    host, port = split_address(args.mqtt, flag="--mqtt")
    password = read_password_file(args.mqtt_password_file) if args.mqtt_password_file else None
    return MqttConfig(
        host=host,
        port=port,
        username=args.mqtt_username,
        password=password,
        tls_ca=args.mqtt_tls_ca,
        telemetry_s=args.telemetry_s,
    )


class _ResultsFile:
    """``--output FILE``, opened (and so emptied) only once every other input was checked: a
    wrong ``--plan`` must leave the previous run's results as they were. The agent writes to
    it only while it runs, after :meth:`open`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stream: IO[str] | None = None

    def open(self) -> None:
        """Open FILE for writing, replacing what it held.

        Raises:
            EdgeConfigError: FILE cannot be written (the message says why).
        """
        from splitwire.edge.config import EdgeConfigError

        try:
            self._stream = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - see close()
        except OSError as exc:
            raise EdgeConfigError(f"--output {self.path}: cannot write: {exc.strerror}") from exc

    def write(self, text: str) -> int:
        """Write ``text``; only after :meth:`open`."""
        if self._stream is None:
            raise RuntimeError(f"--output {self.path} written before it was opened")
        return self._stream.write(text)

    def flush(self) -> None:
        """Flush what was written."""
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        """Close FILE, if it was opened."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def _run(
    config: EdgeConfig,
    args: argparse.Namespace,
    mqtt_config: Any,
    output: IO[str] | None,
    results: _ResultsFile | None,
) -> int:
    import asyncio
    import contextlib
    import signal

    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.control import ControlPlane
    from splitwire.edge.records import strict_json, summary_line

    agent = EdgeAgent(config, output=output)
    _check_the_cloud_is_given(config, agent)
    # Every input is checked (the plan, the source, the token, the cut): only now may the
    # previous run's results go.
    if results is not None:
        results.open()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    background: list[asyncio.Task[None]] = []
    control = ControlPlane(mqtt_config, agent.view) if mqtt_config else None
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
    failure = cloud_failure(summary, cloud=config.cloud)
    summary["failure"] = failure
    logger.info("%s", summary_line(summary))
    if failure is not None:
        logger.error("exit %d: %s", EXIT_CLOUD_SERVED_NOTHING, failure)
    if args.json:
        print(strict_json(summary, indent=2))
    return EXIT_CLOUD_SERVED_NOTHING if failure is not None else 0


def _check_the_cloud_is_given(config: EdgeConfig, agent: EdgeAgent) -> None:
    """Without ``--cloud``, a plan whose choice runs in the cloud runs on the edge only when
    ``--local-only`` says so (a named ``--cut``/``--codec`` is checked by the agent)."""
    from splitwire.edge.config import EdgeConfigError

    if config.cloud is not None or config.local_only or config.cut or config.codec:
        return
    choice = agent.plan.plan.choice
    options = {(o.cut, o.codec): o for o in agent.plan.options}
    chosen = options.get((choice.cut, choice.codec))
    if chosen is None or not chosen.local:
        raise EdgeConfigError(
            f"the plan's choice {choice.cut} {choice.codec} runs its tail in the cloud: give "
            "--cloud HOST:PORT, or --local-only to run the plan's all-on-edge option on this "
            "device"
        )


def cloud_failure(summary: dict[str, Any], *, cloud: str | None) -> str | None:
    """Why a run given ``cloud`` failed, from its summary: it emitted frames, the cloud served
    none of them (none ``remote`` or ``fused``), and some frame went without it for want of
    the cloud (dropped, or answered locally for another reason than ``all-on-edge``). None for
    a run that did not fail so.

    Args:
        summary: :meth:`EdgeAgent.summary`'s figures.
        cloud: ``--cloud`` (None: no cloud was given, so none could fail).
    """
    by_source = summary["by_source"]
    served = by_source.get("remote", 0) + by_source.get("fused", 0)
    if cloud is None or summary["frames"] == 0 or served > 0:
        return None
    by_reason = dict(summary["by_reason"])
    if by_reason.keys() <= {"all-on-edge"}:
        return None  # every frame ran on the edge by choice: the cloud was not needed
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items()))
    return (
        f"the cloud at {cloud} served none of the {summary['frames']} frames ("
        f"{by_source.get('local', 0)} answered on this device, {by_source.get('dropped', 0)} "
        f"dropped; {reasons}): check that `splitwire cloud` runs there with this plan and that "
        "this device reaches it"
    )


async def _progress(agent: Any, every_s: float) -> None:
    import asyncio

    from splitwire.edge.records import figure

    while True:
        await asyncio.sleep(every_s)
        t = agent.view.telemetry()
        # A run with no cloud has no session to miss.
        session = "" if t["connected"] or agent.config.cloud is None else ", no session"
        if t["frames"] == 0:  # loading, warming up or connecting: no rate to speak of yet
            logger.info("no frame out yet (%s %s%s)", t["cut"], t["codec"], session)
            continue
        logger.info(
            "%d frames (%s), %s, rtt %s, %s %s%s",
            t["frames"],
            ", ".join(f"{k} {v}" for k, v in sorted(t["by_source"].items())),
            figure(t["fps"], "fps"),
            figure(t["rtt_ms"], "ms"),
            t["cut"],
            t["codec"],
            session,
        )
