"""``splitwire plan pack``: each side ships only what it runs.

A signed copy of the session's real plan (ResNet-18 at 64²: the input cut, two splits and the
all-on-edge cut) is packed once per module for the edge, the cloud, and the edge without the
whole model. The packs keep ``plan.yaml`` and its signature byte for byte, hold only their
side's halves, are refused by the other side, and refuse a missing half of their own side by
name; a real tail serving the cloud's pack answers a real agent running the edge's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from splitwire.cli import main
from splitwire.cloud import CloudConfig, create_server
from splitwire.cloud.errors import ConfigError
from splitwire.cloud.registry import TailRegistry
from splitwire.errors import SplitwireError
from splitwire.partitioner.errors import PlanError, PlanSignatureError
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.pack import pack_plan
from splitwire.partitioner.plan_file import PACK_FILE, load_plan, side_halves
from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.partitioner.signing import (
    PlanTrust,
    generate_key_pair,
    load_signing_key,
    sign_file,
)
from splitwire.protocol import CodecSpec

from ..edge.agent_runs import assert_each_frame_once, make_agent, reference, run_agent
from .test_plan_trust import clone_plan

SIDES = ("edge", "cloud", "edge-no-local")


@dataclass(frozen=True)
class Signed:
    plan: Path
    public: Path

    @property
    def trust(self) -> PlanTrust:
        return PlanTrust.from_public_key(self.public)


@pytest.fixture(scope="module")
def signed(plan_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    """A signed copy of the session's plan (halves hard-linked)."""
    root = tmp_path_factory.mktemp("signed")
    private, public = generate_key_pair(root / "plans")
    plan = clone_plan(plan_dir, root / "resnet18")
    sign_file(plan / "plan.yaml", load_signing_key(private))
    return Signed(plan, public)


@pytest.fixture(scope="module")
def packs(signed: Signed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three packs of the signed plan, written as `splitwire plan pack` writes them."""
    root = tmp_path_factory.mktemp("packs")
    out = {}
    for name in SIDES:
        side = "cloud" if name == "cloud" else "edge"
        result = pack_plan(
            signed.plan, root / name, side=side, local=name != "edge-no-local", trust=signed.trust
        )
        out[name] = result.directory
    return out


def _halves(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*.pt2")}


def _local_cut(plan: RunnablePlan) -> str:
    (cut,) = {o.cut for o in plan.options if o.local}
    return cut


def test_each_pack_keeps_plan_yaml_and_its_signature_byte_for_byte(
    signed: Signed, packs: dict[str, Path]
) -> None:
    for name, pack in packs.items():
        assert (pack / "plan.yaml").read_bytes() == (signed.plan / "plan.yaml").read_bytes(), name
        sig = (pack / "plan.yaml.sig").read_bytes()
        assert sig == (signed.plan / "plan.yaml.sig").read_bytes(), name
        # The signature holds for the pack: the runtime's check passes with the public key.
        side = "cloud" if name == "cloud" else "edge"
        load_plan(pack, trust=signed.trust, side=side)


def test_a_changed_byte_of_a_packs_plan_yaml_breaks_its_signature(
    packs: dict[str, Path], signed: Signed, tmp_path: Path
) -> None:
    pack = clone_plan(packs["edge"], tmp_path / "edge")
    text = (pack / "plan.yaml").read_text()
    (pack / "plan.yaml").write_text(text.replace("accuracy_budget: 0.01", "accuracy_budget: 0.5"))
    with pytest.raises(PlanSignatureError, match="does not match"):
        open_plan(pack, trust=signed.trust, side="edge")


def test_each_side_holds_its_halves_and_none_of_the_others(
    signed: Signed, packs: dict[str, Path], plan: RunnablePlan
) -> None:
    cuts = set(plan.plan.cuts)
    local = _local_cut(plan)
    assert _halves(packs["cloud"]) == {f"cuts/{c}/tail.pt2" for c in cuts}
    assert _halves(packs["edge"]) == {f"cuts/{c}/head.pt2" for c in cuts}
    # Without the local fallback the whole model (the all-on-edge cut's head) stays home.
    assert _halves(packs["edge-no-local"]) == {f"cuts/{c}/head.pt2" for c in cuts - {local}}
    whole = (signed.plan / "cuts" / local / "head.pt2").stat().st_size
    sizes = {
        name: sum(p.stat().st_size for p in pack.rglob("*.pt2")) for name, pack in packs.items()
    }
    assert sizes["edge"] - sizes["edge-no-local"] == whole
    for name, pack in packs.items():
        manifest = yaml.safe_load((pack / PACK_FILE).read_text())
        assert manifest == {
            "pack": 1,
            "side": "cloud" if name == "cloud" else "edge",
            "local": name == "edge",
        }


def test_a_runtime_loads_its_side_of_a_full_plan_and_of_its_pack_only(
    plan_dir: Path, packs: dict[str, Path], split_cuts: tuple[str, str]
) -> None:
    cut = split_cuts[0]
    for directory in (plan_dir, packs["cloud"]):
        cloud = open_plan(directory, side="cloud")
        assert cloud.tail(cut) is not None
        with pytest.raises(PlanError, match="open for the cloud, which runs only the tails"):
            cloud.head(cut)
    for directory in (plan_dir, packs["edge"]):
        edge = open_plan(directory, side="edge")
        assert edge.head(cut) is not None
        with pytest.raises(PlanError, match="open for the edge, which runs only the heads"):
            edge.tail(cut)


def test_the_edge_without_its_local_model_runs_only_options_that_send(
    packs: dict[str, Path], plan: RunnablePlan
) -> None:
    edge = open_plan(packs["edge-no-local"], side="edge")
    assert edge.options and not any(o.local for o in edge.options)
    assert len(edge.options) == len(plan.options) - 1  # only the all-on-edge option is gone
    agent, _ = make_agent(packs["edge-no-local"], frames=1, cloud="127.0.0.1:9")
    assert agent.option.local is False


def test_a_pack_is_refused_by_the_other_side_and_where_a_full_plan_is_needed(
    packs: dict[str, Path],
) -> None:
    with pytest.raises(PlanError, match=r"is the edge's pack \(plan.yaml and the heads only\)"):
        open_plan(packs["edge"], side="cloud")
    with pytest.raises(ConfigError, match="`splitwire cloud` needs the full plan directory"):
        TailRegistry([packs["edge"]])
    with pytest.raises(PlanError, match="`splitwire edge` needs the full plan directory or its"):
        open_plan(packs["cloud"], side="edge")
    with pytest.raises(PlanError, match="this needs the full plan directory"):
        load_plan(packs["cloud"])


@pytest.mark.parametrize("side", ["edge", "cloud"])
def test_a_missing_half_of_its_own_side_is_refused_by_name(
    packs: dict[str, Path], split_cuts: tuple[str, str], side: str, tmp_path: Path
) -> None:
    half = "head" if side == "edge" else "tail"
    pack = clone_plan(packs[side], tmp_path / side)
    missing = f"cuts/{split_cuts[1]}/{half}.pt2"
    (pack / missing).unlink()
    expected = f"the {side} needs {missing}, which is missing (cut {split_cuts[1]}'s {half})"
    with pytest.raises(PlanError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        open_plan(pack, side="edge" if side == "edge" else "cloud")
    if side == "cloud":
        with pytest.raises(ConfigError, match=f"--plan {pack}: .*needs {missing}"):
            TailRegistry([pack])
    else:
        with pytest.raises(SplitwireError, match=f"needs {missing}, which is missing"):
            make_agent(pack, frames=1)


def test_packing_refuses_what_it_cannot_write_and_a_cloud_without_local(
    plan_dir: Path, packs: dict[str, Path], tmp_path: Path
) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep")
    with pytest.raises(PlanError, match="exists and is not an empty directory"):
        pack_plan(plan_dir, occupied, side="edge")
    assert [p.name for p in occupied.iterdir()] == ["mine.txt"]
    with pytest.raises(PlanError, match="--no-local is for the edge's pack"):
        pack_plan(plan_dir, tmp_path / "cloud", side="cloud", local=False)
    with pytest.raises(PlanError, match="holds no whole model to pack"):
        pack_plan(packs["edge-no-local"], tmp_path / "again", side="edge")
    assert not (tmp_path / "cloud").exists() and not (tmp_path / "again").exists()
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written left behind


def test_the_command_line_packs_and_plan_show_tells_a_pack_from_a_plan(
    signed: Signed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # --out relative, as typed
    out = Path("packs/edge")
    key = str(signed.public)
    argv = ["plan", "pack", str(signed.plan), "--side", "edge", "--out", str(out)]
    assert main([*argv, "--plan-public-key", key, "--json"]) == 0
    packed = json.loads(capsys.readouterr().out)
    assert packed["side"] == "edge" and packed["local"] is True and packed["signed"] is True
    assert packed["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert packed["left_out_bytes"] == sum(
        (signed.plan / h.path).stat().st_size for h in side_halves(load_plan(signed.plan), "cloud")
    )
    assert main(["plan", "show", str(out), "--plan-public-key", key, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "edge pack" and shown["pack"] == {"side": "edge", "local": True}
    assert shown["signature_verified"] is True
    assert all(set(c["halves"]) == {"head"} for c in shown["cuts"])
    assert main(["plan", "show", str(out)]) == 0
    assert "the edge's pack: plan.yaml and the heads, with the whole model" in (
        capsys.readouterr().out
    )
    assert main(["plan", "show", str(signed.plan), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["kind"] == "plan" and full["pack"] is None
    assert all(set(c["halves"]) == {"head", "tail"} for c in full["cuts"])
    # A bad --out is a usage error (exit 2), not a traceback.
    assert main([*argv]) == 2


# --- the local fallback ships by default ----------------------------------------------------


TINY = """
import torch
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
"""


def test_every_plan_ships_the_all_on_edge_option_unless_no_local(tmp_path: Path) -> None:
    """An edge 1000x slower than this machine: the pick runs in the cloud, and the whole model
    still ships as the local fallback; ``--no-local`` ships the pick only."""
    model = tmp_path / "tiny.py"
    model.write_text(TINY)
    argv = ["plan", "--model", f"{model}:build", "--input-shape", "1,3,8,8", "--link", "wifi",
            "--codec", "fp32", "--jpeg-quality", "75", "--edge-slowdown", "1000",
            "--calibration", "1", "--repeats", "1", "--json"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "bare"), "--no-local"]) == 0
    bare = load_plan(tmp_path / "bare")
    assert not any(o.local for o in bare.options), bare.options
    assert set(bare.cuts) == {bare.choice.cut}

    request = PlanRequest(
        model_spec=f"{model}:build",
        input_shape=(1, 3, 8, 8),
        links=(parse_link("wifi"),),
        codecs=(CodecSpec.parse("fp32"),),
        jpeg_qualities=(75,),
        edge_slowdown=1000,
        calibration=1,
        repeats=1,
    )
    write_plan_directory(plan_model(request), tmp_path / "default")
    default = load_plan(tmp_path / "default")
    (local,) = [o for o in default.options if o.local]
    assert local.baseline == "all-on-edge" and default.choice.cut != local.cut
    assert set(default.cuts) == {default.choice.cut, local.cut}


# --- the two runtimes from their packs -------------------------------------------------------


@pytest.mark.timed  # a real agent against a real tail, frames within wall-clock budgets
async def test_edge_and_cloud_run_from_their_packs_and_frames_are_served_remotely(
    packs: dict[str, Path], signed: Signed, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    assert not list(packs["edge"].rglob("tail.pt2")) and not list(packs["cloud"].rglob("head.pt2"))
    server = create_server(
        CloudConfig(listen="127.0.0.1:0", plans=(packs["cloud"],), plan_public_key=signed.public)
    )
    await server.start()
    try:
        _, records = await run_agent(
            packs["edge"],
            cloud=server.address,
            frames=6,
            cut=split_cuts[0],
            codec="fp32",
            policy="fixed",
            plan_public_key=signed.public,
        )
    finally:
        await server.stop()
    assert_each_frame_once(records, 6)
    assert {r["source"] for r in records} == {"remote"}, records
    for r in records:
        assert_same_answer(r, plan)


@pytest.mark.timed  # a real agent, frames within wall-clock budgets
async def test_the_edge_pack_runs_the_whole_model_without_a_cloud(
    packs: dict[str, Path], plan: RunnablePlan
) -> None:
    local = _local_cut(plan)
    _, records = await run_agent(packs["edge"], frames=3, cut=local, codec="none", policy="fixed")
    assert [r["source"] for r in records] == ["local"] * 3, records
    for r in records:
        assert_same_answer(r, plan)


def assert_same_answer(record: dict[str, Any], plan: RunnablePlan) -> None:
    """The frame's result is the whole model's (computed here from the full plan): the same
    classes for a classifier, the same output shapes otherwise."""
    expected = reference(plan, record["seq"])
    result = record["result"]
    assert result["kind"] == expected["kind"], (result, expected)
    key = "top5" if "top5" in expected else "shapes"
    assert result[key] == expected[key], (record["seq"], result, expected)


def test_no_pack_leaves_a_temporary_folder(packs: dict[str, Path]) -> None:
    assert sorted(p.name for p in packs["edge"].parent.iterdir()) == sorted(SIDES)
