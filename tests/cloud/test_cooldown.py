"""The cooldown table: bounded, expiring, and keyed without the token itself."""

from __future__ import annotations

from splitwire.cloud.cooldown import ViolationCooldown, peer_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_punished_peer_waits_until_its_cooldown_passes() -> None:
    clock = Clock()
    cooldown = ViolationCooldown(10.0, clock=clock)
    cooldown.punish("a")
    clock.now += 4.0
    assert cooldown.remaining_s("a") == 6.0
    assert cooldown.remaining_s("b") == 0.0
    clock.now += 6.0
    assert cooldown.remaining_s("a") == 0.0
    assert len(cooldown) == 0  # forgotten once passed


def test_the_table_is_bounded_and_forgets_the_oldest_first() -> None:
    cooldown = ViolationCooldown(10.0, max_peers=3, clock=Clock())
    for key in "abcd":
        cooldown.punish(key)
    assert len(cooldown) == 3
    assert cooldown.remaining_s("a") == 0.0
    assert cooldown.remaining_s("d") == 10.0


def test_zero_turns_it_off() -> None:
    cooldown = ViolationCooldown(0.0, clock=Clock())
    cooldown.punish("a")
    assert cooldown.remaining_s("a") == 0.0


def test_the_key_is_host_and_token_digest_never_the_token() -> None:
    with_token = peer_key("ipv4:127.0.0.7:51234", (("authorization", "Bearer s3cret"),))
    assert with_token.startswith("127.0.0.7 ")
    assert "s3cret" not in with_token
    # Another port of the same host and token is the same peer; another token is not.
    assert peer_key("ipv4:127.0.0.7:40000", [("authorization", "Bearer s3cret")]) == with_token
    assert peer_key("ipv4:127.0.0.7:40000", (("authorization", "Bearer other"),)) != with_token
    assert peer_key("ipv6:[::1]:5000", ()) == "[::1] -"
