"""The edge's MQTT control plane against a real mosquitto (see conftest.py).

The agent is faked here (:class:`FakeAgent`, a few lines implementing ``ControlledAgent``)
because the control plane's contract is what is under test; the real agent behind it is tested
end to end elsewhere. Everything else is real: the broker, the TCP/TLS connections, the
retained messages, the last will, a process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from splitwire.edge.control import (
    ControlConfigError,
    ControlledAgent,
    ControlPlane,
    MqttConfig,
    edge_topic,
    read_password_file,
)
from splitwire.errors import SplitwireError

from .conftest import Broker, BrokerFactory, Subscriber, retained, wait_until

PLAN = {"cut": "c0017", "codec": "int8+zstd1", "policy": "fixed"}
LOGGER = "splitwire.edge.control"


class FakeAgent:
    """Records what the control plane asks of it; ``n`` counts status() calls."""

    def __init__(self, edge_id: str = "edge-1") -> None:
        self.edge_id = edge_id
        self.desired: list[dict[str, Any]] = []
        self.status_calls = 0
        self.frames = 0

    def status(self) -> dict[str, Any]:
        self.status_calls += 1
        return {"plan": "resnet18", "n": self.status_calls, "state": "agent must not win"}

    def telemetry(self) -> dict[str, Any]:
        self.frames += 1
        return {"frames": self.frames, "cut": "c0017", "fps": 29.5}

    def apply_desired(self, desired: Mapping[str, Any]) -> dict[str, Any]:
        self.desired.append(dict(desired))
        if desired.get("cut") == "c9999":
            return {"applied": False, "reason": "plan ships no option c9999 int8+zstd1"}
        return {"applied": True, **desired}


def _agent_is_a_controlled_agent(agent: FakeAgent) -> ControlledAgent:
    return agent  # mypy-style check that the fake really fits the protocol


@contextlib.asynccontextmanager
async def running(plane: ControlPlane) -> AsyncIterator[asyncio.Task[None]]:
    """``plane.run()`` as a task, stopped (bounded) on exit; run()'s errors surface here."""
    task = asyncio.create_task(plane.run())
    try:
        yield task
    finally:
        await plane.stop(timeout_s=2.0)
        await asyncio.wait_for(task, 3.0)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


# --- configuration -----------------------------------------------------------------------------


def test_topics_and_config_checks() -> None:
    assert edge_topic("splitwire/v1/edges", "e7", "plan/desired") == (
        "splitwire/v1/edges/e7/plan/desired"
    )
    config = MqttConfig("mqtt.example", username="edge", password="hunter2-secret")
    assert "hunter2-secret" not in repr(config)
    for bad in (
        {"host": ""},
        {"host": "h", "port": 0},
        {"host": "h", "telemetry_s": 0},
        {"host": "h", "reconnect_initial_s": 2.0, "reconnect_max_s": 1.0},
        {"host": "h", "topic_root": "a/+/b"},
        {"host": "h", "password": "p"},
        {"host": "h", "max_desired_bytes": 255},
        {"host": "h", "max_desired_bytes": 2 << 20},
    ):
        with pytest.raises(ControlConfigError):
            MqttConfig(**bad)
    with pytest.raises(ControlConfigError, match="must not contain"):
        ControlPlane(MqttConfig("h"), FakeAgent("a/b"))
    with pytest.raises(ControlConfigError, match="not a valid MQTT topic part"):
        ControlPlane(MqttConfig("h"), FakeAgent("a#"))
    with pytest.raises(ControlConfigError, match="CA file"):
        ControlPlane(MqttConfig("h", tls_ca=Path("/nonexistent/ca.pem")), FakeAgent())


def test_read_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret \n")
    assert read_password_file(path) == "s3cret "  # one newline goes, the rest is the password
    path.write_text("s3cret\n\n")
    assert read_password_file(path) == "s3cret\n"
    for empty in ("", "\n"):
        path.write_text(empty)
        with pytest.raises(ControlConfigError, match="empty"):
            read_password_file(path)
    with pytest.raises(ControlConfigError, match="cannot read") as info:
        read_password_file(tmp_path / "missing")
    assert isinstance(info.value, SplitwireError)


# --- presence, telemetry, plans ------------------------------------------------------------


async def test_online_status_retained_on_connect(broker: Broker) -> None:
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(), _agent_is_a_controlled_agent(agent))
    async with running(plane):
        status = await retained(broker, plane.status_topic, where=lambda s: s["state"] == "online")
        assert status == {"state": "online", "edge_id": "edge-1", "plan": "resnet18", "n": 1}
        assert plane.connected and plane.connects == 1 and plane.failures == 0
    assert not plane.connected


async def test_telemetry_is_periodic_with_the_agents_fields(broker: Broker) -> None:
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(telemetry_s=0.2), agent)
    async with Subscriber(broker, plane.telemetry_topic) as sub, running(plane):
        await sub.wait_until(lambda: len(sub.on(plane.telemetry_topic)) >= 4, timeout=3.0)
    samples = sub.on(plane.telemetry_topic)[:4]
    assert [m.payload["frames"] for m in samples] == [1, 2, 3, 4]
    assert all(m.payload["cut"] == "c0017" and not m.retain for m in samples)
    assert all(b", " not in m.raw and b": " not in m.raw for m in samples)  # compact JSON
    stamps = [m.payload["ts_ns"] / 1e9 for m in samples]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(0.1 < gap < 0.5 for gap in gaps), gaps
    assert abs(samples[-1].payload["ts_ns"] / 1e9 - time.time()) < 5.0  # wall clock


async def test_desired_plan_is_applied_and_reported_retained(broker: Broker) -> None:
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(), agent)
    async with running(plane):
        await wait_until(lambda: plane.connected, what="connected")
        await broker.publish(plane.desired_topic, PLAN)
        reported = await retained(broker, plane.reported_topic)
        assert reported == {"applied": True, **PLAN, "desired": PLAN}
        assert agent.desired == [PLAN]

        refused = {**PLAN, "cut": "c9999"}
        await broker.publish(plane.desired_topic, refused)
        reported = await retained(
            broker, plane.reported_topic, where=lambda r: r["desired"] == refused
        )
        assert reported["applied"] is False and "c9999" in reported["reason"]


async def test_invalid_desired_is_refused_without_calling_the_agent(broker: Broker) -> None:
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(), agent)
    async with Subscriber(broker, plane.reported_topic) as sub, running(plane):
        await wait_until(lambda: plane.connected, what="connected")
        # (payload, the escaped excerpt the answer echoes as "desired", a word of the reason)
        bad_payloads = [
            (b"{not json", "b'{not json'", "not JSON"),
            (b"[1, 2]", "b'[1, 2]'", "expected a JSON object, got an array"),
            (b"\xff\xfe", "b'\\xff\\xfe'", "not UTF-8"),
        ]
        for bad, echoed, why in bad_payloads:
            await broker.publish(plane.desired_topic, bad)

            def answers(r: Any, e: str = echoed) -> bool:
                return bool(r["desired"] == e)

            reported = await retained(broker, plane.reported_topic, where=answers)
            assert reported["applied"] is False and reported["desired_bytes"] == len(bad)
            assert reported["reason"].startswith("plan/desired refused: "), reported
            assert why in reported["reason"], reported
        assert agent.desired == [] and plane.refused == 3

        # Clearing the retained plan (an empty payload) is not a plan: nothing is applied.
        await broker.publish(plane.desired_topic, b"")
        await broker.publish(plane.desired_topic, PLAN)
        await sub.wait_for(plane.reported_topic, where=lambda r: r["desired"] == PLAN)
        assert agent.desired == [PLAN]
        assert all(m.payload["desired"] != "" for m in sub.on(plane.reported_topic))


# --- broker trouble ----------------------------------------------------------------------------


async def test_broker_absent_at_start_then_started(
    broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = broker_factory(start=False)
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(), agent)
    async with running(plane) as task:
        await wait_until(lambda: plane.failures >= 3, timeout=3.0, what="3 failed attempts")
        assert not plane.connected and not task.done()
        assert len(warnings_of(caplog)) == 1, "one warning per outage, not per attempt"
        broker.start()
        await wait_until(lambda: plane.connected, timeout=5.0, what="reconnected")
        status = await retained(broker, plane.status_topic, where=lambda s: s["state"] == "online")
        assert status["edge_id"] == "edge-1"
    assert len(warnings_of(caplog)) == 1


async def test_broker_restart_republishes_status_and_reapplies_the_plan(
    broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory(persistence=True)  # so that the retained plan survives the restart
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(), agent)
    async with running(plane):
        await wait_until(lambda: plane.connected, what="connected")
        await broker.publish(plane.desired_topic, PLAN)
        await wait_until(lambda: len(agent.desired) == 1, what="plan applied")

        broker.stop()
        await wait_until(lambda: not plane.connected, what="connection lost")
        broker.start()
        await wait_until(lambda: len(agent.desired) == 2, timeout=5.0, what="plan re-applied")
        assert agent.desired == [PLAN, PLAN]
        assert plane.connects == 2
        status = await retained(
            broker, plane.status_topic, where=lambda s: s["state"] == "online" and s["n"] >= 2
        )
        assert status["edge_id"] == "edge-1"
    assert len(warnings_of(caplog)) == 1


async def test_stop_publishes_offline_retained(broker: Broker) -> None:
    plane = ControlPlane(broker.mqtt_config(), FakeAgent())
    await plane.stop()  # before run(): nothing to do, returns at once
    plane = ControlPlane(broker.mqtt_config(), FakeAgent())
    task = asyncio.create_task(plane.run())
    await wait_until(lambda: plane.connected, what="connected")
    started = time.monotonic()
    await plane.stop(timeout_s=2.0)
    assert task.done() and time.monotonic() - started < 2.0
    await task
    status = await retained(broker, plane.status_topic)
    assert status == {"state": "offline", "edge_id": "edge-1", "reason": "stopped"}
    assert not plane.connected


async def test_cancelled_run_still_says_offline(broker: Broker) -> None:
    plane = ControlPlane(broker.mqtt_config(), FakeAgent())
    task = asyncio.create_task(plane.run())
    await wait_until(lambda: plane.connected, what="connected")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 3.0)
    status = await retained(broker, plane.status_topic)
    assert status["state"] == "offline"


KILLED_EDGE = """
import asyncio, os, sys
from splitwire.edge.control import ControlPlane, MqttConfig

class Agent:
    edge_id = "edge-killed"
    def status(self): return {"pid": os.getpid()}
    def telemetry(self): return {}
    def apply_desired(self, desired): return {"applied": False, "reason": "test"}

config = MqttConfig(sys.argv[1], int(sys.argv[2]), telemetry_s=60.0)
asyncio.run(ControlPlane(config, Agent()).run())
"""


async def test_killed_edge_leaves_offline_through_its_last_will(
    broker: Broker, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_EDGE), broker.host, str(broker.port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    topic = edge_topic("splitwire/v1/edges", "edge-killed", "status")
    try:
        online = await retained(
            broker, topic, where=lambda s: s.get("pid") == process.pid, timeout=10.0
        )
        assert online["state"] == "online"
        process.send_signal(signal.SIGKILL)  # no stop(), no DISCONNECT: only the will is left
        process.wait(5)
        offline = await retained(broker, topic, where=lambda s: s["state"] == "offline")
        assert offline == {"state": "offline", "edge_id": "edge-killed", "reason": "lost"}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        assert process.stderr is not None
        stderr = process.stderr.read().decode(errors="replace")
        assert process.returncode == -signal.SIGKILL, stderr


# --- credentials and TLS -----------------------------------------------------------------------


async def test_right_password_connects(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(password=True)
    plane = ControlPlane(broker.mqtt_config(), FakeAgent())
    async with running(plane):
        status = await retained(broker, plane.status_topic, where=lambda s: s["state"] == "online")
        assert status["edge_id"] == "edge-1"


async def test_wrong_password_never_connects_nor_raises_nor_leaks(
    broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mqtt")  # paho's own lines (the CONNECT) too
    broker = broker_factory(password=True)
    wrong = "wrong-" + (broker.password or "")
    plane = ControlPlane(broker.mqtt_config(password=wrong), FakeAgent())
    async with running(plane) as task:
        await wait_until(lambda: plane.failures >= 3, timeout=3.0, what="3 refused attempts")
        assert not plane.connected and plane.connects == 0 and not task.done()
    assert len(warnings_of(caplog)) == 1
    assert "Not authorized" in warnings_of(caplog)[0].getMessage()  # says why it is refused
    assert "Sending CONNECT" in caplog.text  # the leak check did see paho's lines
    assert wrong not in caplog.text and str(broker.password) not in caplog.text


async def test_tls_to_the_broker_with_its_ca(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(tls=True, password=True)
    plane = ControlPlane(broker.mqtt_config(), FakeAgent())
    async with running(plane):
        status = await retained(broker, plane.status_topic, where=lambda s: s["state"] == "online")
        assert status["edge_id"] == "edge-1"


async def test_tls_with_another_ca_never_connects(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(tls=True)
    stranger = broker_factory(tls=True, start=False)  # its own, unrelated CA
    plane = ControlPlane(broker.mqtt_config(tls_ca=stranger.ca_path), FakeAgent())
    async with running(plane) as task:
        await wait_until(lambda: plane.failures >= 2, timeout=3.0, what="2 refused handshakes")
        assert not plane.connected and not task.done()
    with pytest.raises(pytest.fail.Exception):  # nothing of this edge reached the broker
        await retained(broker, plane.status_topic, timeout=0.5)
