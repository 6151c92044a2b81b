"""The agent switching cut and codec when the link changes, against staying on the first plan.

    splitwire bench adaptive --model zoo:resnet18 --trace drop.yaml --edge-slowdown 4

The model is planned for each state of the trace (so the plan ships each state's pick), then
the real agent runs twice against a ``splitwire cloud`` child process behind the link emulator
replaying the trace from the agent's start, frames paced at ``fps``: once with ``--policy
auto`` and once ``fixed``, both starting on the first state's pick. Reported: each run's p50 /
p95 latency before and after the trace's first change (by capture time), the options the
auto run used after it and when it first left the initial one, and the target: p95 after the
change, fixed / auto ≥ 1.5. The edge emulation (``edge_slowdown``) is the agent's
``--edge-slowdown``, as in :mod:`splitwire.benchmarks.e2e`.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from splitwire.benchmarks.e2e import make_plan
from splitwire.benchmarks.processes import tail_process
from splitwire.errors import SplitwireError
from splitwire.netem.emulator import LinkEmulator
from splitwire.partitioner.link import LinkTrace, load_trace
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.stats import percentile

P95_TARGET = 1.5


async def _run(
    plan: RunnablePlan, address: str, trace: LinkTrace, start: PlanOption, *, policy: str,
    fps: float, duration_s: float, hold_s: float, slowdown: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfig

    out = io.StringIO()
    async with LinkEmulator(upstream=address, link=trace, seed=0) as em:
        wall0 = time.time_ns()
        config = EdgeConfig(
            plan=plan.directory, cloud=em.address, frames=max(2, round(fps * duration_s)),
            fps=fps, cut=start.cut, codec=start.codec, policy=policy, threads=1,
            budget_ms=60_000, hold_s=hold_s, edge_id=f"bench-adaptive-{policy}",
            edge_slowdown=slowdown,
        )  # fmt: skip
        summary = await EdgeAgent(config, plan=plan, output=out).run()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    for record in records:
        record["trace_s"] = (record["capture_ts_ns"] - wall0) / 1e9
    return summary, records


async def _warm_up(plan: RunnablePlan, address: str, start: PlanOption, frames: int = 8) -> None:
    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfig

    config = EdgeConfig(
        plan=plan.directory, cloud=address, frames=frames, cut=start.cut, codec=start.codec,
        policy="fixed", threads=1, edge_id="bench-adaptive-warm-up",
    )  # fmt: skip
    await EdgeAgent(config, plan=plan).run()


def _figures(records: list[dict[str, Any]], change_s: float, start: PlanOption) -> dict[str, Any]:
    answered = [r for r in records if r["source"] in ("remote", "local")]
    before = [r["latency_ms"] for r in answered if r["trace_s"] < change_s]
    after = [r["latency_ms"] for r in answered if r["trace_s"] >= change_s]
    moved = [r for r in answered if (r["cut"], r["codec"]) != (start.cut, start.codec)]
    used = Counter(f"{r['cut']} {r['codec']}" for r in answered if r["trace_s"] >= change_s)
    return {
        "p50_before_ms": round(percentile(before, 50), 2),
        "p95_before_ms": round(percentile(before, 95), 2),
        "p50_after_ms": round(percentile(after, 50), 2),
        "p95_after_ms": round(percentile(after, 95), 2),
        "frames": len(records), "answered": len(answered),
        "first_switch_s": round(moved[0]["trace_s"], 2) if moved else None,
        "options_after_change": dict(used.most_common()),
    }  # fmt: skip


def run_adaptive(
    *, model: str, input_shape: tuple[int, ...], trace_path: Path, edge_slowdown: float = 1.0,
    fps: float = 10.0, duration_s: float | None = None, hold_s: float = 1.0,
    plan_dir: Path | None = None, progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:  # fmt: skip
    """Both runs over the trace (see the module docstring); returns their figures and the check.

    Raises:
        SplitwireError: a trace without a change, or a plan without the first state's pick.
    """
    trace = load_trace(trace_path)
    changes = [t for t, _ in trace.points[1:]] + [o.start_s for o in trace.outages]
    if not changes:
        raise SplitwireError(f"trace {str(trace_path)!r} never changes: nothing to adapt to")
    change_s = min(changes)
    duration = duration_s or sum(trace.durations_s())
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="splitwire-adaptive-") as tmp:
        if plan_dir is None:
            progress(f"planning {model} for the trace's {len(trace.points)} states")
            plan_dir = Path(tmp) / "plan"
            make_plan(model, input_shape, trace.states(), slowdown=edge_slowdown,
                      directory=plan_dir, cuts=())  # fmt: skip
        plan = open_plan(plan_dir)
        first = str(trace.points[0][1])
        choice = next((c for c in plan.plan.links if c.link == first), plan.plan.choice)
        start = plan.plan.option(choice.cut, choice.codec)
        runs = {}
        with tail_process(plan_dir, threads=1) as (address, _):
            # The tail's first frames at a cut are slow (lazy init): neither run should pay them.
            progress(f"warm-up: {start.cut} {start.codec} on loopback")
            asyncio.run(_warm_up(plan, address, start))
            for policy in ("auto", "fixed"):
                progress(f"{policy}: from {start.cut} {start.codec}, {duration:g} s at {fps:g} fps")
                summary, records = asyncio.run(_run(
                    plan, address, trace, start, policy=policy, fps=fps,
                    duration_s=duration, hold_s=hold_s, slowdown=edge_slowdown,
                ))  # fmt: skip
                runs[policy] = _figures(records, change_s, start) | {
                    "switches": summary.get("switches", [])
                }
    auto, fixed = runs["auto"]["p95_after_ms"], runs["fixed"]["p95_after_ms"]
    ratio = fixed / auto if auto else float("nan")
    return {
        "model": model, "trace": str(trace_path),
        "states": [{"t": t, "link": str(link)} for t, link in trace.points],
        "outages": [[o.start_s, o.end_s] for o in trace.outages], "change_s": change_s,
        "start": {"cut": start.cut, "codec": start.codec}, "fps": fps, "hold_s": hold_s,
        "edge": {"edge_slowdown": edge_slowdown, "emulated": edge_slowdown != 1.0},
        "runs": runs,
        "check": {"check": "p95 after the change, fixed / auto", "ratio": round(ratio, 3),
                  "target": f"≥ {P95_TARGET:g}", "met": bool(ratio >= P95_TARGET)},
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """The two runs and the check as text."""
    edge = result["edge"]
    out = [
        f"{result['model']}, trace {result['trace']} (first change at {result['change_s']:g} s)"
        f", {result['fps']:g} fps, start {result['start']['cut']} {result['start']['codec']}; "
        + (f"edge EMULATED {edge['edge_slowdown']:g}x slower" if edge["emulated"] else
           "edge: this machine")
    ]  # fmt: skip
    for state in result["states"]:
        out.append(f"  t={state['t']:g}s {state['link']}")
    for policy, run in result["runs"].items():
        out.append(
            f"{policy:<6} before: p50 {run['p50_before_ms']:.1f} p95 {run['p95_before_ms']:.1f}"
            f" ms; after: p50 {run['p50_after_ms']:.1f} p95 {run['p95_after_ms']:.1f} ms; "
            f"first left the start at {run['first_switch_s']} s; after the change ran "
            f"{run['options_after_change']}"
        )
        for switch in run["switches"]:
            out.append(f"       switch {switch['from']} -> {switch['to']}: {switch['reason']}")
    c = result["check"]
    out.append(f"{'PASS' if c['met'] else 'MISS'} {c['check']}: {c['ratio']} (target "
               f"{c['target']})")  # fmt: skip
    return "\n".join(out)
