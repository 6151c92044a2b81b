"""The profile file: what a device profile holds, and how it is saved, loaded and checked.

A profile is YAML (``yaml.safe_dump``/``safe_load``) with a schema version; loading validates
every field and names the key and value at fault. :mod:`splitwire.partitioner.profiling` measures
one.

Schemas read: 2 and 3 (written: 3). Schema 3 adds what a frame costs beyond its nodes and codecs
(:class:`FrameCosts`: the camera preprocessing, the transport's per-message round trip, the
agent's thread hand-offs). A schema 2 profile is read with each of them 0, i.e. priced exactly as
schema 2 priced it (which under-predicts by those terms: re-run ``splitwire profile``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from splitwire.partitioner.device import DeviceInfo
from splitwire.partitioner.errors import ProfileError
from splitwire.protocol import CodecSpec

logger = logging.getLogger(__name__)

# Schema 2: a codec's time is a per-call cost plus a per-byte cost (schema 1 held one MB/s).
# Schema 3: the per-frame costs of FrameCosts (optional keys; a schema 2 file reads them as 0).
SCHEMA = 3
READABLE_SCHEMAS = (2, 3)


@dataclass(frozen=True)
class NodeTiming:
    """One compute node's latency at the profile's input shape.

    Attributes:
        name: the node's name in the captured graph (``conv2d_3``).
        op: what it calls (``aten.conv2d.default``).
        ms: calibrated median latency in milliseconds.
        out_bytes: size of its output(s) in bytes.
        iqr_ms: interquartile range of the samples, calibrated like ``ms`` (noise indicator).
    """

    name: str
    op: str
    ms: float
    out_bytes: int
    iqr_ms: float = 0.0

    def __post_init__(self) -> None:
        where = f"node {self.name!r}"
        _require(isinstance(self.name, str) and bool(self.name), where, "name", self.name)
        _require(isinstance(self.op, str), where, "op", self.op)
        _require(_is_nonneg(self.ms), where, "ms", self.ms, "a finite number >= 0")
        _require(_is_count(self.out_bytes), where, "out_bytes", self.out_bytes, "an int >= 0")
        _require(_is_nonneg(self.iqr_ms), where, "iqr_ms", self.iqr_ms, "a finite number >= 0")


@dataclass(frozen=True)
class CodecTiming:
    """This device's time for one codec, on one thread: a fixed cost per call (one tensor) plus
    a cost per byte, fitted to timings on tensors of several sizes.

    A frame that sends ``n`` tensors of ``B`` float32-equivalent bytes in all takes
    ``n * call_ms + B / (mb_s * 1e3)`` ms. Worked example, ``int8+zstd1`` encoding at 0.15 ms
    per call and 400 MB/s: a 512×7×7 activation (100 kB) takes 0.15 + 0.25 = 0.40 ms (the call
    is 38 % of it), a 64×112×112 one (3.2 MB) 0.15 + 8.03 = 8.18 ms (2 %).

    Attributes:
        spec: the codec, canonical text (``int8+zstd1``).
        encode_call_ms / decode_call_ms: ms per call, whatever the size.
        encode_mb_s / decode_mb_s: MB/s (10**6 bytes) of float32-equivalent activations beyond
            the call's fixed cost.
    """

    spec: str
    encode_mb_s: float
    decode_mb_s: float
    encode_call_ms: float = 0.0
    decode_call_ms: float = 0.0

    def __post_init__(self) -> None:
        where = f"codec {self.spec!r}"
        _require(isinstance(self.spec, str), where, "spec", self.spec)
        for key in ("encode_mb_s", "decode_mb_s"):
            value = getattr(self, key)
            _require(_is_nonneg(value) and value > 0, where, key, value, "a finite number > 0")
        for key in ("encode_call_ms", "decode_call_ms"):
            value = getattr(self, key)
            _require(_is_nonneg(value), where, key, value, "a finite number >= 0")

    def encode_ms(self, fp32_bytes: float, *, calls: int = 1) -> float:
        """Time to encode ``calls`` tensors of ``fp32_bytes`` float32-equivalent bytes in all."""
        return calls * self.encode_call_ms + fp32_bytes / (self.encode_mb_s * 1e3)

    def decode_ms(self, fp32_bytes: float, *, calls: int = 1) -> float:
        """Time to decode ``calls`` tensors of ``fp32_bytes`` float32-equivalent bytes in all."""
        return calls * self.decode_call_ms + fp32_bytes / (self.decode_mb_s * 1e3)


@dataclass(frozen=True)
class FrameCosts:
    """What one frame costs on this device beyond its nodes and codecs (schema 3; each 0 in a
    schema 2 profile, which priced none of them).

    Attributes:
        preprocess_ms: the camera frame (uint8) to the model's float input, at the profile's
            input shape: the edge does it before every head (splits and all-on-edge).
        message_call_ms / message_ms_per_mb: one frame's round trip through the transport on
            loopback, client and server in one process (grpc.aio, the protocol's protobuf
            messages cut into its chunks, a small result back, both ends' event loops): a
            fixed cost per frame plus a cost per 10**6 bytes sent. The edge runs the client's
            half of it and the cloud the server's: a plan charges the mean of both profiles'.
        handoff_ms: the agent's hand-offs per frame: its event loop passing the frame to the
            compute thread and taking the result back (a ``run_in_executor`` round trip).

    Worked example: preprocess 0.3 ms, message 1.2 ms + 2.5 ms/MB, hand-off 0.15 ms: a split
    sending 40 kB costs 0.3 + 0.15 = 0.45 ms more on the edge and 1.2 + 0.1 = 1.3 ms more on
    the round trip than its nodes and codec.
    """

    preprocess_ms: float = 0.0
    message_call_ms: float = 0.0
    message_ms_per_mb: float = 0.0
    handoff_ms: float = 0.0

    def __post_init__(self) -> None:
        for key in ("preprocess_ms", "message_call_ms", "message_ms_per_mb", "handoff_ms"):
            value = getattr(self, key)
            _require(_is_nonneg(value), "profile: frame", key, value, "a finite number >= 0")

    def message_ms(self, nbytes: float) -> float:
        """The transport's round trip for a frame of ``nbytes`` bytes (its fixed part, then
        per byte)."""
        return self.message_call_ms + nbytes / 1e6 * self.message_ms_per_mb


@dataclass(frozen=True)
class Profile:
    """Per-node latencies of one model at one input shape on one device.

    Attributes:
        schema: file format version (:data:`SCHEMA`).
        model_spec / model_hash: the model measured; the planner refuses profiles of another.
        input_shape: the input shape measured, batch included.
        device: the machine, and whether the numbers are emulated.
        nodes: one timing per compute node, in graph order.
        codecs: codec speeds on this machine.
        call_overhead_ms: fixed cost of one call of an exported module.
        total_ms: median latency of the whole graph; ``sum(ms) + call_overhead_ms`` equals it.
        interpreted_ms: sum of the raw (uncalibrated) node medians.
        frame: per-frame costs beyond nodes and codecs (:class:`FrameCosts`; all 0 when read
            from a schema 2 profile).
    """

    schema: int
    model_spec: str
    model_hash: str
    input_shape: tuple[int, ...]
    device: DeviceInfo
    nodes: tuple[NodeTiming, ...]
    codecs: tuple[CodecTiming, ...]
    call_overhead_ms: float
    total_ms: float
    interpreted_ms: float = 0.0
    frame: FrameCosts = field(default_factory=FrameCosts)

    def __post_init__(self) -> None:
        where = "profile"
        if self.schema not in READABLE_SCHEMAS or isinstance(self.schema, bool):
            raise ProfileError(
                f"profile: schema = {self.schema!r}; this splitwire reads schemas "
                f"{_schemas_text()}; re-run `splitwire profile` to write a current profile"
            )
        _require(isinstance(self.frame, FrameCosts), where, "frame", self.frame, "FrameCosts")
        for key in ("model_spec", "model_hash"):
            value = getattr(self, key)
            _require(isinstance(value, str) and bool(value), where, key, value, "a string")
        _require(
            isinstance(self.input_shape, tuple)
            and len(self.input_shape) > 0
            and all(_is_count(d) and d > 0 for d in self.input_shape),
            where,
            "input_shape",
            self.input_shape,
            "a tuple of positive ints",
        )
        _require(isinstance(self.device, DeviceInfo), where, "device", self.device)
        _require(
            isinstance(self.nodes, tuple) and all(isinstance(n, NodeTiming) for n in self.nodes),
            where,
            "nodes",
            self.nodes,
            "a tuple of NodeTiming",
        )
        _require(
            isinstance(self.codecs, tuple) and all(isinstance(c, CodecTiming) for c in self.codecs),
            where,
            "codecs",
            self.codecs,
            "a tuple of CodecTiming",
        )
        for key in ("call_overhead_ms", "total_ms", "interpreted_ms"):
            value = getattr(self, key)
            _require(_is_nonneg(value), where, key, value, "a finite number >= 0")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ProfileError(f"profile: nodes: duplicate node names {dup}")
        specs = [c.spec for c in self.codecs]
        if len(set(specs)) != len(specs):
            raise ProfileError(f"profile: codecs: duplicate codec specs in {specs}")

    @cached_property
    def _by_name(self) -> dict[str, NodeTiming]:
        return {n.name: n for n in self.nodes}

    def node_ms(self, name: str) -> float:
        """The calibrated median latency of one node.

        Args:
            name: a compute node's name in the captured graph.

        Returns:
            Its latency in milliseconds.

        Raises:
            ProfileError: the profile has no node of that name (another model or graph).
        """
        timing = self._by_name.get(name)
        if timing is None:
            raise ProfileError(
                f"profile of {self.model_spec} has no node {name!r}; it was taken for another "
                "graph; re-run `splitwire profile`"
            )
        return timing.ms

    def codec(self, spec: str | CodecSpec) -> CodecTiming:
        """This device's speed for one codec.

        Args:
            spec: the codec, in any spelling :meth:`CodecSpec.parse` accepts.

        Returns:
            Its timing.

        Raises:
            ProfileError: the codec was not profiled.
            CodecSpecError: ``spec`` does not parse.
        """
        key = str(CodecSpec.parse(spec))
        for timing in self.codecs:
            if timing.spec == key:
                return timing
        profiled = ", ".join(c.spec for c in self.codecs) or "none"
        raise ProfileError(
            f"profile has no timing for codec {key!r} (profiled: {profiled}); "
            f"re-run `splitwire profile` with that codec"
        )

    def scaled(self, k: float) -> Profile:
        """Emulate a device ``k`` times slower (``k < 1``: faster). **An emulation, not a
        measurement**: every node, the call overhead and the preprocessing take ``k``× as long,
        codecs run ``k``× slower (per call and per byte), ``device.slowdown`` is multiplied by
        ``k`` and ``device.emulated`` set; the transport's and the hand-offs' costs stay as
        measured. Real devices do not slow down uniformly (memory-bound layers
        scale differently from compute-bound ones); profile the real device when you can.

        Args:
            k: the slowdown factor, e.g. 4 for a device four times slower.

        Returns:
            A new, emulated profile; this one is unchanged.

        Raises:
            ProfileError: ``k`` is not a finite number > 0.
        """
        if not _is_nonneg(k) or k <= 0:
            raise ProfileError(f"slowdown {k!r}: expected a finite number > 0 (e.g. 4)")
        nodes = tuple(replace(n, ms=n.ms * k, iqr_ms=n.iqr_ms * k) for n in self.nodes)
        codecs = tuple(
            replace(
                c,
                encode_mb_s=c.encode_mb_s / k,
                decode_mb_s=c.decode_mb_s / k,
                encode_call_ms=c.encode_call_ms * k,
                decode_call_ms=c.decode_call_ms * k,
            )
            for c in self.codecs
        )
        device = replace(self.device, slowdown=self.device.slowdown * k, emulated=True)
        # The preprocessing is compute like the nodes'; the transport's and the hand-offs' costs
        # are the network stack's and the scheduler's, which an emulated slowdown (the agent's
        # --edge-slowdown sleeps after head and encode only) does not slow: kept as measured.
        frame = replace(self.frame, preprocess_ms=self.frame.preprocess_ms * k)
        return replace(
            self,
            device=device,
            frame=frame,
            nodes=nodes,
            codecs=codecs,
            call_overhead_ms=self.call_overhead_ms * k,
            total_ms=self.total_ms * k,
            interpreted_ms=self.interpreted_ms * k,
        )

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain YAML/JSON-able data (the file format of its schema)."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        if self.schema < SCHEMA:  # read from an older file: written back as it was
            del data["frame"]
        return data

    def save(self, path: str | Path) -> Path:
        """Write the profile as YAML to ``path`` (parent directories created).

        Returns:
            The path written.

        Raises:
            ProfileError: the file cannot be written (the OS error says why).
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"cannot write profile {path}: {exc.strerror or exc}") from exc
        return path

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile written by :meth:`save`, validating every field.

        Raises:
            ProfileError: the file is missing, not YAML, of another schema, or a key is missing,
                unknown or of the wrong type (the message names the key and the value).
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile {path} is not valid YAML: {exc}") from exc
        try:
            return _profile_from_dict(data)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from exc


def check_profile_matches(
    profile: Profile,
    *,
    model_hash: str,
    input_shape: Sequence[int],
    node_names: Sequence[str],
) -> None:
    """Refuse a profile taken for another model, input shape or graph.

    Args:
        profile: the profile to use.
        model_hash: :func:`splitwire.partitioner.models.model_hash` of the captured graph being
            planned.
        input_shape: the input shape being planned.
        node_names: the compute nodes of its captured graph, in order.

    Raises:
        ProfileError: the hash, the shape or the node names differ; the message says how.
    """
    rerun = "re-run `splitwire profile` for this model and shape"
    # The shape first: the hash covers the graph captured for a shape, so it differs too.
    shape = tuple(int(d) for d in input_shape)
    if profile.input_shape != shape:
        raise ProfileError(
            f"profile was taken at input shape {_shape_text(profile.input_shape)} but the plan "
            f"is for {_shape_text(shape)}; {rerun}"
        )
    if profile.model_hash != model_hash:
        raise ProfileError(
            f"profile was taken for model {profile.model_hash[:12]} ({profile.model_spec}) but "
            f"the model is {model_hash[:12]}; {rerun}"
        )
    profiled = [n.name for n in profile.nodes]
    if profiled != list(node_names):
        missing = [n for n in node_names if n not in profile._by_name]
        extra = sorted(set(profiled) - set(node_names))
        detail = (
            f"missing {_few(missing)}, unexpected {_few(extra)}"
            if missing or extra
            else "same nodes in a different order"
        )
        raise ProfileError(
            f"profile of {profile.model_spec} lists {len(profiled)} compute nodes but the graph "
            f"has {len(node_names)} ({detail}); the graph was captured differently; {rerun}"
        )


def _schemas_text() -> str:
    return " and ".join(str(v) for v in READABLE_SCHEMAS)


def _is_nonneg(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _require(ok: bool, where: str, key: str, value: object, expected: str = "") -> None:
    if not ok:
        wanted = f"; expected {expected}" if expected else ""
        raise ProfileError(f"{where}: {key} = {value!r}{wanted}")


def _shape_text(shape: Sequence[int]) -> str:
    return ",".join(str(d) for d in shape)


def _few(names: Sequence[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _Reader:
    """Typed access to one YAML mapping; errors name the key path and the value."""

    def __init__(
        self, data: object, where: str, keys: Sequence[str], optional: Sequence[str] = ()
    ) -> None:
        if not isinstance(data, dict):
            raise ProfileError(f"{where}: expected a mapping, got {data!r}")
        unknown = sorted(set(map(str, data)) - set(keys) - set(optional))
        if unknown:
            known = ", ".join([*keys, *optional])
            raise ProfileError(f"{where}: unknown key {unknown[0]!r}; expected {known}")
        for key in keys:
            if key not in data:
                raise ProfileError(f"{where}: missing key {key!r}")
        self.data: Mapping[str, object] = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], expected: str) -> Any:
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ProfileError(f"{self.where}: {key} = {value!r}; expected {expected}")
        return value

    def text(self, key: str) -> str:
        value: str = self.get(key, str, "a string")
        return value

    def integer(self, key: str) -> int:
        value: int = self.get(key, int, "an integer")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        if default is not None and key not in self.data:
            return default
        return float(self.get(key, (int, float), "a number"))

    def items(self, key: str) -> list[Any]:
        value: list[Any] = self.get(key, list, "a list")
        return value


_NODE_KEYS = ("name", "op", "ms", "out_bytes")
_CODEC_KEYS = ("spec", "encode_call_ms", "encode_mb_s", "decode_call_ms", "decode_mb_s")
_DEVICE_KEYS = ("description", "threads", "torch_version", "slowdown", "emulated")
_FRAME_KEYS = ("preprocess_ms", "message_call_ms", "message_ms_per_mb", "handoff_ms")
_PROFILE_KEYS = (
    "schema",
    "model_spec",
    "model_hash",
    "input_shape",
    "device",
    "nodes",
    "codecs",
    "call_overhead_ms",
    "total_ms",
)


def _profile_from_dict(data: object) -> Profile:
    if isinstance(data, dict) and "schema" in data and data["schema"] not in READABLE_SCHEMAS:
        # Checked first: a future schema's other keys would only produce confusing errors.
        why = (
            " (schema 1 timed each codec as one MB/s figure; schema 2 adds a per-call cost)"
            if data["schema"] == 1
            else ""
        )
        raise ProfileError(
            f"schema = {data['schema']!r}; this splitwire reads schemas {_schemas_text()}{why}; "
            "re-run `splitwire profile`"
        )
    # Schema 2 has no "frame": its per-frame costs are read as 0 (FrameCosts()).
    current = isinstance(data, dict) and data.get("schema") == SCHEMA
    optional = ("interpreted_ms", "frame") if current else ("interpreted_ms",)
    top = _Reader(data, "profile", _PROFILE_KEYS, optional=optional)
    shape = top.items("input_shape")
    if not shape or not all(_is_count(d) and d > 0 for d in shape):
        raise ProfileError(f"profile: input_shape = {shape!r}; expected a list of positive ints")
    dev = _Reader(top.data["device"], "profile: device", _DEVICE_KEYS)
    device = DeviceInfo(
        description=dev.text("description"),
        threads=dev.integer("threads"),
        torch_version=dev.text("torch_version"),
        slowdown=dev.number("slowdown"),
        emulated=dev.get("emulated", bool, "true or false"),
    )
    nodes = []
    for i, raw in enumerate(top.items("nodes")):
        item = _Reader(raw, f"profile: nodes[{i}]", _NODE_KEYS, optional=("iqr_ms",))
        nodes.append(
            NodeTiming(
                name=item.text("name"),
                op=item.text("op"),
                ms=item.number("ms"),
                out_bytes=item.integer("out_bytes"),
                iqr_ms=item.number("iqr_ms", default=0.0),
            )
        )
    codecs = []
    for i, raw in enumerate(top.items("codecs")):
        item = _Reader(raw, f"profile: codecs[{i}]", _CODEC_KEYS)
        codecs.append(
            CodecTiming(
                item.text("spec"),
                encode_mb_s=item.number("encode_mb_s"),
                decode_mb_s=item.number("decode_mb_s"),
                encode_call_ms=item.number("encode_call_ms"),
                decode_call_ms=item.number("decode_call_ms"),
            )
        )
    frame = FrameCosts()
    if "frame" in top.data:
        costs = _Reader(top.data["frame"], "profile: frame", (), optional=_FRAME_KEYS)
        frame = FrameCosts(**{key: costs.number(key, default=0.0) for key in _FRAME_KEYS})
    return Profile(
        schema=top.integer("schema"),
        model_spec=top.text("model_spec"),
        model_hash=top.text("model_hash"),
        input_shape=tuple(shape),
        device=device,
        nodes=tuple(nodes),
        codecs=tuple(codecs),
        call_overhead_ms=top.number("call_overhead_ms"),
        total_ms=top.number("total_ms"),
        interpreted_ms=top.number("interpreted_ms", default=0.0),
        frame=frame,
    )
