"""plan.yaml round trips, and every way a plan directory can be wrong is reported precisely."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.plan_file import (
    IMAGENET,
    MAX_PLAN_BYTES,
    MAX_PLAN_CUTS,
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


class _NoAliases(yaml.SafeDumper):
    """Writes an object shared by two places twice, as a hand-edited plan would hold it."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _edit(plan_dir: Path, change: object) -> None:
    path = plan_dir / "plan.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.dump(data, Dumper=_NoAliases))


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


# ---- plan.yaml is input like any other: bounded before and while it is parsed ----------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["cuts"]["c0042"].pop("tail_sha256"), "has no tail_sha256; every half's"),
        (lambda d: d["cuts"]["c0042"].update(head_sha256=None), "has no head_sha256"),
        (lambda d: d["cuts"]["c0042"].update(tail_sha256="AB" * 32), "64 lowercase hex digits"),
        (lambda d: d["cuts"]["c0042"].update(tail_sha256="ab" * 31), "64 lowercase hex digits"),
        (lambda d: d["model"].update(input_shape=[1] * 9), "expected a list of 1 to 8 integers"),
        (lambda d: d["model"].update(input_shape=[]), "expected a list of 1 to 8 integers"),
        (lambda d: d["model"].update(input_shape=[1, 3, 0, 4]), "integers from 1 to"),
        (lambda d: d["model"].update(input_shape=[1, 3, 1 << 25, 1]), "integers from 1 to"),
        (lambda d: d["model"].update(input_shape=[1, 3, 1 << 15, 1 << 15]), "elements in all"),
        (lambda d: d["cuts"]["c0042"]["outputs"][0].update(shape=[-1, 10]), "outputs[0]"),
        (lambda d: d["cuts"]["c0042"]["crossing"][0].update(dtype="float128"), "dtype 'float128'"),
        (lambda d: d["cuts"]["c0042"].update(name="layer3\n2026 INFO forged"), "printable text"),
        (lambda d: d["choice"].update(codec="x" * 2000), "at most 1024 characters"),
        (lambda d: d["options"][0].update(edge_ms=-1.0), "edge_ms = -1.0; expected a number >= 0"),
        (lambda d: d["options"][0].update(cloud_ms=float("nan")), "cloud_ms = nan"),
        (lambda d: d["choice"]["predicted"].update(latency_ms=float("nan")), "must be numbers"),
        (lambda d: d.update(links=[d["choice"]] * 257), "links has 257 entries; at most 256"),
        (lambda d: d["cuts"]["c0042"].update(crossing=[{}] * 300), "crossing has 300 entries"),
        (lambda d: d["cuts"].update({7: d["cuts"]["c0042"]}), "cut id 7; expected a printable"),
        (lambda d: d["model"]["preprocess"].update(std=[1.0] * 65), "std has 65 entries"),
    ],
)
def test_values_out_of_range_are_refused(plan_dir: Path, change: object, message: str) -> None:
    _edit(plan_dir, change)
    with pytest.raises(PlanError, match=re.escape(message)):
        load_plan(plan_dir)


def test_too_many_cuts_are_refused(plan_dir: Path) -> None:
    def many(d: dict) -> None:
        d["cuts"].update({f"c{i:05d}": {} for i in range(MAX_PLAN_CUTS)})  # counted first

    _edit(plan_dir, many)
    with pytest.raises(PlanError, match=f"cuts has {MAX_PLAN_CUTS + 1} entries; at most"):
        load_plan(plan_dir)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # LibYAML's own bound (1000) may stop this one first: either way, one PlanError.
        ("[" * 100_000, "nested more than 32 deep|exceeded maximum nesting depth"),
        ("a: " + "[" * 33 + "]" * 33, "nested more than 32 deep"),
        ("{a: " * 5_000 + "1" + "}" * 5_000, "nested more than 32 deep"),
        # Billion laughs: 9 levels of 9 aliases would expand to 9^9 strings.
        (
            "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)),
            re.escape("a YAML alias (*a0)"),
        ),
        ("schema: " + "9" * 5_000, "is not valid YAML"),
        ("schema: 2\n? [a, b]\n: 1\n", "is not valid YAML"),
        ("schema: 2\nmodel: !!python/object/apply:os.system [true]\n", "is not valid YAML"),
        ("schema: 2\n---\nschema: 2\n", "is not valid YAML"),
    ],
    ids=["unclosed", "deep list", "deep mapping", "aliases", "huge int", "list key", "tag", "two"],
)
def test_hostile_yaml_is_a_plan_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "plan.yaml").write_text(text)
    with pytest.raises(PlanError, match=message) as refused:
        load_plan(tmp_path)
    assert "\n" not in str(refused.value)  # one log line


def test_size_and_encoding_are_checked_before_parsing(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_bytes(b"schema: 2\n" + b"#" * MAX_PLAN_BYTES)
    with pytest.raises(PlanError, match=f"larger than {MAX_PLAN_BYTES} bytes"):
        load_plan(tmp_path)
    (tmp_path / "plan.yaml").write_bytes(b"schema: 2\nmodel: \xff\xfe\n")
    with pytest.raises(PlanError, match="not UTF-8"):
        load_plan(tmp_path)


def test_the_writer_never_emits_aliases(plan_dir: Path) -> None:
    # The same object twice would be written as &id001 / *id001, which readers refuse.
    plan = load_plan(plan_dir)
    shared = {"threads": 1, "description": "one core"}
    plan = dataclasses.replace(plan, provenance={"edge": shared, "cloud": shared})
    write_plan(plan, plan_dir)
    assert "&id" not in (plan_dir / "plan.yaml").read_text()
    assert load_plan(plan_dir).provenance == {"edge": shared, "cloud": shared}


def test_a_plan_too_large_to_load_is_refused_when_written(plan_dir: Path) -> None:
    plan = load_plan(plan_dir)
    plan = dataclasses.replace(plan, provenance={"note": "x" * MAX_PLAN_BYTES})
    with pytest.raises(PlanError, match="the runtimes read at most"):
        write_plan(plan, plan_dir / "big")
