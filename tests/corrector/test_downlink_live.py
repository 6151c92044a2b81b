"""What travels on the downlink is what is priced: a real plan of the corrector's heavy model
(exported halves, its result codecs in plan.yaml), a real tail on loopback over real gRPC, and
the agent with the corrector. A tail that answers outside the plan is refused with the reason
and every frame is still answered on the edge."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from splitwire.cloud import session as cloud_session
from splitwire.corrector.checkpoint import load_checkpoint
from splitwire.corrector.evaluation import Regime, evaluate
from splitwire.corrector.training import TrainResult
from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.plan_file import load_plan
from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory
from splitwire.partitioner.show import plan_summary
from splitwire.protocol import CodecSpec

from ..edge.agent_runs import run_agent

pytestmark = pytest.mark.timed
FRAMES = 30
SOURCE = "video:seed=2,speed=2-3"


@pytest.fixture(scope="module")
def heavy_plan(smoke: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A plan of the smoke corrector's heavy model with its weights: one split shipped."""
    heavy = load_checkpoint(smoke.directory).meta["heavy"]
    options = "&".join(f"{k}={v}" for k, v in heavy["options"].items())
    request = PlanRequest(
        model_spec=f"zoo:texture_unet?{options}@{smoke.directory / 'heavy.pt'}",
        input_shape=(1, 3, 64, 64),
        links=(parse_link("wifi"),),
        codecs=(CodecSpec.parse("int8+zstd1"),),
        calibration=2,
        repeats=2,
    )
    outcome = plan_model(request)
    split = outcome.cuts[len(outcome.cuts) // 4].id
    request = dataclasses.replace(request, ship=(split,))
    out = tmp_path_factory.mktemp("plan") / "texture_unet"
    write_plan_directory(dataclasses.replace(outcome, request=request), out)
    return out, split


def test_the_plan_declares_how_each_output_travels(heavy_plan: tuple[Path, str]) -> None:
    plan_dir, split = heavy_plan
    plan = load_plan(plan_dir / "plan.yaml")
    outputs = plan.cut(split).outputs
    assert [str(o.result_codec) for o in outputs] == ["classes+zstd3", "int8+zstd1"]
    shown = plan_summary(plan, plan_dir, verified=False)
    cut = next(c for c in shown["cuts"] if c["id"] == split)
    assert [o["result_codec"] for o in cut["outputs"]] == ["classes+zstd3", "int8+zstd1"]
    assert all("result_codec" not in t for t in cut["crossing"])  # the default is not written
    # Checked at plan load: a codec an output cannot travel with fails there, saying which.
    text = yaml.safe_load((plan_dir / "plan.yaml").read_text())
    text["cuts"][split]["outputs"][1]["result_codec"] = "jpeg75"
    broken = plan_dir.parent / "broken.yaml"
    broken.write_text(yaml.safe_dump(text))
    with pytest.raises(PlanError, match=r"outputs\[1\]\.result_codec: .*not a camera frame"):
        load_plan(broken)


def _record_sent(monkeypatch: pytest.MonkeyPatch, corrupt: Any = None) -> dict[int, int]:
    """Wrap the cloud's result encoder: the bytes each frame's result messages take (and,
    with ``corrupt``, a hostile tail's change to its class map before encoding)."""
    sent: dict[int, int] = {}
    real = cloud_session.encode_answer

    def encode_answer(frame: Any, route: Any, outputs: Sequence[torch.Tensor], *args: Any) -> Any:
        if corrupt is not None:
            outputs = corrupt(route, outputs)
        messages, ns = real(frame, route, outputs, *args)
        sent[frame.seq] = sum(m.result.ByteSize() for m in messages)
        return messages, ns

    monkeypatch.setattr(cloud_session, "encode_answer", encode_answer)
    return sent


async def test_the_bytes_that_arrive_are_those_recorded_and_priced(
    heavy_plan: tuple[Path, str], smoke: TrainResult, start_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    plan_dir, split = heavy_plan
    sent = _record_sent(monkeypatch)
    server = await start_server(plans=(plan_dir,))
    summary, records = await run_agent(
        plan_dir, cloud=server.address, cut=split, codec="int8+zstd1", policy="fixed",
        source=SOURCE, frames=FRAMES, fps=15, corrector=smoke.directory,
    )  # fmt: skip
    assert sorted(r["seq"] for r in records) == list(range(1, FRAMES + 1))
    corrector = summary["corrector"]
    # Every answer the tail sent arrived and was taken, at the size the cloud sent it.
    assert corrector["answers"] == len(sent) >= FRAMES - 2 and corrector["refused"] == 0
    assert corrector["downlink_bytes_mean"] == round(sum(sent.values()) / len(sent), 1)
    fused = [r for r in records if r["source"] == "fused"]
    assert fused and {r["downlink_bytes"] for r in fused} <= set(sent.values())
    # Against ~90 kB of fp32 logits and features before; within a few % of the evaluation's
    # price for the same checkpoint and motion (other clips; ids and timings in the header).
    priced = evaluate(
        load_checkpoint(smoke.directory), regimes=(Regime("2-3", (2.0, 3.0)),), max_delay=0,
        clips=4,
    )[0].downlink_bytes  # fmt: skip
    assert corrector["downlink_bytes_mean"] == pytest.approx(priced, rel=0.05)
    assert corrector["downlink_bytes_mean"] < 4000


def _out_of_range(route: Any, outputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    logits = torch.zeros_like(outputs[0])
    big = torch.zeros(logits.shape[0], 8, *logits.shape[2:])
    big[:, 7] = 1.0  # every pixel class 7, of five (the route's codec takes the arg-max)
    return (big, outputs[1])


def _wrong_shape(route: Any, outputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    return (outputs[0][..., :32, :32].contiguous(), outputs[1])


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [(_out_of_range, r"class 7 in the class map; expected classes 0\.\.4"),
     (_wrong_shape, r"expected \(1, 64, 64\) uint8, got \(1, 32, 32\) 'uint8'")],
    ids=["class-out-of-range", "wrong-shape"],
)  # fmt: skip
async def test_a_tail_answering_outside_the_plan_is_refused_and_frames_are_answered(
    heavy_plan: tuple[Path, str], smoke: TrainResult, start_server: Any,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, corrupt: Any,
    reason: str,
) -> None:  # fmt: skip
    plan_dir, split = heavy_plan
    sent = _record_sent(monkeypatch, corrupt)
    server = await start_server(plans=(plan_dir,))
    with caplog.at_level(logging.INFO):
        summary, records = await run_agent(
            plan_dir, cloud=server.address, cut=split, codec="int8+zstd1", policy="fixed",
            source=SOURCE, frames=20, fps=20, corrector=smoke.directory,
        )  # fmt: skip
    assert sent, "the tail never answered"
    # Every frame answered once, on the edge: no remote answer was ever taken.
    assert sorted(r["seq"] for r in records) == list(range(1, 21))
    assert {(r["source"], r["reason"]) for r in records} == {("local", "no_features")}
    assert summary["corrector"]["answers"] == 0
    # The refusal says which tensor, what was expected and what came, on one line.
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(re.search(reason, m) and "\n" not in m for m in refusals), refusals
