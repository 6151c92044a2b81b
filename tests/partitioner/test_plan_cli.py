"""``splitwire plan`` as a user meets it: ``--out`` and ``--plot`` refused before anything is
captured, stale cut folders removed on re-planning, progress lines without a terminal, full cut
names in the tables, a readable plot; ``splitwire plan show`` and ``splitwire cuts``."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from splitwire.cli import main
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.outputs import remove_stale_cuts
from splitwire.partitioner.plan_file import load_plan
from splitwire.partitioner.planner import PlanOutcome, PlanRequest, plan_model, write_plan_directory
from splitwire.partitioner.report import figure, print_tables
from splitwire.partitioner.signing import sign_file

# Two convolutions under a module name longer than the 22 characters the tables used to keep.
LONG_NAMES = """
import torch
from torch import nn


class LongNames(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem_convolution_with_a_long_name = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_convolution_with_a_long_name_too = nn.Conv2d(8, 8, 3, padding=1)
        self.classifier = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_convolution_with_a_long_name(x))
        x = torch.relu(self.stem_convolution_with_a_long_name_too(x))
        return self.classifier(x.mean(dim=(2, 3)))


def build() -> nn.Module:
    return LongNames()
"""
LONG = "stem_convolution_with_a_long_name_too"
# A spec that fails the moment it is resolved: an error about anything else proves that the
# check came first, before the model was even looked up.
NO_MODEL = "zoo:no_such_model"


def splitwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitwire", *args], capture_output=True, text=True, timeout=600
    )


def plan_args(out: Path, *extra: str, model: str = NO_MODEL) -> list[str]:
    return ["plan", "--model", model, "--input-shape", "1,3,16,16", "--link", "wifi",
            "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "long_names.py"
    path.write_text(LONG_NAMES)
    return f"{path}:build"


@pytest.fixture(scope="module")
def outcome(model_file: str) -> PlanOutcome:
    """Two links, a tight budget (the 4-bit codecs go over it), every lossy tail measured."""
    request = PlanRequest(
        model_spec=model_file,
        input_shape=(1, 3, 16, 16),
        links=(parse_link("wifi"), parse_link("3g")),
        accuracy_budget="rel=0.001",
        edge_slowdown=4,
        calibration=2,
        repeats=2,
        prune=False,
    )
    return plan_model(request)


# --- --out and --plot, checked before anything else ------------------------------------------


def refused(argv: list[str], caplog: pytest.LogCaptureFixture) -> str:
    """Run ``splitwire`` in this process; it must exit 2. Returns its log."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(argv) == 2
    log = caplog.text
    assert "capture: started" not in log and "unknown zoo model" not in log, log
    return log


def test_an_out_that_is_a_file_is_refused_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "taken").write_text("the user's file")
    log = refused(plan_args(tmp_path / "taken"), caplog)
    assert f"--out {tmp_path / 'taken'} is a file; expected a plan directory" in log
    assert (tmp_path / "taken").read_text() == "the user's file"
    # Under a file no directory can be made.
    log = refused(plan_args(tmp_path / "taken" / "plan"), caplog)
    assert f"{tmp_path / 'taken'} is a file, so no directory can be made under it" in log


def test_an_out_that_cannot_be_written_is_refused_first(caplog: pytest.LogCaptureFixture) -> None:
    # /proc takes no new files, for root too (a chmod would not stop root).
    log = refused(plan_args(Path("/proc/splitwire-test/plan")), caplog)
    assert "--out /proc/splitwire-test/plan: cannot write in /proc" in log
    assert "expected a folder you can write" in log


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("front.txt", "expected a file name ending in one of"),
        ("a_file/front.png", "cannot make its folder"),
        ("a_dir", "expected a file name ending in one of"),
        ("a_dir.png", "is a directory; expected a file name"),
    ],
)
def test_a_bad_plot_path_is_refused_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, plot: str, message: str
) -> None:
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_dir.png").mkdir()
    log = refused(plan_args(tmp_path / "out", "--plot", str(tmp_path / plot)), caplog)
    assert message in log
    assert not (tmp_path / "out").exists()


def test_a_missing_plot_folder_is_made_before_planning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plot = tmp_path / "figures" / "resnet" / "front.png"
    with caplog.at_level(logging.INFO):
        assert main(plan_args(tmp_path / "out", "--plot", str(plot))) == 2
    # The folder exists; what failed is the model, which is looked at only after the paths.
    assert plot.parent.is_dir()
    assert "unknown zoo model 'no_such_model'" in caplog.text


# --- re-planning into a directory ----------------------------------------------------------


def test_replanning_removes_the_cut_folders_the_new_plan_does_not_ship(
    outcome: PlanOutcome, tmp_path: Path
) -> None:
    out = tmp_path / "plan"
    first = dataclasses.replace(
        outcome, request=dataclasses.replace(outcome.request, ship=("all",))
    )
    write_plan_directory(first, out)
    shipped_first = set(load_plan(out).cuts)
    assert shipped_first == {cut.id for cut in outcome.cuts}
    # What is not a cut folder splitwire wrote stays, whatever its name.
    cuts = out / "cuts"
    (cuts / "notes.txt").write_text("mine")
    (cuts / "c9990").write_text("a file named like a cut")
    (cuts / "c9991").mkdir()
    (cuts / "c9991" / "head.pt2").write_bytes(b"")
    (cuts / "c9991" / "README").write_text("mine too")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "head.pt2").write_bytes(b"keep me")
    (cuts / "c9992").symlink_to(outside, target_is_directory=True)

    write_plan_directory(outcome, out)  # no --ship: the picks only
    plan = load_plan(out)  # every half it names is there and matches its sha256
    kept = {p.name for p in cuts.iterdir()}
    assert kept == set(plan.cuts) | {"notes.txt", "c9990", "c9991", "c9992"}
    assert set(plan.cuts) < shipped_first
    assert (cuts / "c9991" / "README").read_text() == "mine too"
    assert (outside / "head.pt2").read_bytes() == b"keep me"
    assert (out / "plan.yaml").is_file() and (out / "measurements.json").is_file()


def test_stale_cut_removal_touches_only_its_directorys_cut_folders(tmp_path: Path) -> None:
    (tmp_path / "c0001").mkdir()  # beside the plan, not in its cuts/ folder
    (tmp_path / "c0001" / "head.pt2").write_bytes(b"")
    assert remove_stale_cuts(tmp_path, keep=()) == []
    assert (tmp_path / "c0001" / "head.pt2").is_file()
    cuts = tmp_path / "cuts"
    for cut_id in ("c0001", "c0002", "c0003"):
        (cuts / cut_id).mkdir(parents=True)
        (cuts / cut_id / "head.pt2").write_bytes(b"h")
        (cuts / cut_id / "tail.pt2").write_bytes(b"t")
    assert remove_stale_cuts(tmp_path, keep={"c0002"}) == ["c0001", "c0003"]
    assert sorted(p.name for p in cuts.iterdir()) == ["c0002"]


def test_plan_on_the_command_line_logs_progress_and_replans_a_signed_directory(
    model_file: str, tmp_path: Path
) -> None:
    """``splitwire plan --model ...`` as before, with --json and stderr a pipe: a line per
    phase and per tenth of each loop; re-planned unsigned, the old signature goes."""
    assert splitwire("keygen", "--out", str(tmp_path / "keys")).returncode == 0
    out = tmp_path / "plan"
    args = plan_args(out, "--edge-slowdown", "4", "--calibration", "1", "--repeats", "1",
                     model=model_file)  # fmt: skip
    first = splitwire(*args, "--ship", "all", "--sign-key", str(tmp_path / "keys.key"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "plan.yaml.sig").is_file()
    all_cuts = {p.name for p in (out / "cuts").iterdir()}

    again = splitwire(*args, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    data = json.loads(again.stdout)
    assert data["plan"] == str(out / "plan.yaml")
    for phase in ("capture", "profile", "measure", "decide"):
        assert f"progress: {phase}: started" in again.stderr
        assert f"progress: {phase}: done in " in again.stderr
    loop = [line for line in again.stderr.splitlines() if "encoding cuts: " in line]
    cuts = len({c["cut"] for c in data["candidates"]})
    assert len(loop) == min(cuts, 10), again.stderr
    assert loop[-1].endswith(f"{cuts}/{cuts} cuts (100 %)" + loop[-1].split("(100 %)")[1])
    assert not (out / "plan.yaml.sig").exists()  # unsigned now: a signature would not match
    shipped = set(load_plan(out).cuts)
    assert {p.name for p in (out / "cuts").iterdir()} == shipped < all_cuts

    quiet = splitwire("-q", *args, "--json")
    assert quiet.returncode == 0 and "progress" not in quiet.stderr, quiet.stderr[-2000:]


# --- tables and plot -----------------------------------------------------------------------


def test_tables_show_cut_names_in_full(outcome: PlanOutcome) -> None:
    text = io.StringIO()
    print_tables(outcome, text, show_all=True)
    rows = [line for line in text.getvalue().splitlines() if f" {LONG} " in line]
    # Every candidate of that cut on both links, name whole, columns still aligned.
    codecs = {m.codec for m in outcome.measurements if m.cut_name == LONG}
    assert len(rows) == 2 * len(codecs)
    # The columns after the name line up with the header's.
    header = next(line for line in text.getvalue().splitlines() if " name " in line)
    at = header.index("codec")
    assert all(row[at:].split()[0] in codecs for row in rows), rows


def test_plot_marks_budget_front_picks_with_labels_that_do_not_overlap(
    outcome: PlanOutcome,
) -> None:
    import matplotlib.pyplot as plt

    fig = figure(outcome)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        assert len(fig.axes) == 2  # one panel per link
        budget = outcome.request.budget
        for ax, decision in zip(fig.axes, outcome.decisions, strict=True):
            legend = ax.get_legend()
            assert legend is not None
            labels = [t.get_text() for t in legend.get_texts()]
            over = [c for c in decision.candidates if c.measurement.accuracy_cost > budget.max_cost]
            assert over, "the 4-bit codecs should be over rel=0.001"
            assert "over the rel=0.001 budget" in labels
            assert "Pareto front (5 objectives)" in labels
            assert any(t.startswith("this link's pick: ") for t in labels)
            robust = outcome.choice
            assert f"robust pick (the plan's): {robust.cut} {robust.cut_name} {robust.codec}" in (
                labels
            ) or any(t.startswith(f"robust pick (the plan's): {robust.baseline}") for t in labels)
            lo, hi = ax.get_xlim()
            shown = [
                t
                for t, v in zip(ax.get_xticklabels(), ax.get_xticks(), strict=True)
                if t.get_text() and lo <= v <= hi
            ]
            assert len(shown) >= 2, [t.get_text() for t in shown]
            boxes = [t.get_window_extent(renderer) for t in shown]
            for a, b in itertools.combinations(boxes, 2):
                assert not a.overlaps(b), [t.get_text() for t in shown]
            # Plain numbers, not 10^x or 2x10^1.
            for t in shown:
                assert math.isfinite(float(t.get_text())), t.get_text()
    finally:
        plt.close(fig)


# --- plan show -----------------------------------------------------------------------------


@pytest.fixture
def plan_copy(plan_dir: Path, tmp_path: Path) -> Path:
    """The session's plan, copied: the other tests share the original."""
    return Path(shutil.copytree(plan_dir, tmp_path / "plan"))


def test_plan_show_json_lists_what_the_directory_ships(
    plan_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "show", str(plan_copy), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    written = yaml.safe_load((plan_copy / "plan.yaml").read_text())
    assert shown["model"]["spec"] == written["model"]["spec"]
    assert shown["model"]["input_shape"] == written["model"]["input_shape"]
    assert shown["signed"] is False and shown["signature_verified"] is False
    assert shown["accuracy_budget"] == written["provenance"]["accuracy_budget"]
    assert [c["id"] for c in shown["cuts"]] == sorted(written["cuts"])
    for cut in shown["cuts"]:
        mine = written["cuts"][cut["id"]]
        assert cut["name"] == mine["name"]
        assert [t["shape"] for t in cut["crossing"]] == [t["shape"] for t in mine["crossing"]]
        assert cut["codecs"] == [o["codec"] for o in written["options"] if o["cut"] == cut["id"]]
        assert cut["codecs"], cut
        for half in ("head", "tail"):
            assert cut["halves"][half]["bytes"] == (plan_copy / mine[half]).stat().st_size > 0
    assert shown["bytes"] == sum(h["bytes"] for c in shown["cuts"] for h in c["halves"].values())
    assert [(c["link"], c["cut"], c["codec"]) for c in shown["links"]] == [
        (c["link"], c["cut"], c["codec"]) for c in written["links"]
    ]
    assert shown["choice"]["cut"] == written["choice"]["cut"]
    assert shown["provenance"]["calibration"] == written["provenance"]["calibration"]


def test_plan_show_text_and_signatures(
    plan_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = load_plan(plan_copy)
    assert main(["plan", "show", str(plan_copy)]) == 0
    text = capsys.readouterr().out
    assert "not signed" in text
    assert plan.model_spec in text and plan.model_hash in text
    for cut in plan.cuts.values():
        assert f"{cut.id} {cut.name}" in " ".join(text.split())
    assert "wifi" in text and "provenance:" in text and "accuracy budget " in text

    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    from splitwire.partitioner.signing import load_signing_key

    sign_file(plan_copy / "plan.yaml", load_signing_key(tmp_path / "keys.key"))
    capsys.readouterr()
    assert main(["plan", "show", str(plan_copy)]) == 0
    assert "signed (plan.yaml.sig; not verified: give --plan-public-key)" in capsys.readouterr().out
    key = str(tmp_path / "keys.pub")
    assert main(["-v", "plan", "show", str(plan_copy), "--plan-public-key", key]) == 0
    assert "signed, verified" in capsys.readouterr().out


def test_plan_show_refuses_a_modified_directory(
    plan_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = load_plan(plan_copy)
    half = plan_copy / next(iter(plan.cuts.values())).tail  # type: ignore[operator]
    half.write_bytes(half.read_bytes() + b"\0")
    assert main(["plan", "show", str(plan_copy)]) == 2
    assert "does not match its recorded sha256" in caplog.text
    assert main(["plan", "show", str(plan_copy / "missing")]) == 2


def test_plan_with_its_flags_still_parses_next_to_plan_show() -> None:
    from splitwire.cli import build_parser, join_compound_commands

    parser = build_parser()
    args = parser.parse_args(
        join_compound_commands(
            ["-v", "plan", "--model", "zoo:resnet18", "--link", "wifi", "--out", "show"]
        )
    )
    assert (args.model, args.out, args.link) == ("zoo:resnet18", "show", ["wifi"])
    args = parser.parse_args(join_compound_commands(["-v", "plan", "show", "DIR", "--json"]))
    assert (args.directory, args.json) == (Path("DIR"), True)


# --- cuts ----------------------------------------------------------------------------------


def test_cuts_lists_a_zoo_models_cuts_without_measuring() -> None:
    spec = "zoo:resnet18?num_classes=10"
    result = splitwire("cuts", "--model", spec, "--input-shape", "1,3,32,32", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "profil" not in result.stderr and "measur" not in result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [1, 3, 32, 32]
    cuts = data["cuts"]
    assert [c["index"] for c in cuts] == sorted({c["index"] for c in cuts})
    assert [c["id"] for c in cuts] == [f"c{c['index']:04d}" for c in cuts]
    first, last = cuts[0], cuts[-1]
    assert (first["id"], first["name"], first["bytes"]) == ("c0000", "input", 3 * 32 * 32 * 4)
    assert (last["name"], last["bytes"], last["crossing"]) == ("output", 0, [])
    assert last["edge_nodes"] == data["compute_nodes"]
    for cut in cuts:
        assert cut["bytes"] == sum(t["bytes"] for t in cut["crossing"])
        for t in cut["crossing"]:
            assert t["bytes"] == math.prod(t["shape"]) * 4 and t["dtype"] == "float32"
    # Some cut sends a skip connection beside the main path (ResNet's residuals).
    assert any(len(c["crossing"]) == 2 for c in cuts)

    text = splitwire("cuts", "--model", spec, "--input-shape", "1,3,32,32")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert (
        lines[0]
        == f"{spec} at 1x3x32x32: {len(cuts)} cuts over {data['compute_nodes']} compute nodes"
    )
    for cut, line in zip(cuts, lines[2:], strict=True):
        assert line.split()[:2] == [cut["id"], cut["name"]]


def test_cuts_refuses_a_bad_shape(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["cuts", "--model", "zoo:resnet18", "--input-shape", "1,3,x"]) == 2
    assert "expected positive integers separated by commas" in caplog.text
