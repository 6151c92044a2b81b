"""Decoding a ``plan/desired`` message: untrusted bytes from the broker to a small, checked dict.

Whoever can publish on an edge's ``plan/desired`` topic (the fleet manager, anyone holding its
credentials, a broker with a loose ACL) sends bytes that the edge must survive, and the message
is usually retained, so whatever it does happens again after every restart. :func:`decode_desired`
looks at the bytes in an order where each step bounds the cost of the next:

1. size: at most ``max_bytes``, checked before anything is decoded;
2. UTF-8, strictly (a replacement character must not slip into a cut id);
3. nesting depth: one linear pass over the text before ``json.loads``, which recurses once per
   level (``"[" * 100000`` raised ``RecursionError`` there and killed the control task);
4. strict JSON: no ``NaN``/``Infinity``, no key given twice;
5. shape: an object whose keys are among :data:`DESIRED_KEYS` and whose values are printable
   strings of at most :data:`MAX_VALUE_CHARS` characters.

For example ``b'{"cut": "c0017", "codec": "int8+zstd1"}'`` decodes to that dict, while
``b'{"cut": ["c0017"]}'`` raises ``DesiredPlanError("cut: expected a string, got an array")``.

Whether the cut and codec are a pair the plan ships is the agent's question
(``EdgeAgent.apply_desired``); this module only guarantees that what reaches the agent, its log
and ``plan/reported`` is small, flat and printable. Reasons never quote the payload: a key or
value that is refused appears only through :func:`~splitwire.protocol.peer_text.peer_text`.
"""

from __future__ import annotations

import json
from typing import Any

from splitwire.errors import SplitwireError
from splitwire.protocol.peer_text import peer_text

__all__ = ["DESIRED_KEYS", "MAX_DEPTH", "MAX_VALUE_CHARS", "DesiredPlanError", "decode_desired"]

# The keys of a desired plan: {"cut", "codec"} with an optional "policy", or {"policy"} alone.
DESIRED_KEYS = ("cut", "codec", "policy")
# A valid message nests one level (a flat object). The limit sits far above that, so that
# `{"cut": {"a": 1}}` gets the precise "expected a string" answer, and far below Python's
# recursion limit (1000), where json.loads would fail.
MAX_DEPTH = 16
# Cut ids ("c0017") and codec specs ("int8+zstd1", "jpegQs444") are a few to a few tens of
# characters; 128 leaves room for any future spec and keeps every log line short.
MAX_VALUE_CHARS = 128

_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class DesiredPlanError(SplitwireError):
    """A ``plan/desired`` payload that is not a desired plan; the message says why, briefly."""


def decode_desired(payload: bytes, *, max_bytes: int) -> dict[str, str]:
    """The desired plan in ``payload``, checked for size, depth, strict JSON and shape.

    Args:
        payload: the message's bytes, as the broker delivered them.
        max_bytes: the largest payload accepted (``MqttConfig.max_desired_bytes``).

    Returns:
        A dict whose keys are among :data:`DESIRED_KEYS` and whose values are printable strings
        of at most :data:`MAX_VALUE_CHARS` characters (possibly empty: the agent says what is
        missing).

    Raises:
        DesiredPlanError: the first check that failed, with what was expected.
    """
    if len(payload) > max_bytes:
        raise DesiredPlanError(
            f"{len(payload)} bytes; at most {max_bytes} accepted (a desired plan is a few "
            "short strings)"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DesiredPlanError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if _nests_deeper(text, MAX_DEPTH):
        raise DesiredPlanError(f"nested deeper than {MAX_DEPTH} levels; expected a flat object")
    try:
        desired = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique)
    except json.JSONDecodeError as exc:
        raise DesiredPlanError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # _refuse_constant, _unique, or an integer too long to convert
        raise DesiredPlanError(str(exc)) from None
    if not isinstance(desired, dict):
        raise DesiredPlanError(f"expected a JSON object, got {_json_type(desired)}")
    for key, value in desired.items():
        if key not in DESIRED_KEYS:
            raise DesiredPlanError(
                f"unknown key {peer_text(key, 40)}; expected keys among {', '.join(DESIRED_KEYS)}"
            )
        if not isinstance(value, str):
            raise DesiredPlanError(f"{key}: expected a string, got {_json_type(value)}")
        if len(value) > MAX_VALUE_CHARS:
            raise DesiredPlanError(
                f"{key}: {len(value)} characters; at most {MAX_VALUE_CHARS} accepted"
            )
        if not value.isprintable():
            raise DesiredPlanError(
                f"{key}: {peer_text(value, 40)} holds non-printable characters; expected a cut "
                "id, codec spec or policy name"
            )
    return desired


def _nests_deeper(text: str, limit: int) -> bool:
    """Whether JSON ``text`` opens more than ``limit`` arrays/objects inside each other.

    Counts brackets outside strings (a backslash escapes the next character inside one), the
    way the parser will meet them; malformed text is left for ``json.loads`` to name.
    """
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    # Only NaN, Infinity and -Infinity reach here: names json knows, never peer text.
    raise ValueError(f"{name} is not strict JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key: which one would the sender expect to win? Neither is applied.
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key {peer_text(key, 40)} given twice")
        seen.add(key)
    return dict(pairs)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)
