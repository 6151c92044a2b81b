"""The one ``HOST:PORT`` parser both runtimes use: what it accepts, and what it refuses with a
message that says what was expected."""

from __future__ import annotations

import pytest

from splitwire.cloud.config import split_address as cloud_address
from splitwire.cloud.errors import ConfigError
from splitwire.edge.config import EdgeConfigError
from splitwire.edge.config import split_address as edge_address
from splitwire.protocol.address import split_address
from splitwire.protocol.errors import AddressError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8500", ("127.0.0.1", 8500)),
        ("tail.example:1", ("tail.example", 1)),
        ("tail-2_b.example:65535", ("tail-2_b.example", 65535)),
        ("[::1]:8500", ("::1", 8500)),
    ],
)
def test_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text, flag="--cloud") == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://127.0.0.1:18599", "without a scheme"),
        ("localhost", "the port is missing"),
        ("localhost:", "the port is missing"),
        ("127.0.0.1:0", "'0' is not a port (1-65535)"),
        ("127.0.0.1:99999", "'99999' is not a port (1-65535)"),
        ("127.0.0.1:85a", "'85a' is not a port"),
        ("tail example:8500", "'tail example' is not a host name"),
        (":8500", "'' is not a host name"),
    ],
)
def test_refusals_say_what_was_expected(text: str, why: str) -> None:
    with pytest.raises(AddressError) as caught:
        split_address(text, flag="--cloud")
    message = str(caught.value)
    assert message.startswith(f"--cloud {text!r}: expected HOST:PORT"), message
    assert why in message, message


def test_a_listening_address_may_ask_for_any_free_port() -> None:
    assert split_address("0.0.0.0:0", flag="--listen", listening=True) == ("0.0.0.0", 0)
    with pytest.raises(AddressError, match="not a port"):
        split_address("0.0.0.0:65536", flag="--listen", listening=True)


def test_each_runtime_turns_a_refusal_into_its_usage_error() -> None:
    with pytest.raises(EdgeConfigError, match="without a scheme"):
        edge_address("https://tail.example:8500", flag="--cloud")
    with pytest.raises(ConfigError, match="the port is missing"):
        cloud_address("localhost", flag="--listen")
    assert cloud_address("127.0.0.1:0", flag="--listen") == ("127.0.0.1", 0)
