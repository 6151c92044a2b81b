"""The shipped broker configuration (deploy/mosquitto/mosquitto.conf and acl), run by a real
mosquitto with only its paths and port replaced: TLS only, passwords, and an ACL under which an
edge writes only its own topics and reads only its own desired plan. A real agent connects with
its credentials; with a wrong password it is refused and its frames still reach the tail. Client
ids are user names, so another user reusing an edge's client id cannot knock it off, and
messages over the size limits are neither retained nor delivered."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from splitwire.edge.control import ControlPlane, edge_topic

from ..pki import issue_pki
from .agent_runs import make_agent
from .conftest import Broker, Subscriber, _binary, _free_port, retained, wait_until
from .test_control import PLAN, FakeAgent, running

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
ROOT = "splitwire/v1/edges"


@pytest.fixture
def deployed_broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto from the shipped files; users fleet, edge-a and edge-b (passwords in
    ``broker.passwords``), its CA in ``broker.ca_path``."""
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    pki = issue_pki(tmp_path / "pki")
    for name, source in (("ca.crt", pki.ca), ("server.crt", pki.server_cert),
                         ("server.key", pki.server_key)):  # fmt: skip
        (etc / "tls" / name).write_bytes(source.read_bytes())
    (etc / "acl").write_text((DEPLOY / "acl").read_text())
    passwords = {user: secrets.token_urlsafe(12) for user in ("fleet", "edge-a", "edge-b")}
    for user, password in passwords.items():
        create = ["-c"] if user == "fleet" else []
        subprocess.run([_binary("mosquitto_passwd"), "-b", *create, str(etc / "passwd"), user,
                        password], check=True, capture_output=True, timeout=10)  # fmt: skip
    (tmp_path / "db").mkdir()
    broker = Broker(directory=tmp_path, port=_free_port(), ca_path=etc / "tls" / "ca.crt",
                    persistence=True)  # fmt: skip
    config = (DEPLOY / "mosquitto.conf").read_text()
    for shipped, here in (
        ("/etc/mosquitto/splitwire/", f"{etc}/"),
        ("listener 8883 127.0.0.1", f"listener {broker.port} 127.0.0.1"),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/db/"),
        ("log_dest stderr", f"log_dest file {broker.log_path}"),
    ):
        assert shipped in config, f"the shipped config lost {shipped!r}"
        config = config.replace(shipped, here)
    # As root, mosquitto would drop to its own user, which cannot read tmp_path.
    config += f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    broker.config_path.write_text(config)
    broker.start()
    broker.passwords = passwords  # type: ignore[attr-defined]
    yield broker
    broker.stop()


def as_user(broker: Broker, user: str, password: str | None = None) -> Broker:
    """The same broker as seen with ``user``'s credentials."""
    passwords = broker.passwords  # type: ignore[attr-defined]
    return dataclasses.replace(broker, username=user, password=password or passwords[user])


async def test_an_edge_writes_only_its_own_topics_and_reads_only_its_own_plan(
    deployed_broker: Broker,
) -> None:
    fleet, a = as_user(deployed_broker, "fleet"), as_user(deployed_broker, "edge-a")
    # The fleet manager sets a desired plan for each edge (retained).
    for edge in ("edge-a", "edge-b"):
        await fleet.publish(edge_topic(ROOT, edge, "plan/desired"), {"cut": f"for-{edge}"})
    async with Subscriber(fleet, f"{ROOT}/#") as watcher:
        async with a.client() as client:
            await client.publish(edge_topic(ROOT, "edge-a", "telemetry"), b'{"own": 1}', qos=1)
            # Posing as edge-b, and writing its own desired plan: both refused by the ACL.
            await client.publish(edge_topic(ROOT, "edge-b", "status"), b'{"fake": 1}', qos=1)
            await client.publish(edge_topic(ROOT, "edge-a", "plan/desired"), b'{"cut": "x"}',
                                 qos=1)  # fmt: skip
            await client.publish(edge_topic(ROOT, "edge-a", "telemetry"), b'{"own": 2}', qos=1)
        await watcher.wait_until(
            lambda: len(watcher.on(edge_topic(ROOT, "edge-a", "telemetry"))) == 2
        )
        assert watcher.on(edge_topic(ROOT, "edge-b", "status")) == []
        assert [m.payload for m in watcher.on(edge_topic(ROOT, "edge-a", "plan/desired"))] == [
            {"cut": "for-edge-a"}  # the retained one only: edge-a's own write was dropped
        ]
    # edge-a reads its own desired plan, and nothing of edge-b's.
    mine = await retained(a, edge_topic(ROOT, "edge-a", "plan/desired"))
    assert mine == {"cut": "for-edge-a"}
    async with a.client() as client:
        await client.subscribe(f"{ROOT}/edge-b/#", qos=1)
        await client.subscribe(f"{ROOT}/#", qos=1)
        seen = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    seen.append((str(message.topic), bool(message.retain)))
    # Through the wildcard only its own desired plan arrives; edge-b's, retained, does not.
    assert seen == [(edge_topic(ROOT, "edge-a", "plan/desired"), True)], seen


async def test_plaintext_and_anonymous_clients_are_refused(deployed_broker: Broker) -> None:
    anonymous = dataclasses.replace(deployed_broker, username=None, password=None)
    with pytest.raises(aiomqtt.MqttError):
        async with anonymous.client():
            pass
    plaintext = as_user(deployed_broker, "edge-a")
    plaintext.ca_path = None  # no TLS: the broker port speaks only TLS
    with pytest.raises(aiomqtt.MqttError):
        async with plaintext.client():
            pass


async def test_agent_connects_with_its_credentials_and_a_wrong_password_spares_the_data_path(
    start_server, plan_dir: Path, deployed_broker: Broker, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    fields = {"cloud": server.address, "cut": split_cuts[0], "codec": "fp32", "policy": "fixed",
              "fps": 20, "frames": 60}  # fmt: skip
    # Right credentials: the agent's status is online, as seen by the fleet manager.
    agent, _ = make_agent(plan_dir, edge_id="edge-a", **fields)
    control = ControlPlane(as_user(deployed_broker, "edge-a").mqtt_config(), agent.view)
    control_task = asyncio.create_task(control.run())
    try:
        status = await retained(as_user(deployed_broker, "fleet"),
                                edge_topic(ROOT, "edge-a", "status"),
                                where=lambda s: s["state"] == "online")  # fmt: skip
        assert status["edge_id"] == "edge-a"
        summary = await asyncio.wait_for(agent.run(), 30)
        assert summary["frames"] == 60
    finally:
        await control.stop(timeout_s=2.0)
        await asyncio.wait_for(control_task, 5.0)

    # A wrong password: refused at every attempt, and every frame is still answered remotely.
    agent, _ = make_agent(plan_dir, edge_id="edge-b", **fields)
    wrong = as_user(deployed_broker, "edge-b", password="wrong-" + secrets.token_hex(4))
    control = ControlPlane(wrong.mqtt_config(), agent.view)
    control_task = asyncio.create_task(control.run())
    try:
        summary = await asyncio.wait_for(agent.run(), 30)
        assert control.failures >= 1 and control.connects == 0
        await wait_until(lambda: not control.connected, what="never connected")
    finally:
        await control.stop(timeout_s=2.0)
        await asyncio.wait_for(control_task, 5.0)
    assert summary["by_source"]["remote"] == 60, summary


async def test_an_edges_client_id_in_another_users_hands_does_not_kick_it_off(
    deployed_broker: Broker,
) -> None:
    fleet = as_user(deployed_broker, "fleet")
    edge = ControlPlane(as_user(deployed_broker, "edge-a").mqtt_config(), FakeAgent("edge-a"))
    status = edge_topic(ROOT, "edge-a", "status")
    async with Subscriber(fleet, status) as watcher, running(edge):
        await wait_until(lambda: edge.connected, what="edge-a connected")
        await watcher.wait_for(status, where=lambda s: s["state"] == "online")
        # edge-b's valid credentials, with the id edge-a's agent sends and the id it ends up with.
        intruder = as_user(deployed_broker, "edge-b")
        for stolen in ("splitwire-edge-edge-a", "edge-a"):
            async with intruder.client(identifier=stolen):
                await asyncio.sleep(0.3)  # long enough for the broker to drop edge-a, if it did
        await asyncio.sleep(0.3)
        assert (edge.connects, edge.drops, edge.failures) == (1, 0, 0) and edge.connected
    states = [m.payload["state"] for m in watcher.on(status)]
    assert "offline" not in states[:-1], f"edge-a's status flapped: {states}"
    # The broker renamed both intruders after the user their password proved.
    assert deployed_broker.log().count("as edge-b (") == 2


async def test_the_broker_refuses_oversized_messages(deployed_broker: Broker) -> None:
    fleet = as_user(deployed_broker, "fleet")
    agent = FakeAgent("edge-a")
    edge = ControlPlane(as_user(deployed_broker, "edge-a").mqtt_config(), agent)
    desired = edge_topic(ROOT, "edge-a", "plan/desired")
    async with running(edge):
        await wait_until(lambda: edge.connected, what="edge-a connected")
        await fleet.publish(desired, PLAN)
        await wait_until(lambda: agent.desired == [PLAN], what="the valid plan applied")
        # Over message_size_limit: acknowledged, but neither forwarded nor retained.
        await fleet.publish(desired, b" " * (64 * 1024 + 1))
        # Over max_packet_size (the issue's 100 MB retained message, scaled down): the broker
        # closes the connection instead of buffering the packet.
        with pytest.raises(aiomqtt.MqttError):
            async with fleet.client() as client:
                await client.publish(desired, b" " * (1 << 20), qos=1, retain=True, timeout=1.0)
        assert await retained(fleet, desired) == PLAN
        assert agent.desired == [PLAN] and edge.refused == 0 and edge.connected
    assert "Client fleet disconnected due to oversize packet" in deployed_broker.log()
