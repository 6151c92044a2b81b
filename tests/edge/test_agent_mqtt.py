"""The real edge agent behind its MQTT control plane: a real tail on loopback, a real mosquitto
(see conftest.py), and for presence across a crash, a real ``splitwire edge`` process.

What is checked is the agent's side of the contract: a desired plan moves the frames to the new
cut at a frame boundary without losing one, bad plans change nothing and say why, telemetry
carries the link and the frames, and the broker's absence or restart never touches the data path.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from splitwire.edge.agent import EdgeAgent
from splitwire.edge.control import ControlPlane, edge_topic

from .agent_runs import assert_each_frame_once, lines, make_agent
from .conftest import Broker, BrokerFactory, Subscriber, retained, wait_until

RUN_TIMEOUT_S = 20.0


@dataclass
class Edge:
    """An agent running with its control plane (both as tasks)."""

    agent: EdgeAgent
    out: io.StringIO
    control: ControlPlane
    run: asyncio.Task[dict[str, Any]]

    def records(self) -> list[dict[str, Any]]:
        return lines(self.out)

    def admitted(self) -> int:
        """Frames admitted so far (emitted or in flight): the highest seq given out."""
        t = self.agent.view.telemetry()
        return int(t["frames"] + t["in_flight"])

    async def remote(self, n: int, *, timeout: float = 10.0) -> None:
        """Wait until ``n`` frames were answered by the cloud."""
        await wait_until(
            lambda: self.agent.stats.by_source["remote"] >= n or self.run.done(),
            timeout=timeout,
            what=f"{n} remote frames",
        )
        if self.run.done():
            self.run.result()  # surface the agent's error, if it failed
        assert self.agent.stats.by_source["remote"] >= n, "the run ended too early"

    async def finish(self) -> dict[str, Any]:
        """Stop the source (if still running) and wait for the run's summary."""
        self.agent.request_stop()
        return await asyncio.wait_for(asyncio.shield(self.run), RUN_TIMEOUT_S)


@contextlib.asynccontextmanager
async def edge_with_control(
    plan_dir: Path, broker: Broker, *, telemetry_s: float = 5.0, **fields: Any
) -> AsyncIterator[Edge]:
    """A real agent (``make_agent(plan_dir, **fields)``) and its ControlPlane on ``broker``;
    on exit the agent is stopped and drained and the control plane stopped, all bounded."""
    agent, out = make_agent(plan_dir, **fields)
    control = ControlPlane(broker.mqtt_config(telemetry_s=telemetry_s), agent.view)
    control_task = asyncio.create_task(control.run(), name="test-control")
    run = asyncio.create_task(agent.run(), name="test-agent")
    edge = Edge(agent, out, control, run)
    try:
        yield edge
    finally:
        agent.request_stop()
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(run), RUN_TIMEOUT_S)
        finally:
            run.cancel()
            await control.stop(timeout_s=2.0)
            await asyncio.wait_for(control_task, 3.0)


def _fixed(cut: str, codec: str = "fp32", **fields: Any) -> dict[str, Any]:
    return {"cut": cut, "codec": codec, "policy": "fixed", "budget_ms": 3000, **fields}


# --- desired plans ----------------------------------------------------------------------------


async def test_desired_plan_switches_the_cut_without_losing_a_frame(
    start_server, plan_dir: Path, broker: Broker, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    old, new = (split_cuts[0], "fp32"), (split_cuts[1], "int8+zstd1")
    frames = 60  # 2 s at 30 fps
    fields = _fixed(*old, cloud=server.address, fps=30, frames=frames)
    async with edge_with_control(plan_dir, broker, **fields) as edge:
        await wait_until(lambda: edge.control.connected, what="control plane connected")
        await edge.remote(10)
        desired = {"cut": new[0], "codec": new[1]}
        await broker.publish(edge.control.desired_topic, desired)
        reported = await retained(
            broker, edge.control.reported_topic, where=lambda r: r.get("desired") == desired
        )
        switched_by = edge.admitted()  # every frame admitted from here on runs the new option
        assert reported == {
            "applied": True,
            "cut": new[0],
            "codec": new[1],
            "policy": "fixed",
            "desired": desired,
        }
        assert (edge.agent.option.cut, edge.agent.option.codec) == new
        assert switched_by < frames - 20, "the switch came too late to see frames after it"
        summary = await asyncio.wait_for(asyncio.shield(edge.run), RUN_TIMEOUT_S)
    records = sorted(edge.records(), key=lambda r: r["seq"])
    assert_each_frame_once(records, frames)
    assert {r["source"] for r in records} == {"remote"}
    options = [(r["cut"], r["codec"]) for r in records]
    assert set(options) == {old, new}
    first_new = options.index(new)
    # One switch at a frame boundary: old frames, then only new ones.
    assert options[:first_new] == [old] * first_new
    assert options[first_new:] == [new] * (frames - first_new)
    assert first_new >= 10 and first_new <= switched_by
    assert all(r["bytes_up"] > 0 for r in records)
    assert summary["switches"] == [
        {
            "from": {"cut": old[0], "codec": old[1]},
            "to": {"cut": new[0], "codec": new[1]},
            "reason": "desired plan from the control plane",
        }
    ]
    assert (summary["cut"], summary["codec"]) == new


@pytest.mark.parametrize(
    ("desired", "why"),
    [
        ({"cut": "c9999", "codec": "fp32"}, "c9999"),
        ({"codec": "fp32"}, "expected"),
    ],
    ids=["unknown-cut", "no-cut"],
)
async def test_bad_desired_plans_are_refused_and_change_nothing(
    start_server,
    plan_dir: Path,
    broker: Broker,
    split_cuts: tuple[str, str],
    desired: dict[str, Any],
    why: str,
) -> None:
    server = await start_server()
    cut = split_cuts[0]
    async with edge_with_control(
        plan_dir, broker, **_fixed(cut, cloud=server.address, fps=30)
    ) as edge:
        await wait_until(lambda: edge.control.connected, what="control plane connected")
        await edge.remote(5)
        option = edge.agent.option
        await broker.publish(edge.control.desired_topic, desired)
        reported = await retained(
            broker, edge.control.reported_topic, where=lambda r: r.get("desired") == desired
        )
        assert reported["applied"] is False
        assert why in reported["reason"], reported
        assert (reported["cut"], reported["codec"], reported["policy"]) == (cut, "fp32", "fixed")
        after = edge.admitted()
        await edge.remote(after + 5)  # frames go on after the refusal
        assert edge.agent.option is option and edge.agent.policy_mode == "fixed"
        assert edge.agent.switches == []
        summary = await edge.finish()
    records = edge.records()
    assert_each_frame_once(records, summary["frames"])
    assert {(r["source"], r["cut"], r["codec"]) for r in records} == {("remote", cut, "fp32")}


async def test_a_hostile_retained_payload_spares_frames_telemetry_and_later_plans(
    start_server, plan_dir: Path, broker: Broker, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    deep = b"[" * 100_000  # json.loads raised RecursionError on it, killing the control task
    await broker.publish(edge_topic("splitwire/v1/edges", "test-edge", "plan/desired"), deep)
    fields = _fixed(split_cuts[0], cloud=server.address, fps=30)
    async with edge_with_control(plan_dir, broker, telemetry_s=0.2, **fields) as edge:
        control = edge.control
        async with Subscriber(broker, control.telemetry_topic) as sub:
            reported = await retained(broker, control.reported_topic)
            assert reported["applied"] is False and reported["desired_bytes"] == len(deep)
            assert "at most 4096 accepted" in reported["reason"]
            seen = len(sub.on(control.telemetry_topic))
            await sub.wait_until(lambda: len(sub.on(control.telemetry_topic)) >= seen + 2)
            await edge.remote(edge.admitted() + 5)
        assert control.refused == 1 and control.crashes == 0 and control.connected
        desired = {"cut": split_cuts[1], "codec": "int8+zstd1"}
        await broker.publish(control.desired_topic, desired)
        await wait_until(lambda: edge.agent.option.cut == split_cuts[1], what="plan applied")
        switched = edge.admitted()
        await edge.remote(switched + 3)
        summary = await edge.finish()
    records = edge.records()
    assert_each_frame_once(records, summary["frames"])
    assert {r["source"] for r in records} == {"remote"}
    assert {(r["cut"], r["codec"]) for r in records if r["seq"] > switched} == {
        (desired["cut"], desired["codec"])
    }


async def test_policy_auto_is_applied_and_shows_in_telemetry(
    start_server, plan_dir: Path, broker: Broker, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    fields = _fixed(split_cuts[0], cloud=server.address, fps=30)
    async with edge_with_control(plan_dir, broker, telemetry_s=0.2, **fields) as edge:
        topic = edge.control.telemetry_topic
        async with Subscriber(broker, topic) as sub:
            await edge.remote(3)
            await sub.wait_for(topic, where=lambda t: t["policy"] == "fixed")
            assert edge.agent.policy_mode == "fixed"
            await broker.publish(edge.control.desired_topic, {"policy": "auto"})
            reported = await retained(
                broker, edge.control.reported_topic, where=lambda r: r.get("desired") is not None
            )
            assert reported["applied"] is True and reported["policy"] == "auto", reported
            assert edge.agent.policy_mode == "auto"
            await sub.wait_for(topic, where=lambda t: t["policy"] == "auto")
            assert all(m.payload["policy"] == "auto" for m in sub.on(topic)[-1:])
            after = edge.admitted()
            await wait_until(lambda: edge.agent.stats.frames > after, what="frames under auto")
        summary = await edge.finish()
    assert summary["policy"] == "auto"
    assert_each_frame_once(edge.records(), summary["frames"])


async def test_telemetry_carries_the_link_the_frames_and_the_plan(
    start_server, plan_dir: Path, broker: Broker, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    cut = split_cuts[1]
    fields = _fixed(cut, "int8+zstd1", cloud=server.address, fps=30)
    async with edge_with_control(plan_dir, broker, telemetry_s=0.2, **fields) as edge:
        topic = edge.control.telemetry_topic
        async with Subscriber(broker, topic) as sub:

            def measured(t: dict[str, Any]) -> bool:
                return t["by_source"].get("remote", 0) >= 5 and t["uplink_bps"] is not None

            sample = (await sub.wait_for(topic, where=measured, timeout=10.0)).payload
            await sub.wait_until(lambda: len(sub.on(topic)) >= 3)
        messages = sub.on(topic)
    assert not any(m.retain for m in messages)
    for key in ("rtt_ms", "uplink_bps", "fps", "by_source", "drops", "bytes_up", "cut", "codec"):
        assert key in sample, key
    assert (sample["cut"], sample["codec"]) == (cut, "int8+zstd1")
    assert sample["rtt_ms"] > 0 and sample["uplink_bps"] > 0
    assert 5 < sample["fps"] <= 40  # paced at 30 fps (answered frames over the run so far)
    assert sample["by_source"]["remote"] >= 5 and sample["drops"] == {}
    assert sample["bytes_up"] > 0 and sample["frames"] >= sample["by_source"]["remote"]
    assert sample["connected"] is True and sample["policy"] == "fixed"
    frames = [m.payload["frames"] for m in messages]
    assert frames == sorted(frames) and frames[-1] > frames[0]  # live, not a replayed sample


# --- broker trouble ---------------------------------------------------------------------------


async def test_broker_absent_at_start_the_data_path_goes_on(
    start_server, plan_dir: Path, broker_factory: BrokerFactory, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    broker = broker_factory(start=False)
    cut = split_cuts[0]
    async with edge_with_control(
        plan_dir, broker, **_fixed(cut, cloud=server.address, fps=30)
    ) as edge:
        await edge.remote(10)  # served while there is no broker at all
        assert not edge.control.connected and edge.control.failures >= 1
        await asyncio.to_thread(broker.start)
        status = await retained(
            broker, edge.control.status_topic, where=lambda s: s["state"] == "online"
        )
        assert status["edge_id"] == edge.agent.edge_id
        assert (status["cut"], status["codec"], status["policy"]) == (cut, "fp32", "fixed")
        assert status["cloud"] == server.address
        assert status["model_hash"] == edge.agent.plan.model_hash
        assert {"cut": cut, "codec": "fp32"} in status["options"]
        before = edge.admitted()
        await edge.remote(before + 3)
        summary = await edge.finish()
    records = edge.records()
    assert_each_frame_once(records, summary["frames"])
    assert {r["source"] for r in records} == {"remote"}


async def test_broker_restart_republishes_status_and_reapplies_the_desired_plan(
    start_server, plan_dir: Path, broker_factory: BrokerFactory, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    broker = broker_factory(persistence=True)  # the retained desired plan survives the restart
    desired = {"cut": split_cuts[1], "codec": "int8+zstd1"}
    meanwhile = {"cut": split_cuts[0], "codec": "fp16+zstd1"}
    async with edge_with_control(
        plan_dir, broker, **_fixed(split_cuts[0], cloud=server.address, fps=30)
    ) as edge:
        agent, control = edge.agent, edge.control
        await wait_until(lambda: control.connected, what="control plane connected")
        await broker.publish(control.desired_topic, desired)
        await wait_until(lambda: agent.option.cut == desired["cut"], what="desired applied")

        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not control.connected, what="connection to the broker lost")
        # Someone changes the plan locally while the broker is away...
        answer = agent.view.apply_desired(meanwhile)
        assert answer["applied"] is True and agent.option.codec == "fp16+zstd1"
        remote = agent.stats.by_source["remote"]
        await edge.remote(remote + 5)  # ... and the data path does not notice the outage
        await asyncio.to_thread(broker.start)
        # On reconnection the status is published again (with the option of that moment)...
        status = await retained(
            broker,
            control.status_topic,
            where=lambda s: s["state"] == "online" and s["codec"] == "fp16+zstd1",
        )
        assert status["cut"] == split_cuts[0]
        # ... then the retained desired plan arrives again and is applied again.
        await wait_until(
            lambda: (agent.option.cut, agent.option.codec) == (desired["cut"], desired["codec"]),
            what="desired plan re-applied",
        )
        assert control.connects == 2 and control.drops >= 1
        reported = await retained(broker, control.reported_topic)
        assert reported["applied"] is True and reported["desired"] == desired
        switched = edge.admitted()
        await edge.remote(switched + 5)
        summary = await edge.finish()
    records = sorted(edge.records(), key=lambda r: r["seq"])
    assert_each_frame_once(records, summary["frames"])
    assert {r["source"] for r in records} == {"remote"}
    assert [(s.new.cut, s.new.codec) for s in agent.switches] == [
        (desired["cut"], desired["codec"]),
        (meanwhile["cut"], meanwhile["codec"]),
        (desired["cut"], desired["codec"]),
    ]
    assert all((r["cut"], r["codec"]) == (desired["cut"], desired["codec"])
               for r in records if r["seq"] > switched)  # fmt: skip


# --- a real `splitwire edge` process ----------------------------------------------------------


def _edge_process(
    plan_dir: Path, cloud: str, broker: Broker, edge_id: str, cut: str, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out = tmp_path / f"{edge_id}.jsonl"
    log = tmp_path / f"{edge_id}.log"
    command = [
        sys.executable, "-m", "splitwire", "edge", "--plan", str(plan_dir), "--cloud", cloud,
        "--mqtt", f"{broker.host}:{broker.port}", "--edge-id", edge_id, "--fps", "10",
        "--cut", cut, "--codec", "fp32", "--policy", "fixed", "--output", str(out),
        "--grace-s", "3",
    ]  # fmt: skip
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    return process, out, log


async def _online(broker: Broker, topic: str, process: subprocess.Popen[bytes], log: Path) -> Any:
    async def seen() -> Any:
        return await retained(broker, topic, where=lambda s: s["state"] == "online", timeout=30.0)

    task = asyncio.create_task(seen())
    while not task.done():
        if process.poll() is not None:
            task.cancel()
            pytest.fail(f"the edge exited with {process.returncode}:\n{log.read_text()}")
        await asyncio.wait({task}, timeout=0.1)
    return task.result()


async def test_killed_edge_process_leaves_offline_through_its_will(
    start_server, plan_dir: Path, broker: Broker, split_cuts: tuple[str, str], tmp_path: Path
) -> None:
    server = await start_server()
    topic = edge_topic("splitwire/v1/edges", "edge-killed", "status")
    process, _, log = _edge_process(
        plan_dir, server.address, broker, "edge-killed", split_cuts[0], tmp_path
    )
    try:
        online = await _online(broker, topic, process, log)
        assert online["edge_id"] == "edge-killed" and online["cut"] == split_cuts[0]
        process.send_signal(signal.SIGKILL)  # no stop(), no DISCONNECT: only the will is left
        await asyncio.to_thread(process.wait, 5)
        offline = await retained(broker, topic, where=lambda s: s["state"] == "offline")
        assert offline == {"state": "offline", "edge_id": "edge-killed", "reason": "lost"}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == -signal.SIGKILL, log.read_text()


@pytest.mark.slow
async def test_sigterm_drains_exits_0_and_says_offline_stopped(
    start_server, plan_dir: Path, broker: Broker, split_cuts: tuple[str, str], tmp_path: Path
) -> None:
    server = await start_server()
    topic = edge_topic("splitwire/v1/edges", "edge-stopped", "status")
    process, out, log = _edge_process(
        plan_dir, server.address, broker, "edge-stopped", split_cuts[0], tmp_path
    )
    try:
        await _online(broker, topic, process, log)
        # Some frames first, so that the drain has something to do.
        await wait_until(
            lambda: out.exists() and out.read_text().count("\n") >= 5,
            timeout=15.0,
            what="5 frame lines",
        )
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert code == 0, log.read_text()
    offline = await retained(broker, topic)
    assert offline == {"state": "offline", "edge_id": "edge-stopped", "reason": "stopped"}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert_each_frame_once(records, len(records))
    assert {r["source"] for r in records} == {"remote"}
