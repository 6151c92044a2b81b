"""``splitwire plan`` end to end: a real model through capture, profiling, measurement,
decisions, export, and the plan directory the edge and the cloud will load."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from splitwire import __version__ as splitwire_version
from splitwire.partitioner.archive import load_program
from splitwire.partitioner.cost import OBJECTIVES
from splitwire.partitioner.pareto import dominates
from splitwire.partitioner.plan_file import load_plan
from splitwire.partitioner.signing import PlanTrust

pytestmark = pytest.mark.slow

FIELDS = {
    "cut", "cut_name", "crossing", "codec", "link", "bytes_raw", "bytes_wire", "edge_ms",
    "transfer_ms", "cloud_ms", "latency_ms", "throughput_fps", "accuracy_cost", "pareto",
    "baseline",
}  # fmt: skip

BRANCHY = """
import torch
from torch import nn


class Branchy(nn.Module):
    # Two parallel branches concatenated, then a skip connection around a conv.
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.mix = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.cat([self.left(x), self.right(x)], dim=1)
        y = torch.relu(self.mix(y) + y)
        return self.head(y.mean(dim=(2, 3)))


def build() -> nn.Module:
    return Branchy()
"""


def splitwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitwire", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    root = tmp_path_factory.mktemp("plan")
    (root / "branchy.py").write_text(BRANCHY)
    spec = f"{root / 'branchy.py'}:build"
    assert splitwire("keygen", "--out", str(root / "plans")).returncode == 0
    result = splitwire(
        "plan", "--model", spec, "--input-shape", "1,3,32,32", "--edge-slowdown", "4",
        "--link", "wifi", "--link", "bw=2mbit,rtt=80ms,name=slow", "--codec", "auto",
        "--calibration", "2", "--repeats", "3", "--out", str(root / "out"),
        "--input-mean", "0.5,0.5,0.5", "--input-std", "0.25,0.25,0.25",
        "--plot", str(root / "front.png"), "--json", "--sign-key", str(root / "plans.key"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads(result.stdout), spec


def test_plan_records_where_its_figures_come_from(
    planned: tuple[Path, dict[str, Any], str],
) -> None:
    root, data, _ = planned
    plan = yaml.safe_load((root / "out" / "plan.yaml").read_text())
    origin = plan["provenance"]
    assert origin["splitwire_version"] == splitwire_version
    assert origin["torch_version"] == str(torch.__version__)
    assert origin["edge"]["emulated"] is True and origin["edge"]["slowdown"] == 4.0
    assert origin["cloud"]["emulated"] is False
    assert origin["calibration"].startswith("2 × synthetic camera frames (uint8")
    # A file-defined model of no known task: the budget is the relative error; its weights are
    # the builder's, which the planner cannot know to be trained or random (null).
    assert origin["trained_weights"] is None and origin["accuracy_budget"] == "rel=0.01"
    assert plan["objective"]["accuracy_metric"] == "rel"
    assert data["trained_weights"] is None and "task" not in plan["model"]
    # A file's model has no known task: of the task metrics only the relative error applies.
    metrics = {
        k
        for c in data["candidates"]
        if not c["not_measured"]  # pruned: an exact candidate beats it on every link
        for k, v in c["metrics"].items()
        if v is not None
    }
    assert metrics == {"rel"}


def test_json_has_every_field_and_the_baselines(planned: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = planned
    candidates = data["candidates"]
    assert all(c.keys() >= FIELDS for c in candidates)
    # Each candidate names its link by the full spec, as the picks and plan.yaml do.
    picked = {pick["link"] for pick in data["choice"]["links"]}
    assert {c["link"] for c in candidates} == picked
    for link in ("wifi", "slow"):
        baselines = {c["baseline"] for c in candidates if c["link"].startswith(f"name={link},")}
        assert {"all-on-edge", "all-in-cloud-raw", "all-in-cloud-jpeg"} <= baselines
    assert {"cut", "cut_name", "codec"} <= data["choice"].keys()


def test_front_is_exact_per_link(planned: tuple[Path, dict[str, Any], str]) -> None:
    """The pareto flags agree with a brute-force dominance check over all five objectives."""
    _, data, _ = planned
    senses = [sense for _, sense in OBJECTIVES]
    by_link: dict[str, list[dict[str, Any]]] = {}
    for c in data["candidates"]:
        by_link.setdefault(c["link"], []).append(c)
    assert len(by_link) == 2
    for rows in by_link.values():
        # A candidate not measured (pruned) has no accuracy: it is dominated whatever it is.
        points = [
            [math.inf if r[name] is None else r[name] for name, _ in OBJECTIVES] for r in rows
        ]
        for row, point in zip(rows, points, strict=True):
            dominated = any(dominates(other, point, senses) for other in points)
            assert row["pareto"] == (not dominated)


def test_crossing_counts_every_tensor(planned: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = planned
    crossings = {c["cut"]: c["crossing"] for c in data["candidates"]}
    assert crossings["c0000"][0]["shape"] == [1, 3, 32, 32]
    # Inside the branches both the left output and the stem output (for the right) cross.
    assert max(len(x) for x in crossings.values()) >= 2
    for cut in data["candidates"]:
        assert cut["bytes_raw"] == sum(t["nbytes"] for t in cut["crossing"])


def test_plan_directory_runs_exactly(planned: tuple[Path, dict[str, Any], str]) -> None:
    root, data, spec = planned
    # --sign-key signed it: the plan loads only as signed by that key.
    plan = load_plan(root / "out", trust=PlanTrust.from_public_key(root / "plans.pub"))
    assert plan.choice.cut == data["choice"]["cut"]
    assert plan.preprocess is not None
    assert (plan.preprocess.mean, plan.preprocess.std) == ((0.5,) * 3, (0.25,) * 3)
    assert (root / "front.png").stat().st_size > 10_000
    from splitwire.partitioner.models import load_model

    model = load_model(spec).module
    x = torch.randn(3, 3, 32, 32)
    for cut in plan.cuts.values():
        assert cut.head is not None and cut.tail is not None
        # As the runtimes load them: each half's sha256 and contents checked.
        head = load_program(root / "out" / cut.head, sha256=cut.head_sha256)
        tail = load_program(root / "out" / cut.tail, sha256=cut.tail_sha256)
        with torch.no_grad():
            crossing = head(x)
            assert len(crossing) == len(cut.crossing)
            (out,) = tail(*crossing)
            assert torch.equal(out, model(x))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--codec", "int9"], "unknown scheme 'int9'"),
        (["--link", "bw=fast"], "bw"),
        (["--input-shape", "1,3,x"], "input shape '1,3,x'"),
        (["--input-shape", "1,7,32,32"], "does not run on an input of shape (1, 7, 32, 32)"),
        (["--accuracy-budget", "-1"], "accuracy budget rel=-1: expected a finite value >= 0"),
        (["--accuracy-budget", "acc=0.9"], "expected one of rel, kl"),
        (["--input-mean", "0.5,0.5,0.5"], "--input-mean and --input-std go together"),
        (["--input-mean", "0.5,0.5", "--input-std", "1,1"], "2 values for input shape"),
        (["--input-mean", "a,b,c", "--input-std", "1,1,1"], "expected comma-separated numbers"),
        (["--ship", "nowhere"], "--ship nowhere: no such cut"),
    ],
)
def test_bad_input_exits_2(
    planned: tuple[Path, dict[str, Any], str], tmp_path: Path, args: list[str], message: str
) -> None:
    _, _, spec = planned
    base = {"--input-shape": "1,3,32,32", "--link": "wifi"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [item for pair in base.items() for item in pair]
    result = splitwire("plan", "--model", spec, *flat, "--edge-slowdown", "2", "--repeats", "1",
                       "--calibration", "1", "--out", str(tmp_path / "p"))  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert message in result.stderr


def test_profile_of_another_model_is_refused(
    planned: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    _, _, spec = planned
    profile = tmp_path / "other.yaml"
    made = splitwire("profile", "--model", "zoo:resnet18", "--input-shape", "1,3,32,32",
                     "--threads", "1", "--repeats", "1", "--out", str(profile))  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    result = splitwire("plan", "--model", spec, "--input-shape", "1,3,32,32", "--link", "wifi",
                       "--edge-profile", str(profile), "--out", str(tmp_path / "p"))  # fmt: skip
    assert result.returncode == 2
    assert "splitwire profile" in result.stderr and "Traceback" not in result.stderr


def test_reused_measurements_give_the_same_bytes_and_accuracy(
    planned: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    root, first, spec = planned
    args = ["plan", "--model", spec, "--input-shape", "1,3,32,32", "--edge-slowdown", "8",
            "--link", "lte", "--calibration", "2", "--repeats", "2",
            "--reuse-measurements", str(root / "out")]  # fmt: skip
    result = splitwire(*args, "--out", str(tmp_path / "again"), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    again = json.loads(result.stdout)
    measured = {(c["cut"], c["codec"]): (c["bytes_wire"], c["accuracy_cost"])
                for c in first["candidates"]}  # fmt: skip
    reused = {(c["cut"], c["codec"]): (c["bytes_wire"], c["accuracy_cost"])
              for c in again["candidates"]}  # fmt: skip
    assert reused.keys() == measured.keys()
    for key, (wire, cost) in reused.items():
        assert wire == measured[key][0]
        # A candidate pruned for the first plan's links is measured (or pruned) for lte's.
        if measured[key][1] is not None and cost is not None:
            assert cost == measured[key][1]
    assert (tmp_path / "again" / "plan.yaml").is_file()
    # Another calibration count is another measurement: refused, naming the field.
    other = splitwire(*[a if a != "2" else "3" for a in args], "--out", str(tmp_path / "x"))
    assert other.returncode == 2
    assert "calibration" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.slow
def test_a_pretrained_model_is_planned_on_photos_in_task_terms(tmp_path: Path) -> None:
    """The trained EfficientNet-Lite0 on crops of the bundled photos: task metrics, the KL
    budget, its own preprocessing and the calibration data recorded."""
    out = tmp_path / "effnet"
    result = splitwire(
        "plan", "--model", "zoo:efficientnet_lite0?image_size=96@pretrained",
        "--input-shape", "1,3,96,96", "--link", "lte", "--calibration", "4", "--repeats", "2",
        "--codec", "fp16+zstd1", "int8+zstd1", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["trained_weights"] is True and data["accuracy_budget"] == "kl=0.001"
    int8 = [c for c in data["candidates"] if c["codec"] == "int8+zstd1" and not c["not_measured"]]
    assert int8 and all(0 <= c["metrics"]["top1"] <= 1 and c["metrics"]["kl"] >= 0 for c in int8)
    for c in data["candidates"]:
        if c["not_measured"]:  # pruned: no accuracy, never on a front
            assert c["accuracy_cost"] is None and not c["pareto"]
            continue
        assert c["accuracy_cost"] == pytest.approx(c["metrics"]["kl"])
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    assert plan["provenance"]["calibration"].startswith("4 × crops of the photos bundled")
    assert plan["objective"]["accuracy_metric"] == "kl"
    assert plan["model"]["preprocess"]["mean"] == pytest.approx([127 / 255] * 3)
