"""Running a real agent in a test: its frame lines parsed, the references it is checked with."""

from __future__ import annotations

import dataclasses
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from splitwire.edge.agent import EdgeAgent
from splitwire.edge.config import EdgeConfig
from splitwire.edge.results import summarise_outputs
from splitwire.edge.sources import SyntheticSource
from splitwire.partitioner.runtime import RunnablePlan


def make_agent(plan_dir: Path, **fields: Any) -> tuple[EdgeAgent, io.StringIO]:
    """An agent on the synthetic source, its frame lines going to the returned buffer."""
    out = io.StringIO()
    monitor = fields.pop("monitor", None)
    plan = fields.pop("plan", None)
    fields.setdefault("edge_id", "test-edge")
    fields.setdefault("reconnect_max_s", 0.5)
    agent = EdgeAgent(EdgeConfig(plan=plan_dir, **fields), plan=plan, output=out, monitor=monitor)
    return agent, out


def without_local(plan: RunnablePlan) -> RunnablePlan:
    """``plan`` without its all-on-edge option (a plan made with ``splitwire plan --no-local``):
    the agent has no local model to answer a frame the cloud does not."""
    remote = tuple(o for o in plan.options if not o.local)
    return RunnablePlan(dataclasses.replace(plan.plan, options=remote), plan.directory)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    """The frame lines written so far."""
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def run_agent(plan_dir: Path, **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run an agent to the end; its summary and frame lines."""
    agent, out = make_agent(plan_dir, **fields)
    summary = await agent.run()
    return summary, lines(out)


def assert_each_frame_once(records: list[dict[str, Any]], frames: int) -> None:
    """Every seq 1..frames has exactly one line, and every non-remote line says why."""
    counts = Counter(r["seq"] for r in records)
    assert sorted(counts) == list(range(1, frames + 1)), sorted(counts)
    assert set(counts.values()) == {1}, [s for s, n in counts.items() if n > 1]
    for r in records:
        assert (r["reason"] is None) == (r["source"] == "remote"), r


def reference(plan: RunnablePlan, seq: int, *, seed: int = 0) -> dict[str, Any]:
    """The whole model's answer for frame ``seq`` of the synthetic source, run locally."""
    _, channels, height, width = plan.camera_frame().shape
    source = SyntheticSource(channels=channels, height=height, width=width, seed=seed)
    pixels = source.frame(seq - 1).unsqueeze(0)
    last = max(plan.plan.cuts)
    with torch.inference_mode():
        out = plan.head(last)(plan.preprocess(pixels))
    outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
    return summarise_outputs(outputs, task=plan.plan.task)
