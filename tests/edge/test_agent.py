"""The edge agent end to end against a real tail on loopback: every plan kind, the window, the
budget, refusals, TLS, and a tail that goes away."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml

from splitwire.cloud import TlsConfig
from splitwire.edge.config import ClientTls, CloudRefused, EdgeConfigError
from splitwire.partitioner.runtime import RunnablePlan

from ..pki import Pki
from .agent_runs import (
    assert_each_frame_once,
    lines,
    make_agent,
    reference,
    run_agent,
    without_local,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_split_plan_every_frame_remote_and_right(
    start_server, plan_dir: Path, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    cut = split_cuts[0]
    summary, records = await run_agent(
        plan_dir, cloud=server.address, frames=12, cut=cut, codec="fp32", policy="fixed"
    )
    assert_each_frame_once(records, 12)
    assert {r["source"] for r in records} == {"remote"}
    for r in records:
        assert (r["cut"], r["codec"]) == (cut, "fp32")
        expected = reference(plan, r["seq"])
        assert r["result"]["top5"] == expected["top5"], r["seq"]
        assert r["result"]["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
        assert r["bytes_up"] > 0 and r["rtt_ms"] >= 0
        assert r["latency_ms"] >= r["rtt_ms"] + r["cloud_ms"]
    assert summary["by_source"]["remote"] == 12 and summary["bytes_per_frame"] > 0


@pytest.mark.parametrize("codec", ["int8+zstd1", "jpeg90", "jpeg75s444", "frame", "frame+zstd1"])
async def test_all_in_cloud(start_server, plan_dir: Path, plan: RunnablePlan, codec: str) -> None:
    """The input sent whole, quantised, or as the camera's frame (raw or JPEG 4:2:0/4:4:4);
    the cloud runs every layer."""
    server = await start_server()
    _, records = await run_agent(
        plan_dir, cloud=server.address, frames=6, cut="c0000", codec=codec, policy="fixed"
    )
    assert_each_frame_once(records, 6)
    assert {r["source"] for r in records} == {"remote"}
    for r in records:
        assert r["result"]["kind"] == "classification" and len(r["result"]["top5"]) == 5
    if codec == "int8+zstd1":  # quantising the input rarely moves the top class
        top1 = [r["result"]["top5"][0] == reference(plan, r["seq"])["top5"][0] for r in records]
        assert sum(top1) >= 5
    if codec.startswith("frame"):  # the camera's own bytes: the whole model's answer
        for r in records:
            expected = reference(plan, r["seq"])
            assert r["result"]["top5"] == expected["top5"], r["seq"]
            assert r["result"]["probabilities"] == pytest.approx(
                expected["probabilities"], abs=1e-5
            )
            assert r["bytes_up"] >= 64 * 64 * 3 or codec == "frame+zstd1"


async def test_start_up_says_each_phase_and_where_it_starts(
    start_server, plan_dir: Path, plan: RunnablePlan, split_cuts, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per phase (loading the plan, warming up, connecting), then the option the run
    starts on and why, in that order."""
    server = await start_server()
    with caplog.at_level(logging.INFO, logger="splitwire.edge"):
        await run_agent(
            plan_dir, cloud=server.address, frames=2, cut=split_cuts[0], codec="fp32",
            policy="fixed",
        )  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.name == "splitwire.edge"]
    local = next(o for o in plan.options if o.local)
    expected = [
        f"loading the plan {plan_dir}",
        f"warming up {len(plan.options)} options (",
        f"connecting to {server.address}",
        f"starting on {split_cuts[0]} fp32: as --cut/--codec asked; policy fixed, all-on-edge "
        f"{local.cut} is the fallback",
    ]
    at = [next((i for i, m in enumerate(said) if m.startswith(e)), -1) for e in expected]
    assert -1 not in at and at == sorted(at), said


async def test_all_on_edge_needs_no_cloud(plan_dir: Path, plan: RunnablePlan) -> None:
    last = max(plan.plan.cuts)
    summary, records = await run_agent(plan_dir, frames=5, cut=last, codec="none")
    assert_each_frame_once(records, 5)
    assert {(r["source"], r["reason"]) for r in records} == {("local", "all-on-edge")}
    for r in records:
        assert r["result"] == reference(plan, r["seq"])
        assert r["bytes_up"] == 0 and r["rtt_ms"] is None
    assert summary["by_source"]["local"] == 5


class _FixedTimeHead(torch.nn.Module):
    """The whole model, plus a fixed 20 ms of "compute" (a sleep counts as the step's time)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: object) -> object:
        time.sleep(0.020)
        return self.inner(*args)


class _FixedTimePlan(RunnablePlan):
    def head(self, cut_id: str) -> torch.nn.Module:
        return _FixedTimeHead(super().head(cut_id))


async def test_edge_slowdown_makes_each_step_k_times_longer(
    plan_dir: Path, plan: RunnablePlan
) -> None:
    """--edge-slowdown 3: a head step of at least 20 ms is reported (and takes) at least 60 ms,
    the answers are unchanged, and the summary states the emulation."""
    last = max(plan.plan.cuts)
    timed = _FixedTimePlan(plan.plan, plan_dir)
    summary, records = await run_agent(
        plan_dir, frames=3, cut=last, codec="none", plan=timed, edge_slowdown=3.0
    )
    assert_each_frame_once(records, 3)
    for r in records:
        assert r["head_ms"] >= 3 * 20.0, r
        assert r["latency_ms"] >= r["head_ms"]
        assert r["result"] == reference(plan, r["seq"])
    assert summary["edge_slowdown"] == 3.0


def test_an_edge_slowdown_below_one_is_a_config_error(plan_dir: Path) -> None:
    with pytest.raises(EdgeConfigError, match=r"--edge-slowdown 0\.5: expected a factor"):
        make_agent(plan_dir, edge_slowdown=0.5)


async def test_an_edge_only_plan_opens_no_session_even_with_a_cloud(
    plan_dir: Path, plan: RunnablePlan
) -> None:
    """A plan that ships only all-on-edge options has nothing to send: --cloud is ignored
    (before, the hello found no option to name and the run crashed)."""
    edge_only = [o for o in plan.options if o.codec == "none"]
    only = RunnablePlan(dataclasses.replace(plan.plan, options=tuple(edge_only)), plan_dir)
    summary, records = await run_agent(
        plan_dir, frames=4, cloud="127.0.0.1:1", plan=only, cut=edge_only[0].cut, codec="none"
    )
    assert_each_frame_once(records, 4)
    assert {(r["source"], r["reason"]) for r in records} == {("local", "all-on-edge")}
    assert summary["reconnects"] == 0


def test_a_split_without_cloud_is_a_config_error(plan_dir: Path, split_cuts) -> None:
    with pytest.raises(EdgeConfigError, match="--cloud"):
        make_agent(plan_dir, cut=split_cuts[0], codec="fp32")
    with pytest.raises(EdgeConfigError, match="ships no option"):
        make_agent(plan_dir, cloud="127.0.0.1:1", cut=split_cuts[0], codec="jpeg60")


async def test_full_window_replaces_the_oldest_unsent_frame(
    start_server, plan_dir: Path, split_cuts
) -> None:
    """A camera much faster than the pipeline: the window stays bounded, old frames give way."""
    server = await start_server()
    summary, records = await run_agent(
        plan_dir, cloud=server.address, frames=60, fps=1000, window=2,
        cut=split_cuts[1], codec="int8+zstd1", policy="fixed",
    )  # fmt: skip
    assert_each_frame_once(records, 60)
    dropped = [r for r in records if r["source"] == "dropped"]
    assert dropped and {r["reason"] for r in dropped} == {"window_full"}
    assert summary["by_source"]["remote"] >= 2
    # The newest frame always gets in: the last frame captured is answered.
    assert next(r for r in records if r["seq"] == 60)["source"] == "remote"


async def test_budget_turns_late_frames_stale(start_server, plan_dir: Path, split_cuts) -> None:
    server = await start_server()
    _, records = await run_agent(
        plan_dir, cloud=server.address, frames=8, budget_ms=0.5, cut=split_cuts[0],
        codec="fp32", policy="fixed",
    )  # fmt: skip
    assert_each_frame_once(records, 8)
    assert {(r["source"], r["reason"]) for r in records} == {("dropped", "stale")}
    assert all(r["latency_ms"] < 1000 for r in records)


async def test_wrong_token_is_refused_for_good(
    start_server, plan_dir: Path, tmp_path: Path, split_cuts
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("right-token\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-token\n")
    server = await start_server(token_file=tokens)
    agent, out = make_agent(
        plan_dir, cloud=server.address, frames=5, token_file=wrong, cut=split_cuts[0],
        codec="fp32",
    )  # fmt: skip
    async with asyncio.timeout(10):
        with pytest.raises(CloudRefused, match="UNAUTHENTICATED") as refused:
            await agent.run()
    assert refused.value.exit_code == 3
    assert lines(out) == []  # refused before the first frame
    right = tmp_path / "right"
    right.write_text("# a comment line first\nright-token\n")
    _, records = await run_agent(
        plan_dir, cloud=server.address, frames=3, token_file=right, cut=split_cuts[0],
        codec="fp32",
    )  # fmt: skip
    assert {r["source"] for r in records} == {"remote"}


async def test_plan_mismatch_is_refused(start_server, plan_dir: Path, tmp_path: Path) -> None:
    """A tail serving another model: the agent stops instead of retrying forever."""
    other = tmp_path / "other"
    shutil.copytree(plan_dir, other)
    data = yaml.safe_load((other / "plan.yaml").read_text())
    data["model"]["hash"] = "0" * 64
    (other / "plan.yaml").write_text(yaml.safe_dump(data))
    server = await start_server()
    agent, _ = make_agent(other, cloud=server.address, frames=3, cut="c0000", codec="fp32")
    async with asyncio.timeout(10):
        with pytest.raises(CloudRefused, match="PLAN_MISMATCH"):
            await agent.run()


async def test_tls_and_mutual_tls(
    start_server, plan_dir: Path, plan: RunnablePlan, pki: Pki, split_cuts
) -> None:
    options = {"frames": 3, "cut": split_cuts[0], "codec": "fp32", "policy": "fixed"}
    server = await start_server(tls=TlsConfig(pki.server_cert, pki.server_key))
    _, records = await run_agent(plan_dir, cloud=server.address, tls=ClientTls(pki.ca), **options)
    assert {r["source"] for r in records} == {"remote"}
    mutual = await start_server(tls=TlsConfig(pki.server_cert, pki.server_key, client_ca=pki.ca))
    _, records = await run_agent(
        plan_dir, cloud=mutual.address,
        tls=ClientTls(pki.ca, pki.client_cert, pki.client_key), **options,
    )  # fmt: skip
    assert {r["source"] for r in records} == {"remote"}
    # Without a client certificate the handshake fails: the agent keeps retrying (it is not a
    # refusal the server explained), so every frame is answered on the edge, and it exits...
    _, records = await run_agent(
        plan_dir, cloud=mutual.address, tls=ClientTls(pki.ca), budget_ms=2000, **options
    )
    assert {(r["source"], r["reason"]) for r in records} == {("local", "disconnected")}
    # ... or, with no local model in the plan, dropped as disconnected.
    _, records = await run_agent(
        plan_dir, cloud=mutual.address, tls=ClientTls(pki.ca), budget_ms=200,
        plan=without_local(plan), **options,
    )  # fmt: skip
    assert {(r["source"], r["reason"]) for r in records} == {("dropped", "disconnected")}


async def test_tail_restarted_gracefully_mid_stream(
    start_server, plan_dir: Path, split_cuts
) -> None:
    """The tail shuts down (SessionEnd UNAVAILABLE) with frames in flight, then comes back on
    the same port: nothing is lost, and frames after the restart are remote again."""
    port = _free_port()
    server = await start_server(listen=f"127.0.0.1:{port}", grace_s=2.0)
    agent, out = make_agent(
        plan_dir, cloud=server.address, frames=120, fps=10, budget_ms=1500,
        cut=split_cuts[0], codec="int8+zstd1", policy="fixed",
    )  # fmt: skip
    run = asyncio.create_task(agent.run())
    async with asyncio.timeout(20):
        while agent.stats.by_source["remote"] < 15:
            await asyncio.sleep(0.02)
        await server.stop()
        stopped_at = agent.stats.frames
        await asyncio.sleep(0.5)
        await start_server(listen=f"127.0.0.1:{port}", grace_s=2.0)
        summary = await run
    records = lines(out)
    assert_each_frame_once(records, 120)
    # The server asks for a second before reconnecting; after that, frames are remote again
    # (on a loaded machine the odd one gives way to a newer one: window_full). 10 fps leaves
    # the pipeline (about 30 ms a frame here) room even when the machine is busy.
    late = [r for r in records if r["seq"] > 80]
    assert sum(r["source"] == "remote" for r in late) >= 0.8 * len(late)
    assert {r["reason"] for r in late} <= {None, "window_full"}
    assert any(r["reason"] == "disconnected" for r in records if r["seq"] > stopped_at)
    assert summary["reconnects"] >= 1
    dropped = {r["reason"] for r in records if r["source"] == "dropped"}
    assert dropped <= {"disconnected", "window_full"}
