"""The reference backend of ``splitwire bench pipeline``: PyTorch RPC over TensorPipe, as
ParetoPipe splits a model between two devices.

    result = run_torch_rpc(Path("plans/resnet18"), "c0050", frames=60, window=4)
    result.throughput_fps, result.percentile(50), result.bytes_per_frame
    run_torch_rpc(Path("plans/resnet18"), "c0050", frames=60, window=4,
                  link="bw=20mbit,rtt=40ms").as_json()  # + what the emulator achieved

    python -m splitwire.benchmarks.torch_rpc run --plan plans/resnet18 --cut c0050 \
        --frames 60 --window 4 [--link bw=20mbit,rtt=40ms]

The run has two processes besides the caller, both started fresh for each run with
``python -m splitwire.benchmarks.torch_rpc``:

* the **tail** (RPC rank 1, ``"tail"``) loads the plan's tail for the cut once and serves
  :func:`run_tail`;
* the **edge** (RPC rank 0, ``"edge"``) runs the head on ``warmup + frames`` inputs and, for
  each, ``rpc.rpc_async("tail", run_tail, args=(cut, tensors))``, keeping at most ``window``
  frames in flight: frame *i* starts (clock read, then the head) only once fewer than
  ``window`` frames await their outputs.

The caller only waits for both, reads the edge's figures from a file, and kills whatever is
left when it is done or after ``timeout_s``. The edge is not the calling process because an RPC
agent cannot be initialised twice in one process (the second ``init_rpc`` waits forever on a
store prefix its fresh peer does not use), and a process of its own can be killed when a peer
hangs, whatever the RPC layer is blocked in.

What is carried, and how (the choices this reference makes):

* **Activations**: the head's crossing tensors as plain fp32 torch tensors (floating tensors
  cast to float32, others as they are), contiguous, as the RPC arguments — what ParetoPipe's
  RPC backend sends. TensorPipe pickles the call and ships each tensor's storage as a raw
  buffer next to the pickle, so the bytes on the wire are the fp32 bytes plus a small pickle;
  ``bytes_per_frame`` is the fp32 bytes, ``sum(t.numel() * t.element_size())``, which is what
  ``len(pickle.dumps(activations))`` comes to within a few hundred bytes of header.
* **Transport**: ``transport="tcp"`` (the default on loopback) restricts TensorPipe to what it
  negotiates between two hosts: the ``uv`` (TCP) transport and the ``mpt_uv`` channel (tensor
  data split over several TCP connections), with ``basic`` as fallback. Left alone on one host
  (``transport="auto"``) TensorPipe would use shared memory (``shm``) and cross-memory attach
  (``cma``) and not touch a socket, which no edge and cloud share. ``"tcp-basic"`` (``uv`` +
  ``basic``: tensors on one TCP connection per pipe) is the default, and the only choice,
  through a link. Everything binds to 127.0.0.1 (``TP_SOCKET_IFNAME=lo``,
  ``GLOO_SOCKET_IFNAME=lo``).
* **Compute**: both processes run torch with ``threads`` intra-op threads (default 1). The
  tail runs one frame at a time (``serial_tail=True``), like ``splitwire cloud``'s one compute
  thread; ``serial_tail=False`` lets TensorPipe's worker threads run tails concurrently, as
  ParetoPipe does.
* **Inputs**: four deterministic images at the plan's input shape
  (:func:`~splitwire.partitioner.calibration.synthetic_images`, seed 99, as the tail
  benchmark uses; standard normal values for non-image inputs), cycled.

Figures, all on the edge's ``perf_counter``:

* ``latencies_ms``: one per measured frame (``frames`` of them; the ``warmup`` frames before
  them are run but not counted): from the clock read before the head to the moment the RPC
  future holds the tail's outputs, taken in the future's done callback so a frame waited for
  late is not charged for the wait.
* ``duration_s``: from the completion of the last warm-up frame (the start of the first
  frame when ``warmup=0``) to the completion of the last frame; ``throughput_fps`` is
  ``frames / duration_s``.

:func:`rpc_tail_outputs` runs the same machinery on given inputs and returns the outputs the
edge received, to check them against the plan's halves run locally.

Through an emulated link (``link="bw=20mbit,rtt=40ms"``, any spec ``splitwire netem --link``
takes): the edge's calls to the tail and the tail's answers cross a
:class:`~splitwire.netem.LinkEmulator` run by the caller (in a thread) on
127.0.0.1. TensorPipe gives no say over where a worker connects: each agent publishes its
ephemeral listening address in the rendezvous store. So the caller hosts that store, and the
edge reads an address of the caller's instead of the tail's
(:mod:`~splitwire.benchmarks.rpc_proxy` tells how, and what it relies on in torch 2.13). What
this shows and what it does not:

* Every connection of the edge's pipe to the tail crosses the emulator: the pickled calls,
  the tensors, the answers. After the run the caller checks that the emulator carried at least
  the ``warmup + frames`` frames' tensor bytes from edge to tail, and fails otherwise.
* The link is the same emulator, with the same settings and seed, as splitwire's runs; but
  there it runs in the agent's process, here in the caller's, so neither peer pays for it.
* Start-up and shutdown are not all emulated: the store, Gloo's barriers and the tail's own
  pipe to the edge (``init_rpc``'s all-gather) use plain loopback. None of them is in a
  measured frame.
* TensorPipe's ``mpt_uv`` channel (several TCP lanes, whose addresses travel inside the
  channel) cannot be proxied this way, so through a link the tensors go over one TCP
  connection per pipe (``basic``), not the lanes TensorPipe would pick between two hosts.
  Frames still overlap up to ``window``. At the rates emulated here one connection is not what
  limits a transfer; on a fast link it may be.
* The result's ``emulator`` holds the emulator's statistics at the end of the run (including
  start-up, warm-up and the last answers): bytes, achieved rate while saturated and delay per
  direction; ``as_json`` flattens the main ones into ``link_*`` keys.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from splitwire.errors import SplitwireError
from splitwire.partitioner.link import LinkModel, parse_link
from splitwire.stats import percentile

if TYPE_CHECKING:
    from splitwire.benchmarks.rpc_proxy import TailLinkProxy

# Transports and channels TensorPipe may use, by ``transport`` name (None: its own choice).
TRANSPORTS: dict[str, tuple[list[str] | None, list[str] | None]] = {
    "tcp": (["uv"], ["mpt_uv", "basic"]),
    "tcp-basic": (["uv"], ["basic"]),
    "auto": (None, None),
}
# TensorPipe's default thread pool (what ParetoPipe runs with).
RPC_WORKER_THREADS = 16
# How long the tail may take to leave after the edge is done, before it is terminated.
EXIT_GRACE_S = 15.0
INPUT_SEED = 99
INPUT_COUNT = 4


class TorchRpcError(SplitwireError):
    """The PyTorch RPC reference could not run: RPC unavailable, a process failed or hung."""

    exit_code = 1


@dataclass(frozen=True)
class RpcRunResult:
    """What one run measured (see the module docstring for each figure's definition).

    Attributes:
        frames: measured frames (the warm-up frames run before them are not counted).
        window: frames in flight at most.
        duration_s: from the last warm-up frame's completion to the last frame's.
        latencies_ms: per measured frame, capture (before the head) to outputs on the edge.
        throughput_fps: ``frames / duration_s``.
        bytes_per_frame: fp32 bytes of the activations one frame carries.
        link: ``"loopback"``, or the emulated link's spec (canonical for a fixed link).
        emulator: with a link, the emulator's statistics at the end of the run
            (:meth:`~splitwire.netem.LinkEmulator.stats`: bytes, achieved rate and
            delay per direction, connections); None on loopback.
    """

    frames: int
    window: int
    duration_s: float
    latencies_ms: list[float]
    throughput_fps: float
    bytes_per_frame: float
    link: str = "loopback"
    emulator: dict[str, Any] | None = None

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the latencies, in ms; NaN if none."""
        return percentile(self.latencies_ms, q)

    def as_json(self) -> dict[str, Any]:
        """The run as a flat record; with a link, what the emulator achieved (``link_*``:
        bytes per direction, the rate while saturated in Mbit/s or None if it never was, the
        delay line's p50 per chunk, connections carried)."""
        record: dict[str, Any] = {
            "link": self.link,
            "frames": self.frames,
            "window": self.window,
            "duration_s": round(self.duration_s, 4),
            "fps": round(self.throughput_fps, 2),
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "p99_ms": round(self.percentile(99), 3),
            "bytes_per_frame": self.bytes_per_frame,
        }
        if self.emulator is not None:
            record["link_connections"] = self.emulator["connections"]
            for name in ("up", "down"):
                side = self.emulator[name]
                bps = side["achieved_bps"]
                record[f"link_{name}_bytes"] = side["bytes"]
                record[f"link_{name}_achieved_mbps"] = None if bps is None else round(bps / 1e6, 3)
                record[f"link_{name}_delay_p50_ms"] = round(side["delay_p50_ms"], 3)
        return record


def rpc_available() -> bool:
    """Whether this torch build has ``torch.distributed.rpc``."""
    import torch.distributed.rpc as rpc

    return bool(rpc.is_available())


def run_torch_rpc(
    plan_dir: Path,
    cut: str,
    *,
    frames: int,
    window: int,
    warmup: int = 5,
    threads: int = 1,
    timeout_s: float = 120.0,
    transport: str | None = None,
    serial_tail: bool = True,
    link: str | None = None,
) -> RpcRunResult:
    """Run ``warmup + frames`` frames of ``plan_dir``'s ``cut`` through PyTorch RPC, at most
    ``window`` in flight, and report the last ``frames`` (see the module docstring).

    Args:
        timeout_s: bound on the whole run (start-up, frames, shutdown) and on each RPC call;
            past it both processes are killed.
        transport: a key of :data:`TRANSPORTS`; None: ``"tcp"`` on loopback, ``"tcp-basic"``
            (the only one allowed) with a link.
        serial_tail: one tail at a time on the cloud side (``splitwire cloud``'s way).
        link: a link spec in the planner's syntax (``"bw=20mbit,rtt=40ms"``, ``"lte"``, a trace
            file): the edge's calls and their answers cross a link emulator (see "Through an
            emulated link" in the module docstring). None: plain loopback.

    Raises:
        TorchRpcError: RPC is not available, a transport other than ``"tcp-basic"`` with a
            link, a process failed or did not finish in time (the message carries its output),
            or the emulator carried fewer bytes up than the frames' tensors.
        LinkError: ``link`` does not parse.
        PlanError: the plan does not load, or ships no head and tail for ``cut``.
    """
    if frames < 1 or window < 1 or warmup < 0:
        raise TorchRpcError(f"need frames >= 1, window >= 1, warmup >= 0; got {frames}, "
                            f"{window}, {warmup}")  # fmt: skip
    report = _launch(
        plan_dir, cut, frames=frames, window=window, warmup=warmup, threads=threads,
        timeout_s=timeout_s, transport=transport, serial_tail=serial_tail, inputs=None,
        link=link,
    )  # fmt: skip
    duration = float(report["duration_s"])
    return RpcRunResult(
        frames=frames,
        window=window,
        duration_s=duration,
        latencies_ms=[float(v) for v in report["latencies_ms"]],
        throughput_fps=frames / duration if duration > 0 else float("nan"),
        bytes_per_frame=float(report["bytes_per_frame"]),
        link=report["link"],
        emulator=report["emulator"],
    )


def rpc_tail_outputs(
    plan_dir: Path,
    cut: str,
    inputs: Sequence[torch.Tensor],
    *,
    window: int = 1,
    threads: int = 1,
    timeout_s: float = 120.0,
    transport: str | None = None,
    serial_tail: bool = True,
    link: str | None = None,
) -> list[tuple[torch.Tensor, ...]]:
    """The outputs the edge receives for ``inputs`` (model inputs, one frame each), in order,
    through the same processes and RPC calls as :func:`run_torch_rpc` (no warm-up), over
    ``link`` if given.

    Raises:
        TorchRpcError, PlanError: as :func:`run_torch_rpc`.
    """
    if not inputs:
        return []
    report = _launch(
        plan_dir, cut, frames=len(inputs), window=window, warmup=0, threads=threads,
        timeout_s=timeout_s, transport=transport, serial_tail=serial_tail, inputs=list(inputs),
        link=link,
    )  # fmt: skip
    return [tuple(out) for out in report["outputs"]]


def bench_inputs(
    input_shape: Sequence[int], *, count: int = INPUT_COUNT, seed: int = INPUT_SEED
) -> list[torch.Tensor]:
    """``count`` deterministic model inputs of ``input_shape`` (batch first): synthetic
    images for (N, C, H, W), standard normal values otherwise."""
    from splitwire.partitioner.calibration import synthetic_images

    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 4:
        return [synthetic_images(shape[0], shape[1:], seed=seed + i) for i in range(count)]
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(count)]


def fp32_activations(out: Any) -> tuple[torch.Tensor, ...]:
    """The head's output as the RPC carries it: a tuple of contiguous tensors, floating ones
    in float32, each owning exactly its bytes (RPC ships a view's whole storage)."""
    tensors = tuple(out) if isinstance(out, tuple | list) else (out,)
    sent = []
    for t in tensors:
        t = t.float() if t.is_floating_point() else t
        t = t.contiguous()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        sent.append(t)
    return tuple(sent)


def activation_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """The bytes of ``tensors``' data."""
    return sum(t.numel() * t.element_size() for t in tensors)


# ---- the caller: start both processes, wait, clean up ----------------------------------------


def _launch(
    plan_dir: Path,
    cut: str,
    *,
    frames: int,
    window: int,
    warmup: int,
    threads: int,
    timeout_s: float,
    transport: str | None,
    serial_tail: bool,
    inputs: list[torch.Tensor] | None,
    link: str | None,
) -> dict[str, Any]:
    transport = _transport_for(transport, link)
    emulated = None if link is None else parse_link(link)
    if not rpc_available():
        raise TorchRpcError("this torch build has no torch.distributed.rpc (is_available() False)")
    _check_plan(Path(plan_dir), cut)
    # Imported here: it subclasses torch.distributed.Store, absent from builds without RPC.
    from splitwire.benchmarks.rpc_proxy import TailLinkProxy

    with contextlib.ExitStack() as stack:
        proxy = None
        if emulated is not None:
            proxy = stack.enter_context(
                TailLinkProxy(link=emulated, timeout=timedelta(seconds=timeout_s))
            )
        report = _run_processes(
            plan_dir, cut, frames=frames, window=window, warmup=warmup, threads=threads,
            timeout_s=timeout_s, transport=transport, serial_tail=serial_tail, inputs=inputs,
            proxy=proxy,
        )  # fmt: skip
    if emulated is None:
        report.update(link="loopback", emulator=None)
        return report
    stats = report["emulator"]
    carried = (frames + warmup) * int(report["bytes_per_frame"])
    if stats is None or stats["up"]["bytes"] < carried:
        seen = "it never started" if stats is None else (
            f"it carried {stats['up']['bytes']} bytes over {stats['connections']} connections, "
            f"{stats['rewrites']} address rewrites"
        )  # fmt: skip
        raise TorchRpcError(
            f"the link emulator should have carried at least the {carried} bytes of the "
            f"{frames + warmup} frames' tensors from edge to tail, but {seen}: some bypassed "
            "it, so the run is not reported. Does this torch's TensorPipe still connect as "
            "splitwire.benchmarks.rpc_proxy describes?"
        )
    report["link"] = str(emulated) if isinstance(emulated, LinkModel) else link
    return report


def _transport_for(transport: str | None, link: str | None) -> str:
    if transport is None:
        return "tcp" if link is None else "tcp-basic"
    if transport not in TRANSPORTS:
        raise TorchRpcError(f"unknown transport {transport!r}; expected one of {list(TRANSPORTS)}")
    if link is not None and transport != "tcp-basic":
        raise TorchRpcError(
            f"transport {transport!r} with link {link!r}: only 'tcp-basic' (uv + basic) opens "
            "every connection to an address the emulator can stand in for (mpt_uv's lanes "
            "connect to addresses exchanged inside the channel; shm and cma use no socket); "
            "pass transport='tcp-basic' or None"
        )
    return transport


def _run_processes(
    plan_dir: Path,
    cut: str,
    *,
    frames: int,
    window: int,
    warmup: int,
    threads: int,
    timeout_s: float,
    transport: str,
    serial_tail: bool,
    inputs: list[torch.Tensor] | None,
    proxy: TailLinkProxy | None,
) -> dict[str, Any]:
    """Both RPC processes, the edge's report, and with a proxy its statistics
    (``"emulator"``, read once the edge is done)."""
    port = _free_port() if proxy is None else proxy.port
    tail_init = f"tcp://127.0.0.1:{port}" if proxy is None else proxy.tail_init_method
    edge_init = tail_init if proxy is None else proxy.edge_init_method
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TP_SOCKET_IFNAME="lo",
        GLOO_SOCKET_IFNAME="lo",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    common = [
        "--plan", str(Path(plan_dir).resolve()), "--cut", cut, "--threads", str(threads),
        "--timeout-s", str(timeout_s), "--transport", transport,
    ]  # fmt: skip
    # -P: not the working directory on sys.path (the repository root would shadow splitwire).
    module = [sys.executable, "-P", "-m", "splitwire.benchmarks.torch_rpc"]
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="splitwire-rpc-") as tmp:
        result_path = Path(tmp) / "result.pt"
        edge_args = [
            "--init-method", edge_init, "--frames", str(frames), "--window", str(window),
            "--warmup", str(warmup), "--result", str(result_path),
        ]  # fmt: skip
        if inputs is not None:
            torch.save([t.detach().cpu() for t in inputs], Path(tmp) / "inputs.pt")
            edge_args += ["--inputs", str(Path(tmp) / "inputs.pt"), "--keep-outputs"]
        tail_args = ["--init-method", tail_init, *([] if serial_tail else ["--concurrent"])]
        with (
            open(Path(tmp) / "tail.log", "w+") as tail_log,
            open(Path(tmp) / "edge.log", "w+") as edge_log,
        ):
            tail = _start([*module, "tail", *common, *tail_args], tail_log, env, tmp)
            edge = None
            done = False
            stats = None
            try:
                edge = _start([*module, "edge", *common, *edge_args], edge_log, env, tmp)
                _wait(edge, tail, edge_log, tail_log, deadline,
                      poll=None if proxy is None else proxy.poll)  # fmt: skip
                stats = None if proxy is None else proxy.stats()
                done = True
            finally:
                # After a clean run the tail leaves by itself (its graceful shutdown returns
                # with the edge's); after a failure nothing is waited for.
                if edge is not None:
                    _stop(edge, grace_s=0)
                _stop(tail, grace_s=EXIT_GRACE_S if done else 0)
        report: dict[str, Any] = torch.load(result_path, weights_only=True)
    report["emulator"] = stats
    return report


def _check_plan(plan_dir: Path, cut: str) -> None:
    """Fail here, with the plan's own error, rather than in a child process."""
    from splitwire.partitioner.errors import PlanError
    from splitwire.partitioner.runtime import open_plan

    spec = open_plan(plan_dir).plan.cut(cut)
    if spec.head is None or spec.tail is None:
        raise PlanError(f"cut {cut} ({spec.name}) of {plan_dir} ships no head and tail")


def _start(command: list[str], log: Any, env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
    )


def _wait(
    edge: subprocess.Popen[bytes],
    tail: subprocess.Popen[bytes],
    edge_log: Any,
    tail_log: Any,
    deadline: float,
    *,
    poll: Callable[[], object] | None = None,
) -> None:
    """Until the edge exits 0, calling ``poll`` meanwhile; TorchRpcError (with the logs) if
    either fails, ``poll`` raises or time is up."""
    while True:
        if poll is not None:
            try:
                poll()
            except SplitwireError as err:
                raise TorchRpcError(
                    f"cannot put the link emulator in front of the tail: {err}"
                    + _also("edge", edge, edge_log)
                    + _also("tail", tail, tail_log)
                ) from err
        try:
            code = edge.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            code = None
        if code == 0:
            return
        if code is not None:
            raise TorchRpcError(
                f"the RPC edge process exited with {code}:\n{_read(edge_log)}"
                + _also("tail", tail, tail_log)
            )
        if tail.poll() not in (None, 0):  # 0: it shut down with the edge, which is writing
            raise TorchRpcError(
                f"the RPC tail process exited with {tail.returncode} before the edge was done "
                f"(it failed to start or to serve):\n{_read(tail_log)}"
                + _also("edge", edge, edge_log)
            )
        if time.monotonic() > deadline:
            raise TorchRpcError(
                "the PyTorch RPC run did not finish within its timeout"
                + _also("edge", edge, edge_log)
                + _also("tail", tail, tail_log)
            )


def _also(role: str, process: subprocess.Popen[bytes], log: Any) -> str:
    text = _read(log)
    state = "running" if process.poll() is None else f"exit {process.returncode}"
    return f"\n--- {role} process ({state}) ---\n{text}" if text else ""


def _read(log: Any, limit: int = 4000) -> str:
    log.flush()
    log.seek(0)
    text: str = log.read()
    return text[-limit:].strip()


def _stop(process: subprocess.Popen[Any], *, grace_s: float) -> None:
    """Let it exit within ``grace_s``, then SIGTERM, then SIGKILL (bounded either way)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- the two RPC processes -------------------------------------------------------------------


class _Tail:
    """The tail process's state: the one loaded tail and how calls to it are serialised."""

    cut: str | None = None
    module: torch.nn.Module | None = None
    lock: Any = contextlib.nullcontext()


def run_tail(cut: str, tensors: Sequence[torch.Tensor]) -> Any:
    """The RPC the edge calls on ``"tail"``: the loaded tail on the crossing tensors."""
    if cut != _Tail.cut or _Tail.module is None:
        raise ValueError(f"this tail serves cut {_Tail.cut}, not {cut}")
    with _Tail.lock, torch.inference_mode():
        return _Tail.module(*tensors)


def _options(args: argparse.Namespace) -> Any:
    import torch.distributed.rpc as rpc

    transports, channels = TRANSPORTS[args.transport]
    return rpc.TensorPipeRpcBackendOptions(
        init_method=args.init_method,
        num_worker_threads=RPC_WORKER_THREADS,
        rpc_timeout=args.timeout_s,
        _transports=transports,
        _channels=channels,
    )


def _serve_tail(args: argparse.Namespace) -> int:
    import torch.distributed.rpc as rpc

    from splitwire.partitioner.runtime import open_plan

    torch.set_num_threads(args.threads)
    module = open_plan(Path(args.plan)).tail(args.cut)
    _Tail.cut, _Tail.module = args.cut, module
    _Tail.lock = contextlib.nullcontext() if args.concurrent else threading.Lock()
    rpc.init_rpc("tail", rank=1, world_size=2, rpc_backend_options=_options(args))
    rpc.shutdown()  # graceful: returns once the edge has shut down too
    return 0


def _run_edge(args: argparse.Namespace) -> int:
    import torch.distributed.rpc as rpc

    from splitwire.benchmarks import rpc_proxy
    from splitwire.partitioner.runtime import open_plan

    torch.set_num_threads(args.threads)
    if args.init_method.startswith(f"{rpc_proxy.SCHEME}://"):
        rpc_proxy.register_rendezvous()  # the tail's address is read as the emulator's
    plan = open_plan(Path(args.plan))
    head = plan.head(args.cut)
    if args.inputs:
        inputs = list(torch.load(args.inputs, weights_only=True))
    else:
        inputs = bench_inputs(plan.plan.input_shape)
    total = args.warmup + args.frames
    started = [math.nan] * total
    finished = [math.nan] * total
    slots = threading.Semaphore(args.window)
    futures = []
    sizes = set()

    rpc.init_rpc("edge", rank=0, world_size=2, rpc_backend_options=_options(args))
    clean = False
    try:
        with torch.inference_mode():
            for i in range(total):
                if not slots.acquire(timeout=args.timeout_s):
                    raise TimeoutError(f"no answer within {args.timeout_s} s")

                def done(_: Any, i: int = i) -> None:
                    finished[i] = time.perf_counter()
                    slots.release()

                started[i] = time.perf_counter()
                tensors = fp32_activations(head(inputs[i % len(inputs)]))
                future = rpc.rpc_async("tail", run_tail, args=(args.cut, tensors))
                future.add_done_callback(done)
                futures.append(future)
                sizes.add(activation_bytes(tensors))
            outputs = [future.wait() for future in futures]  # raises the tail's error, if any
        clean = True
    finally:
        if clean:
            rpc.shutdown(graceful=True, timeout=args.timeout_s)
        else:
            rpc.shutdown(graceful=False)

    first = finished[args.warmup - 1] if args.warmup else started[0]
    report: dict[str, Any] = {
        "latencies_ms": [(finished[i] - started[i]) * 1000 for i in range(args.warmup, total)],
        "duration_s": finished[-1] - first,
        "bytes_per_frame": max(sizes),
    }
    if args.keep_outputs:
        report["outputs"] = [
            tuple(out) if isinstance(out, tuple | list) else (out,) for out in outputs
        ]
    torch.save(report, args.result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m splitwire.benchmarks.torch_rpc {tail,edge,run} ...``: the two RPC roles
    (started by :func:`run_torch_rpc`), and ``run``, which does one whole run and prints it as
    JSON."""
    parser = argparse.ArgumentParser(prog="python -m splitwire.benchmarks.torch_rpc")
    parser.add_argument("role", choices=["tail", "edge", "run"])
    parser.add_argument("--plan", required=True)
    parser.add_argument("--cut", required=True)
    parser.add_argument("--init-method", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--transport", choices=list(TRANSPORTS), default=None)
    parser.add_argument("--link", default=None, help="run: through an emulated link (SPEC)")
    parser.add_argument("--concurrent", action="store_true", help="tails run concurrently")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--result", default="")
    parser.add_argument("--inputs", default="")
    parser.add_argument("--keep-outputs", action="store_true")
    args = parser.parse_args(argv)
    # torch's RPC init builds a Gloo group the deprecated way; its warning is noise in the logs.
    warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
    if args.role == "tail":
        return _serve_tail(args)
    if args.role == "edge":
        return _run_edge(args)
    torch.set_num_threads(args.threads)
    try:
        result = run_torch_rpc(
            Path(args.plan), args.cut, frames=args.frames, window=args.window,
            warmup=args.warmup, threads=args.threads, timeout_s=args.timeout_s,
            transport=args.transport, serial_tail=not args.concurrent, link=args.link,
        )  # fmt: skip
    except SplitwireError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    transport = _transport_for(args.transport, args.link)
    print(json.dumps({"cut": args.cut, "transport": transport, **result.as_json()}))
    return 0


if __name__ == "__main__":
    # Through the package module, so that run_tail and its state are one object in both
    # processes (``splitwire.benchmarks.torch_rpc.run_tail``, not ``__main__.run_tail``).
    from splitwire.benchmarks.torch_rpc import main as _main

    sys.exit(_main())
