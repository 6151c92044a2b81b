"""Cut enumeration and head/tail splitting (splitwire.partitioner.cuts and .split).

A registry of models, like PyTorch pipelining's test_pipe.py: for every valid cut of every model,
the tail fed by the head reproduces the whole model bit for bit, at batch 1 and at batch 3.

Run: .venv/bin/python -m pytest tests/partitioner/test_split.py -q   (add -m "not slow" to skip
the torch.export round trips of the three largest graphs)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import fx, nn

from splitwire.partitioner.capture import CapturedGraph, capture, example_input
from splitwire.partitioner.cuts import Cut, compute_nodes, enumerate_cuts
from splitwire.partitioner.errors import CaptureError, SplitError
from splitwire.partitioner.models import load_model
from splitwire.partitioner.split import export_split, split
from splitwire.protocol.header import DTYPES


class Branches(nn.Module):
    """Parallel branches joined by torch.cat, a skip connection, ``chunk`` (a list of tensors),
    a parameter expanded to the batch size, and two outputs, the second made early."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.fuse = nn.Conv2d(16, 8, 1)
        self.token = nn.Parameter(torch.randn(1, 8))
        self.head = nn.Linear(8, 5)
        self.aux = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)  # (N, 8, H, W)
        aux = self.aux(s.mean(dim=(2, 3)))  # (N, 2): an output made on the edge for most cuts
        y = self.fuse(torch.cat([self.left(s), self.right(s)], dim=1)) + s  # the skip
        a, b = y.chunk(2, dim=1)  # two (N, 4, H, W)
        y = torch.cat([a * torch.sigmoid(b), b], dim=1)
        pooled = y.mean(dim=(2, 3)) + self.token.expand(x.shape[0], -1)  # (N, 8)
        return self.head(pooled), aux


class Block(nn.Module):
    """The residual block of the worked example in splitwire.partitioner.cuts' docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)) + x)


def _seeded(cls: type[nn.Module]) -> nn.Module:
    with torch.random.fork_rng():  # seeded weights, global RNG untouched
        torch.manual_seed(0)
        return cls().eval()


def _spec(spec: str) -> Callable[[], nn.Module]:
    return lambda: load_model(spec).module


@dataclass(frozen=True)
class Entry:
    """A registry model: how to build it, its input, and a cut inside a block or branch."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    inside_block: str  # name of a cut inside a residual block (or between branches)
    method: Literal["export", "fx"] = "export"


IMAGE = (1, 3, 32, 32)  # small inputs: every cut runs twice per model
REGISTRY = {
    "resnet18": Entry(_spec("zoo:resnet18?num_classes=10"), IMAGE, "layer1.0.bn1"),
    "resnet50": Entry(_spec("zoo:resnet50?num_classes=10"), (1, 3, 16, 16), "layer1.0.conv2"),
    "mobilenet_v2": Entry(
        _spec("zoo:mobilenet_v2?width_mult=0.35&num_classes=10"), IMAGE, "features.3.conv.1.0"
    ),
    "efficientnet_lite0": Entry(
        _spec("zoo:efficientnet_lite0?image_size=32&num_classes=10"),
        IMAGE,
        "_blocks.2._depthwise_conv",
    ),
    "vit_tiny": Entry(
        _spec("zoo:vit_tiny?image_size=32&depth=2&num_classes=10"), IMAGE, "blocks.0.norm1"
    ),
    "unet_small": Entry(_spec("zoo:unet_small?base_channels=8"), IMAGE, "enc2.1"),
    "hf_resnet": Entry(
        _spec(
            "hf:ResNetForImageClassification?embedding_size=16&hidden_sizes=[16,32,64,128]"
            "&depths=[1,1,1,1]&num_labels=10"
        ),
        IMAGE,
        "model.resnet.encoder.stages.0.layers.0.layer.0.normalization",
    ),
    "hf_mobilenet_v2": Entry(
        _spec(
            "hf:MobileNetV2ForImageClassification?depth_multiplier=0.35&image_size=32"
            "&tf_padding=false&num_labels=10"
        ),
        IMAGE,
        "model.mobilenet_v2.layer.1.expand_1x1.normalization",
    ),
    "hf_vit": Entry(
        _spec(
            "hf:ViTForImageClassification?image_size=32&patch_size=8&hidden_size=32"
            "&num_hidden_layers=2&num_attention_heads=2&intermediate_size=64&num_labels=10"
        ),
        IMAGE,
        "model.vit.layers.0.layernorm_before",
    ),
    "branches": Entry(partial(_seeded, Branches), (1, 3, 8, 8), "left.0"),
    "branches_fx": Entry(partial(_seeded, Branches), (1, 3, 8, 8), "left.0", method="fx"),
}
BATCHES = (1, 3)


@dataclass(frozen=True)
class Case:
    """A registry model captured, with its cuts, inputs and reference outputs per batch size."""

    name: str
    entry: Entry
    graph: CapturedGraph
    cuts: list[Cut]
    inputs: dict[int, torch.Tensor]
    expected: dict[int, tuple[torch.Tensor, ...]]

    def cut_named(self, name: str) -> Cut:
        return next(cut for cut in self.cuts if cut.name == name)


def _flat(output: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (output,) if isinstance(output, torch.Tensor) else tuple(output)


@cache  # one capture per model for the whole module; tests only read a case
def _case(name: str) -> Case:
    entry = REGISTRY[name]
    # transformers is part of the test install (the `hf` extra): a missing one fails here
    # rather than skipping the transformers models.
    with pytest.MonkeyPatch.context() as env:  # building from a config needs no network
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("TRANSFORMERS_OFFLINE", "1")
        model = entry.build()
    if entry.method == "export":
        graph = capture(model, entry.input_shape)
        assert graph.method == "export"
    else:
        example = (example_input(entry.input_shape, batch=2),)
        graph = CapturedGraph(fx.symbolic_trace(model), "fx", entry.input_shape, example)
    inputs = {b: example_input(entry.input_shape, batch=b, seed=b) for b in BATCHES}
    with torch.no_grad():
        expected = {b: _flat(model(x)) for b, x in inputs.items()}
    return Case(name, entry, graph, enumerate_cuts(graph), inputs, expected)


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def case(request: pytest.FixtureRequest) -> Case:
    """Every registry model (parametrise indirectly with a name to pick one)."""
    return _case(request.param)


# --- every cut of every model -------------------------------------------------------------------


def test_every_cut_reproduces_the_model_exactly(case: Case) -> None:
    mismatches = []
    for cut in case.cuts:
        halves = split(case.graph, cut)
        for b, x in case.inputs.items():
            with torch.no_grad():
                sent = halves.head(x)
                got = halves.tail(*sent)
            if b == 1 and cut.crossing:  # the recorded crossing matches what the head sends
                assert [tuple(t.shape) for t in sent] == [c.shape for c in cut.crossing], cut.id
                assert [t.dtype for t in sent] == [DTYPES[c.dtype] for c in cut.crossing], cut.id
            if len(got) != len(case.expected[b]) or not all(
                torch.equal(g, e) for g, e in zip(got, case.expected[b], strict=False)
            ):
                mismatches.append(f"{cut.id} ({cut.name}) at batch {b}")
    assert not mismatches, f"{case.name}: halves differ from the model at {mismatches}"


def test_first_cut_sends_the_input_and_last_sends_nothing(case: Case) -> None:
    nodes = compute_nodes(case.graph)
    first, last = case.cuts[0], case.cuts[-1]
    (placeholder,) = (n.name for n in case.graph.module.graph.nodes if n.op == "placeholder")

    assert (first.index, first.name, first.edge_nodes) == (0, "input", ())
    assert [(t.node, t.shape, t.dtype) for t in first.crossing] == [
        (placeholder, case.entry.input_shape, "float32")
    ]
    assert (last.index, last.name, last.crossing, last.bytes_raw) == (len(nodes), "output", (), 0)
    assert last.edge_nodes == tuple(nodes)


def test_cut_ids_are_unique_and_sizes_add_up(case: Case) -> None:
    ids = [cut.id for cut in case.cuts]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"c\d{4}", i) for i in ids)
    indices = [cut.index for cut in case.cuts]
    assert indices == sorted(set(indices))
    for cut in case.cuts:
        for t in cut.crossing:
            assert t.nbytes == math.prod(t.shape) * DTYPES[t.dtype].itemsize
            assert t.shape[0] == case.entry.input_shape[0]  # the batch leads every tensor sent
        assert cut.bytes_raw == sum(t.nbytes for t in cut.crossing)
        assert cut.edge_nodes == tuple(compute_nodes(case.graph)[: cut.index])


def test_a_cut_inside_a_block_sends_the_skip_too(case: Case) -> None:
    cut = case.cut_named(case.entry.inside_block)
    assert len(cut.crossing) >= 2, cut


def test_each_half_holds_only_the_weights_it_uses(case: Case) -> None:
    everything = _weights(case.graph.module)
    for cut in (case.cuts[0], case.cut_named(case.entry.inside_block), case.cuts[-1]):
        halves = split(case.graph, cut)
        head, tail = _weights(halves.head), _weights(halves.tail)
        assert not head & tail, cut  # no model here uses a weight on both sides
        assert head | tail == everything, cut
    assert not split(case.graph, case.cuts[0]).head.state_dict()
    assert not split(case.graph, case.cuts[-1]).tail.state_dict()


def _weights(module: nn.Module) -> set[str]:
    # BatchNorm in eval mode never reads num_batches_tracked (a torch.fx capture keeps whole
    # BatchNorm modules, torch.export only what they read); every other weight is used.
    return {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}


def test_the_worked_example_of_the_cuts_docstring() -> None:
    graph = capture(_seeded(Block), (1, 4, 8, 8))
    table = [(c.name, c.edge_nodes, [t.node for t in c.crossing]) for c in enumerate_cuts(graph)]
    assert table == [
        ("input", (), ["x"]),
        ("conv", ("conv2d",), ["x", "conv2d"]),
        ("bn", ("conv2d", "batch_norm"), ["x", "batch_norm"]),
        ("add", ("conv2d", "batch_norm", "add"), ["add"]),
        ("output", ("conv2d", "batch_norm", "add", "relu"), []),
    ]


class FixedBatch(nn.Module):
    """A model that only runs at batch 1: its batch size is written into the code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).view(1, 3 * 8 * 8)


def test_a_graph_with_a_fixed_batch_size_is_a_capture_error() -> None:
    shape = (1, 3, 8, 8)
    traced = fx.symbolic_trace(FixedBatch())  # torch.export would refuse it at batch 2 already
    graph = CapturedGraph(traced, "fx", shape, (example_input(shape),))
    with pytest.raises(CaptureError, match=r"does not run at batch 1 and 2 .*reshape\(1, \.\.\.\)"):
        enumerate_cuts(graph)


# --- particular models --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["resnet18"], indirect=True)
def test_a_cut_in_a_basic_block_sends_the_block_input(case: Case) -> None:
    # layer1.0: conv1 -> bn1 -> relu -> conv2 -> bn2 -> (+ maxpool output) -> relu
    cut = case.cut_named("layer1.0.bn1")
    assert [t.node for t in cut.crossing] == ["max_pool2d", "batch_norm_1"]


@pytest.mark.parametrize("case", ["vit_tiny"], indirect=True)
def test_vit_cuts_skip_lists_and_batch_in_dim_1(case: Case) -> None:
    nodes = compute_nodes(case.graph)
    assert not any(n.startswith(("_guards_fn", "sym_size", "expand")) for n in nodes)
    indices = {cut.index for cut in case.cuts}
    permute, unbind = nodes.index("permute"), nodes.index("unbind")
    # After permute, q/k/v are stacked as (3, N, heads, T, d): no batch on dim 0.
    assert permute + 1 not in indices
    # After unbind, a list crosses until its last getitem is on the edge.
    assert {unbind + 1, unbind + 2, unbind + 3} & indices == set()
    assert unbind + 4 in indices
    # The cls token is rebuilt in the cloud from the batch size, not sent.
    assert [t.node for t in case.cut_named("transpose").crossing] == ["transpose"]


@pytest.mark.parametrize("case", ["branches"], indirect=True)
def test_branch_cuts_send_every_pending_tensor(case: Case) -> None:
    # Right after the left branch: the stem output (for the right branch and the skip), the left
    # branch's output and the early output aux all cross.
    cut = case.cut_named("left.1")
    assert {t.node for t in cut.crossing} == {"relu", "relu_1", "linear"}


def test_a_cut_of_another_graph_is_refused() -> None:
    resnet, branches = _case("resnet18"), _case("branches")
    cut = resnet.cut_named("layer1.0.bn1")
    with pytest.raises(SplitError, match=r"does not belong to this graph") as info:
        split(branches.graph, cut)
    assert info.value.cut == cut.id
    with pytest.raises(SplitError, match=r"this graph has \d+"):
        split(branches.graph, resnet.cuts[-1])


# --- torch.export round trips -------------------------------------------------------------------


# Exporting and loading a model's worth of halves takes 4-6 s for the ~150-node graphs.
_SLOW_EXPORTS = {"efficientnet_lite0", "hf_mobilenet_v2", "mobilenet_v2", "resnet50"}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=[pytest.mark.slow] if name in _SLOW_EXPORTS else [])
        for name in sorted(REGISTRY)
    ],
    indirect=True,
)
@pytest.mark.parametrize("which", ["first", "inside_block", "before_last"])
def test_exported_halves_reproduce_the_model(case: Case, which: str, tmp_path: Path) -> None:
    cut = {
        "first": case.cuts[0],
        "inside_block": case.cut_named(case.entry.inside_block),
        "before_last": case.cuts[-2],
    }[which]
    head_path, tail_path = export_split(split(case.graph, cut), case.graph, tmp_path)
    assert (head_path, tail_path) == (tmp_path / "head.pt2", tmp_path / "tail.pt2")
    head = torch.export.load(head_path).module()
    tail = torch.export.load(tail_path).module()
    for b, x in case.inputs.items():
        with torch.no_grad():
            got = _flat(tail(*head(x)))
        assert all(torch.equal(g, e) for g, e in zip(got, case.expected[b], strict=True)), b


def test_export_into_an_unusable_directory_is_a_split_error(tmp_path: Path) -> None:
    branches = _case("branches")
    cut = branches.cuts[0]
    (tmp_path / "taken").write_text("a file where the directory should go")
    with pytest.raises(SplitError, match=rf"cannot create .*taken for cut {cut.id}") as info:
        export_split(split(branches.graph, cut), branches.graph, tmp_path / "taken")
    assert info.value.cut == cut.id
