"""The heavy model as the partitioner sees it: a zoo entry that torch.export captures, whose
halves at every cut reproduce it exactly (tests/partitioner/test_split.py's property), with
``(logits, downlink)`` outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from splitwire.partitioner.capture import capture, example_input
from splitwire.partitioner.cuts import enumerate_cuts
from splitwire.partitioner.models import load_model, zoo_entry
from splitwire.partitioner.split import export_split, split

SPEC = "zoo:texture_unet?base_channels=4"
SHAPE = (1, 3, 16, 16)  # the smallest input its three poolings take


def test_the_zoo_entry_returns_logits_and_the_downlink() -> None:
    entry = zoo_entry("texture_unet")
    assert entry.task == "segmentation" and entry.input_shape == (1, 3, 64, 64)
    model = load_model("zoo:texture_unet").module.eval()
    with torch.no_grad():
        logits, downlink = model(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 5, 64, 64) and downlink.shape == (2, 8, 16, 16)


@pytest.mark.slow
def test_every_cut_of_the_heavy_model_reproduces_it(tmp_path: Path) -> None:
    model = load_model(SPEC).module.eval()
    graph = capture(model, SHAPE)
    assert graph.method == "export"
    x = example_input(SHAPE, batch=2, seed=1)
    with torch.no_grad():
        expected = model(x)
        cuts = enumerate_cuts(graph)
        assert len(cuts) > 20
        for cut in cuts:
            halves = split(graph, cut)
            got = halves.tail(*halves.head(x))
            assert len(got) == 2, cut.id
            assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True)), cut.id
    # The cut right after the downlink: exported halves still reproduce the model.
    (after,) = [c for c in cuts if c.name == "downlink"]
    head_path, tail_path = export_split(split(graph, after), graph, tmp_path)
    head = torch.export.load(head_path).module()
    tail = torch.export.load(tail_path).module()
    with torch.no_grad():
        got = tail(*head(x))
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
