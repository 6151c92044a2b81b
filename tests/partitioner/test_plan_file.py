"""plan.yaml round trips, and every way a plan directory can be wrong is reported precisely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.plan_file import (
    IMAGENET,
    LinkChoice,
    Plan,
    PlanCut,
    PlanOption,
    TensorSpec,
    load_plan,
    sha256_file,
    write_plan,
)


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    halves = tmp_path / "cuts" / "c0042"
    halves.mkdir(parents=True)
    (halves / "head.pt2").write_bytes(b"head archive")
    (halves / "tail.pt2").write_bytes(b"tail archive")
    cut = PlanCut(
        id="c0042",
        name="layer3",
        head="cuts/c0042/head.pt2",
        tail="cuts/c0042/tail.pt2",
        inputs=(TensorSpec("input", (1, 3, 224, 224), "float32"),),
        crossing=(TensorSpec("relu_7", (1, 256, 14, 14), "float32"),),
        outputs=(TensorSpec("output0", (1, 1000), "float32"),),
        head_sha256=sha256_file(halves / "head.pt2"),
        tail_sha256=sha256_file(halves / "tail.pt2"),
    )
    choice = LinkChoice("wifi", "c0042", "int8+zstd1", None, {"latency_ms": 12.5})
    plan = Plan(
        model_spec="zoo:resnet18",
        model_hash="ab" * 32,
        input_shape=(1, 3, 224, 224),
        objective="latency",
        accuracy_budget=0.01,
        choice=choice,
        links=(choice,),
        cuts={"c0042": cut},
        options=(
            PlanOption("c0042", "int8+zstd1", None, 12.0, 3.5, 40_000.0, 60.0, 0.004),
            PlanOption("c0042", "fp32", None, 11.0, 3.0, 200_000.0, 60.0, 0.0),
        ),
        preprocess=IMAGENET,
    )
    write_plan(plan, tmp_path)
    return tmp_path


def test_round_trip(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    assert plan.choice.cut == "c0042" and plan.choice.codec == "int8+zstd1"
    assert plan.cut("c0042").crossing[0].shape == (1, 256, 14, 14)
    assert plan.input_shape == (1, 3, 224, 224)
    assert load_plan(plan_dir / "plan.yaml") == plan
    assert plan.option("c0042", "fp32").bytes_up == 200_000.0
    assert plan.preprocess == IMAGENET
    with pytest.raises(PlanError, match="ships no option c0042 int4"):
        plan.option("c0042", "int4")


def _edit(plan_dir: Path, change: object) -> None:
    path = plan_dir / "plan.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data))


def test_modified_half_is_detected(plan_dir: Path) -> None:
    (plan_dir / "cuts" / "c0042" / "tail.pt2").write_bytes(b"tampered")
    with pytest.raises(PlanError, match=re.escape("tail.pt2 does not match its recorded sha256")):
        load_plan(plan_dir)


def test_missing_half(plan_dir: Path) -> None:
    (plan_dir / "cuts" / "c0042" / "head.pt2").unlink()
    with pytest.raises(PlanError, match=re.escape("needs cuts/c0042/head.pt2, which is missing")):
        load_plan(plan_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema=99), "schema 99 is not supported; expected 2"),
        (lambda d: d["model"].pop("hash"), "model: missing key 'hash'"),
        (lambda d: d["model"].update(input_shape="1,3"), "expected a list of integers"),
        (lambda d: d["choice"].update(cut="c9999"), "refers to cut 'c9999', not in cuts"),
        (lambda d: d["cuts"]["c0042"]["crossing"][0].update(shape=[1, "x"]), "crossing[0]"),
        (lambda d: d["cuts"]["c0042"].update(tail="../../etc/passwd"), "leaves the plan directory"),
        (lambda d: d["cuts"]["c0042"].update(head="/etc/passwd"), "leaves the plan directory"),
        (lambda d: d["options"][0].update(cut="c0001"), "refers to cut 'c0001', not in cuts"),
        (lambda d: d["options"][1].pop("bytes_up"), "options[1]: missing key 'bytes_up'"),
        (lambda d: d["model"]["preprocess"].update(std=[0.2, 0, 0.2]), "must be > 0"),
        (lambda d: d["model"]["preprocess"].update(mean=[0.5]), "1 means and 3 stds"),
    ],
)
def test_malformed_plan(plan_dir: Path, change: object, message: str) -> None:
    _edit(plan_dir, change)
    with pytest.raises(PlanError, match=re.escape(message)):
        load_plan(plan_dir)


def test_not_yaml_and_missing(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path)
    (tmp_path / "plan.yaml").write_text("model: [unclosed")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(tmp_path)


def test_a_symlink_out_of_the_directory_is_refused(plan_dir: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "tail.pt2"
    outside.write_bytes(b"tail archive")
    half = plan_dir / "cuts" / "c0042" / "tail.pt2"
    half.unlink()
    half.symlink_to(outside)
    with pytest.raises(PlanError, match="leaves the plan directory"):
        load_plan(plan_dir)
