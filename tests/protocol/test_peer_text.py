"""peer_text and RateLimitedLog: a peer can neither forge a log line nor flood the log."""

from __future__ import annotations

import logging
import time

import pytest

from splitwire.protocol.peer_text import DEFAULT_LIMIT, MIN_LIMIT, RateLimitedLog, peer_text


@pytest.mark.parametrize(
    "value",
    [
        "edge\n2026-01-01 00:00:00 INFO forged line",
        "\x1b[31mred\x1b[0m\x1b[2J",
        "\r\t\x00\x7f\x85\u2028\u2029\u202e",
        b"\n\x1b[0m\xff",
        "A" * (3 << 20),
        b"B" * (3 << 20),
        "\x1b" * 500,
    ],
)
def test_no_control_character_and_bounded(value: str | bytes) -> None:
    text = peer_text(value)
    assert len(text) <= DEFAULT_LIMIT
    assert text.isprintable(), text


def test_short_values_read_like_repr() -> None:
    assert peer_text("edge-7") == repr("edge-7")
    assert peer_text("café") == repr("café")
    assert peer_text("a\nb") == repr("a\nb")
    assert peer_text(b"\x00ab") == repr(b"\x00ab")
    assert peer_text("it's") == "'it\\'s'"


def test_a_truncated_value_gives_its_length() -> None:
    text = peer_text("x" * 1000)
    assert text.startswith("'xxxx") and text.endswith("'...(1000 chars)")
    assert len(text) == DEFAULT_LIMIT
    assert peer_text(b"y" * 70).endswith("'...(70 bytes)")
    # An escape is never cut in half.
    assert peer_text("\x1b" * 100).removesuffix("'...(100 chars)").endswith("\\x1b")


def test_limit() -> None:
    assert len(peer_text("z" * 500, limit=MIN_LIMIT)) == MIN_LIMIT
    with pytest.raises(ValueError, match="at least"):
        peer_text("z", limit=MIN_LIMIT - 1)


def test_rate_limited_log_counts_what_it_holds_back(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("splitwire.test.peer")
    caplog.set_level(logging.INFO, logger="splitwire.test.peer")
    log = RateLimitedLog(logger, burst=3, interval_s=0.3)
    for i in range(10):
        log.log("hello", logging.INFO, "rejected hello %d", i)
    log.log("violation", logging.WARNING, "a violation")  # another kind: its own count
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected hello 0",
        "rejected hello 1",
        "rejected hello 2",
        "more than 3 hello lines in 0.3 s; until the 0.3 s are over, they are counted, not logged",
        "a violation",
    ]
    # The line logged in the source file that called it, not in peer_text.py.
    assert {r.filename for r in caplog.records} == {"test_peer_text.py"}
    caplog.clear()
    time.sleep(0.35)
    log.log("hello", logging.INFO, "rejected hello %d", 10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1] == "rejected hello 10"
    assert lines[0].startswith("7 hello lines of the 0.3 s from ")
    assert lines[0].endswith(" were not logged")
