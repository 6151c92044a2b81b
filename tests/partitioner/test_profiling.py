"""Device profiles (splitwire.partitioner.profiling) and the ``splitwire profile`` command.

Run: .venv/bin/python -m pytest tests/partitioner/test_profiling.py -q   (add -m "not slow" to skip
ResNet-18 and the command-line runs)

Timings on shared CI machines are noisy, so these tests check structure, exact arithmetic
(calibration, scaling, round trips) and loose bounds only, never a speed.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from splitwire.partitioner.capture import CapturedGraph, capture
from splitwire.partitioner.cli import parse_shape
from splitwire.partitioner.cuts import compute_nodes
from splitwire.partitioner.device import DeviceInfo
from splitwire.partitioner.errors import InputShapeError, ProfileError
from splitwire.partitioner.models import load_model, model_hash
from splitwire.partitioner.profile_format import (
    SCHEMA,
    CodecTiming,
    NodeTiming,
    Profile,
    check_profile_matches,
)
from splitwire.partitioner.profiling import profile_graph

CODECS = ("fp16", "int8+zstd1")


class TinyResidual(nn.Module):
    """conv → relu → (+ skip) → pool → linear: a DAG small enough to profile in a blink."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.skip = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)) + self.skip(x)
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny_graph() -> CapturedGraph:
    torch.manual_seed(0)
    return capture(TinyResidual().eval(), (1, 3, 16, 16))


@pytest.fixture(scope="module")
def tiny(tiny_graph: CapturedGraph) -> Profile:
    return profile_graph(
        tiny_graph,
        model_spec="tiny",
        model_hash="ab" * 32,
        threads=1,
        warmup=1,
        repeats=5,
        codecs=CODECS,
    )


@pytest.fixture(scope="module")
def resnet18() -> tuple[CapturedGraph, Profile]:
    loaded = load_model("zoo:resnet18")
    graph = capture(loaded.module, (1, 3, 32, 32))
    profile = profile_graph(
        graph,
        model_spec="zoo:resnet18",
        model_hash=model_hash(graph),
        threads=1,
        warmup=2,
        repeats=7,
        codecs=CODECS,
    )
    return graph, profile


# --- measuring ---------------------------------------------------------------------------


def test_one_positive_timing_per_compute_node(tiny_graph: CapturedGraph, tiny: Profile) -> None:
    assert [n.name for n in tiny.nodes] == compute_nodes(tiny_graph)
    assert all(n.ms > 0 and n.iqr_ms >= 0 and n.out_bytes > 0 for n in tiny.nodes)
    assert tiny.nodes[-1].out_bytes == 4 * 4  # fc: (1, 4) float32
    assert tiny.total_ms > 0 and tiny.call_overhead_ms > 0 and tiny.interpreted_ms > 0
    assert tiny.input_shape == (1, 3, 16, 16)
    assert tiny.device.threads == 1 and not tiny.device.emulated
    assert tiny.device.torch_version == torch.__version__


def test_calibration_makes_nodes_plus_overhead_the_total(tiny: Profile) -> None:
    node_sum = sum(n.ms for n in tiny.nodes)
    assert math.isclose(node_sum + tiny.call_overhead_ms, tiny.total_ms, rel_tol=1e-9)


def test_codecs_timed_on_activations(tiny: Profile) -> None:
    assert [c.spec for c in tiny.codecs] == list(CODECS)
    assert all(c.encode_mb_s > 0 and c.decode_mb_s > 0 for c in tiny.codecs)
    assert all(c.encode_call_ms >= 0 and c.decode_call_ms >= 0 for c in tiny.codecs)
    # Quantising and zstd have a fixed cost per call: tiny tensors cannot hide it.
    int8 = tiny.codec("int8+zstd1")
    assert int8.encode_call_ms > 0 and int8.decode_call_ms > 0
    assert tiny.codec("INT8+zstd1").spec == "int8+zstd1"  # any spelling CodecSpec accepts
    with pytest.raises(ProfileError, match="no timing for codec 'int4'"):
        tiny.codec("int4")


def test_thread_count_is_restored(tiny_graph: CapturedGraph) -> None:
    before = torch.get_num_threads()
    profile = profile_graph(
        tiny_graph,
        model_spec="tiny",
        model_hash="cd" * 32,
        threads=2,
        warmup=0,
        repeats=1,
        codecs=(),
    )
    assert torch.get_num_threads() == before
    assert profile.device.threads == 2 and profile.codecs == ()


@pytest.mark.parametrize("bad", [{"threads": 0}, {"repeats": 0}, {"warmup": -1}])
def test_bad_measurement_settings_are_refused(
    tiny_graph: CapturedGraph, bad: dict[str, int]
) -> None:
    settings: dict[str, Any] = {"threads": 1, "warmup": 0, "repeats": 1, "codecs": ()} | bad
    with pytest.raises(ProfileError, match="expected threads >= 1"):
        profile_graph(tiny_graph, model_spec="tiny", model_hash="ab", **settings)


@pytest.mark.slow
def test_resnet18_nodes_agree_with_the_whole_graph(
    resnet18: tuple[CapturedGraph, Profile],
) -> None:
    graph, profile = resnet18
    assert [n.name for n in profile.nodes] == compute_nodes(graph)
    assert all(n.ms > 0 for n in profile.nodes)
    # The raw interpreted sum is a real measurement: loosely, it must agree with the real graph.
    assert 0.7 * profile.total_ms < profile.interpreted_ms < 1.3 * profile.total_ms
    assert math.isclose(
        sum(n.ms for n in profile.nodes) + profile.call_overhead_ms, profile.total_ms, rel_tol=1e-9
    )
    assert profile.nodes[-1].out_bytes == 1000 * 4  # logits (1, 1000) float32


# --- the profile as data -----------------------------------------------------------------


def test_save_load_round_trip(tiny: Profile, tmp_path: Path) -> None:
    path = tiny.save(tmp_path / "sub" / "edge.yaml")
    assert Profile.load(path) == tiny
    emulated = tiny.scaled(3)
    assert Profile.load(emulated.save(tmp_path / "slow.yaml")) == emulated


def test_scaled_emulates_a_slower_device(tiny: Profile) -> None:
    slow = tiny.scaled(4)
    assert slow.device.emulated and slow.device.slowdown == 4
    for fast_node, slow_node in zip(tiny.nodes, slow.nodes, strict=True):
        assert slow_node.ms == pytest.approx(4 * fast_node.ms)
        assert slow_node.out_bytes == fast_node.out_bytes
    for fast_codec, slow_codec in zip(tiny.codecs, slow.codecs, strict=True):
        assert slow_codec.encode_mb_s == pytest.approx(fast_codec.encode_mb_s / 4)
        assert slow_codec.decode_mb_s == pytest.approx(fast_codec.decode_mb_s / 4)
        assert slow_codec.encode_call_ms == pytest.approx(4 * fast_codec.encode_call_ms)
        assert slow_codec.decode_call_ms == pytest.approx(4 * fast_codec.decode_call_ms)
    assert slow.call_overhead_ms == pytest.approx(4 * tiny.call_overhead_ms)
    assert slow.total_ms == pytest.approx(4 * tiny.total_ms)
    assert slow.scaled(0.5).device.slowdown == 2
    assert not tiny.device.emulated  # the original is untouched


@pytest.mark.parametrize("k", [0, -2, math.inf, math.nan])
def test_scaled_refuses_nonsense(tiny: Profile, k: float) -> None:
    with pytest.raises(ProfileError, match="slowdown"):
        tiny.scaled(k)


def test_node_ms(tiny: Profile) -> None:
    first = tiny.nodes[0]
    assert tiny.node_ms(first.name) == first.ms
    with pytest.raises(ProfileError, match="no node 'nope'"):
        tiny.node_ms("nope")


def _set(path: str, value: object) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value

    return mutate


def _drop(path: str) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("schema", 1), "schema = 1; this splitwire reads schemas 2 and 3 \\(schema 1 timed"),
        (_set("schema", 4), "schema = 4"),
        (_set("frame.handoff_ms", -0.5), "frame: handoff_ms = -0.5"),
        (_set("frame.message_ms_per_mb", "slow"), "frame: message_ms_per_mb = 'slow'"),
        (_set("frame.colour", 1.0), "frame: unknown key 'colour'"),
        (_drop("codecs.0.encode_call_ms"), "codecs\\[0\\]: missing key 'encode_call_ms'"),
        (_set("codecs.0.decode_call_ms", -0.1), "decode_call_ms = -0.1"),
        (_drop("total_ms"), "missing key 'total_ms'"),
        (_drop("device.threads"), "device: missing key 'threads'"),
        (_set("nodes.0.ms", "fast"), "nodes\\[0\\]: ms = 'fast'"),
        (_set("nodes.0.ms", -1.0), "ms = -1.0"),
        (_set("nodes.0.out_bytes", 1.5), "out_bytes = 1.5"),
        (_set("codecs.0.encode_mb_s", 0), "encode_mb_s = 0"),
        (_set("device.emulated", "yes"), "emulated = 'yes'"),
        (_set("device.threads", True), "threads = True"),
        (_set("input_shape", [1, 0, 4]), "input_shape = \\[1, 0, 4\\]"),
        (_set("model_hash", 42), "model_hash = 42"),
        (_set("nodes", "all of them"), "nodes = 'all of them'"),
        (_set("colour", "blue"), "unknown key 'colour'"),
    ],
)
def test_load_names_the_bad_key(tiny: Profile, tmp_path: Path, mutate: Any, message: str) -> None:
    data = tiny.to_dict()
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=message):
        Profile.load(path)


def test_load_refuses_non_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        Profile.load(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("nodes: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        Profile.load(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ProfileError, match="expected a mapping"):
        Profile.load(tmp_path / "list.yaml")


def test_construction_validates() -> None:
    device = DeviceInfo("cpu", 1, "2.13.0")
    with pytest.raises(ProfileError, match="duplicate node names"):
        Profile(
            SCHEMA, "m", "h", (1, 3), device, (NodeTiming("a", "op", 1.0, 4),) * 2, (), 0.1, 2.1
        )
    with pytest.raises(ProfileError, match="slowdown"):
        DeviceInfo("cpu", 1, "2.13.0", slowdown=2.0)  # a slowdown is only ever emulated
    with pytest.raises(ProfileError, match="encode_mb_s"):
        CodecTiming("fp16", -1.0, 1.0)


def test_check_profile_matches(tiny_graph: CapturedGraph, tiny: Profile) -> None:
    names = compute_nodes(tiny_graph)
    check_profile_matches(
        tiny, model_hash=tiny.model_hash, input_shape=(1, 3, 16, 16), node_names=names
    )
    other_hash = "ff" * 32
    with pytest.raises(ProfileError, match=r"taken for model abababababab .* is ffffffffffff"):
        check_profile_matches(
            tiny, model_hash=other_hash, input_shape=(1, 3, 16, 16), node_names=names
        )
    with pytest.raises(ProfileError, match="input shape 1,3,16,16 but the plan is for 1,3,32,32"):
        check_profile_matches(
            tiny, model_hash=tiny.model_hash, input_shape=(1, 3, 32, 32), node_names=names
        )
    with pytest.raises(ProfileError, match=f"missing none, unexpected {names[-1]}"):
        check_profile_matches(
            tiny, model_hash=tiny.model_hash, input_shape=(1, 3, 16, 16), node_names=names[:-1]
        )
    with pytest.raises(ProfileError, match="missing extra_node"):
        check_profile_matches(
            tiny,
            model_hash=tiny.model_hash,
            input_shape=(1, 3, 16, 16),
            node_names=[*names, "extra_node"],
        )
    with pytest.raises(ProfileError, match="re-run `splitwire profile`"):
        check_profile_matches(
            replace(tiny, nodes=tiny.nodes[::-1]),
            model_hash=tiny.model_hash,
            input_shape=(1, 3, 16, 16),
            node_names=names,
        )


# --- the command line --------------------------------------------------------------------


def test_parse_shape() -> None:
    assert parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_shape(" 2, 8 ") == (2, 8)


@pytest.mark.parametrize("text", ["", "1,3,,4", "1,3,x", "1,-3", "0,3", "1.5,3", "1 3 4"])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(InputShapeError, match="expected positive integers"):
        parse_shape(text)


def splitwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitwire", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_writes_a_loadable_profile(tmp_path: Path) -> None:
    out = tmp_path / "edge.yaml"
    args = "--model zoo:resnet18 --input-shape 1,3,32,32 --threads 1 --repeats 3 --warmup 1"
    result = splitwire("profile", *args.split(), "--slowdown", "2", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    profile = Profile.load(out)
    graph = capture(load_model("zoo:resnet18").module, (1, 3, 32, 32))
    assert profile.model_hash == model_hash(graph)  # what the planner computes at this shape
    assert profile.input_shape == (1, 3, 32, 32)
    assert profile.device.emulated and profile.device.slowdown == 2
    assert '"total_ms"' in result.stdout and str(out) in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "zoo:resnet18", "--input-shape", "1,3,x"], "input shape '1,3,x'"),
        (["--model", "zoo:no_such_model"], "unknown zoo model 'no_such_model'"),
        (["--model", "zoo:resnet18", "--slowdown", "0"], "--slowdown 0"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = splitwire("profile", *args, "--out", str(tmp_path / "p.yaml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "p.yaml").exists()
