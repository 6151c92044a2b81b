"""End to end under emulated networks: the planner's predictions against the real agent and tail.

    splitwire bench e2e --model zoo:resnet18 --link bw=20mbit,rtt=40ms --link lte --json

For one model: plan it for the links (or take a given plan directory), then on each link, behind
the link emulator (:mod:`splitwire.netem`), run the real agent (this process, one
torch thread) against a real ``splitwire cloud`` child process (one thread) for each measured
cut with the planner's best codec at that cut on that link, the planner's pick, and the
baselines (all-on-edge, all-in-cloud raw, all-in-cloud JPEG). Each option runs twice:

* **latency**: window 1 (one frame in flight, as the planner's latency assumes), p50/p95 of
  capture → output over the answered frames after the warm-up;
* **throughput**: the plan's window, frames as fast as the pipeline takes them; output lines
  per second between the first and the last measured frame.

Which cuts: every cut when the model has at most ``ALL_CUTS_UP_TO`` of them; otherwise each
link's pick, the ``FRONT_PER_LINK`` cuts of the planner's front with the lowest predicted
latency on each link, and an even spread of ``SPREAD`` more (the report says so).

**Edge emulation** (``edge_slowdown`` K > 1): the plan is made with the planner's edge slowdown
K, and the agent runs with ``--edge-slowdown K``: each edge step (head, encode) sleeps
(K − 1) × its measured time after computing, so the CPU stays free for the tail on this
2-core machine. Every record carries the emulation.

**Where a prediction misses** (the calibration loop): each record carries the p50 of each
term the agent measures on its own clock for the latency run (``head_ms + encode_ms`` on the
edge, ``network_ms`` = arrival − send − the cloud's reported time, ``cloud_ms`` = the cloud's
queue + decode + tail + encode, ``agent_ms`` = the rest of capture → output: hand-offs between
the agent's tasks and threads, the result's decode) beside the planner's terms (``edge_ms``,
``transfer_ms``, ``cloud_ms``; the planner has no agent term).

**PyTorch RPC** (:mod:`splitwire.benchmarks.torch_rpc`, TensorPipe carrying pickled fp32
activations, what ParetoPipe does): on loopback and across the emulator on every 20 Mbit/s link
given, beside the agent at the same cut and window (the link's pick, or its best measured split
when the pick is a baseline). Neither side is slowed down there: the comparison is of the two
transports, so these records carry ``comparison: "torch-rpc"`` and stay out of the fidelity
and choice checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitwire.benchmarks.processes import tail_process
from splitwire.errors import SplitwireError
from splitwire.netem.emulator import LinkEmulator
from splitwire.partitioner.link import LinkModel, parse_link
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.stats import percentile

logger = logging.getLogger("splitwire.bench")

ALL_CUTS_UP_TO = 12
FRONT_PER_LINK = 5
SPREAD = 10
MAX_RUN_S = 20.0
# Targets of issue 10.
FIDELITY_TOLERANCE = 0.15
FIDELITY_SHARE = 0.80
CHOICE_TOLERANCE = 0.10
BASELINE_SPEEDUP = 1.3
RPC_LOOPBACK = 1.0
RPC_20MBIT = 2.0
UPLINK_TOLERANCE = 0.20
LOADED_UPLINK = 0.8


def select_cuts(outcome: Any, links: Sequence[LinkModel]) -> tuple[list[str], str]:
    """The cuts to measure (see the module docstring) and how they were chosen."""
    ids = [cut.id for cut in outcome.cuts]
    if len(ids) <= ALL_CUTS_UP_TO:
        return ids, f"every cut ({len(ids)})"
    chosen: dict[str, None] = {ids[0]: None, ids[-1]: None}  # the baselines run there
    for decision in outcome.decisions:
        chosen[decision.pick.measurement.cut] = None
        front = sorted((c for c in decision.candidates if c.pareto), key=lambda c: c.latency_ms)
        for candidate in [c for c in front if c.measurement.baseline is None][:FRONT_PER_LINK]:
            chosen[candidate.measurement.cut] = None
    splits = ids[1:-1]
    spread = [splits[round(i * (len(splits) - 1) / (SPREAD - 1))] for i in range(SPREAD)]
    extra = [c for c in spread if c not in chosen]
    chosen.update(dict.fromkeys(extra))
    how = (
        f"{len(chosen)} of {len(ids)} cuts: each link's pick and the {FRONT_PER_LINK} cuts of its "
        f"front with the lowest predicted latency, plus an even spread of {len(extra)} more"
    )
    return sorted(chosen), how


def make_plan(
    model: str, input_shape: tuple[int, ...], links: Sequence[LinkModel], *, slowdown: float,
    directory: Path, cuts: Sequence[str] | None = None, reuse: Path | None = None,
    calibration_data: str | None = None,
) -> str:  # fmt: skip
    """Plan ``model`` for ``links`` into ``directory``, shipping the cuts to measure; returns
    how they were chosen. ``reuse``: an earlier plan directory of the same model made here
    (``splitwire plan --reuse-measurements``: its bytes and accuracy, no tail runs).
    ``calibration_data``: ``synthetic``, ``skimage`` or a directory of photos (None: the
    planner's default for the model)."""
    from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory

    # The planner's default profiling passes (10): with 3, one pass slowed by a neighbour's
    # burst moved the median, and every prediction of the plan with it.
    request = PlanRequest(
        model_spec=model, input_shape=input_shape, links=tuple(links), calibration=2,
        edge_slowdown=slowdown if slowdown != 1.0 else None, threads=1, reuse_measurements=reuse,
        calibration_data=calibration_data,
    )  # fmt: skip
    outcome = plan_model(request)
    if cuts is not None:  # () ships the picks (and the baselines' cuts) only
        ids = [cut.id for cut in outcome.cuts]
        chosen, how = list(dict.fromkeys([ids[0], *cuts, ids[-1]])), f"{len(cuts)} cuts given"
    else:
        chosen, how = select_cuts(outcome, links)
    # The outcome's request holds what planning resolved (the task's budget, the calibration
    # photos): the unresolved one would write the relative-error default into plan.yaml.
    request = dataclasses.replace(outcome.request, ship=tuple(chosen))
    write_plan_directory(dataclasses.replace(outcome, request=request), directory)
    return how


def options_to_run(
    plan: RunnablePlan, link: LinkModel, cuts: Sequence[str]
) -> list[tuple[PlanOption, str, bool]]:
    """(option, backend label, planner's pick) for one link: the best codec of each cut, the
    pick, and the baselines."""
    from splitwire.partitioner import price_option

    budget = plan.plan.accuracy_budget

    def latency(option: PlanOption) -> float:
        return price_option(option, link, window=_window(plan)).latency_ms

    choice = next((c for c in plan.plan.links if c.link == str(link)), None)
    eligible = [o for o in plan.options if o.accuracy_cost <= budget]
    if choice is not None:
        pick = plan.plan.option(choice.cut, choice.codec)
    else:  # a plan made for other links: the planner's rule over what it ships
        pick = min(eligible, key=lambda o: (latency(o), o.bytes_up))
    chosen: list[tuple[PlanOption, str, bool]] = []
    for cut in cuts:
        at_cut = [o for o in eligible if o.cut == cut and o.baseline is None]
        if at_cut:
            best = min(at_cut, key=latency)
            chosen.append((best, "splitwire", best == pick))
    for kind in ("all-on-edge", "all-in-cloud-raw", "all-in-cloud-jpeg"):
        of_kind = [o for o in plan.options if o.baseline == kind]
        within = [o for o in of_kind if o.accuracy_cost <= budget] or of_kind
        if within:
            best = min(within, key=latency)
            chosen.append((best, kind, best == pick))
    if not any(is_pick for *_, is_pick in chosen):
        chosen.append((pick, pick.baseline or "splitwire", True))
    return chosen


def _window(plan: RunnablePlan) -> int:
    return int(plan.plan.provenance.get("window", 4))


@dataclasses.dataclass(frozen=True)
class AgentRun:
    """One agent run: its output lines after the warm-up, and its uplink estimate at the end
    (bits per second, None when it sent too little to tell)."""

    records: list[dict[str, Any]]
    uplink_bps: float | None


async def _agent(
    plan: RunnablePlan, address: str, option: PlanOption, *, window: int, frames: int,
    warmup: int, slowdown: float = 1.0, max_s: float = math.inf, source: str = "synthetic",
) -> AgentRun:  # fmt: skip
    from splitwire.edge.agent import EdgeAgent
    from splitwire.edge.config import EdgeConfig

    # The agent warms up every option its plan ships when it starts: give it only this one
    # (sharing the loaded halves), so each run starts in the time of one warm-up.
    keep = [option]
    if option.codec == "none":  # the agent still opens a session, named after a sending option
        sending = [o for o in plan.options if o.codec != "none"]
        keep.append(next((o for o in sending if o.cut == option.cut), sending[0]))
    only = dataclasses.replace(plan.plan, options=tuple(keep))
    single = RunnablePlan(only, plan.directory, _modules=plan._modules)
    out = io.StringIO()
    config = EdgeConfig(
        plan=plan.directory, cloud=address, frames=warmup + frames, window=window,
        cut=option.cut, codec=option.codec, policy="fixed", threads=1, budget_ms=60_000,
        edge_id="bench-e2e", edge_slowdown=slowdown, source=source,
    )  # fmt: skip
    agent = EdgeAgent(config, plan=single, output=out)
    # A slow option on a slow link stops reading frames max_s after its first answer and drains
    # what is in flight (counted from the first answer: on a busy machine loading and warming
    # up the halves alone can take longer than max_s).
    stop = asyncio.create_task(_stop_after(agent, out, max_s)) if math.isfinite(max_s) else None
    try:
        await agent.run()
    finally:
        if stop is not None:
            stop.cancel()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return AgentRun(sorted(records, key=lambda r: r["seq"])[warmup:], agent.monitor.uplink_bps)


# ``--camera``: the frames the plan was calibrated on (synthetic frames or photo crops, seed
# 1234), the agent's own synthetic scene, or photos (scikit-image's or a directory's).
CAMERAS = ("plan", "synthetic", "skimage", "dir:PATH")


async def _stop_after(agent: Any, out: io.StringIO, max_s: float) -> None:
    """Ask ``agent`` to stop ``max_s`` after it wrote its first line to ``out``."""
    while not out.tell():
        await asyncio.sleep(0.05)
    await asyncio.sleep(max_s)
    agent.request_stop()


def camera_source(
    plan: RunnablePlan, path: Path, *, count: int, camera: str = "plan"
) -> tuple[str, str]:
    """The agent's ``--source`` and what it shows, in words: ``count`` frames written to
    ``path`` as ``npy:``, or the agent's own scene.

    ``camera`` ``plan`` (the default): frames of the kind the plan measured its bytes on (the
    planner's synthetic calibration frames or its photo crops, the first of them the very ones),
    since the bytes on the wire follow the content; ``synthetic``: the agent's own scene (which
    compresses differently); ``skimage`` or ``dir:PATH``: crops of those photos (seed 1234).
    Plans without a camera frame keep the agent's scene.

    Raises:
        SplitwireError: ``camera`` is none of :data:`CAMERAS`, or its photos cannot be read.
    """
    from splitwire.partitioner.planner import (
        SYNTHETIC,
        calibration_frames,
        describe_calibration,
    )

    if camera == "plan":
        data = _calibration_data(str(plan.plan.provenance.get("calibration", "")))
    elif camera in (SYNTHETIC, "skimage"):
        data = camera
    elif camera.startswith("dir:") and camera[4:]:
        data = camera[4:]
    else:
        raise SplitwireError(f"--camera {camera}: expected one of {', '.join(CAMERAS)}")
    prep = plan.plan.preprocess
    if prep is None or data is None or (camera == SYNTHETIC):
        return "synthetic", "the agent's synthetic scene"
    frames = calibration_frames(plan.plan.input_shape, count, data=data, preprocess=prep)
    if frames is None:
        return "synthetic", "the agent's synthetic scene"
    np.save(path, frames.numpy())
    return f"npy:{path}", describe_calibration(data)


def _camera_data(camera: str) -> str | None:
    """The planner's calibration data for a ``--camera`` of photos (its bytes are then
    measured on the photos the agent shows); None (the planner's default) otherwise."""
    if camera == "skimage":
        return camera
    return camera[4:] if camera.startswith("dir:") and camera[4:] else None


def _calibration_data(provenance: str) -> str | None:
    """The planner's calibration data named in a plan's provenance text (see
    :func:`splitwire.partitioner.planner.describe_calibration`), None if unknown."""
    if "synthetic" in provenance:
        return "synthetic"
    if "scikit-image" in provenance:
        return "skimage"
    marker = "crops of the photos in "
    if marker in provenance:
        return provenance.split(marker, 1)[1].rsplit(" (seed", 1)[0]
    return None


def machine_drift(plan: RunnablePlan, slowdown: float, repeats: int = 7) -> float | None:
    """How much slower this machine runs the whole model now than when it was profiled:
    the median of ``repeats`` timed runs of the all-on-edge head (no slowdown) over the plan's
    all-on-edge edge time / ``slowdown``. None when the plan ships no all-on-edge option."""
    option = next((o for o in plan.options if o.baseline == "all-on-edge"), None)
    if option is None or option.edge_ms <= 0:
        return None
    whole = plan.head(option.cut)
    x = plan.preprocess(torch.zeros(plan.camera_frame().shape, dtype=torch.uint8))
    times = []
    with torch.inference_mode():
        whole(x)
        for _ in range(repeats):
            start = time.perf_counter()
            whole(x)
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times) / (option.edge_ms / slowdown)


def _figures(latency_run: list[dict[str, Any]], rate_run: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in latency_run if r["source"] in ("remote", "local")]
    latencies = [r["latency_ms"] for r in answered]
    if not latencies:  # nothing answered after the warm-up: kept out of every check and pick
        logger.warning("a latency run answered no frame after its warm-up: no p50 (NaN)")
    times = sorted(r["emit_ts_ns"] for r in rate_run if r["source"] != "dropped")
    fps = (len(times) - 1) / ((times[-1] - times[0]) / 1e9) if len(times) > 1 else 0.0
    sent = [r["bytes_up"] for r in answered if r.get("bytes_up")]
    return _terms(answered) | {
        "measured_p50_ms": round(percentile(latencies, 50), 3),
        "measured_p95_ms": round(percentile(latencies, 95), 3),
        "measured_fps": round(fps, 3),
        "frames": len(latency_run) + len(rate_run),
        "lost": len(latency_run) - len(answered),
        "bytes_up": round(statistics.fmean(sent), 1) if sent else 0.0,
    }


def _terms(answered: list[dict[str, Any]]) -> dict[str, Any]:
    """The p50 of each term of capture → output the agent measured (see the module docstring);
    None for a term an option does not have."""

    def p50(values: list[float]) -> float | None:
        return round(statistics.median(values), 3) if values else None

    remote = [r for r in answered if r["source"] == "remote"]
    rest = [
        r["latency_ms"] - (r["head_ms"] or 0) - (r["encode_ms"] or 0) - r["rtt_ms"] - r["cloud_ms"]
        for r in remote
    ]
    return {
        "measured_terms": {
            "edge_ms": p50([(r["head_ms"] or 0) + (r["encode_ms"] or 0) for r in answered]),
            "network_ms": p50([r["rtt_ms"] for r in remote]),
            "cloud_ms": p50([r["cloud_ms"] for r in remote]),
            "agent_ms": p50(rest),
        }
    }


async def _run_link(
    plan: RunnablePlan, address: str, link: LinkModel, runs: list[tuple[PlanOption, str, bool]],
    *, frames: int, warmup: int, slowdown: float, max_run_s: float, source: str,
    progress: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    from splitwire.partitioner import price_option

    window = _window(plan)
    records = []
    drift = machine_drift(plan, slowdown)
    async with LinkEmulator(upstream=address, link=link, seed=0) as em:
        for option, backend, is_pick in runs:
            progress(f"{link.name}: {option.cut} {option.codec} ({backend})")
            alone = await _agent(plan, em.address, option, window=1, frames=frames,
                                 warmup=warmup, slowdown=slowdown, max_s=max_run_s,
                                 source=source)  # fmt: skip
            piped = await _agent(plan, em.address, option, window=window, frames=frames,
                                 warmup=warmup, slowdown=slowdown, max_s=max_run_s,
                                 source=source)  # fmt: skip
            price = price_option(option, link, window=window)
            records.append({
                "link": str(link), "cut": option.cut, "cut_name": plan.plan.cut(option.cut).name,
                "codec": option.codec, "backend": backend, "window": window,
                "predicted_latency_ms": round(price.latency_ms, 3),
                # The same with compute scaled by the drift of this machine since profiling.
                "predicted_drift_ms": None if drift is None else round(
                    price.transfer_ms + drift * (price.edge_ms + price.cloud_ms), 3),
                "drift": None if drift is None else round(drift, 3),
                "predicted_fps": round(price.throughput_fps, 3), "planner_pick": is_pick,
                "accuracy_cost": option.accuracy_cost,
                "within_budget": option.accuracy_cost <= plan.plan.accuracy_budget,
                "predicted_terms": {"edge_ms": round(price.edge_ms, 3),
                                    "transfer_ms": round(price.transfer_ms, 3),
                                    "cloud_ms": round(price.cloud_ms, 3),
                                    "bytes_up": round(option.bytes_up, 1)},
                "uplink_estimate_bps": None if piped.uplink_bps is None
                else round(piped.uplink_bps),
            } | _figures(alone.records, piped.records))  # fmt: skip
        stats = em.stats()
    for record in records:
        record["netem_up_bps"] = stats["up"]["achieved_bps"]
    return records, stats


def run_e2e(
    *, model: str, input_shape: tuple[int, ...], links: Sequence[str], edge_slowdown: float = 1.0,
    frames: int = 30, warmup: int = 5, plan_dir: Path | None = None,
    cuts: Sequence[str] | None = None, rpc: bool = True, max_run_s: float = MAX_RUN_S,
    camera: str = "plan", keep_plan: Path | None = None, reuse: Path | None = None,
    picks_only: bool = False, progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:  # fmt: skip
    """Every run of the benchmark (see the module docstring); returns records and checks.

    Args:
        plan_dir: a plan to use as it is (its model, shape and shipped cuts) instead of
            planning; ``cuts`` then picks among its shipped cuts (default: all of them).
        max_run_s: each agent run stops taking frames after this long (then drains): a
            slow option on a slow link measures fewer frames (``frames`` in its record).
        picks_only: measure each link's pick and the baselines only (no other cut).
        reuse: plan with the measurements of this earlier plan directory (``make_plan``).
        keep_plan: write the plan made here to this directory (kept, for ``plan_dir`` in a
            later run) instead of a temporary one.
        camera: what the agent's camera shows (:func:`camera_source`): ``plan``,
            ``synthetic``, ``skimage`` or ``dir:PATH``.

    Raises:
        SplitwireError: a link that is a trace, a cut the plan does not ship, a failed run.
    """
    parsed = [parse_link(spec) for spec in links]
    models = [link for link in parsed if isinstance(link, LinkModel)]
    if len(models) != len(parsed) or not models:
        raise SplitwireError("bench e2e needs one or more fixed links (--link), not traces")
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="splitwire-e2e-") as tmp:
        started = time.monotonic()
        if plan_dir is None:
            progress(f"planning {model} at {input_shape} for {len(models)} links")
            plan_dir = keep_plan if keep_plan is not None else Path(tmp) / "plan"
            how = make_plan(model, input_shape, models, slowdown=edge_slowdown,
                            directory=plan_dir, cuts=() if picks_only else cuts,
                            reuse=reuse, calibration_data=_camera_data(camera))  # fmt: skip
            cuts = None
        else:
            how = "cuts given" if cuts else "every cut the given plan ships"
        plain = open_plan(plan_dir)
        shipped = sorted({o.cut for o in plain.options if o.baseline is None})
        measured = list(cuts) if cuts else shipped
        if picks_only:
            measured, how = [], "each link's pick and the baselines only"
        missing = [c for c in measured if c not in shipped]
        if missing:
            raise SplitwireError(f"cuts {missing}: the plan ships splits at {shipped} only")
        plan = plain
        emulation = {
            "edge_slowdown": edge_slowdown, "emulated": edge_slowdown != 1.0,
            "how": "splitwire edge --edge-slowdown: head and encode sleep (K-1) x their compute",
        }  # fmt: skip
        records: list[dict[str, Any]] = []
        link_stats = {}
        plan_s = time.monotonic() - started
        source, shows = camera_source(plain, Path(tmp) / "frames.npy", count=warmup + frames,
                                      camera=camera)  # fmt: skip
        with tail_process(plan_dir, threads=1) as (address, _):
            for link in models:
                runs = options_to_run(plan, link, measured)
                found, stats = asyncio.run(_run_link(
                    plan, address, link, runs, frames=frames, warmup=warmup, progress=progress,
                    slowdown=edge_slowdown, max_run_s=max_run_s, source=source,
                ))  # fmt: skip
                mark_best(found)
                records += found
                link_stats[str(link)] = stats
            if rpc:
                records += _rpc_comparisons(plan, plan_dir, address, records, models,
                                            frames=frames, warmup=warmup, source=source,
                                            progress=progress)  # fmt: skip
    for record in records:
        record.update(model=model, edge={"edge_slowdown": 1.0, "emulated": False}
                      if record.get("comparison") else emulation)  # fmt: skip
    return {
        "model": model, "input_shape": list(plain.plan.input_shape), "cuts": how,
        "plan_s": round(plan_s, 1), "records": records, "netem": link_stats,
        "frames": shows,
        "load_average": {"start": [round(v, 2) for v in load_start],
                         "end": [round(v, 2) for v in os.getloadavg()]},
        "term_ratios": {str(link): term_ratios(records, str(link)) for link in models},
        "checks": checks(records, [str(link) for link in models]),
    }  # fmt: skip


def term_ratios(records: list[dict[str, Any]], link: str) -> dict[str, float | None]:
    """Where the predictions miss on ``link``: the median over its options of each term's
    measured / predicted (edge: head + encode as the agent timed them against the planner's
    edge time; network: the agent's round trip less the cloud's time against the planner's
    transfer; cloud: the cloud's reported time against the planner's cloud time, which also
    holds the transport's per-message cost the network figure carries; bytes: sent / planned).
    None for a term no option has."""
    mine = [r for r in records if r["link"] == link and not r.get("comparison")]
    pairs = {"edge": ("edge_ms", "edge_ms"), "network": ("network_ms", "transfer_ms"),
             "cloud": ("cloud_ms", "cloud_ms")}  # fmt: skip
    out: dict[str, float | None] = {}
    for term, (measured, predicted) in pairs.items():
        ratios = [r["measured_terms"][measured] / r["predicted_terms"][predicted] for r in mine
                  if r["measured_terms"].get(measured) is not None
                  and r["predicted_terms"].get(predicted)]  # fmt: skip
        out[term] = round(statistics.median(ratios), 3) if ratios else None
    sent = [r["bytes_up"] / r["predicted_terms"]["bytes_up"] for r in mine
            if r["bytes_up"] and r["predicted_terms"].get("bytes_up")]  # fmt: skip
    out["bytes"] = round(statistics.median(sent), 3) if sent else None
    return out


def rpc_links(links: Sequence[LinkModel]) -> list[LinkModel | None]:
    """Where the torch RPC comparison runs: loopback (None) and every given link of 20 Mbit/s."""
    return [None] + [link for link in links if round(link.uplink_bps) == 20_000_000]


def _rpc_comparisons(
    plan: RunnablePlan, plan_dir: Path, address: str, records: list[dict[str, Any]],
    links: Sequence[LinkModel], *, frames: int, warmup: int, source: str,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:  # fmt: skip
    """splitwire and torch RPC at the same cut and window, no edge slowdown on either side, on
    loopback and on each 20 Mbit/s link. The cut and codec are the link's pick (the first
    link's on loopback), or its best measured split when the pick is a baseline."""
    from splitwire.benchmarks.torch_rpc import run_torch_rpc

    out = []
    for link in rpc_links(links):
        on = str(link or links[0])
        splits = [r for r in records if r["backend"] == "splitwire" and r["cut_name"] != "input"
                  and r["link"] == on]  # fmt: skip
        pick = next((r for r in splits if r["planner_pick"]), None) or min(
            splits, key=lambda r: r["measured_p50_ms"], default=None)  # fmt: skip
        if pick is None:
            continue
        where = "loopback" if link is None else str(link)
        option = plan.plan.option(pick["cut"], pick["codec"])
        common = {"link": where, "cut": pick["cut"], "cut_name": pick["cut_name"],
                  "window": pick["window"], "comparison": "torch-rpc", "planner_pick": False,
                  "predicted_latency_ms": None, "predicted_fps": None,
                  "predicted_drift_ms": None, "drift": None}  # fmt: skip
        progress(f"{where}: splitwire {pick['cut']} {pick['codec']}, window {pick['window']}, "
                 "no slowdown")  # fmt: skip
        piped = asyncio.run(_agent_through(plan, address, link, option, window=pick["window"],
                                           frames=frames, warmup=warmup,
                                           source=source))  # fmt: skip
        out.append(common | {"codec": pick["codec"], "backend": "splitwire"}
                   | _figures(piped.records, piped.records))  # fmt: skip
        progress(f"{where}: torch RPC {pick['cut']}, window {pick['window']}")
        ref = run_torch_rpc(plan_dir, pick["cut"], frames=frames, window=pick["window"],
                            warmup=warmup, link=None if link is None else str(link))  # fmt: skip
        out.append(common | {
            "codec": "fp32 (pickled tensors)", "backend": "torch-rpc",
            "measured_p50_ms": round(percentile(ref.latencies_ms, 50), 3),
            "measured_p95_ms": round(percentile(ref.latencies_ms, 95), 3),
            "measured_fps": round(ref.throughput_fps, 3), "frames": ref.frames, "lost": 0,
            "bytes_up": ref.bytes_per_frame,
        })  # fmt: skip
    return out


async def _agent_through(
    plan: RunnablePlan, address: str, link: LinkModel | None, option: PlanOption, *,
    window: int, frames: int, warmup: int, source: str,
) -> AgentRun:  # fmt: skip
    """One agent run at ``option``, straight to ``address`` or across an emulated ``link``."""
    if link is None:
        return await _agent(plan, address, option, window=window, frames=frames, warmup=warmup,
                            source=source)  # fmt: skip
    async with LinkEmulator(upstream=address, link=link, seed=0) as em:
        return await _agent(plan, em.address, option, window=window, frames=frames,
                            warmup=warmup, source=source)  # fmt: skip


def mark_best(records: list[dict[str, Any]]) -> None:
    """Mark the lowest measured p50 among the options the planner may pick (within the
    accuracy budget; a baseline over it is measured for comparison only)."""
    best = min(_eligible(records), key=lambda r: r["measured_p50_ms"], default=None)
    for record in records:
        record["measured_best"] = record is best


def _eligible(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    measured = [r for r in records if _answered(r)]
    return [r for r in measured if r.get("within_budget", True)] or measured


def _answered(record: dict[str, Any]) -> bool:
    """Whether the option's latency run answered frames (a NaN p50 when it answered none)."""
    return math.isfinite(record["measured_p50_ms"])


def checks(records: list[dict[str, Any]], links: Sequence[str]) -> list[dict[str, Any]]:
    """Issue 10's targets, per link where they are per link."""
    out = []
    for link in links:
        # An option that answered nothing (NaN p50) counts as a miss: NaN is never within.
        mine = [r for r in records if r["link"] == link and not r.get("comparison")]
        close = [
            abs(r["predicted_latency_ms"] - r["measured_p50_ms"]) <= FIDELITY_TOLERANCE
            * r["measured_p50_ms"] for r in mine
        ]  # fmt: skip
        share = sum(close) / len(close) if close else math.nan
        out.append(_check(f"fidelity on {link}: share of options with predicted p50 within "
                          f"{FIDELITY_TOLERANCE:.0%} of measured", share, 1.0, FIDELITY_SHARE,
                          higher=True))  # fmt: skip
        drifted = [r for r in mine if r.get("predicted_drift_ms") is not None]
        if drifted:
            close = [abs(r["predicted_drift_ms"] - r["measured_p50_ms"])
                     <= FIDELITY_TOLERANCE * r["measured_p50_ms"] for r in drifted]  # fmt: skip
            out.append(_check(f"fidelity on {link}, compute scaled by the machine's drift "
                              f"({drifted[0]['drift']:.2f}x) since profiling",
                              sum(close) / len(close), 1.0, FIDELITY_SHARE,
                              higher=True))  # fmt: skip
        # A pick that answered nothing has a NaN p50: its checks are missed, not skipped.
        pick = next(r for r in mine if r["planner_pick"])
        best = min(_eligible(mine), key=lambda r: r["measured_p50_ms"], default=pick)
        out.append(_check(f"choice on {link}: pick {pick['cut']} {pick['codec']} p50 / measured "
                          f"best within the accuracy budget {best['cut']} {best['codec']} p50",
                          pick["measured_p50_ms"], best["measured_p50_ms"], 1 + CHOICE_TOLERANCE,
                          higher=False))  # fmt: skip
        # Only runs that kept the uplink busy: a sender that leaves the link idle between small
        # frames cannot observe its capacity (its estimate is a lower bound), and the
        # emulator's achieved rate is measured while its bucket is saturated.
        estimates = [r["uplink_estimate_bps"] / r["netem_up_bps"] for r in mine
                     if r.get("uplink_estimate_bps") and r.get("netem_up_bps")
                     and 8 * r["bytes_up"] * r["measured_fps"]
                     >= LOADED_UPLINK * r["netem_up_bps"]]  # fmt: skip
        if estimates:
            ratio = statistics.median(estimates)
            out.append(_check(f"uplink estimate on {link}: the agent's estimate at the end of "
                              "each throughput run that kept the uplink >= "
                              f"{LOADED_UPLINK:.0%} busy / the emulator's achieved rate, median "
                              f"of {len(estimates)} runs, |ratio - 1|", abs(ratio - 1), 1.0,
                              UPLINK_TOLERANCE, higher=False))  # fmt: skip
        for kind in ("all-on-edge", "all-in-cloud-jpeg"):
            base = next((r for r in mine if r["backend"] == kind), None)
            if base is not None:
                out.append(_check(f"vs {kind} on {link}: baseline p50 / pick p50",
                                  base["measured_p50_ms"], pick["measured_p50_ms"],
                                  BASELINE_SPEEDUP, higher=True, per_link=True))  # fmt: skip
    for where in dict.fromkeys(r["link"] for r in records if r.get("comparison")):
        pair = {r["backend"]: r for r in records if r.get("comparison") and r["link"] == where}
        if {"splitwire", "torch-rpc"} <= set(pair):
            target = RPC_LOOPBACK if where == "loopback" else RPC_20MBIT
            out.append(_check(f"vs torch RPC on {where}, same cut and window, no slowdown: "
                              "throughput ratio", pair["splitwire"]["measured_fps"],
                              pair["torch-rpc"]["measured_fps"], target,
                              higher=True))  # fmt: skip
    return out


def _check(
    what: str, measured: float, reference: float, target: float, *, higher: bool,
    per_link: bool = False,
) -> dict[str, Any]:  # fmt: skip
    ratio = measured / reference if reference else math.nan
    met = ratio >= target if higher else ratio <= target
    return {
        "check": what, "measured": round(measured, 3), "reference": round(reference, 3),
        "ratio": round(ratio, 3), "target": ("≥ " if higher else "≤ ") + f"{target:g}",
        "met": bool(met), "needed_on_one_link": per_link,
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """The records and checks as text."""
    out = [
        f"{result['model']} at {'x'.join(map(str, result['input_shape']))}; cuts: "
        f"{result['cuts']}; edge: {_edge_text(result['records'])}; camera: "
        f"{result.get('frames', 'the agent synthetic scene')}",
        f"{'link':<34} {'cut':<6} {'name':<18} {'codec':<22} {'backend':<18} {'pred':>8} "
        f"{'drift':>8} {'p50':>8} {'p95':>8} {'fps':>7} {'pred fps':>8}",
    ]
    for r in result["records"]:
        mark = ("P" if r["planner_pick"] else " ") + ("B" if r.get("measured_best") else " ")
        mark += "R" if r.get("comparison") else ""
        mark += "*" if r.get("within_budget") is False else ""
        pred, drift, fps = (
            "-" if r.get(key) is None else f"{r[key]:.1f}"
            for key in ("predicted_latency_ms", "predicted_drift_ms", "predicted_fps")
        )
        out.append(
            f"{r['link'][:34]:<34} {r['cut']:<6} {r['cut_name'][:18]:<18} {r['codec'][:22]:<22} "
            f"{r['backend']:<18} {pred:>8} {drift:>8} {r['measured_p50_ms']:8.1f} "
            f"{r['measured_p95_ms']:8.1f} {r['measured_fps']:7.2f} {fps:>8} {mark}"
        )
    out.append("P = planner's pick, B = measured best within the accuracy budget (lowest p50; "
               "* = over the budget, measured for comparison), R = torch RPC comparison "
               "(no slowdown); times in ms; drift = the "
               "prediction with compute scaled by the machine's drift since profiling")  # fmt: skip
    for link, ratios in result.get("term_ratios", {}).items():
        terms = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}x'}" for k, v in ratios.items())
        out.append(f"measured / predicted on {link}, median per term: {terms}")
    if "load_average" in result:
        load = result["load_average"]
        out.append(f"load average (1, 5, 15 min) at the start {load['start']}, at the end "
                   f"{load['end']} on {os.cpu_count()} CPUs: timing figures under load are "
                   "slower than on a quiet machine")  # fmt: skip
    for link, stats in result["netem"].items():
        up, down = stats["up"], stats["down"]
        out.append(f"emulator on {link}: up delay p50 {up['delay_p50_ms']:.1f} ms, down "
                   f"{down['delay_p50_ms']:.1f} ms (requested one-way "
                   f"{up['requested_one_way_ms']:g} ms + jitter)")  # fmt: skip
    out.append("")
    for c in result["checks"]:
        flag = "PASS" if c["met"] else "MISS"
        note = " (needed on one realistic link)" if c["needed_on_one_link"] else ""
        out.append(f"{flag} {c['check']}: {c['measured']} vs {c['reference']} (ratio "
                   f"{c['ratio']}, target {c['target']}){note}")  # fmt: skip
    if not any(r.get("comparison") and r["link"] != "loopback" for r in result["records"]):
        out.append("not measured: torch RPC on a 20 Mbit/s link (none of the links is one, or "
                   "--no-rpc)")  # fmt: skip
    return "\n".join(out)


def split_table(results: Sequence[dict[str, Any]]) -> str:
    """ "Does a split win?": one Markdown row per (model, edge, link) of ``bench e2e --json``
    results (run with ``--picks-only``: each link's pick and the baselines): the pick and its
    measured p50, all-on-edge's p50 over the pick's, and the best all-in-cloud option's within
    the accuracy budget over the pick's (a ratio above 1: the pick is faster)."""
    rows = [
        "| model | edge | link | pick | pick p50 | all-on-edge / pick | best all-in-cloud within "
        "budget / pick | measured best | load (1 min, start → end) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for result in results:
        planned = [r for r in result["records"] if not r.get("comparison")]
        edge = _edge_text(planned)
        slowdown = next((r["edge"]["edge_slowdown"] for r in planned), 1.0)
        load = result.get("load_average", {})
        load_text = f"{load['start'][0]:g} → {load['end'][0]:g}" if load else "-"
        for link in dict.fromkeys(r["link"] for r in planned):
            mine = [r for r in planned if r["link"] == link]
            pick = next(r for r in mine if r["planner_pick"])
            local = next((r for r in mine if r["backend"] == ALL_ON_EDGE_BACKEND), None)
            clouds = [r for r in mine if _in_cloud(r) and r.get("within_budget", True)]
            cloud = min(clouds, key=lambda r: r["measured_p50_ms"], default=None)
            best = min(_eligible(mine), key=lambda r: r["measured_p50_ms"], default=pick)

            cloud_text = "none within budget" if cloud is None else (
                f"{_ratio(cloud, pick)} ({_option_text(cloud)}, "
                f"{cloud['measured_p50_ms']:.0f} ms)")  # fmt: skip
            rows.append(
                f"| {result['model'].removeprefix('zoo:')} | {slowdown:g}× "
                f"{'(emulated)' if 'EMULATED' in edge else ''} | {_link_name(link)} | "
                f"{_option_text(pick)} | {pick['measured_p50_ms']:.0f} ms | "
                f"{_ratio(local, pick)} | "
                f"{cloud_text} | {_option_text(best)} | {load_text} |"
            )
    return "\n".join(rows)


ALL_ON_EDGE_BACKEND = "all-on-edge"


def _ratio(other: dict[str, Any] | None, pick: dict[str, Any]) -> str:
    """``other``'s measured p50 over the pick's ('-' when not measured)."""
    if other is None:
        return "-"
    return f"{other['measured_p50_ms'] / pick['measured_p50_ms']:.2f}"


def _in_cloud(record: dict[str, Any]) -> bool:
    """All of the model in the cloud: a camera baseline, or the input tensor under a codec."""
    return record["backend"].startswith("all-in-cloud") or record["cut_name"] == "input"


def _option_text(record: dict[str, Any]) -> str:
    if record["backend"] != "splitwire":
        return record["backend"] + ("" if record["backend"] == "all-on-edge"
                                    else f" {record['codec']}")  # fmt: skip
    if record["cut_name"] == "input":  # cut 0: nothing runs on the edge
        return f"all-in-cloud, the input tensor as {record['codec']}"
    return f"split after {record['cut_name']} ({record['cut']}, {record['codec']})"


def _link_name(link: str) -> str:
    """``wifi``, ``lte``, ``3g`` for a preset; the rates and RTT for a custom link."""
    name, _, rest = link.partition(",")
    name = name.removeprefix("name=")
    return rest if name == "custom" else name


def _edge_text(records: list[dict[str, Any]]) -> str:
    edge = next((r["edge"] for r in records if not r.get("comparison")), None)
    if not edge or not edge["emulated"]:
        return "this machine, 1 thread (no emulation)"
    return f"EMULATED {edge['edge_slowdown']:g}x slower ({edge['how']})"


def plot(result: dict[str, Any], path: Path) -> None:
    """Predicted against measured p50 latency, one panel per link."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planned = [r for r in result["records"] if not r.get("comparison")]
    links = list(dict.fromkeys(r["link"] for r in planned))
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4.5), squeeze=False)
    for ax, link in zip(axes[0], links, strict=True):
        mine = [r for r in planned if r["link"] == link]
        xs = [r["predicted_latency_ms"] for r in mine]
        ys = [r["measured_p50_ms"] for r in mine]
        ax.scatter(xs, ys, c=["C1" if r["backend"] != "splitwire" else "C0" for r in mine])
        for r in mine:
            if r["planner_pick"] or r.get("measured_best") or r["backend"] != "splitwire":
                label = r["backend"] if r["backend"] != "splitwire" else r["cut"]
                label += " (pick)" if r["planner_pick"] else ""
                ax.annotate(label, (r["predicted_latency_ms"], r["measured_p50_ms"]), fontsize=7)
        top = max(xs + ys) * 1.1
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.fill_between([0, top], [0, top / 1.15], [0, top / 0.85], alpha=0.1)
        ax.set(xlabel="predicted latency (ms)", ylabel="measured p50 (ms)", title=link[:40])
    fig.suptitle(f"{result['model']}: prediction vs measurement ({_edge_text(result['records'])})",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
