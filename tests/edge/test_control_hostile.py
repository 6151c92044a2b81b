"""The control plane against hostile plan/desired payloads, on a real mosquitto (conftest.py).

Whatever arrives on plan/desired (``"[" * 100000``, which used to kill the control task through
a ``RecursionError``, NaN, unknown keys, non-UTF-8, escapes, megabytes) is refused with a short
reason on plan/reported and one log line, and the loop goes on: telemetry keeps flowing, the
status stays true, and the next valid plan is applied, also after a restart with the hostile
message still retained. An error nothing expected is caught by the supervision in ``run()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from splitwire.edge.control import ControlPlane
from splitwire.edge.desired import MAX_DEPTH, DesiredPlanError, decode_desired

from .conftest import Broker, Subscriber, retained, wait_until
from .test_control import LOGGER, PLAN, FakeAgent, running

DEEP = b"[" * 100_000  # the attack: json.loads recursed once per "[" and raised RecursionError


def control_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record the control plane logged at INFO or above."""
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]


def assert_one_line_each(records: list[logging.LogRecord]) -> None:
    for record in records:
        message = record.getMessage()
        assert "\n" not in message and len(message) < 400, message
        assert not record.exc_info, f"a traceback for {message!r}"


# --- decoding, without a broker ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (DEEP, "100000 bytes; at most 4096 accepted"),
        (b"[" * 3000, f"nested deeper than {MAX_DEPTH} levels"),  # under the size cap
        (b'{"cut": "' + b"x" * 5000 + b'"}', "5011 bytes; at most 4096"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"cut": NaN, "codec": "fp32"}', "NaN is not strict JSON"),
        (b"Infinity", "Infinity is not strict JSON"),
        (b'{"cut": "c1", "cut": "c2"}', "key 'cut' given twice"),
        (b'{"cut": "c1", "budget_ms": 5}', "unknown key 'budget_ms'; expected keys among"),
        (b'{"\\u001b[2J": 1}', "unknown key '\\x1b[2J'"),
        (b'{"cut": ["c1"]}', "cut: expected a string, got an array"),
        (b'{"codec": 8}', "codec: expected a string, got a number"),
        (b'{"cut": "c1\\nINFO forged"}', "cut: 'c1\\nINFO forged' holds non-printable"),
        (b'{"cut": "' + b"c" * 129 + b'"}', "cut: 129 characters; at most 128"),
        (b'"[[[["', "expected a JSON object, got a string"),
        (b"{not json", "not JSON: Expecting property name"),
        (b"9" * 4096, "expected a JSON object, got a number"),
    ],
    ids=lambda v: None if isinstance(v, bytes) else v[:24],
)
def test_decode_refuses_with_a_short_reason(payload: bytes, why: str) -> None:
    with pytest.raises(DesiredPlanError) as info:
        decode_desired(payload, max_bytes=4096)
    reason = str(info.value)
    assert why in reason
    assert len(reason) < 160 and "\n" not in reason and "\x1b" not in reason


def test_decode_depth_is_checked_without_recursion_whatever_the_size() -> None:
    with pytest.raises(DesiredPlanError, match="nested deeper"):
        decode_desired(DEEP, max_bytes=len(DEEP))
    # Brackets inside strings are not nesting; escaped quotes do not end a string.
    text = b'{"cut": "' + b"[{" * 40 + b'\\"]", "codec": "fp32"}'
    assert decode_desired(text, max_bytes=4096) == {"cut": "[{" * 40 + '"]', "codec": "fp32"}
    deep_but_allowed = b'{"cut": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    with pytest.raises(DesiredPlanError, match="cut: expected a string, got an array"):
        decode_desired(deep_but_allowed, max_bytes=4096)


def test_decode_passes_the_shapes_the_agent_answers() -> None:
    for desired in (PLAN, {"policy": "auto"}, {"cut": "c0017", "codec": "int8+zstd1"}, {}):
        assert decode_desired(repr(desired).replace("'", '"').encode(), max_bytes=256) == desired


# --- the control plane on a real broker ----------------------------------------------------------


async def test_retained_deep_payload_is_refused_and_the_loop_goes_on_across_restarts(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    agent = FakeAgent()
    config = broker.mqtt_config(telemetry_s=0.2)
    probe = ControlPlane(config, agent)  # for the topic names
    reported, telemetry = probe.reported_topic, probe.telemetry_topic
    await broker.publish(probe.desired_topic, DEEP)  # retained, as in the attack
    for _ in range(2):  # the second run meets the same retained payload
        plane = ControlPlane(config, agent)
        async with Subscriber(broker, reported, telemetry) as sub, running(plane) as task:
            # A live answer (not run 0's, retained, which the subscription gets first).
            await sub.wait_until(lambda: any(not m.retain for m in sub.on(reported)))
            answer = next(m for m in sub.on(reported) if not m.retain)
            assert answer.payload["applied"] is False
            assert answer.payload["desired_bytes"] == len(DEEP)
            assert "100000 bytes; at most 4096 accepted" in answer.payload["reason"]
            assert answer.payload["desired"].endswith("...(100000 bytes)")
            assert len(answer.raw) < 300, "the payload is not echoed whole"
            # Telemetry goes on after the refusal, from a control task that is alive...
            seen = len(sub.on(telemetry))
            await sub.wait_until(lambda n=seen: len(sub.on(telemetry)) >= n + 2)
            assert not task.done() and plane.crashes == 0 and plane.refused == 1
            status = await retained(broker, plane.status_topic)
            assert status["state"] == "online"
        assert agent.desired == []
    refusals = [r for r in control_lines(caplog) if "plan/desired refused" in r.getMessage()]
    assert len(refusals) == 2, "one log line per refused message"
    assert_one_line_each(control_lines(caplog))

    # ... and a valid plan sent afterwards (replacing the retained payload) is applied.
    plane = ControlPlane(config, agent)
    async with running(plane):
        await wait_until(lambda: plane.connected, what="connected")
        await broker.publish(plane.desired_topic, PLAN)
        reported = await retained(broker, plane.reported_topic, where=lambda r: r["applied"])
        assert reported == {"applied": True, **PLAN, "desired": PLAN}
        assert agent.desired == [PLAN]


async def test_agent_cap_is_configurable_and_depth_is_refused_below_it(broker: Broker) -> None:
    agent = FakeAgent()
    plane = ControlPlane(broker.mqtt_config(max_desired_bytes=len(DEEP)), agent)
    await broker.publish(plane.desired_topic, DEEP)
    async with running(plane):
        reported = await retained(broker, plane.reported_topic)
        assert reported["applied"] is False and "nested deeper than" in reported["reason"]
        await broker.publish(plane.desired_topic, {"cut": "c0017", "codec": "x" * 200})
        reported = await retained(
            broker, plane.reported_topic, where=lambda r: r["desired_bytes"] < 1000
        )
        assert "codec: 200 characters; at most 128" in reported["reason"]
        assert agent.desired == [] and plane.crashes == 0


class BrokenAgent(FakeAgent):
    """Breaks the ControlledAgent contract for cut "crash": its answer cannot be serialised."""

    def apply_desired(self, desired: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[Any, Any] = super().apply_desired(desired)
        if desired.get("cut") == "crash":
            answer[("a", "tuple", "key")] = 1  # json.dumps raises TypeError
        return answer


async def test_unexpected_error_is_logged_and_the_loop_restarts_with_backoff(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    agent = BrokenAgent()
    config = broker.mqtt_config(telemetry_s=0.2, reconnect_initial_s=0.05, reconnect_max_s=0.3)
    plane = ControlPlane(config, agent)
    crash = {"cut": "crash", "codec": "fp32"}
    await broker.publish(plane.desired_topic, crash)  # retained: it strikes on every connection
    async with Subscriber(broker, plane.status_topic) as sub, running(plane) as task:
        await wait_until(lambda: plane.crashes >= 3, timeout=5.0, what="3 supervised failures")
        assert not task.done()
        # The status says so while the control plane restarts, and online again after.
        await sub.wait_for(plane.status_topic, where=lambda s: s.get("reason") == "error")
        # A valid plan replaces the retained one: the loop settles and applies it.
        await broker.publish(plane.desired_topic, PLAN)
        await wait_until(lambda: PLAN in agent.desired, timeout=5.0, what="valid plan applied")
        crashes = plane.crashes
        status = await retained(broker, plane.status_topic, where=lambda s: s["state"] == "online")
        assert status["edge_id"] == "edge-1"
        assert (await retained(broker, plane.reported_topic))["desired"] == PLAN
        assert plane.crashes == crashes and plane.connected
    errors = [r for r in control_lines(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == crashes, "one line per failure"
    assert "TypeError" in errors[0].getMessage() and "reconnecting within" in errors[0].getMessage()
    assert_one_line_each(control_lines(caplog))
    # The backoff grows with each failure in a row (0.05 s doubled, capped at 0.3 s), so a
    # retained payload that fails every connection cannot spin the loop.
    paces = [e.getMessage().partition("within ")[2].partition(" (")[0] for e in errors[:3]]
    assert paces == ["0.1s", "0.2s", "0.3s"], paces
