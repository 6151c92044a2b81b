"""How long planning takes, phase by phase. Targets: capture to written plan <= 60 s for
ResNet-50 at 224², 5 codecs × 4 links; <= 180 s for ``hf:ViTModel`` at 224², one link; and
deciding < 10 s after profiling.

    splitwire bench planning --model zoo:resnet50 --input-shape 1,3,224,224
    splitwire bench planning --model hf:ViTModel --input-shape 1,3,224,224 --link wifi --target 180

``plan_model`` runs once (capture, profile, measure, decide); then the decision phase — the cost
model over every (cut, codec) on every link, the exact 5-objective front per link, the picks and
the robust pick — is timed again ``repeats`` times, and the plan directory is written once.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from splitwire.partitioner.link import parse_link
from splitwire.partitioner.planner import (
    AUTO_CODECS,
    PlanRequest,
    decide,
    plan_model,
    write_plan_directory,
)

DEFAULT_LINKS = ("ethernet", "wifi", "lte", "3g")


def run_planning(
    model: str,
    input_shape: Sequence[int],
    *,
    links: Sequence[str] = DEFAULT_LINKS,
    calibration: int,
    threads: int,
    repeats: int,
    progress: bool,
    prune: bool = True,
) -> dict[str, float]:
    """Seconds per phase (``measure.encode`` and ``measure.tails`` within ``measure``), plus
    ``decide`` (median of ``repeats``), ``export``, ``capture_to_plan`` (every phase of the
    first plan, export included) and counts."""
    request = PlanRequest(
        model_spec=model,
        input_shape=tuple(input_shape),
        links=tuple(parse_link(link) for link in links),
        codecs=AUTO_CODECS,
        edge_slowdown=4.0,
        calibration=calibration,
        threads=threads,
        repeats=5,
        progress=progress,
        prune=prune,
    )
    outcome = plan_model(request)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        decide(outcome.measurements, request)
        timings.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        plan = write_plan_directory(outcome, Path(tmp) / "first")
        export_s = time.perf_counter() - start
        # Re-planning with both profiles given and the measurements reused: what changing the
        # links or the objective costs once a model has been profiled and measured.
        again = replace(
            request,
            edge_profile=outcome.edge,
            cloud_profile=outcome.cloud,
            edge_slowdown=None,
            reuse_measurements=Path(tmp) / "first",
        )
        start = time.perf_counter()
        replanned = plan_model(again)
        replan_decide_s = time.perf_counter() - start
        write_plan_directory(replanned, Path(tmp) / "again")
        replan_s = time.perf_counter() - start
    phases = {f"{phase}_s": s for phase, s in outcome.seconds.items()}
    first = sum(s for phase, s in outcome.seconds.items() if "." not in phase)
    return {
        **phases,
        "capture_to_plan_s": first + export_s,
        "decide_once_s": outcome.seconds["decide"],
        "decide_s": statistics.median(timings),
        "export_s": export_s,
        "replan_without_export_s": replan_decide_s,
        "replan_s": replan_s,
        "cuts": len(outcome.cuts),
        "codecs": len(request.codecs),
        "links": len(request.link_states()),
        "candidates_per_link": len(outcome.measurements),
        "lossy": sum(1 for m in outcome.measurements if m.accuracy_cost != 0.0),
        "not_measured": sum(1 for m in outcome.measurements if m.dominated_by),
        "exported_cuts": len(plan.cuts),
    }
