"""The agent running the delay corrector: a smoke-trained corrector, a real plan of its heavy
model (exported halves), a real tail on loopback behind the link emulator (a fixed delay)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import pytest
import torch

from splitwire.corrector import load_corrector
from splitwire.corrector.payload import transmit
from splitwire.corrector.selection import one_hot_logits
from splitwire.corrector.training import TrainConfig, train
from splitwire.corrector.video import scene
from splitwire.edge.config import EdgeConfigError
from splitwire.edge.correction import FrameCorrector
from splitwire.netem import LinkEmulator
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory
from splitwire.partitioner.runtime import open_plan
from splitwire.protocol import CodecSpec

from .agent_runs import lines, make_agent, run_agent

SMOKE = TrainConfig(
    seed=5,
    tau_max=3,
    heavy_steps=30,
    fusion_steps=30,
    heavy_batch=4,
    fusion_batch=4,
    width=8,
    heavy_channels=4,
    fusions=("add",),
    validation_clips=2,
    min_heavy_miou=0.0,
    min_fused_miou=0.0,
    extensions=0,
)
DELAY_MS = 40.0  # one way: a round trip of at least 80 ms


@pytest.fixture(scope="module")
def corrector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corrector") / "ckpt"
    train(SMOKE, out)
    return out


@pytest.fixture(scope="module")
def heavy_plan(corrector_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A plan of the corrector's heavy model with its trained weights: one split shipped."""
    options = "num_classes=5&base_channels=4&downlink_channels=8"
    request = PlanRequest(
        model_spec=f"zoo:texture_unet?{options}@{corrector_dir / 'heavy.pt'}",
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens here once the socket closes


def _once(records: list[dict], frames: int) -> None:
    assert sorted(r["seq"] for r in records) == list(range(1, frames + 1))


@pytest.mark.slow
async def test_fused_outputs_come_before_their_own_answer(
    heavy_plan: tuple[Path, str], corrector_dir: Path, start_server
) -> None:
    """Behind a real 2 x 40 ms delay, each frame is answered at once: fused with an older
    frame's features (delay measured in frames), never waiting a round trip."""
    plan_dir, split = heavy_plan
    server = await start_server(plans=(plan_dir,))
    link = parse_link(f"bw=10gbit,rtt={2 * DELAY_MS:g}ms")
    async with LinkEmulator(upstream=server.address, link=link) as line:
        summary, records = await run_agent(
            plan_dir, cloud=line.address, cut=split, codec="int8+zstd1", policy="fixed",
            source="video:seed=2,speed=2-3", frames=45, fps=15, corrector=corrector_dir,
        )  # fmt: skip
    _once(records, 45)
    fused = [r for r in records if r["source"] == "fused"]
    assert len(fused) >= 30, summary["by_source"]
    # A loaded machine may drop a frame the camera outran (window_full), never for another reason.
    assert {r["source"] for r in records} <= {"fused", "local", "dropped"}
    assert {r["reason"] for r in records if r["source"] == "dropped"} <= {"window_full"}
    assert {r["reason"] for r in records if r["source"] == "local"} <= {"no_features"}
    assert records[0]["source"] == "local"  # nothing has come back yet
    rtt = summary["rtt_p50_ms"]
    assert rtt is not None and rtt >= 2 * DELAY_MS
    # The answer for frame t takes a round trip; its output went out well before.
    assert max(r["latency_ms"] for r in fused) < rtt
    assert summary["answer_lag_min_ms"] >= 2 * DELAY_MS
    assert all(1 <= r["delay_frames"] <= SMOKE.tau_max for r in fused)
    assert all(r["bytes_up"] > 0 for r in fused)
    # The answer each used, as it arrived: the class map and the int8 features, ~2 kB.
    assert all(1000 < r["downlink_bytes"] < 4000 for r in fused)
    assert summary["answers_after_output"] >= 40
    seg = summary["segmentation"]
    assert set(seg["miou"]) >= {"fused", "local_only", "remote_only"}
    assert seg["frames"]["local_only"] == 45
    assert seg["delay_frames"]["median"] >= 1


async def test_without_a_tail_every_frame_is_local(
    heavy_plan: tuple[Path, str], corrector_dir: Path
) -> None:
    plan_dir, split = heavy_plan
    summary, records = await run_agent(
        plan_dir, cloud=f"127.0.0.1:{_free_port()}", cut=split, codec="int8+zstd1",
        policy="fixed", source="video:seed=1", frames=12, corrector=corrector_dir,
    )  # fmt: skip
    _once(records, 12)
    assert {(r["source"], r["reason"]) for r in records} == {("local", "no_features")}
    assert summary["segmentation"]["frames"]["local"] == 12


@pytest.mark.slow
async def test_when_the_tail_goes_away_features_age_out(
    heavy_plan: tuple[Path, str], corrector_dir: Path, start_server
) -> None:
    """Fused while the tail answers; once it is gone the newest answer ages past tau_max and
    is still used while the edge measures the same scene (features fused with the delay
    clamped, the class map where nothing moved); another scene gets the local model's."""
    plan_dir, split = heavy_plan
    server = await start_server(plans=(plan_dir,), grace_s=0.0)
    agent, out = make_agent(
        plan_dir, cloud=server.address, cut=split, codec="int8+zstd1", policy="fixed",
        source="video:seed=4", frames=60, fps=20, corrector=corrector_dir, budget_ms=500,
    )  # fmt: skip
    run = asyncio.create_task(agent.run())
    async with asyncio.timeout(60):
        while agent.stats.by_source["fused"] < 10:
            await asyncio.sleep(0.02)
        await server.stop()
        stopped_at = agent.stats.frames
        await run
    records = lines(out)
    _once(records, 60)
    late = [r for r in records if r["seq"] > stopped_at + SMOKE.tau_max + 4]
    assert late and {(r["source"], r["reason"]) for r in late} <= {
        ("local", "stale_features"),
        ("fused", None),
    }
    assert all(r["delay_frames"] > SMOKE.tau_max for r in late)
    assert any(r["source"] == "fused" for r in records if r["seq"] <= stopped_at)


async def test_a_plan_of_another_model_is_refused(plan_dir: Path, corrector_dir: Path) -> None:
    with pytest.raises(EdgeConfigError, match="downlink"):
        make_agent(plan_dir, cloud="127.0.0.1:1", source="synthetic", corrector=corrector_dir)


def test_newest_answer_wins_and_delays_count_frames(
    heavy_plan: tuple[Path, str], corrector_dir: Path
) -> None:
    plan_dir, split = heavy_plan
    corrector = load_corrector(corrector_dir)
    outputs = open_plan(plan_dir).outputs(split)
    paced = FrameCorrector(corrector, outputs=outputs, frame_interval_ns=50_000_000)
    classes = torch.zeros(1, 64, 64, dtype=torch.uint8)
    downlink = torch.zeros(1, *corrector.downlink_shape)
    paced.remember(7, 700_000_000, (classes, downlink), wire_bytes=2000)
    paced.remember(5, 500_000_000, (classes, downlink), wire_bytes=2000)  # late: older, ignored
    newest = paced.newest
    assert newest is not None and newest.seq == 7
    assert paced.delay_frames(9, 840_000_000, newest) == 3  # 140 ms at 20 fps, rounded
    unpaced = FrameCorrector(corrector, outputs=outputs, frame_interval_ns=None)
    assert unpaced.delay_frames(12, 0, newest) == 5
    frame = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    fresh = paced.correct(frame, seq=9, captured_ns=840_000_000, scoring=True)
    assert (fresh.source, fresh.delay_frames, fresh.remote_seq) == ("fused", 3, 7)
    stale = paced.correct(frame, seq=20, captured_ns=1_700_000_000)
    assert (stale.source, stale.reason) == ("local", "stale_features")
    # Beyond tau_max the output is the local model's alone, bit for bit.
    local = corrector.fuse(corrector.local_features(frame), None, 0)
    assert torch.equal(stale.logits, local)


def test_a_still_scene_keeps_the_remote_answer_beyond_tau_max(
    heavy_plan: tuple[Path, str], corrector_dir: Path
) -> None:
    """The agent's side of the drop rule: the thumbnail of the frame it sent meets the tail's
    answer; on a still scene the class map is shown long after tau_max."""
    plan_dir, split = heavy_plan
    corrector = load_corrector(corrector_dir)
    fc = FrameCorrector(
        corrector, outputs=open_plan(plan_dir).outputs(split), frame_interval_ns=None
    )
    clip = scene((9, 5), speed=(0.0, 0.0)).render(range(0, 40, 13))  # frames 0, 13, 26, 39
    fc.correct(clip.frames[:1], seq=1, captured_ns=0)  # sent: its thumbnail is kept
    logits, downlink = corrector.remote(clip.frames[:1])
    sent = transmit(logits, downlink)  # what the tail sends and the edge decodes
    fc.remember(1, 0, (sent.classes.to(torch.uint8), sent.downlink), wire_bytes=sent.wire_bytes)
    answer = fc.newest
    assert answer is not None and answer.thumbnail is not None
    assert answer.downlink_bytes == sent.wire_bytes
    for seq, frame in zip((14, 27, 40), clip.frames[1:], strict=True):
        out = fc.correct(frame[None], seq=seq, captured_ns=0)
        assert (out.source, out.delay_frames, out.kept_share) == ("fused", seq - 1, 1.0)
        assert torch.equal(out.logits, one_hot_logits(logits.argmax(1), 5))
        assert out.downlink_bytes == answer.downlink_bytes


def test_unusable_answers_from_the_tail_are_refused(
    heavy_plan: tuple[Path, str], corrector_dir: Path
) -> None:
    plan_dir, split = heavy_plan
    corrector = load_corrector(corrector_dir)
    fc = FrameCorrector(
        corrector, outputs=open_plan(plan_dir).outputs(split), frame_interval_ns=None
    )
    downlink = torch.zeros(1, *corrector.downlink_shape)
    classes = torch.zeros(1, 64, 64, dtype=torch.uint8)
    fc.remember(1, 1, (classes, downlink), wire_bytes=2000)
    fc.remember(2, 2, (classes, downlink * float("nan")), wire_bytes=2000)
    fc.remember(3, 3, (torch.zeros(1, 32, 32, dtype=torch.uint8), downlink), wire_bytes=2000)
    fc.remember(4, 4, (classes, downlink * float("inf")), wire_bytes=2000)
    fc.remember(5, 5, (torch.zeros(1, 64, 64), downlink), wire_bytes=2000)  # logits-like floats
    fc.remember(6, 6, (classes, torch.zeros(1, 4, 16, 16)), wire_bytes=2000)
    assert fc.newest is not None and fc.newest.seq == 1 and fc.refused == 5
    assert fc.summary() | {"fusion": None} == {
        "fusion": None, "tau_max": SMOKE.tau_max, "answers": 1,
        "downlink_bytes_mean": 2000.0, "refused": 5,
    }  # fmt: skip
    # Thumbnails of frames never answered are bounded by the history.
    small = FrameCorrector(corrector, outputs=open_plan(plan_dir).outputs(split),
                           frame_interval_ns=None, history=4)  # fmt: skip
    frame = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    for seq in range(10):
        small.correct(frame, seq=seq, captured_ns=seq)
    assert list(small._thumbnails) == [6, 7, 8, 9]
