"""The link emulator against the link it was asked for: rate, round trip, jitter (never
reordering), outages from a trace, loopback only, a real gRPC stream through it, the CLI.

Tolerances are wide enough for a loaded 2-core machine (the emulator runs on the test's event
loop, which also runs the load): rate ±15 %, delays +25 ms over the requested upper bound.
Those tests are marked ``timed`` (`make test` runs them alone); how a trace's outages are read
is tested with the trace reader, in tests/partitioner/test_link.py."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitwire.netem import LinkEmulator, NetemError, require_loopback
from splitwire.partitioner.link import Outage, load_trace, parse_link

RATE_TOLERANCE = 0.15
SLACK_S = 0.025  # scheduling lateness allowed on a busy machine


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def _address(server: asyncio.Server) -> str:
    return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _bulk_server(nbytes: int) -> tuple[asyncio.Server, list[tuple[float, int]]]:
    """Sends ``nbytes`` and records (time, bytes) of what it receives, concurrently."""
    received: list[tuple[float, int]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            block = b"d" * 65536
            for _ in range(nbytes // len(block)):
                writer.write(block)
                await writer.drain()

        sender = asyncio.create_task(send())
        while data := await reader.read(1 << 16):
            received.append((time.monotonic(), len(data)))
        await sender
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), received


def _rate_bps(samples: list[tuple[float, int]]) -> float:
    # Bytes after the first arrival over the time they took: the steady rate.
    return 8 * sum(n for _, n in samples[1:]) / (samples[-1][0] - samples[0][0])


@pytest.mark.timed
async def test_rate_both_directions_within_tolerance() -> None:
    """20 Mbit/s each way, bulk in both directions at once for ~2 s."""
    nbytes = 5 * 1024 * 1024  # 2.1 s at 20 Mbit/s
    server, up_samples = await _bulk_server(nbytes)
    link = parse_link("bw=20mbit,rtt=10ms")
    async with server, LinkEmulator(upstream=_address(server), link=link, seed=1) as em:
        reader, writer = await asyncio.open_connection(*em.address.split(":"))

        async def send() -> None:
            block = b"u" * 65536
            for _ in range(nbytes // len(block)):
                writer.write(block)
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        down_samples = []
        while data := await reader.read(1 << 16):
            down_samples.append((time.monotonic(), len(data)))
        await sender
        writer.close()
        stats = em.stats()
    for name, samples in (("up", up_samples), ("down", down_samples)):
        assert sum(n for _, n in samples) == nbytes
        measured = _rate_bps(samples)
        assert abs(measured / 20e6 - 1) <= RATE_TOLERANCE, (name, measured)
        reported = stats[name]["achieved_bps"]
        assert abs(reported / 20e6 - 1) <= RATE_TOLERANCE, (name, reported)
        assert stats[name]["bytes"] == nbytes


async def _ping(em: LinkEmulator, count: int, gap_s: float = 0.0) -> tuple[list[float], bytes]:
    """Round trips of ``count`` small numbered messages, one at a time; and what came back."""
    reader, writer = await asyncio.open_connection(*em.address.split(":"))
    rtts, back = [], b""
    for i in range(count):
        message = b"%06d" % i
        start = time.monotonic()
        writer.write(message)
        back += await reader.readexactly(len(message))
        rtts.append(time.monotonic() - start)
        await asyncio.sleep(gap_s)
    writer.close()
    return rtts, back


@pytest.mark.timed
async def test_added_round_trip_matches_the_requested() -> None:
    server = await _echo_server()
    async with server, LinkEmulator(upstream=_address(server), link=parse_link(
        "bw=100mbit,rtt=40ms"), seed=2) as em:  # fmt: skip
        rtts, _ = await _ping(em, 15)
        stats = em.stats()
    assert 0.040 <= statistics.median(rtts) <= 0.040 + SLACK_S, rtts
    assert min(rtts) >= 0.040
    for name in ("up", "down"):
        assert 20.0 <= stats[name]["delay_p50_ms"] <= 20.0 + 1e3 * SLACK_S / 2, stats[name]


@pytest.mark.timed
async def test_jitter_within_its_bound_and_bytes_in_order() -> None:
    """Mean extra one-way delay ≈ jitter, never above 4 × jitter; a fast stream of numbered
    messages comes back byte for byte in order."""
    server = await _echo_server()
    link = parse_link("bw=100mbit,rtt=20ms,jitter=10ms")
    async with server, LinkEmulator(upstream=_address(server), link=link, seed=3) as em:
        rtts, _ = await _ping(em, 60, gap_s=0.004)
        reader, writer = await asyncio.open_connection(*em.address.split(":"))
        sent = b"".join(b"%07d," % i for i in range(3000))
        for start in range(0, len(sent), 800):  # many small writes: many jitter draws
            writer.write(sent[start : start + 800])
            await writer.drain()
            await asyncio.sleep(0.003 if start % 8000 == 0 else 0)
        back = await reader.readexactly(len(sent))
        writer.close()
        stats = em.stats()
    assert back == sent
    assert min(rtts) >= 0.020
    assert max(rtts) <= 0.020 + 2 * 4 * 0.010 + SLACK_S, max(rtts)
    # Each direction adds 10 ms on average: mean RTT ≈ 40 ms (60 samples: ±6 ms at 2 sigma).
    assert 0.034 <= statistics.fmean(rtts) <= 0.046 + SLACK_S / 2, statistics.fmean(rtts)
    for name in ("up", "down"):
        assert 7.0 <= stats[name]["jitter_mean_ms"] <= 13.0 + 1e3 * SLACK_S / 2, stats[name]


@pytest.mark.timed
async def test_outage_from_a_trace_holds_bytes_then_resumes(tmp_path: Path) -> None:
    trace_file = tmp_path / "outage.yaml"
    trace_file.write_text(
        "end: 5\npoints:\n"
        "  - {t: 0, bw: 50mbit, rtt: 4ms}\n"
        "  - {t: 0.6, stall: true}\n"
        "  - {t: 1.4, bw: 50mbit, rtt: 4ms}\n"
    )
    trace = load_trace(trace_file)
    assert trace.outages == (Outage(0.6, 1.4),) and [t for t, _ in trace.points] == [0.0, 1.4]
    server = await _echo_server()
    async with server, LinkEmulator(upstream=_address(server), link=trace) as em:
        reader, writer = await asyncio.open_connection(*em.address.split(":"))

        async def receive() -> list[tuple[bytes, float]]:
            return [(await reader.readexactly(4), time.monotonic() - em.t0) for _ in range(36)]

        receiver = asyncio.create_task(receive())
        sent = []
        for i in range(36):  # one message every 50 ms for 1.8 s
            sent.append(time.monotonic() - em.t0)
            writer.write(b"%04d" % i)
            await asyncio.sleep(0.05)
        got = await asyncio.wait_for(receiver, 10)
        writer.close()
        stats = em.stats()
    arrivals = [(at, data, back) for at, (data, back) in zip(sent, got, strict=True)]
    assert [a[1] for a in arrivals] == [b"%04d" % i for i in range(36)]
    held = [(sent, got) for sent, _, got in arrivals if 0.6 + SLACK_S <= sent < 1.4 - SLACK_S]
    assert held and all(got >= 1.4 for _, got in held), held
    assert all(got < 0.6 + 0.02 for sent, _, got in arrivals if sent < 0.55)
    resumed = [got - sent for sent, _, got in arrivals if sent >= 1.45]
    assert resumed and max(resumed) < 0.004 + SLACK_S + 0.02, resumed
    assert stats["up"]["outage_holds"] + stats["down"]["outage_holds"] >= 1


@pytest.mark.parametrize(
    ("upstream", "listen"),
    [("10.1.2.3:80", "127.0.0.1:0"), ("127.0.0.1:80", "0.0.0.0:0"), ("example.invalid:1", None)],
)
def test_non_loopback_refused(upstream: str, listen: str | None) -> None:
    with pytest.raises(NetemError, match=r"loopback|resolve"):
        LinkEmulator(upstream=upstream, link=parse_link("wifi"), listen=listen or "127.0.0.1:0")


def test_address_must_be_host_and_port() -> None:
    with pytest.raises(NetemError, match="HOST:PORT"):
        require_loopback("127.0.0.1", what="--upstream")
    assert require_loopback("localhost:9", what="x")[1] == 9


@pytest.mark.slow
@pytest.mark.timed
async def test_a_real_grpc_stream_through_it(plan_dir: Path, start_server) -> None:
    """The agent streams frames to a real tail over a 20 Mbit/s, 40 ms link."""
    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfig
    from splitwire.partitioner.runtime import open_plan

    server = await start_server()
    cut = sorted(open_plan(plan_dir).plan.cuts)[1]
    link = parse_link("bw=20mbit,rtt=40ms")
    async with LinkEmulator(upstream=server.address, link=link) as em:
        out = io.StringIO()
        config = EdgeConfig(plan=plan_dir, cloud=em.address, frames=6, window=2, cut=cut,
                            codec="int8+zstd1", policy="fixed", threads=1, edge_id="netem-test",
                            budget_ms=60_000)  # fmt: skip
        await EdgeAgent(config, output=out).run()
        stats = em.stats()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 6 and all(r["source"] == "remote" for r in records), records
    assert min(r["rtt_ms"] for r in records) >= 40.0
    assert stats["up"]["bytes"] > 0 and stats["down"]["bytes"] > 0


@pytest.mark.timed
def test_cli_runs_reports_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "splitwire", "netem", "--listen", "127.0.0.1:0",
               "--upstream", "127.0.0.1:9", "--link", "lte", "--interval", "0.2",
               "--json"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    first = process.stderr.readline().decode()
    assert "listening on 127.0.0.1:" in first, first
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    stats = json.loads(out)
    assert stats["up"]["requested_bps"] == pytest.approx(parse_link("lte").effective_uplink_bps)


def test_cli_refuses_a_remote_upstream() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "splitwire", "netem", "--upstream", "192.0.2.1:80", "--link",
         "wifi"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "not a loopback address" in result.stderr
