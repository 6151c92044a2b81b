"""The agent when things go wrong or change: the link changes under the adaptive policy, a
server that answers twice or wrongly, a tail killed with SIGKILL and started again."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from grpc import aio

from splitwire.edge.link_monitor import LinkMonitor
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import PROTOCOL_VERSION, encode
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
from splitwire.protocol.framing import ResultTimings, result_chunks
from splitwire.protocol.health import wait_until_serving

from .agent_runs import assert_each_frame_once, lines, make_agent, run_agent, without_local


class SteeredMonitor(LinkMonitor):
    """The seam of the adaptive tests: the link the agent believes it measures is whatever the
    test sets (frames are still observed, so everything else runs as usual)."""

    def __init__(self, link: LinkModel) -> None:
        super().__init__()
        self.steered = link

    def link(self, **_: object) -> LinkModel | None:
        return self.steered


FAST = LinkModel("fast", 10e9, 10e9, 0.0001)
DEAD = LinkModel("dead", 50e3, 50e3, 0.500)


async def test_adaptive_policy_follows_the_link(
    start_server, plan_dir: Path, plan: RunnablePlan
) -> None:
    """On a fast link the agent stays on the cloud; when the link dies it moves to the edge
    after the hold (probing the cloud once a second), and back when the link recovers; every
    frame is answered exactly once.

    The plan is the fixture's with the all-on-edge option planned 10x slower (an edge much
    weaker than the cloud): otherwise this machine, which runs both sides, makes edge and cloud
    equally fast and no move back would be worth the margin."""
    server = await start_server()
    last = max(plan.plan.cuts)
    weak_edge = [
        dataclasses.replace(o, edge_ms=o.edge_ms * 10) if o.codec == "none" else o
        for o in plan.options
    ]
    slow_plan = RunnablePlan(dataclasses.replace(plan.plan, options=tuple(weak_edge)), plan_dir)
    split = next(o for o in plan.options if o.cut == "c0000" and o.codec == "fp32")
    monitor = SteeredMonitor(FAST)
    agent, out = make_agent(
        plan_dir, cloud=server.address, frames=200, fps=20, cut=split.cut, codec=split.codec,
        policy="auto", hold_s=0.3, monitor=monitor, plan=slow_plan,
    )  # fmt: skip
    run = asyncio.create_task(agent.run())
    async with asyncio.timeout(30):
        while agent.stats.frames < 30:
            await asyncio.sleep(0.01)
        assert agent.switches == []  # on a fast link the cloud is the better place
        monitor.steered = DEAD
        while agent.option.codec != "none":
            await asyncio.sleep(0.01)
        dead_at = agent.stats.frames
        while agent.stats.frames < dead_at + 60:
            await asyncio.sleep(0.01)
        monitor.steered = FAST
        back_at = agent.stats.frames
        summary = await run
    records = lines(out)
    assert_each_frame_once(records, 200)
    switches = summary["switches"]
    assert switches[0]["from"] == {"cut": "c0000", "codec": "fp32"}
    assert switches[0]["to"] == {"cut": last, "codec": "none"} and "dead" in switches[0]["reason"]
    assert len(switches) == 2 and switches[1]["from"]["codec"] == "none", switches
    assert "fast" in switches[1]["reason"]
    local = [r for r in records if r["source"] == "local"]
    assert local and all(r["reason"] == "all-on-edge" for r in local)
    # No frame is lost to a switch; a camera faster than the edge's whole model gives way.
    assert {r["reason"] for r in records if r["source"] == "dropped"} <= {"window_full"}
    # On the edge, a frame a second still goes to the cloud so the link stays measured; its
    # output is the edge's own, out at once, and its line says which option measured the link.
    on_edge = [r for r in records if dead_at + 5 < r["seq"] <= back_at]
    assert {r["source"] for r in on_edge} <= {"local", "dropped"}
    probes = [r for r in on_edge if r["probe"] is not None]
    assert probes and len(probes) <= 1 + (back_at - dead_at) / 20 * 1.5
    assert all(r["source"] == "local" and r["cut"] == last for r in probes)
    assert {r["probe"] for r in probes} <= {f"{o.cut} {o.codec}" for o in plan.options}
    assert records[-1]["source"] == "remote"


async def test_without_a_session_the_edge_answers_locally(plan_dir: Path, plan) -> None:
    """The auto policy with an all-on-edge option: a cloud that never answers costs nothing
    but a log line; every frame is computed on the edge."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    _summary, records = await run_agent(
        plan_dir, cloud=f"127.0.0.1:{port}", frames=10, cut="c0000", codec="fp32", policy="auto"
    )
    assert_each_frame_once(records, 10)
    assert {(r["source"], r["reason"]) for r in records} == {("local", "disconnected")}


class OddServer(pb_grpc.SplitSessionServicer):
    """A misbehaving tail: answers each frame twice, or with outputs of the wrong shape.

    A frame's second answer goes out just before the next frame's first one, so the agent
    reads every duplicate before the answer that lets it finish: all but the last frame's
    (which is never sent) reach it, whatever the timing."""

    def __init__(self, plan: RunnablePlan, *, mode: str) -> None:
        self.plan, self.mode = plan, mode

    async def Session(self, requests: Any, context: Any) -> AsyncIterator[pb.CloudMessage]:
        hello = None
        duplicate: list[pb.ResultChunk] = []
        async for message in requests:
            if message.WhichOneof("kind") == "hello":
                hello = message.hello
                yield pb.CloudMessage(accept=pb.Accept(
                    protocol_version=PROTOCOL_VERSION, session_id="odd", server_id="odd",
                    max_in_flight=8, max_chunk_bytes=1 << 20, max_frame_bytes=1 << 26,
                    cut_ids=sorted(self.plan.plan.cuts),
                ))  # fmt: skip
                continue
            chunk = message.chunk
            if chunk.chunk_index != chunk.chunk_count - 1:
                continue
            assert hello is not None
            shape = (1, 10) if self.mode == "twice" else (1, 7)
            outputs = [encode(torch.zeros(shape), "fp32")]
            timings = ResultTimings(0, 0, 1000, 0)
            answer = list(result_chunks(chunk.seq, chunk.capture_ts_ns, outputs, timings=timings))
            for part in duplicate + answer:
                yield pb.CloudMessage(result=part)
            duplicate = answer if self.mode == "twice" else []


async def _odd_server(plan: RunnablePlan, mode: str) -> tuple[aio.Server, str]:
    server = aio.server()
    pb_grpc.add_SplitSessionServicer_to_server(OddServer(plan, mode=mode), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_late_duplicate_result_is_ignored(plan_dir: Path, plan, split_cuts) -> None:
    server, address = await _odd_server(plan, "twice")
    try:
        summary, records = await run_agent(
            plan_dir,
            cloud=address,
            frames=8,
            cut=split_cuts[0],
            codec="fp32",
            policy="fixed",
            budget_ms=30_000,
        )
    finally:
        await server.stop(0)
    assert_each_frame_once(records, 8)
    assert {r["source"] for r in records} == {"remote"}
    assert summary["duplicates_ignored"] == 7  # the last frame's second answer is never sent


async def test_a_result_of_the_wrong_shape_is_an_error(plan_dir: Path, plan, split_cuts) -> None:
    """Without a local model to fall back to, a refused result drops its frame with the reason."""
    server, address = await _odd_server(plan, "wrong-shape")
    try:
        _, records = await run_agent(
            plan_dir,
            cloud=address,
            frames=4,
            cut=split_cuts[0],
            codec="fp32",
            policy="fixed",
            budget_ms=30_000,
            plan=without_local(plan),
        )
    finally:
        await server.stop(0)
    assert_each_frame_once(records, 4)
    assert {(r["source"], r["reason"]) for r in records} == {("dropped", "error:BAD_RESULT")}


def _start_tail(plan_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """``splitwire cloud`` in its own process, ready when this returns."""
    process = subprocess.Popen(
        [sys.executable, "-m", "splitwire", "-q", "cloud", "--listen", f"127.0.0.1:{port}",
         "--plan", str(plan_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    # Ready means its health check says SERVING (the port listens a little earlier).
    if wait_until_serving(
        f"127.0.0.1:{port}", timeout_s=60, still_starting=lambda: process.poll() is None
    ):
        return process
    process.kill()
    stderr = process.stderr.read().decode()  # type: ignore[union-attr]
    raise AssertionError(f"the tail was not SERVING within 60 s: {stderr}")


@pytest.mark.slow
async def test_tail_killed_mid_stream_every_frame_is_answered(plan_dir: Path, split_cuts) -> None:
    """SIGKILL of the tail process mid-stream at 20 fps, under the fixed policy, with the plan's
    all-on-edge option: the frames the tail held and every frame until it is back are answered
    on the edge, none is dropped ``disconnected``, every frame appears exactly once, and once
    the tail is back frames are remote again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tail = await asyncio.to_thread(_start_tail, plan_dir, port)
    try:
        # Until stopped: however long the tail takes to start again on a busy machine.
        agent, out = make_agent(
            plan_dir, cloud=f"127.0.0.1:{port}", fps=20, cut=split_cuts[0], codec="int8+zstd1",
            policy="fixed",
        )  # fmt: skip
        run = asyncio.create_task(agent.run())
        async with asyncio.timeout(120):
            while agent.stats.by_source["remote"] < 30:
                await asyncio.sleep(0.02)
            tail.send_signal(signal.SIGKILL)
            tail.wait()
            killed_at = agent.stats.frames
            tail = await asyncio.to_thread(_start_tail, plan_dir, port)
            restarted_at = agent.stats.frames
            remote = agent.stats.by_source["remote"]
            while agent.stats.by_source["remote"] < remote + 20:
                await asyncio.sleep(0.02)
            agent.request_stop()
            summary = await run
    finally:
        tail.kill()
        tail.wait()
    records = lines(out)
    assert_each_frame_once(records, len(records))
    assert summary["reconnects"] >= 1
    assert not [r for r in records if r["source"] == "dropped" and r["reason"] == "disconnected"]
    # The outage was answered here: the frames in flight when the tail died, and those after.
    during = [r for r in records if killed_at < r["seq"] <= restarted_at]
    assert during and {r["source"] for r in during} <= {"local", "dropped"}, during
    assert sum(r["source"] == "local" for r in during) >= 0.5 * len(during), during
    local = [r for r in records if r["source"] == "local"]
    assert {r["reason"] for r in local} <= {"disconnected", "unanswered"}
    # A frame is dropped at all only when the edge could not make its budget (a loaded
    # machine) or a newer capture took its place (the camera outpaced the edge's own model).
    dropped = {r["reason"] for r in records if r["source"] == "dropped"}
    assert dropped <= {"stale", "window_full"}, dropped


class HoldingServer(pb_grpc.SplitSessionServicer):
    """Holds every frame ``hold_s`` before answering, allows 2 in flight, and counts the most
    frames it held at once: an agent must count a frame it gave up on (dropped stale) as in
    flight until the server answers it, as the server does."""

    def __init__(self, plan: RunnablePlan, *, hold_s: float) -> None:
        self.plan, self.hold_s = plan, hold_s
        self.held = self.most_held = 0

    async def Session(self, requests: Any, context: Any) -> None:
        async def answer(chunk: pb.FrameChunk) -> None:
            await asyncio.sleep(self.hold_s)
            self.held -= 1
            outputs = [encode(torch.zeros(1, 10), "fp32")]
            timings = ResultTimings(0, 0, 1000, 0)
            for part in result_chunks(chunk.seq, chunk.capture_ts_ns, outputs, timings=timings):
                await context.write(pb.CloudMessage(result=part))

        answers = []
        async for message in requests:
            if message.WhichOneof("kind") == "hello":
                await context.write(pb.CloudMessage(accept=pb.Accept(
                    protocol_version=PROTOCOL_VERSION, session_id="hold", server_id="hold",
                    max_in_flight=2, max_chunk_bytes=1 << 20, max_frame_bytes=1 << 26,
                    cut_ids=sorted(self.plan.plan.cuts),
                )))  # fmt: skip
            elif message.chunk.chunk_index == message.chunk.chunk_count - 1:
                self.held += 1
                self.most_held = max(self.most_held, self.held)
                answers.append(asyncio.create_task(answer(message.chunk)))
        await asyncio.gather(*answers)


async def test_frames_given_up_on_still_count_against_the_servers_in_flight_limit(
    plan_dir: Path, plan, split_cuts
) -> None:
    servicer = HoldingServer(plan, hold_s=0.4)
    server = aio.server()
    pb_grpc.add_SplitSessionServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        # Without a local model: every frame waits on this server (none falls back).
        _, records = await run_agent(
            plan_dir, cloud=f"127.0.0.1:{port}", frames=12, fps=20, cut=split_cuts[0],
            codec="fp32", policy="fixed", budget_ms=150, window=4, plan=without_local(plan),
        )  # fmt: skip
    finally:
        await server.stop(0)
    assert_each_frame_once(records, 12)
    assert {r["reason"] for r in records} <= {"stale", "window_full"}
    assert servicer.most_held == 2  # never more than Accept.max_in_flight
