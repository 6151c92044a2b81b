"""The edge agent's MQTT control plane: presence, telemetry and the desired plan.

One :class:`ControlPlane` per edge keeps a connection to an MQTT broker, under
``{topic_root}/{edge_id}/``::

    status          retained  {"state": "online", "edge_id": ..., **agent.status()}
                              {"state": "offline", "edge_id": ..., "reason": "stopped"}  (stop())
                              {"state": "offline", "edge_id": ..., "reason": "lost"}  (last will)
    telemetry       qos 0     agent.telemetry() plus "ts_ns", every telemetry_s
    plan/desired    ← cloud   a JSON object, checked by desired.decode_desired, then handed
                              to agent.apply_desired
    plan/reported   retained  the agent's answer, with the request echoed as "desired"; a
                              payload refused before reaching the agent is answered with
                              {"applied": false, "reason": ..., "desired": EXCERPT,
                              "desired_bytes": N}, EXCERPT at most 64 escaped characters

The payloads' shapes are built here too (:func:`status_fields`, :class:`Telemetry`,
:func:`read_desired`, :func:`reported`), from what the agent hands over.

The control plane is advisory: the broker may be absent, restarting or refusing the edge's
credentials, and the data path never waits on it. :meth:`ControlPlane.run` therefore never raises
for broker trouble; it logs one warning per outage and reconnects with capped, fully jittered
exponential backoff. On each (re)connection it publishes the status again and renews the
subscription, so the broker's retained desired plan arrives again and is re-applied.

Payloads are not trusted (see ``desired.py``): a refused message costs one log line and one
``plan/reported`` answer, and the loop goes on. Anything else that goes wrong inside a
connection (a bug, an agent breaking its contract) is caught by :meth:`ControlPlane.run`'s
supervision: one error line, the status set to ``offline`` with reason ``error``, and a new
connection after a backoff that grows while the failures repeat (a retained message that
triggers the same failure again cannot spin the loop); the control task never dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiomqtt

from splitwire.edge.desired import DesiredPlanError, decode_desired
from splitwire.edge.errors import ControlConfigError
from splitwire.edge.records import strict_json
from splitwire.partitioner.errors import PlanError
from splitwire.protocol.peer_text import peer_text

if TYPE_CHECKING:  # the agent's types; control.py itself needs neither torch nor a plan
    from splitwire.edge.policy import CutSwitch
    from splitwire.edge.records import RunStats
    from splitwire.partitioner.link import LinkModel
    from splitwire.partitioner.plan_file import PlanOption
    from splitwire.partitioner.runtime import RunnablePlan

__all__ = [
    "ControlConfigError",
    "ControlPlane",
    "ControlledAgent",
    "DesiredPlan",
    "MqttConfig",
    "Telemetry",
    "choose_desired",
    "edge_topic",
    "read_desired",
    "read_password_file",
    "reported",
    "status_fields",
]

logger = logging.getLogger("splitwire.edge.control")

_OFFLINE_PUBLISH_S = 0.5
# Messages received but not yet handled; beyond this aiomqtt drops new ones (with a warning).
# Only plan/desired arrives, one message at a time in normal use, so 16 is ample, and a flood of
# them holds at most 16 × the broker's message size limit in memory instead of growing.
_INCOMING_QUEUE = 16
# max_desired_bytes must fit a plan with long names, and stay cheap to scan before parsing.
_DESIRED_BYTES_RANGE = (256, 1 << 20)


class ControlledAgent(Protocol):
    """What the control plane needs from the edge agent.

    The methods are called on the event loop, so they must return quickly; none may block on
    the network.
    """

    edge_id: str

    def status(self) -> dict[str, Any]:
        """Fields merged into the retained online status (``state`` and ``edge_id`` win)."""
        ...

    def telemetry(self) -> dict[str, Any]:
        """A JSON-able snapshot, published every ``telemetry_s``."""
        ...

    def apply_desired(self, desired: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a parsed plan/desired object; return the plan/reported payload.

        Bad content is answered with ``{"applied": False, "reason": ...}``, never raised.
        """
        ...


@dataclass(frozen=True)
class MqttConfig:
    """How to reach the broker and how the edge behaves on it.

    ``password`` is left out of ``repr`` so that logging a config never leaks it. ``tls_ca``
    switches the connection to TLS, verifying the broker's certificate (and host name) with
    that CA file. Reconnection waits a random time in ``[0, min(reconnect_max_s,
    reconnect_initial_s * 2**attempt)]`` ("full jitter"), so a fleet of edges does not hammer
    a broker that just came back in lockstep.
    """

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    telemetry_s: float = 5.0
    topic_root: str = "splitwire/v1/edges"
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 5.0
    # A desired plan is three short strings, ~60 bytes ({"cut":"c0017","codec":"int8+zstd1",
    # "policy":"fixed"}); 4 KiB is 60 times that, pretty-printed JSON included, and a larger
    # payload is refused before it is decoded.
    max_desired_bytes: int = 4096

    def __post_init__(self) -> None:
        if not self.host:
            raise ControlConfigError("MQTT host is empty")
        if not 0 < self.port < 65536:
            raise ControlConfigError(f"MQTT port {self.port} is not in 1..65535")
        if not self.telemetry_s > 0:
            raise ControlConfigError(f"telemetry period {self.telemetry_s}s must be > 0")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ControlConfigError(
                f"reconnect backoff needs 0 < initial ({self.reconnect_initial_s}s) "
                f"<= max ({self.reconnect_max_s}s)"
            )
        low, high = _DESIRED_BYTES_RANGE
        if not low <= self.max_desired_bytes <= high:
            raise ControlConfigError(
                f"max_desired_bytes {self.max_desired_bytes}: expected {low}..{high} "
                "(a desired plan is a few short strings)"
            )
        _check_topic_part("topic root", self.topic_root)
        if self.password is not None and self.username is None:
            raise ControlConfigError("an MQTT password needs a username")


@dataclass(frozen=True)
class DesiredPlan:
    """A desired plan of the right shape (whether the plan ships it is the agent's question):
    ``cut`` and ``codec`` both set, or both None for ``{"policy": ...}`` alone; ``policy`` as
    sent (None: not given)."""

    cut: str | None
    codec: str | None
    policy: str | None


POLICIES = ("auto", "fixed")


def read_desired(desired: Mapping[str, Any]) -> DesiredPlan | str:
    """The shape of a decoded ``plan/desired`` object: a :class:`DesiredPlan`, or the reason it
    is refused."""
    keys = set(desired)
    if keys == {"policy"}:
        policy = desired["policy"]
        if policy not in POLICIES:
            return f"policy {policy!r}: expected 'auto' or 'fixed'"
        return DesiredPlan(None, None, policy)
    if keys - {"cut", "codec", "policy"} or "cut" not in keys or "codec" not in keys:
        return (
            'expected {"cut": ID, "codec": SPEC} (one of the plan\'s shipped pairs) or '
            f'{{"policy": "auto"|"fixed"}}; got keys {sorted(keys)}'
        )
    cut, codec = desired["cut"], desired["codec"]
    if not isinstance(cut, str) or not isinstance(codec, str):
        return "cut and codec must be strings"
    return DesiredPlan(cut, codec, desired.get("policy"))


def choose_desired(
    desired: Mapping[str, Any],
    *,
    plan: RunnablePlan,
    cloud: str | None,
    served: Sequence[str] | None,
) -> tuple[PlanOption | None, str] | str:
    """What a decoded ``plan/desired`` object asks for, checked against the plan: the option
    (None: keep the current one) and the policy; or the reason it is refused.

    Args:
        desired: the decoded object.
        plan: the agent's plan (which pairs it ships).
        cloud: the agent's ``--cloud``, if any (a remote option needs one).
        served: the cuts the connected tail serves (None: no tail connected yet).
    """
    request = read_desired(desired)
    if isinstance(request, str):
        return request
    if request.cut is None or request.codec is None:
        assert request.policy is not None
        return None, request.policy
    try:
        option = plan.option(request.cut, request.codec)
    except PlanError as exc:
        return str(exc)
    if not option.local and cloud is None:
        return f"{option.cut} {option.codec} needs the cloud and this agent has no --cloud"
    if served is not None and not option.local and option.cut not in served:
        return (
            f"the connected server does not serve cut {request.cut} (it serves "
            f"{peer_text(', '.join(served[:8]))})"
        )
    policy = request.policy or "fixed"
    if policy not in POLICIES:
        return f"policy {policy!r}: expected 'auto' or 'fixed'"
    return option, policy


def reported(
    *, applied: bool, option: PlanOption, policy: str, reason: str | None = None
) -> dict[str, Any]:
    """A ``plan/reported`` answer: applied or not (and why not), and what runs now."""
    answer: dict[str, Any] = {"applied": applied}
    if reason is not None:
        answer["reason"] = reason
    return answer | {"cut": option.cut, "codec": option.codec, "policy": policy}


def status_fields(
    *, plan: RunnablePlan, option: PlanOption, policy: str, cloud: str | None
) -> dict[str, Any]:
    """The agent's fields of the retained ``online`` status."""
    return {
        "model_hash": plan.model_hash,
        "model": plan.plan.model_spec,
        "cut": option.cut,
        "codec": option.codec,
        "policy": policy,
        "cloud": cloud,
        "options": [{"cut": o.cut, "codec": o.codec} for o in plan.options],
    }


@dataclass(frozen=True)
class Telemetry:
    """What one ``telemetry`` message reports (:meth:`as_json` is its payload)."""

    connected: bool
    server_id: str | None
    option: PlanOption
    policy: str
    rtt_s: float | None
    uplink_bps: float | None
    link: LinkModel | None
    elapsed_s: float
    stats: RunStats
    in_flight: int
    reconnects: int
    edge_scale: float
    switches: Sequence[CutSwitch]

    def as_json(self) -> dict[str, Any]:
        """The payload (figures rounded; None where there is no figure yet)."""
        stats, rtt, latencies = self.stats, self.rtt_s, self.stats.latencies_ms
        elapsed = max(self.elapsed_s, 1e-9)
        return {
            "connected": self.connected,
            "server_id": self.server_id,
            "cut": self.option.cut,
            "codec": self.option.codec,
            "policy": self.policy,
            "rtt_ms": round(rtt * 1000.0, 3) if rtt is not None else None,
            "result_delay_ms": round(latencies[-1], 3) if latencies else None,
            "uplink_bps": round(self.uplink_bps) if self.uplink_bps is not None else None,
            "link": str(self.link) if self.link is not None else None,
            "fps": round((stats.frames - stats.by_source["dropped"]) / elapsed, 3),
            "frames": stats.frames,
            "by_source": dict(stats.by_source),
            "drops": dict(stats.by_reason),
            "bytes_up": stats.bytes_up,
            "in_flight": self.in_flight,
            "reconnects": self.reconnects,
            "edge_scale": round(self.edge_scale, 3),
            "last_switch": self.switches[-1].as_json() if self.switches else None,
            "switches": len(self.switches),
        }


def edge_topic(root: str, edge_id: str, leaf: str) -> str:
    """The topic ``leaf`` (``status``, ``plan/desired``, ...) of one edge: ``root/edge_id/leaf``."""
    return f"{root}/{edge_id}/{leaf}"


def read_password_file(path: Path) -> str:
    """The MQTT password stored in ``path``, without its trailing newline.

    Passwords live in files (not on the command line, where ``ps`` shows them). Raises
    :class:`ControlConfigError` when the file is unreadable or holds an empty password.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ControlConfigError(f"cannot read the MQTT password file {path}: {exc}") from None
    # Only one newline goes: editors add it, but other whitespace may be part of the password.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ControlConfigError(f"the MQTT password file {path} is empty")
    return text


def _check_topic_part(what: str, value: str) -> None:
    if not value or any(c in value for c in "+#\0") or value.startswith("/") or "//" in value:
        raise ControlConfigError(f"{what} {value!r} is not a valid MQTT topic part")


def _dumps(payload: Any) -> bytes:
    # default=str: an agent slipping in a Path or an enum must not silence its telemetry; strict
    # JSON: a NaN figure is published as null, which every consumer's parser accepts.
    return strict_json(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _tls_context(ca: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ControlConfigError(f"cannot load the MQTT CA file {ca}: {exc}") from None


class ControlPlane:
    """Keeps one edge present on the broker and applies the plans sent to it.

    ``connects`` counts successful connections, ``failures`` connection attempts that failed,
    ``drops`` established connections that were lost, ``refused`` desired-plan payloads refused
    before reaching the agent and ``crashes`` unexpected errors the supervision caught; they are
    meant for tests and telemetry.
    """

    def __init__(self, config: MqttConfig, agent: ControlledAgent) -> None:
        # One topic level: an id with "/" would put its topics inside another edge's tree.
        if "/" in agent.edge_id:
            raise ControlConfigError(f"edge id {agent.edge_id!r} must not contain '/'")
        _check_topic_part("edge id", agent.edge_id)
        self.config = config
        self.agent = agent
        self.edge_id = agent.edge_id
        self.status_topic = edge_topic(config.topic_root, self.edge_id, "status")
        self.telemetry_topic = edge_topic(config.topic_root, self.edge_id, "telemetry")
        self.desired_topic = edge_topic(config.topic_root, self.edge_id, "plan/desired")
        self.reported_topic = edge_topic(config.topic_root, self.edge_id, "plan/reported")
        # Built once: a missing CA file is a configuration error, not a broker outage to retry.
        self._tls = _tls_context(config.tls_ca) if config.tls_ca is not None else None
        self.connects = 0
        self.failures = 0
        self.drops = 0
        self.refused = 0
        self.crashes = 0
        self._connected = False
        self._attempt = 0
        self._crash_streak = 0
        self._outage_since: float | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._random = random.Random()

    @property
    def connected(self) -> bool:
        """Whether a broker connection is up right now."""
        return self._connected

    async def run(self) -> None:
        """Stay connected to the broker until :meth:`stop`; raises only if cancelled.

        Each connection publishes the retained online status, subscribes to plan/desired
        (qos 1) and then publishes telemetry and answers desired plans until the connection
        breaks, after which it reconnects with backoff. An unexpected error is logged in one
        line and the connection restarted the same way (see the module docstring).
        """
        if self._task is not None:
            raise RuntimeError("ControlPlane.run() is already running or has run")
        self._task = asyncio.current_task()
        try:
            while not self._stop.is_set():
                await self._supervised_session()
                if self._stop.is_set():
                    break
                await self._backoff()
        finally:
            self._connected = False
            self._done.set()

    async def stop(self, *, timeout_s: float = 2.0) -> None:
        """Publish the retained offline status if connected, disconnect cleanly, end :meth:`run`.

        Bounded by ``timeout_s``: past it, :meth:`run` is cancelled (a connection attempt to
        an unresponsive broker is not waited out).
        """
        self._stop.set()
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._done.wait()), timeout=timeout_s)
        except TimeoutError:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _supervised_session(self) -> None:
        """:meth:`_session`, with any unexpected error logged and counted instead of raised."""
        try:
            await self._session()
        except Exception as exc:
            self.crashes += 1
            self._crash_streak += 1
            delay = self._backoff_cap()
            # One line: the exception may come from a payload, so no traceback unless asked
            # for (DEBUG), and its message is escaped and truncated like any peer text.
            logger.error(
                "the MQTT control plane failed (%s: %s); reconnecting within %.1fs "
                "(failure %d in a row), the data path goes on",
                type(exc).__name__,
                peer_text(str(exc), 120),
                delay,
                self._crash_streak,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
        else:
            self._crash_streak = 0

    def _client(self) -> aiomqtt.Client:
        offline = {"state": "offline", "edge_id": self.edge_id, "reason": "lost"}
        return aiomqtt.Client(
            self.config.host,
            self.config.port,
            username=self.config.username,
            password=self.config.password,
            identifier=f"splitwire-edge-{self.edge_id}",
            will=aiomqtt.Will(self.status_topic, _dumps(offline), qos=1, retain=True),
            clean_session=True,
            tls_context=self._tls,
            max_queued_incoming_messages=_INCOMING_QUEUE,
        )

    async def _session(self) -> None:
        """One connection, from connecting to its end; broker errors are noted, not raised."""
        client = self._client()
        entered = False
        try:
            async with client:
                entered = True
                self._on_connected()
                try:
                    await self._serve(client)
                except asyncio.CancelledError:
                    # Cancelled rather than stopped: the clean DISCONNECT that follows
                    # suppresses the will, so the edge must say it is offline itself.
                    await self._publish_offline(client, "stopped")
                    raise
                except aiomqtt.MqttError:
                    raise
                except Exception:
                    # Same reason: without this the retained status would stay "online"
                    # while nothing answers (run() logs the error and reconnects).
                    await self._publish_offline(client, "error")
                    raise
                finally:
                    self._connected = False
        except aiomqtt.MqttError as exc:
            self._on_broker_error(exc, connecting=not entered)

    async def _serve(self, client: aiomqtt.Client) -> None:
        if self._stop.is_set():  # stopped while connecting: never claim to be online
            await self._publish_offline(client, "stopped")
            return
        await client.publish(self.status_topic, _dumps(self._online()), qos=1, retain=True)
        await client.subscribe(self.desired_topic, qos=1)
        stop = asyncio.ensure_future(self._stop.wait())
        workers = {
            asyncio.ensure_future(self._telemetry_loop(client)),
            asyncio.ensure_future(self._desired_loop(client)),
        }
        try:
            done, _ = await asyncio.wait({stop, *workers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, *workers):
                task.cancel()
            await asyncio.gather(stop, *workers, return_exceptions=True)
        for task in done & workers:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        if self._stop.is_set():
            await self._publish_offline(client, "stopped")

    def _on_connected(self) -> None:
        self.connects += 1
        self._connected = True
        self._attempt = 0
        if self._outage_since is not None:
            logger.info(
                "MQTT broker %s:%d reachable again after %.1fs (%d failed attempts)",
                self.config.host,
                self.config.port,
                time.monotonic() - self._outage_since,
                self.failures,
            )
            self._outage_since = None
        else:
            logger.info("connected to MQTT broker %s:%d", self.config.host, self.config.port)

    def _on_broker_error(self, exc: aiomqtt.MqttError, *, connecting: bool) -> None:
        if connecting:
            self.failures += 1
        else:
            self.drops += 1
        if self._stop.is_set():
            return
        if self._outage_since is None:
            # One warning per outage: a broker down for an hour must not flood the edge's log.
            self._outage_since = time.monotonic()
            what = "cannot connect to" if connecting else "lost the connection to"
            logger.warning(
                "%s MQTT broker %s:%d (%s); retrying in the background "
                "(backoff up to %.1fs), the data path goes on",
                what,
                self.config.host,
                self.config.port,
                exc,
                self.config.reconnect_max_s,
            )
        else:
            logger.debug("MQTT broker still unavailable: %s", exc)

    def _backoff_cap(self) -> float:
        # A connection that fails the same way each time (a retained message setting off a bug)
        # resets _attempt when it connects, so the streak of failures sets the pace then.
        attempt = max(self._attempt, self._crash_streak)
        return min(self.config.reconnect_max_s, self.config.reconnect_initial_s * 2.0**attempt)

    async def _backoff(self) -> None:
        cap = self._backoff_cap()
        self._attempt = min(self._attempt + 1, 64)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=self._random.uniform(0.0, cap))

    def _online(self) -> dict[str, Any]:
        try:
            extra = dict(self.agent.status())
        except Exception:
            logger.exception("agent.status() failed; publishing the bare online status")
            extra = {}
        extra.pop("state", None)
        extra.pop("edge_id", None)
        return {"state": "online", "edge_id": self.edge_id, **extra}

    async def _publish_offline(self, client: aiomqtt.Client, reason: str) -> None:
        payload = {"state": "offline", "edge_id": self.edge_id, "reason": reason}
        try:
            await client.publish(
                self.status_topic, _dumps(payload), qos=1, retain=True, timeout=_OFFLINE_PUBLISH_S
            )
        except aiomqtt.MqttError as exc:
            logger.debug("could not publish the offline status: %s", exc)

    async def _telemetry_loop(self, client: aiomqtt.Client) -> None:
        period = self.config.telemetry_s
        # Deadlines on the monotonic clock, so the period does not drift by the publish time.
        next_at = time.monotonic()
        while True:
            try:
                snapshot = dict(self.agent.telemetry())
            except Exception:
                logger.exception("agent.telemetry() failed; this sample is skipped")
            else:
                snapshot["ts_ns"] = time.time_ns()
                await client.publish(self.telemetry_topic, _dumps(snapshot), qos=0, retain=False)
            next_at += period
            now = time.monotonic()
            if next_at < now:  # a stalled loop skips the missed samples instead of bursting
                next_at = now + period
            await asyncio.sleep(next_at - now)

    async def _desired_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not message.topic.matches(self.desired_topic):
                continue
            payload = message.payload
            # An empty retained payload is how a topic is cleared: there is no plan to apply.
            if payload is None or payload in (b"", ""):
                continue
            reported = self._answer(payload)
            await client.publish(self.reported_topic, _dumps(reported), qos=1, retain=True)

    def _answer(self, payload: bytes | bytearray | str | int | float) -> dict[str, Any]:
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            desired = decode_desired(raw, max_bytes=self.config.max_desired_bytes)
        except DesiredPlanError as exc:
            self.refused += 1
            excerpt = peer_text(raw)
            logger.warning("plan/desired refused: %s; payload %s", exc, excerpt)
            return {
                "applied": False,
                "reason": f"plan/desired refused: {exc}",
                "desired": excerpt,
                "desired_bytes": len(raw),
            }
        try:
            answer = self.agent.apply_desired(desired)
        except Exception as exc:
            # The agent promises not to raise; if it does anyway, the cloud still hears why,
            # in one line (the traceback at DEBUG: the plan that set it off may be hostile).
            reason = f"the edge agent failed: {type(exc).__name__}: {peer_text(str(exc), 120)}"
            logger.error("%s", reason, exc_info=logger.isEnabledFor(logging.DEBUG))
            answer = {"applied": False, "reason": reason}
        reported = dict(answer) if isinstance(answer, Mapping) else {"applied": False}
        reported["desired"] = desired
        return reported
