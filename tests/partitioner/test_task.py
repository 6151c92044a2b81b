"""``splitwire plan --task`` on any model spec: a user's own trained classifier (a file and its
weights, trained here in a second) is planned in task terms; the task reaches ``plan.yaml``
(within its bounds), ``plan show`` and the edge's result labels; "random weights" is said only
of weights known to be random.

Run: .venv/bin/pytest tests/partitioner/test_task.py -q
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from splitwire.cli import main
from splitwire.edge.results import summarise_outputs
from splitwire.partitioner.accuracy import AccuracyBudget
from splitwire.partitioner.errors import PartitionerError, PlanError
from splitwire.partitioner.models import load_model
from splitwire.partitioner.plan_file import TASKS, load_plan
from splitwire.partitioner.planner import PlanRequest
from splitwire.partitioner.task import check_task

from .trained_classifier import trained_classifier

RANDOM_WORDING = "weights are random"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    return trained_classifier(tmp_path_factory.mktemp("net"))


def plan_args(spec: str, out: Path, *extra: str) -> list[str]:
    return ["plan", "--model", spec, "--input-shape", "1,3,32,32", "--link", "wifi",
            "--edge-slowdown", "2", "--calibration", "8", "--repeats", "2", "--out", str(out),
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def planned(trained: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The trained file model planned as a classifier with a top-1 budget: (plan dir, tables)."""
    out = tmp_path_factory.mktemp("plans") / "net"
    tables = io.StringIO()
    with contextlib.redirect_stdout(tables):
        code = main(plan_args(trained, out, "--task", "classification", "--accuracy-budget",
                              "top1=0.9"))  # fmt: skip
    assert code == 0, tables.getvalue()[-2000:]
    return out, tables.getvalue()


def test_a_task_budget_applies_to_a_trained_file_model(planned: tuple[Path, str]) -> None:
    out, tables = planned
    assert "accuracy budget top1=0.9" in tables
    assert RANDOM_WORDING not in tables and "random" not in tables.lower()
    data = yaml.safe_load((out / "plan.yaml").read_text())
    assert data["model"]["task"] == "classification"
    assert data["objective"]["accuracy_metric"] == "top1"
    assert data["objective"]["accuracy_budget"] == pytest.approx(0.1)  # as a cost: 1 - 0.9
    assert data["provenance"]["trained_weights"] is True
    plan = load_plan(out)
    assert plan.task == "classification"
    # Every pick holds to the budget in its own metric: a top-1 agreement of at least 0.9.
    assert all(c.predicted["accuracy_cost"] <= 0.1 + 1e-9 for c in (plan.choice, *plan.links))


def test_without_a_task_a_task_budget_is_refused_before_measuring(
    trained: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert main(plan_args(trained, tmp_path / "p", "--accuracy-budget", "kl=1e-3")) == 2
    assert "kl is a classification metric" in caplog.text
    assert "give --task classification" in caplog.text
    assert "measure: started" not in caplog.text and "Traceback" not in caplog.text


def test_a_file_models_weights_are_never_called_random(trained: str, tmp_path: Path) -> None:
    """A build() may load trained weights itself: without @weights and with a task, the task's
    default budget applies and nothing is said about the weights."""
    bare = trained.partition("@")[0]
    assert not load_model(bare).random_weights and not load_model(trained).random_weights
    assert load_model("zoo:resnet18?num_classes=10").random_weights
    tables = io.StringIO()
    with contextlib.redirect_stdout(tables):
        code = main(plan_args(bare, tmp_path / "p", "--task", "classification",
                              "--calibration-data", "synthetic"))  # fmt: skip
    assert code == 0
    assert "accuracy budget kl=0.001" in tables.getvalue()  # a trained classifier's default
    assert RANDOM_WORDING not in tables.getvalue()
    data = yaml.safe_load((tmp_path / "p" / "plan.yaml").read_text())
    assert data["provenance"]["trained_weights"] is None  # unknown, not False


@pytest.mark.parametrize(
    ("task", "outputs", "budget", "message"),
    [
        ("classification", [(2, 16, 8, 8)], "kl=1e-3",
         r"task classification expects its first output to be \(N, K\) class logits with K >= 2; "
         r"the model's first output is \[2, 16, 8, 8\]"),
        ("segmentation", [(2, 10)], "pixel=0.99",
         r"expects its first output to be \(N, K, H, W\) per-pixel logits"),
        ("classification", [(2, 1)], "rel=0.01",
         r"with K >= 2; the model's first output is \[2, 1\]"),
        ("regression", [(2, 10)], "top1=0.99",
         "top1 is a classification metric, and m.py:build is task regression, measured in rel; "
         "give --task classification"),
        (None, [(2, 21, 8, 8)], "miou=0.9",
         "miou is a segmentation metric, and m.py:build is a model of unknown task"),
        ("segmentation", [(2, 21, 8, 8)], "top5=0.99", "measured in rel, pixel, miou"),
    ],
)  # fmt: skip
def test_a_task_must_fit_the_outputs_and_the_budget(
    task: str | None, outputs: list[tuple[int, ...]], budget: str, message: str
) -> None:
    metric, _, limit = budget.partition("=")
    with pytest.raises(PartitionerError, match=message):
        check_task(task, outputs=outputs, budget=AccuracyBudget(metric, float(limit)),
                   spec="m.py:build")  # fmt: skip


@pytest.mark.parametrize(
    ("task", "outputs", "budget"),
    [("classification", [(2, 10)], "top5=0.99"), ("segmentation", [(2, 3, 4, 4)], "miou=0.9"),
     ("regression", [(2, 3, 4, 4), (2, 7)], "rel=0.01"), (None, [(2, 10)], "rel=0.01")],
)  # fmt: skip
def test_a_task_that_fits_passes(
    task: str | None, outputs: list[tuple[int, ...]], budget: str
) -> None:
    metric, _, limit = budget.partition("=")
    check_task(task, outputs=outputs, budget=AccuracyBudget(metric, float(limit)), spec="m")


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(PartitionerError, match="task 'detection': expected one of classification"):
        PlanRequest(model_spec="m", input_shape=(1, 3, 8, 8), links=(), task="detection")


def test_the_command_line_offers_the_plan_files_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--task {" + ",".join(TASKS) + "}" in help_text


# --- plan.yaml and what reads it ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [("detection", "task = 'detection'; expected one of classification, segmentation, "
                   "regression"),
     (["classification"], r"task = \['classification'\]; expected a string"),
     ("classification\x1b[2J", "expected printable text")],
)  # fmt: skip
def test_a_plan_with_a_task_out_of_bounds_is_refused(
    planned: tuple[Path, str], tmp_path: Path, value: object, message: str
) -> None:
    out, _ = planned
    data = yaml.safe_load((out / "plan.yaml").read_text())
    data["model"]["task"] = value
    copy = tmp_path / "plan.yaml"
    copy.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match=message):
        load_plan(copy)


def test_plan_show_says_the_task(
    planned: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = planned
    assert main(["plan", "show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["task"] == "classification"
    assert main(["plan", "show", str(out)]) == 0
    assert "task        classification" in capsys.readouterr().out


def test_the_edge_labels_results_with_the_plans_task(planned: tuple[Path, str]) -> None:
    """The same (1, 4) logits are a classification only in a classifier's plan; a regression's
    or a plan that does not say gets shapes and a checksum, never a made-up top-5."""
    logits = (torch.tensor([[0.1, 2.0, -1.0, 0.5]]),)
    task = load_plan(planned[0]).task
    labelled = summarise_outputs(logits, task=task)
    assert labelled["kind"] == "classification" and labelled["top5"][0] == 1
    for other in ("regression", None):
        plain = summarise_outputs(logits, task=other)
        assert plain["kind"] == "tensors" and plain["shapes"] == [[1, 4]]
        assert "top5" not in plain
    masks = (torch.zeros(1, 3, 4, 4).index_fill_(1, torch.tensor([2]), 1.0),)
    assert summarise_outputs(masks, task="segmentation")["class_fraction"] == [0.0, 0.0, 1.0]
    assert summarise_outputs(masks, task="classification")["kind"] == "tensors"
