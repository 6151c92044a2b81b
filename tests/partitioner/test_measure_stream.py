"""The measuring shortcuts keep the figures: cuts visited during one run of the graph see the
values a recorded run holds, and encoded sizes shared between cuts are those each cut's own
encoding gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitwire.partitioner.capture import CapturedGraph, capture
from splitwire.partitioner.cuts import Cut, enumerate_cuts
from splitwire.partitioner.measure import (
    TensorSizes,
    crossing_value,
    frame_sizes,
    mutated_nodes,
    record_crossings,
    record_reference,
    stream_cuts,
)
from splitwire.partitioner.planner import idle_cores
from splitwire.partitioner.split import split
from splitwire.protocol import CodecSpec


class _Residual(nn.Module):
    # Two residual blocks as torchvision writes them: the cuts inside a block cross its input
    # and the branch, so neighbouring cuts share a tensor; the in-place ReLU after each batch
    # norm and the in-place add of the skip stay in-place ops in the exported graph.
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(8, 4)
        with torch.no_grad():  # a batch norm that shifts: its output has negative values
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.bias.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        out = self.a2(self.relu(self.bn(self.a1(x))))
        out += x
        x = self.relu(out)
        x = torch.relu(self.b1(x) + x)
        return self.head(x.mean(dim=(2, 3)))


def _graph_and_cuts() -> tuple[CapturedGraph, list[Cut], torch.Tensor]:
    graph = capture(_Residual().eval(), (1, 3, 16, 16))
    inputs = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    return graph, enumerate_cuts(graph), inputs


def test_stream_visits_each_cut_once_with_the_recorded_values() -> None:
    graph, cuts, inputs = _graph_and_cuts()
    wanted = [cut for cut in cuts if cut.crossing][::2]  # cut 0 (the input) and every other
    assert wanted[0].index == 0 and len(wanted) >= 4
    seen: list[tuple[str, list[torch.Tensor]]] = []
    stream_cuts(
        graph,
        inputs,
        wanted,
        lambda cut, values: seen.append((cut.id, [v.clone() for v in values])),
    )
    assert [cut_id for cut_id, _ in seen] == [cut.id for cut in wanted]  # once each, in order
    recorded = record_crossings(graph, inputs, {t.node for c in wanted for t in c.crossing})
    for cut, (_, values) in zip(wanted, seen, strict=True):
        assert len(values) == len(cut.crossing)
        for tensor, value in zip(cut.crossing, values, strict=True):
            assert torch.equal(value, crossing_value(recorded, tensor.node)), (cut.id, tensor.node)


def test_stream_stops_after_the_last_cut_wanted() -> None:
    graph, cuts, inputs = _graph_and_cuts()
    early = [cuts[1]]
    ran: list[str] = []
    stream_cuts(graph, inputs, early, lambda cut, values: ran.append(cut.id))
    assert ran == [cuts[1].id]
    stream_cuts(graph, inputs, [], lambda cut, values: ran.append(cut.id))
    assert ran == [cuts[1].id]


def test_sizes_shared_between_cuts_are_each_cuts_own() -> None:
    graph, cuts, inputs = _graph_and_cuts()
    sharing = [cut for cut in cuts if len(cut.crossing) > 1]
    assert sharing, "expected cuts inside a residual block (two crossing tensors)"
    recorded = record_crossings(graph, inputs, {t.node for c in cuts for t in c.crossing})
    known: TensorSizes = {}
    for codec in (CodecSpec.parse("int8+zstd1"), CodecSpec.parse("fp16+zstd1")):
        for cut in [c for c in cuts if c.crossing]:
            alone = frame_sizes(recorded, cut, codec)
            assert frame_sizes(recorded, cut, codec, known=known) == alone
            # Frames numbered from ``first``: frames 2..4 of the run are frames 2..4 here.
            assert frame_sizes(recorded, cut, codec, range(2, 5), known=known) == alone[2:]
    nodes = {t.node for c in cuts for t in c.crossing}
    # One size per distinct tensor, codec and frame, however many cuts cross the tensor.
    assert len(known) == len(nodes) * 2 * len(inputs)
    assert sum(len(c.crossing) for c in cuts) > len(nodes)


def test_recorded_and_streamed_values_are_what_each_head_sends() -> None:
    """A value a later node changes in place (the batch norm's output, before the in-place
    ReLU) is recorded as it was: each cut's head returns it so (bytes and accuracy were once
    measured on the ReLU's output for such cuts)."""
    graph, cuts, inputs = _graph_and_cuts()
    assert mutated_nodes(graph.module), "expected in-place ops in the exported graph"
    wanted = [cut for cut in cuts if cut.crossing]
    keep = {t.node for c in wanted for t in c.crossing}
    recorded = record_reference(graph, inputs, keep)
    streamed: dict[str, list[torch.Tensor]] = {}
    stream_cuts(
        graph, inputs, wanted, lambda cut, vs: streamed.update({cut.id: [v.clone() for v in vs]})
    )
    changed = 0
    for cut in wanted:
        with torch.no_grad():
            sent = split(graph, cut).head(inputs)
        sent = list(sent) if isinstance(sent, tuple | list) else [sent]
        for tensor, value, head in zip(cut.crossing, streamed[cut.id], sent, strict=True):
            assert torch.equal(value, head), (cut.name, tensor.node)
            assert torch.equal(crossing_value(recorded, tensor.node), head), (cut.name, tensor.node)
            changed += tensor.node in mutated_nodes(graph.module)
    assert changed, "expected a cut crossing a value a later node changes in place"


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [(2, 1.0, 2), (2, 0.2, 2), (2, 2.0, 1), (2, 7.5, 1), (8, 3.2, 6), (8, 0.0, 8), (1, 0.0, 1)],
)
def test_measuring_uses_the_idle_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, load: float, threads: int
) -> None:
    # The planner's own thread is in the load: a load of 1 on 2 cores leaves both to it.
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    monkeypatch.setattr("os.getloadavg", lambda: (load, load, load))
    assert idle_cores() == threads
