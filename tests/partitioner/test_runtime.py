"""The plan API the runtimes use: what crosses each (cut, codec), frame checks, camera frames.
The halves' loading and execution are covered by the tail service tests (tests/cloud)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from splitwire.partitioner.errors import PlanError, TensorSpecError
from splitwire.partitioner.plan_file import (
    IMAGENET,
    LinkChoice,
    Plan,
    PlanCut,
    TensorSpec,
    sha256_file,
    write_plan,
)
from splitwire.partitioner.runtime import check_tensors, open_plan

IMAGE = TensorSpec("input", (1, 3, 8, 8), "float32")
CROSSING = (TensorSpec("relu", (1, 4, 4, 4), "float32"), TensorSpec("idx", (1, 2), "int64"))


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    cuts = {}
    for cut_id, name, crossing in (("c0000", "input", (IMAGE,)), ("c0003", "layer1", CROSSING)):
        folder = tmp_path / "cuts" / cut_id
        folder.mkdir(parents=True)
        for half in ("head", "tail"):
            (folder / f"{half}.pt2").write_bytes(f"{cut_id} {half}".encode())
        cuts[cut_id] = PlanCut(
            id=cut_id, name=name, head=f"cuts/{cut_id}/head.pt2", tail=f"cuts/{cut_id}/tail.pt2",
            inputs=(IMAGE,), crossing=crossing,
            outputs=(TensorSpec("output0", (1, 10), "float32"),),
            head_sha256=sha256_file(folder / "head.pt2"),
            tail_sha256=sha256_file(folder / "tail.pt2"),
        )  # fmt: skip
    choice = LinkChoice("wifi", "c0003", "int8+zstd1", None, {})
    write_plan(
        Plan("zoo:x", "ab" * 32, (1, 3, 8, 8), "latency", 0.01, choice, (choice,), cuts,
             preprocess=IMAGENET),
        tmp_path,
    )  # fmt: skip
    return tmp_path


def test_what_crosses_each_plan_kind(plan_dir: Path) -> None:
    plan = open_plan(plan_dir)
    assert plan.crossing("c0003", "int8+zstd1") == CROSSING
    assert plan.crossing("c0000", "fp32") == (IMAGE,)
    assert plan.crossing("c0000", "jpeg90") == (TensorSpec("image", (1, 3, 8, 8), "uint8"),)
    with pytest.raises(PlanError, match="needs the cut that sends the input"):
        plan.crossing("c0003", "jpeg90")
    with pytest.raises(PlanError, match="sends nothing"):
        plan.crossing("c0003", "none")
    with pytest.raises(PlanError, match="plan codec 'int9'"):
        plan.crossing("c0003", "int9")
    with pytest.raises(PlanError, match="plan has no cut 'c0001'"):
        plan.crossing("c0001", "fp32")


def test_options_are_found_by_cut_and_codec(plan_dir: Path) -> None:
    with pytest.raises(PlanError, match="ships no option c0003 int8"):
        open_plan(plan_dir).option("c0003", "int8+zstd1")


def test_a_corrupt_half_is_a_plan_error_on_load(plan_dir: Path) -> None:
    with pytest.raises(PlanError, match=r"refused to load .*tail.pt2: not a zip archive"):
        open_plan(plan_dir).tail("c0003")


def test_preprocess_maps_pixels_with_the_plans_statistics(plan_dir: Path) -> None:
    plan = open_plan(plan_dir)
    pixels = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    out = plan.preprocess(pixels)
    expected = (1 - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    torch.testing.assert_close(out[1, :, 5, 5], expected)
    with pytest.raises(TensorSpecError, match="expected dtype uint8, got float32"):
        plan.preprocess(pixels.float())


def test_check_tensors_names_the_disagreement() -> None:
    good = [torch.zeros(3, 4, 4, 4), torch.zeros(3, 2, dtype=torch.int64)]
    assert check_tensors(good, CROSSING) == 3
    cases = [
        ([good[0]], "tensors", "1 tensors; the plan expects 2 (relu, idx)"),
        ([torch.zeros(3, 4, 4, 5), good[1]], "tensors[0].shape",
         "expected shape (N, 4, 4, 4) float32, got (3, 4, 4, 5) float32"),
        ([torch.zeros(3, 64), good[1]], "tensors[0].shape", "got (3, 64)"),
        ([good[0].half(), good[1]], "tensors[0].dtype", "expected dtype float32, got float16"),
        ([good[0], torch.zeros(2, 2, dtype=torch.int64)], "tensors[1].shape", "has batch 2"),
    ]  # fmt: skip
    for tensors, field, words in cases:
        with pytest.raises(
            TensorSpecError, match=words.replace("(", r"\(").replace(")", r"\)")
        ) as e:
            check_tensors(tensors, CROSSING)
        assert e.value.field == field
