"""The delay corrector in the running agent, against its offline evaluation.

    splitwire bench corrector --ckpt out/corrector --plan out/corrector-plan --rtt-ms 100

A ``splitwire cloud`` child process serves the plan of the corrector's heavy model; the real
agent runs the split behind the link emulator (a fixed delay adding the round trip), reads the
corrector's labelled video task at camera pace, and answers every frame at once (local model
fused with the newest remote features). It scores its own outputs (fused, and on the same
frames the local model alone and the stale remote answer alone). The offline evaluation
(:func:`splitwire.corrector.evaluate`) then scores the same checkpoint on held-out clips of the
same motion at the delays the agent measured, weighted by how often it measured each: the two
must agree within 2 mIoU points. It also reports how long after each fused output that frame's
own remote answer arrived (all positive: no output waited for its answer).

In the same run, the offline evaluation of every regime (static, low, high and the unseen
5–6 px/frame, delays 0..16, beyond tau_max included) states the delay corrector issue's
targets, each with its measured figure and its reference from that evaluation: fused ≥
max(local, remote) − 0.5 points at every delay; fused at delay 0 within 1 point of the heavy
model, with the downlink bytes per frame that costs and their time on the preset links; at
3 frames of high motion, fused keeps ≥ 85 % of its delay-0 figure and beats the stronger
baseline by ≥ 10 points. What the agent's remote answers took on the downlink, as they arrived
(the plan's result codecs: the class map and the int8 feature map), is checked against that
priced figure: within :data:`DOWNLINK_AGREEMENT`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from splitwire.benchmarks.processes import tail_process
from splitwire.netem.emulator import LinkEmulator

__all__ = ["AGREEMENT_POINTS", "run_live", "table"]

# The agent's mIoU and the offline one at the same delays may differ by this much (0..1 scale).
AGREEMENT_POINTS = 0.02
# The targets (mIoU on a 0..1 scale).
MARGIN_TOLERANCE = 0.005  # fused >= max(local, remote) - 0.5 points
HEAVY_TOLERANCE = 0.01  # fused at delay 0 within 1 point of the heavy model
KEEP_SHARE = 0.85  # high motion, 3 frames: >= 85 % of the delay-0 figure
BEAT_POINTS = 0.10  # ... and >= 10 points over the stronger baseline
TARGET_MAX_DELAY = 16
# The bytes a live answer took may differ from the offline price by this share: other frames
# (the same motion, other clips), and the frame's ids and the cloud's timings in its header.
DOWNLINK_AGREEMENT = 0.05
# Links the downlink bytes are timed on (partitioner presets).
PRICE_LINKS = ("lte", "3g", "wifi")


def run_live(
    *,
    ckpt: Path,
    plan_dir: Path,
    cut: str,
    codec: str,
    rtt_ms: float,
    fps: float,
    frames: int,
    speed: tuple[float, float],
    scene_frames: int,
    seed: int,
    clips: int,
) -> dict[str, Any]:
    """Run the agent with the corrector behind the delay line, then the offline evaluation.

    Returns:
        ``{"setup", "agent", "offline", "checks"}`` (see :func:`table`).
    """
    from splitwire.corrector import load_checkpoint
    from splitwire.corrector.evaluation import Regime, evaluate

    source = f"video:seed={seed},speed={speed[0]:g}-{speed[1]:g},scene={scene_frames}"
    with tail_process(plan_dir) as (address, _pid):
        summary, records = asyncio.run(
            _agent(ckpt, plan_dir, address, cut=cut, codec=codec, rtt_ms=rtt_ms, fps=fps,
                   frames=frames, source=source)
        )  # fmt: skip
    fused_delays = Counter(r["delay_frames"] for r in records if r["source"] == "fused")
    all_delays = Counter(r["delay_frames"] for r in records if r["delay_frames"] is not None)
    checkpoint = load_checkpoint(ckpt)
    max_delay = max(all_delays, default=0)
    offline = evaluate(
        checkpoint,
        regimes=(Regime(f"{speed[0]:g}-{speed[1]:g}", speed),),
        max_delay=max_delay,
        clips=clips,
    )
    by_delay = {r.delay_frames: r for r in offline}
    weighted = {
        "fused": _weighted(fused_delays, {d: r.fused_miou for d, r in by_delay.items()}),
        "local_only": _weighted(all_delays, {d: r.local_miou for d, r in by_delay.items()}),
        "remote_only": _weighted(all_delays, {d: r.remote_miou for d, r in by_delay.items()}),
    }
    seg = summary["segmentation"]
    agent_miou = seg["miou"]
    checks = []
    for kind in ("fused", "local_only", "remote_only"):
        if kind in agent_miou and weighted[kind] is not None:
            gap = agent_miou[kind] - weighted[kind]
            checks.append({
                "what": f"agent {kind} mIoU against offline at the measured delays",
                "measured": agent_miou[kind], "reference": weighted[kind],
                "gap_points": round(gap * 100, 2), "met": abs(gap) <= AGREEMENT_POINTS,
            })  # fmt: skip
    lag = summary["answer_lag_min_ms"]
    checks.append({
        "what": "every fused output left before its own remote answer arrived (min lag, ms)",
        "measured": lag, "reference": 0.0, "met": lag is not None and lag > 0,
    })  # fmt: skip
    best_baseline = max(agent_miou.get("local_only", 0.0), agent_miou.get("remote_only", 0.0))
    checks.append({
        "what": "agent fused mIoU against the stronger of local-only and remote-only",
        "measured": agent_miou.get("fused"), "reference": best_baseline,
        "met": agent_miou.get("fused", 0.0) >= best_baseline,
    })  # fmt: skip
    targets, pricing = offline_targets(checkpoint, clips=clips)
    checks.extend(targets)
    live_bytes = summary["corrector"]["downlink_bytes_mean"]
    priced = pricing["bytes_per_frame"]
    checks.append({
        "what": "downlink bytes per remote answer as they arrived, against the offline price",
        "measured": live_bytes, "reference": priced,
        "met": live_bytes is not None and abs(live_bytes - priced) <= DOWNLINK_AGREEMENT * priced,
    })  # fmt: skip
    return {
        "setup": {
            "ckpt": str(ckpt), "plan": str(plan_dir), "cut": cut, "codec": codec,
            "added_rtt_ms": rtt_ms, "fps": fps, "frames": frames, "source": source,
            "offline_clips": clips,
        },
        "agent": {
            "by_source": summary["by_source"], "by_reason": summary["by_reason"],
            "rtt_p50_ms": summary["rtt_p50_ms"], "latency_p50_ms": summary["latency_p50_ms"],
            "answer_lag_min_ms": lag, "answer_lag_p50_ms": summary["answer_lag_p50_ms"],
            "miou": agent_miou, "frames_scored": seg["frames"],
            "delay_frames": dict(sorted(all_delays.items())),
            "answers": summary["corrector"]["answers"],
            "downlink_bytes_mean": live_bytes,
            "answers_refused": summary["corrector"]["refused"],
        },
        "offline": {
            "weighted": weighted,
            "by_delay": [r.as_dict() for r in offline],
            "downlink": pricing,
        },
        "checks": checks,
    }  # fmt: skip


def offline_targets(checkpoint: Any, *, clips: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The issue's offline targets, each with its measured figure and same-run reference.

    Returns:
        (checks, downlink pricing: bytes per frame and their time on :data:`PRICE_LINKS`).
    """
    from splitwire.corrector.evaluation import DEFAULT_REGIMES, Regime, evaluate
    from splitwire.partitioner.link import PRESETS

    regimes = (*DEFAULT_REGIMES, Regime("unseen 5-6", (5.0, 6.0)))
    records = evaluate(checkpoint, regimes=regimes, max_delay=TARGET_MAX_DELAY, clips=clips)
    checks: list[dict[str, Any]] = []
    for regime in regimes:
        rows = [r for r in records if r.motion == regime.name]
        worst = min(rows, key=lambda r: r.fused_margin)
        checks.append({
            "what": f"{regime.name}: fused >= max(local, remote) - 0.5 points at every delay "
                    f"0..{TARGET_MAX_DELAY} (worst delay {worst.delay_frames})",
            "measured": worst.fused_miou,
            "reference": max(worst.local_miou, worst.remote_miou),
            "gap_points": round(100 * worst.fused_margin, 2),
            "met": worst.fused_margin >= -MARGIN_TOLERANCE,
        })  # fmt: skip
    high = {r.delay_frames: r for r in records if r.motion == "high"}
    zero, three = high[0], high[3]
    checks.append({
        "what": "high motion, delay 0: fused within 1 point of the heavy model alone",
        "measured": zero.fused_miou, "reference": zero.heavy_miou,
        "gap_points": round(100 * (zero.fused_miou - zero.heavy_miou), 2),
        "met": zero.fused_miou >= zero.heavy_miou - HEAVY_TOLERANCE,
    })  # fmt: skip
    checks.append({
        "what": "high motion, 3 frames: fused keeps >= 85 % of its delay-0 mIoU",
        "measured": three.fused_miou, "reference": round(KEEP_SHARE * zero.fused_miou, 4),
        "met": three.fused_miou >= KEEP_SHARE * zero.fused_miou,
    })  # fmt: skip
    best = max(three.local_miou, three.remote_miou)
    checks.append({
        "what": "high motion, 3 frames: fused beats the stronger baseline by >= 10 points",
        "measured": three.fused_miou, "reference": round(best + BEAT_POINTS, 4),
        "gap_points": round(100 * (three.fused_miou - best), 2),
        "met": three.fused_miou >= best + BEAT_POINTS,
    })  # fmt: skip
    per_frame = zero.downlink_bytes
    pricing = {
        "bytes_per_frame": per_frame,
        "feature_bytes": zero.feature_bytes,
        "class_map_bytes": zero.class_map_bytes,
        "downlink_ms": {
            name: round(1e3 * PRESETS[name].downlink_s(per_frame), 3) for name in PRICE_LINKS
        },
    }
    return checks, pricing


async def _agent(
    ckpt: Path,
    plan_dir: Path,
    address: str,
    *,
    cut: str,
    codec: str,
    rtt_ms: float,
    fps: float,
    frames: int,
    source: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import io
    import json

    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfig
    from splitwire.partitioner.link import parse_link

    link = parse_link(f"bw=10gbit,rtt={rtt_ms:g}ms")  # a fixed delay, no rate limit
    async with LinkEmulator(upstream=address, link=link) as line:
        out = io.StringIO()
        config = EdgeConfig(
            plan=plan_dir, cloud=line.address, cut=cut, codec=codec, policy="fixed",
            source=source, frames=frames, fps=fps, corrector=ckpt, edge_id="bench-corrector",
            budget_ms=max(2000.0, 4 * rtt_ms),
        )  # fmt: skip
        summary = await EdgeAgent(config, output=out).run()
    return summary, [json.loads(line) for line in out.getvalue().splitlines()]


def _weighted(counts: Counter[int], miou: dict[int, float]) -> float | None:
    total = sum(n for d, n in counts.items() if d in miou)
    if not total:
        return None
    return round(sum(miou[d] * n for d, n in counts.items() if d in miou) / total, 4)


def table(result: dict[str, Any]) -> str:
    """The human report: setup, the agent's figures, the offline ones, the checks."""
    s, a, o = result["setup"], result["agent"], result["offline"]
    lines = [
        f"agent: {s['frames']} frames of {s['source']} at {s['fps']:g} fps, cut {s['cut']} "
        f"{s['codec']}, +{s['added_rtt_ms']:g} ms round trip (link emulator on loopback)",
        f"  by source {a['by_source']}, reasons {a['by_reason']}",
        f"  network rtt p50 {a['rtt_p50_ms']} ms; output latency p50 {a['latency_p50_ms']} ms; "
        f"own answer arrived {a['answer_lag_min_ms']} ms (min) / {a['answer_lag_p50_ms']} ms "
        "(p50) after the fused output",
        f"  delays measured (frames: count) {a['delay_frames']}",
        f"  remote answers {a['answers']} ({a['answers_refused']} refused), "
        f"{a['downlink_bytes_mean']} B each on the downlink as they arrived",
        "",
        "mIoU          agent   offline (same delays, weighted)",
    ]
    for kind in ("fused", "local_only", "remote_only"):
        agent = a["miou"].get(kind)
        offline = o["weighted"].get(kind)
        lines.append(f"  {kind:<11} {_fmt(agent):>6}   {_fmt(offline):>6}")
    price = o.get("downlink")
    if price:
        times = ", ".join(f"{k} {v:g} ms" for k, v in price["downlink_ms"].items())
        lines.append(
            f"downlink per frame (offline, high motion): {price['bytes_per_frame']:.0f} B of "
            f"result messages (features {price['feature_bytes']:.0f} int8+zstd1 + class map "
            f"{price['class_map_bytes']:.0f} zstd, headers the rest); on the links: {times}"
        )
    lines.append("")
    for check in result["checks"]:
        gap = f" ({check['gap_points']:+.2f} points)" if "gap_points" in check else ""
        lines.append(
            f"{'PASS' if check['met'] else 'MISS'}  {check['what']}: {check['measured']} vs "
            f"{check['reference']}{gap}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
