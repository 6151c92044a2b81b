"""Edge test fixtures: a REAL mosquitto broker per test, and real MQTT clients to look at it.

``broker_factory(...)`` starts mosquitto on 127.0.0.1, on a free port, from a config generated in
the test's tmp_path (anonymous by default; optionally a password file and/or TLS with a CA made
here). A broker can be stopped and started again on the same port (broker-restart tests) or
killed; every broker is stopped at teardown. The broker is not optional: when mosquitto is not
installed the fixture fails (``make test`` installs it), it does not skip.

:func:`retained` and :class:`Subscriber` read what reached the broker with a real aiomqtt client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import pytest

from splitwire.edge.control import MqttConfig

from ..pki import issue_pki

START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
MISSING = (
    "mosquitto is not installed: `make test` installs it (Debian package mosquitto, which also "
    "ships mosquitto_passwd)"
)


def _binary(name: str) -> str:
    # /usr/sbin is not on every user's PATH, but that is where Debian puts the broker.
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        pytest.fail(f"{name} not found. {MISSING}", pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """One mosquitto process (or its config, before :meth:`start`) on a fixed 127.0.0.1 port."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_path: Path | None = None
    persistence: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """The broker's log so far (mosquitto logs everything here, ``log_type all``)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start mosquitto and return once its port accepts connections (fails otherwise)."""
        assert not self.running, "broker already running"
        self._process = subprocess.Popen(
            [_binary("mosquitto"), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "mosquitto.stderr").open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._fail(f"mosquitto exited at start with code {self._process.returncode}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.02)
        self.kill()
        self._fail(f"mosquitto did not accept connections on port {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker cleanly (SIGTERM: a persistent broker saves its retained messages)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout_s)
        self._process = None

    def kill(self) -> None:
        """Kill the broker (SIGKILL): no goodbye to its clients, nothing saved."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(STOP_TIMEOUT_S)
        self._process = None

    def _fail(self, why: str) -> None:
        stderr = (self.directory / "mosquitto.stderr").read_text(errors="replace")
        pytest.fail(
            f"{why}\n--- config ---\n{self.config_path.read_text()}"
            f"--- log ---\n{self.log()}\n--- stderr ---\n{stderr}",
            pytrace=False,
        )

    def tls_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_path)) if self.ca_path else None

    def client(self, **kwargs: Any) -> aiomqtt.Client:
        """A real aiomqtt client for this broker, with its credentials and CA."""
        kwargs.setdefault("identifier", f"splitwire-test-{secrets.token_hex(4)}")
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            tls_context=self.tls_context(),
            timeout=5,
            **kwargs,
        )

    def mqtt_config(self, **overrides: Any) -> MqttConfig:
        """An edge MqttConfig reaching this broker (credentials, CA), fast for tests."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls_ca": self.ca_path,
            "telemetry_s": 5.0,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.3,
        }
        values.update(overrides)
        return MqttConfig(**values)

    async def publish(self, topic: str, payload: Any, *, retain: bool = True, qos: int = 1) -> None:
        """Publish ``payload`` (bytes as they are, anything else as JSON) from a fresh client."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        async with self.client() as client:
            await client.publish(topic, data, qos=qos, retain=retain)


BrokerFactory = Callable[..., Broker]


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Make brokers: ``broker_factory(password=False, tls=False, persistence=False, start=True)``.

    ``password=True`` creates a password file (user ``edge``, a random password, anonymous
    clients refused); ``tls=True`` serves TLS only, with ``.ca_path`` the CA to verify it with.
    """
    _binary("mosquitto")
    brokers: list[Broker] = []

    def make(
        *,
        password: bool = False,
        tls: bool = False,
        persistence: bool = False,
        start: bool = True,
    ) -> Broker:
        directory = tmp_path / f"broker{len(brokers)}"
        directory.mkdir()
        broker = Broker(directory=directory, port=_free_port(), persistence=persistence)
        lines = [f"listener {broker.port} 127.0.0.1"]
        if tls:
            tls_files = issue_pki(directory / "tls")
            broker.ca_path, cert, key = tls_files.ca, tls_files.server_cert, tls_files.server_key
            lines += [f"cafile {broker.ca_path}", f"certfile {cert}", f"keyfile {key}"]
        if password:
            broker.username, broker.password = "edge", secrets.token_urlsafe(12)
            passwd = directory / "passwd"
            subprocess.run(
                [
                    _binary("mosquitto_passwd"),
                    "-b",
                    "-c",
                    str(passwd),
                    broker.username,
                    broker.password,
                ],
                check=True,
                capture_output=True,
                timeout=10,
            )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if persistence:
            (directory / "db").mkdir()
            lines += ["persistence true", f"persistence_location {directory / 'db'}/"]
        else:
            lines.append("persistence false")
        lines += [
            # Run as root, mosquitto drops to the `mosquitto` user, which cannot read tmp_path;
            # as anyone else this line changes nothing.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"log_dest file {broker.log_path}",
            "log_type all",
            "connection_messages true",
        ]
        broker.config_path.write_text("\n".join(lines) + "\n")
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> Broker:
    """A started anonymous broker without TLS."""
    return broker_factory()


def _decode(payload: Any) -> Any:
    if isinstance(payload, bytes | bytearray):
        payload = bytes(payload).decode()
    try:
        return json.loads(payload)
    except (TypeError, ValueError):
        return payload


async def retained(
    broker: Broker,
    topic: str,
    *,
    where: Callable[[Any], bool] | None = None,
    timeout: float = 5.0,
) -> Any:
    """The message ``broker`` retains on ``topic`` (JSON-decoded), once it satisfies ``where``.

    Each try is a fresh subscription, so what comes back is really retained (not just a live
    message) and a broker restart between tries is harmless. Fails after ``timeout`` seconds
    with the last retained value seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = "(nothing retained)"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no retained message on {topic} as wanted in {timeout}s; last: {last!r}")
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(min(left, 0.5)), broker.client() as client:
                await client.subscribe(topic, qos=1)
                async for message in client.messages:
                    if message.retain:
                        last = _decode(message.payload)
                        if where is None or where(last):
                            return last
                        break
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Received:
    """One message a :class:`Subscriber` saw."""

    topic: str
    raw: bytes
    payload: Any
    retain: bool
    at: float


class Subscriber:
    """Collects every message on ``topics`` with a real client, in the background.

    ``async with Subscriber(broker, "a/#") as sub: ... await sub.wait_for("a/b", where=...)``.
    """

    def __init__(self, broker: Broker, *topics: str) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[Received] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Subscriber:
        self._client = self.broker.client()
        await self._client.__aenter__()
        for topic in self.topics:
            await self._client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._collect(self._client))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            raw = message.payload if isinstance(message.payload, bytes) else b""
            self.messages.append(
                Received(
                    topic=str(message.topic),
                    raw=raw,
                    payload=_decode(message.payload),
                    retain=bool(message.retain),
                    at=time.monotonic(),
                )
            )
            self._changed.set()

    def on(self, topic: str) -> list[Received]:
        """The messages seen so far on ``topic``."""
        return [m for m in self.messages if m.topic == topic]

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds (checked on each message); fail after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self._task is not None and self._task.done():
                        pytest.fail(f"the subscriber stopped: {self._task.exception()!r}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = [(m.topic, m.payload) for m in self.messages[-5:]]
            pytest.fail(f"condition not met in {timeout}s; last messages: {seen}")

    async def wait_for(
        self, topic: str, *, where: Callable[[Any], bool] | None = None, timeout: float = 5.0
    ) -> Received:
        """The first message on ``topic`` satisfying ``where``, waiting for it if needed."""

        def found() -> Received | None:
            return next((m for m in self.on(topic) if where is None or where(m.payload)), None)

        await self.wait_until(lambda: found() is not None, timeout=timeout)
        result = found()
        assert result is not None
        return result


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition()`` every 20 ms; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met in {timeout}s")
        await asyncio.sleep(0.02)
