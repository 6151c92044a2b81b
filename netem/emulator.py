"""A user-space link emulator: a loopback TCP proxy with a link's rate, delay, jitter, loss
and outages.

    splitwire netem --listen 127.0.0.1:9000 --upstream 127.0.0.1:50051 --link lte
    splitwire netem --listen 127.0.0.1:9000 --upstream 127.0.0.1:50051 --trace drop.yaml --json

    async with LinkEmulator(upstream="127.0.0.1:50051", link=parse_link("bw=20mbit,rtt=40ms"))
            as em:
        ...  # connect to em.address; em.stats() says what the link actually did

This machine's kernel has no ``netem`` qdisc, so the link lives in this process. Every byte
read from one end goes through two stages of its direction (up = client → upstream):

1. **A token bucket** at the direction's rate (``uplink_bps`` / ``downlink_bps``; with loss, the
   planner's *effective* rate, i.e. capped by the Mathis bound, as a TCP flow over that link
   would see). The bucket holds ``BURST_BYTES`` (two packets), so a chunk leaves the bucket
   about when its last byte would have been serialised onto the wire. It is shared by every
   connection (one bottleneck per direction) and holds at most ``max_queue_s`` of data: beyond
   that the emulator stops reading, so the sender's TCP feels back-pressure.
2. **A delay line**: the chunk is written to the other end at its departure time + rtt/2 +
   jitter (+ a loss stall). Delivery times never decrease within a connection, so jitter never
   reorders bytes (a late chunk delays those behind it, as a real FIFO queue would).

Jitter: ``jitter_s`` is the link model's mean extra one-way queueing delay; the emulator draws
it from an exponential distribution truncated at ``JITTER_CAP`` × ``jitter_s`` (its scale set
so that the truncated mean is exactly ``jitter_s``). A new value is drawn for each burst of
reads (reads more than ``BURST_GAP_S`` apart), so one message gets one queueing delay rather
than the maximum of many.

Loss: bytes cannot be dropped inside a TCP stream, so a lost packet becomes the delay its
retransmission would cost, as the planner's transfer model prices it (``partitioner/link.py``):
per chunk of ``k`` packets, each packet is lost with probability ``loss``; a loss among the
last three packets of a chunk that ends a burst of writes (the read returned less than a full
chunk) stalls the chunk by the retransmission timeout ``rto_s``; any other loss (fast
retransmit) by ``mean_rtt_s``.

Outages: a trace's outages (entries marked ``stall: true`` or with bandwidth 0, read by the
planner's own :func:`~splitwire.partitioner.link.load_trace`) hold every byte, in the bucket and
in the delay line, until they end; then delivery resumes in order. Trace time starts when the
emulator starts.

The emulator only listens on and connects to loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import random
import signal
import socket
import statistics
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from splitwire.errors import SplitwireError
from splitwire.partitioner.link import MSS_BYTES, LinkModel, LinkTrace
from splitwire.stats import percentile

__all__ = ["LinkEmulator", "NetemError", "require_loopback", "serve"]

CHUNK_BYTES = 32 * 1024
BURST_BYTES = 2 * MSS_BYTES
BURST_GAP_S = 0.002
JITTER_CAP = 4.0
TAIL_PACKETS = 3
# Delay samples kept per direction for the percentiles in stats() (oldest dropped first).
MAX_SAMPLES = 50_000


class NetemError(SplitwireError):
    """A bad emulator setting: a non-loopback address, an address already in use, a bad
    buffer size. (A bad link spec or trace is the planner's ``LinkError``.)"""


def require_loopback(address: str, *, what: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` and check that HOST is a loopback address.

    Raises:
        NetemError: naming ``what`` (e.g. ``--listen``) when HOST is not loopback, or when the
            address does not parse.
    """
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise NetemError(f"{what} {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9000")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except OSError as err:
        raise NetemError(f"{what} {address!r}: cannot resolve {host!r} ({err})") from err
    resolved = {str(info[4][0]) for info in infos}
    if not all(ipaddress.ip_address(ip.split("%")[0]).is_loopback for ip in resolved):
        raise NetemError(
            f"{what} {address!r}: {host} is not a loopback address (resolves to "
            f"{', '.join(sorted(resolved))}); the emulator only listens on and connects to "
            "127.0.0.0/8 or ::1 — run both ends on this machine"
        )
    return host, int(port_text)


def _state_at(link: LinkModel | LinkTrace, t: float) -> LinkModel:
    """The link state at trace time ``t`` (a fixed link at any time)."""
    return link.at(max(t, 0.0)) if isinstance(link, LinkTrace) else link


def _held_until(link: LinkModel | LinkTrace, t: float) -> float:
    """``t``, or the end of the trace's outage ``t`` falls in."""
    return link.held_until(t) if isinstance(link, LinkTrace) else t


def _jitter_scale(cap: float) -> float:
    """Scale s (in units of the mean) of an exponential truncated at ``cap`` means whose
    truncated mean is 1: solve s - cap / (exp(cap / s) - 1) = 1 by bisection."""
    low, high = 0.5, 2.0
    for _ in range(60):
        mid = (low + high) / 2
        if mid - cap / math.expm1(cap / mid) < 1.0:
            low = mid
        else:
            high = mid
    return (low + high) / 2


_SCALE = _jitter_scale(JITTER_CAP)


@dataclass
class _DirectionStats:
    bytes: int = 0
    chunks: int = 0
    saturated_bytes: int = 0
    saturated_s: float = 0.0
    delay_total_s: float = 0.0
    delays_s: list[float] = field(default_factory=list)
    extra_s: list[float] = field(default_factory=list)
    late_total_s: float = 0.0
    loss_stalls: int = 0
    outage_holds: int = 0
    last_write: float | None = None


class _Direction:
    """One direction's bottleneck (token bucket) and delay state, shared by all connections."""

    def __init__(self, name: str, link: LinkModel | LinkTrace, *, t0: float,
                 rng: random.Random, max_queue_s: float) -> None:  # fmt: skip
        self.name = name
        self.link = link
        self.t0 = t0
        self.rng = rng
        self.max_queue_s = max_queue_s
        self.tokens = float(BURST_BYTES)
        self.tokens_at = t0
        self.last_depart = t0
        self.last_read = -math.inf
        self.jitter_draw = 0.0
        self.stats = _DirectionStats()

    def _rate_bytes(self, link: LinkModel) -> float:
        bps = link.effective_uplink_bps if self.name == "up" else link.effective_downlink_bps
        return bps / 8.0

    def schedule_chunk(
        self, now: float, nbytes: int, *, drained: bool
    ) -> tuple[float, float, float]:
        """Departure from the bucket, delivery time (before per-connection ordering) and the
        base one-way delay, all in monotonic seconds, for a chunk read at ``now``."""
        start = max(now, self.last_depart)
        held = self.t0 + _held_until(self.link, start - self.t0)
        if held > start:  # an outage: no tokens accrue while it lasts
            start, self.tokens, self.tokens_at = held, 0.0, held
            self.stats.outage_holds += 1
        link = _state_at(self.link, start - self.t0)
        rate = self._rate_bytes(link)
        self.tokens = min(BURST_BYTES, self.tokens + rate * (start - self.tokens_at))
        depart = start if self.tokens >= nbytes else start + (nbytes - self.tokens) / rate
        self.tokens = max(0.0, self.tokens - nbytes)
        self.tokens_at = self.last_depart = depart
        if now - self.last_read > BURST_GAP_S:
            self.jitter_draw = min(self.rng.expovariate(1.0 / _SCALE), JITTER_CAP)
        self.last_read = now
        base = link.rtt_s / 2.0
        delay = base + self.jitter_draw * link.jitter_s + self._loss_stall(link, nbytes, drained)
        return depart, depart + delay, base

    def _loss_stall(self, link: LinkModel, nbytes: int, drained: bool) -> float:
        if link.loss == 0.0:
            return 0.0
        packets = max(1, math.ceil(nbytes / MSS_BYTES))
        tail = min(packets, TAIL_PACKETS) if drained else 0
        keep = 1.0 - link.loss
        stall = 0.0
        if tail and self.rng.random() < 1.0 - keep**tail:
            stall += link.rto_s
        if packets > tail and self.rng.random() < 1.0 - keep ** (packets - tail):
            stall += link.mean_rtt_s
        if stall:
            self.stats.loss_stalls += 1
        return stall

    def record(self, *, written: float, depart: float, due: float, base: float, nbytes: int,
               backlogged: bool) -> None:  # fmt: skip
        s = self.stats
        if backlogged and s.last_write is not None:
            s.saturated_bytes += nbytes
            s.saturated_s += written - s.last_write
        s.last_write = written
        s.bytes += nbytes
        s.chunks += 1
        added = written - depart  # the delay line's part: rtt/2 + jitter + stalls + loop lag
        s.delay_total_s += added
        s.late_total_s += max(0.0, written - due)
        if len(s.delays_s) >= MAX_SAMPLES:
            del s.delays_s[: MAX_SAMPLES // 2], s.extra_s[: MAX_SAMPLES // 2]
        s.delays_s.append(added)
        s.extra_s.append(added - base)

    def summary(self, link: LinkModel) -> dict[str, Any]:
        s = self.stats
        delays, extra = s.delays_s, s.extra_s

        def q(values: list[float], percent: int) -> float:
            return 1e3 * percentile(values, percent) if values else 0.0

        bps = link.effective_uplink_bps if self.name == "up" else link.effective_downlink_bps
        return {
            "requested_bps": bps,
            "requested_one_way_ms": 1e3 * link.rtt_s / 2,
            "requested_jitter_ms": 1e3 * link.jitter_s,
            "bytes": s.bytes,
            "chunks": s.chunks,
            "achieved_bps": 8 * s.saturated_bytes / s.saturated_s if s.saturated_s > 0 else None,
            "saturated_s": round(s.saturated_s, 4),
            "delay_mean_ms": 1e3 * s.delay_total_s / s.chunks if s.chunks else 0.0,
            "delay_p50_ms": q(delays, 50),
            "delay_p95_ms": q(delays, 95),
            "delay_max_ms": q(delays, 100),
            "jitter_mean_ms": 1e3 * statistics.fmean(extra) if extra else 0.0,
            "late_mean_ms": 1e3 * s.late_total_s / s.chunks if s.chunks else 0.0,
            "loss_stalls": s.loss_stalls,
            "outage_holds": s.outage_holds,
        }


class LinkEmulator:
    """Forward TCP connections from a loopback port to ``upstream`` across an emulated link.

    Args:
        upstream: ``HOST:PORT`` of the real server (loopback).
        link: a :class:`LinkModel`, or a :class:`LinkTrace` (time 0 = entering the block),
            whose outages hold every byte while they last.
        listen: where to accept (loopback; port 0 picks a free one).
        seed: seeds jitter and loss draws (``None``: a fresh seed).
        max_queue_s: the bottleneck's buffer, in seconds of data at its rate.

    Raises:
        NetemError: a non-loopback ``upstream`` or ``listen``.
    """

    def __init__(self, *, upstream: str, link: LinkModel | LinkTrace,
                 listen: str = "127.0.0.1:0", seed: int | None = None,
                 max_queue_s: float = 1.0) -> None:  # fmt: skip
        self._upstream = require_loopback(upstream, what="upstream")
        self._listen = require_loopback(listen, what="listen")
        if not (max_queue_s > 0):
            raise NetemError(f"max_queue_s={max_queue_s!r}: expected > 0")
        self._link = link
        self._rng = random.Random(seed)
        self._max_queue_s = max_queue_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._directions: dict[str, _Direction] = {}
        self.t0 = 0.0
        self.connections = 0
        self.address = ""

    async def __aenter__(self) -> LinkEmulator:
        self.t0 = time.monotonic()
        self._directions = {
            name: _Direction(name, self._link, t0=self.t0, rng=self._rng,
                             max_queue_s=self._max_queue_s)
            for name in ("up", "down")
        }  # fmt: skip
        self._server = await asyncio.start_server(self._accept, *self._listen)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def link_now(self) -> LinkModel:
        """The link state in force now."""
        return _state_at(self._link, time.monotonic() - self.t0)

    def stats(self) -> dict[str, Any]:
        """What the link did so far, per direction: requested figures (of the state in force
        now) next to achieved ones. ``achieved_bps`` counts only chunks that waited for the
        bucket (the link was saturated); ``delay_*`` is the delay line's time per chunk
        (departure to write: rtt/2 + jitter + loss stalls + event-loop lateness)."""
        link = self.link_now()
        return {
            "link": str(link),
            "elapsed_s": round(time.monotonic() - self.t0, 3),
            "connections": self.connections,
            **{name: d.summary(link) for name, d in self._directions.items()},
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self.connections += 1
        for sock_writer in (writer, up_writer):
            sock = sock_writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._spawn(self._connection(reader, writer, up_reader, up_writer))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          up_reader: asyncio.StreamReader,
                          up_writer: asyncio.StreamWriter) -> None:  # fmt: skip
        writers = (writer, up_writer)
        try:
            await asyncio.gather(
                self._pipe(self._directions["up"], reader, up_writer, writers),
                self._pipe(self._directions["down"], up_reader, writer, writers),
            )
        finally:
            for each in writers:
                each.close()

    async def _pipe(self, direction: _Direction, source: asyncio.StreamReader,
                    sink: asyncio.StreamWriter,
                    writers: tuple[asyncio.StreamWriter, ...]) -> None:  # fmt: skip
        """Carry one direction until EOF (then half-close the sink) or an error (then close
        both ends, which ends the other direction too)."""
        queue: asyncio.Queue[tuple[float, float, float, bytes, bool] | None] = asyncio.Queue()
        link = self._link
        t0 = self.t0

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                depart, due, base, data, backlogged = item
                while (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                    # An outage that began while the chunk was on its way holds it too.
                    held = t0 + _held_until(link, time.monotonic() - t0)
                    if held > due:
                        direction.stats.outage_holds += 1
                        due = held
                sink.write(data)
                await sink.drain()
                direction.record(written=time.monotonic(), depart=depart, due=due, base=base,
                                 nbytes=len(data), backlogged=backlogged)  # fmt: skip

        delivery = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while data := await source.read(CHUNK_BYTES):
                now = time.monotonic()
                backlogged = direction.last_depart > now
                depart, due, base = direction.schedule_chunk(
                    now, len(data), drained=len(data) < CHUNK_BYTES
                )
                last_due = due = max(due, last_due)
                queue.put_nowait((depart, due, base, data, backlogged))
                if (ahead := depart - now - self._max_queue_s) > 0:
                    await asyncio.sleep(ahead)  # the bottleneck's buffer is full
            queue.put_nowait(None)
            await delivery
            if sink.can_write_eof():
                sink.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            for each in writers:  # either end went away: the other sees the close
                each.close()
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await delivery


async def serve(
    *, listen: str, upstream: str, link: LinkModel | LinkTrace, interval_s: float = 1.0,
    duration_s: float | None = None, seed: int | None = None, report: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the emulator until SIGINT/SIGTERM (or ``duration_s``); every ``interval_s`` write a
    line per direction to ``report`` (a text stream, e.g. stderr): the rate delivered in the
    interval and its mean delay-line time, next to the link state's. Returns :meth:`stats`.

    Raises:
        NetemError: a non-loopback address, or ``listen`` already in use.
    """
    emulator = LinkEmulator(upstream=upstream, link=link, listen=listen, seed=seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            entered = await emulator.__aenter__()
        except OSError as err:
            raise NetemError(f"listen {listen!r}: cannot listen there ({err})") from err
        try:
            if report is not None:
                print(f"netem: listening on {entered.address}, forwarding to {upstream}, "
                      f"link {entered.link_now()}", file=report, flush=True)  # fmt: skip
            previous = entered.stats()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not stop.is_set():
                wait = (
                    interval_s if deadline is None else min(interval_s, deadline - time.monotonic())
                )
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                current = entered.stats()
                if report is not None:
                    _report_interval(previous, current, report)
                previous = current
            return entered.stats()
        finally:
            await emulator.__aexit__(None, None, None)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _report_interval(previous: dict[str, Any], current: dict[str, Any], report: Any) -> None:
    seconds = current["elapsed_s"] - previous["elapsed_s"]
    if seconds <= 0:
        return
    parts = []
    for name in ("up", "down"):
        before, now = previous[name], current[name]
        nbytes = now["bytes"] - before["bytes"]
        chunks = now["chunks"] - before["chunks"]
        delay = now["delay_mean_ms"] * now["chunks"] - before["delay_mean_ms"] * before["chunks"]
        parts.append(
            f"{name} {8e-6 * nbytes / seconds:8.3f} Mbit/s (link {now['requested_bps'] / 1e6:g}),"
            f" delay {delay / chunks if chunks else 0.0:6.1f} ms (base "
            f"{now['requested_one_way_ms']:g} + jitter {now['requested_jitter_ms']:g})"
        )
    print(f"netem t={current['elapsed_s']:7.1f}s  " + "; ".join(parts), file=report, flush=True)
