"""A measurements file that is malformed or made for another plan (other code, cuts, JPEG grid,
task) is refused with PlanError; one that fits is reused for other links, edges, objectives and
budgets, whatever the model's task."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from splitwire.partitioner.accuracy import AccuracyBudget
from splitwire.partitioner.baselines import camera_codecs
from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.measurement_cache import CACHE_SCHEMA, CacheKey, load_measurements
from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory

from .trained_classifier import INPUT, trained_classifier

GRID = tuple(str(c) for c in camera_codecs((50, 75, 90)))
KEY = CacheKey("h" * 64, (1, 3, 8, 8), 2, GRID)
BUDGET = AccuracyBudget("rel", 0.01)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"schema": 5}, "not a schema-4 measurements file"),
        ({"schema": 3}, "recorded after its in-place ReLU"),
        ({"schema": 1, "key": KEY.as_json(), "entries": []}, "measured before task metrics"),
        ({"schema": 2, "key": KEY.as_json(), "entries": []},
         "measured before the camera-frame baselines"),
        ({"schema": CACHE_SCHEMA, "key": [], "entries": []}, "expected a 'key' mapping"),
        ({"schema": CACHE_SCHEMA, "key": KEY.as_json(), "entries": {}}, "an 'entries' list"),
        ({"schema": CACHE_SCHEMA, "key": KEY.as_json() | {"calibration": 4}, "entries": []},
         "measured for calibration = 4, this plan has 2"),
        ({"schema": CACHE_SCHEMA, "key": KEY.as_json(), "entries": [5]}, "malformed entry 5"),
        ({"schema": CACHE_SCHEMA, "key": KEY.as_json(), "entries": [], "camera_ms": {"frame": 3}},
         "malformed camera_ms"),
    ],
)  # fmt: skip
def test_refused(tmp_path: Path, document: object, message: str) -> None:
    (tmp_path / "measurements.json").write_text(json.dumps(document))
    with pytest.raises(PlanError, match=message):
        load_measurements(tmp_path, KEY, {}, ["fp32"], budget=BUDGET)


def test_missing_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read measurements"):
        load_measurements(tmp_path, KEY, {}, ["fp32"], budget=BUDGET)
    (tmp_path / "measurements.json").write_text("{")
    with pytest.raises(PlanError, match="not valid JSON"):
        load_measurements(tmp_path, KEY, {}, ["fp32"], budget=BUDGET)


@pytest.mark.parametrize(
    ("field", "stale"),
    [("versions", "splitwire 0.0.1, torch 2.12.0"), ("crossings", "0123456789abcdef")],
)
def test_a_cache_from_other_code_or_other_cuts_is_refused(
    tmp_path: Path, field: str, stale: str
) -> None:
    key = dataclasses.replace(KEY, versions="splitwire 0.1.0, torch 2.13.0", crossings="feed")
    document = {"schema": CACHE_SCHEMA, "key": key.as_json() | {field: stale}, "entries": []}
    (tmp_path / "measurements.json").write_text(json.dumps(document))
    with pytest.raises(PlanError, match=f"measured for {field} = '{stale}'"):
        load_measurements(tmp_path, key, {}, ["fp32"], budget=BUDGET)


def test_a_cache_made_with_another_jpeg_grid_is_refused(tmp_path: Path) -> None:
    """The JPEG grid decides which baselines were measured: a cache of another grid (here an
    older plan's single quality at 4:2:0 only) is stale, and the message names both grids."""
    old = CacheKey("h" * 64, (1, 3, 8, 8), 2, tuple(str(c) for c in camera_codecs((90,))))
    document = {"schema": CACHE_SCHEMA, "key": old.as_json(), "entries": []}
    (tmp_path / "measurements.json").write_text(json.dumps(document))
    with pytest.raises(PlanError) as info:
        load_measurements(tmp_path, KEY, {}, ["fp32"], budget=BUDGET)
    message = str(info.value)
    assert "measured for camera_codecs = ['frame', 'frame+zstd1', 'jpeg90', 'jpeg90s444']" in (
        message
    )
    assert "jpeg50s444" in message and "drop --reuse-measurements" in message


def test_a_cache_of_another_task_is_refused(tmp_path: Path) -> None:
    """The task decides which metrics were measured: a task-less model's cache (``rel`` only)
    cannot serve a classifier's plan, whose budgets are in ``kl`` or ``top1``."""
    document = {"schema": CACHE_SCHEMA, "key": KEY.as_json(), "entries": []}
    (tmp_path / "measurements.json").write_text(json.dumps(document))
    classifier = dataclasses.replace(KEY, task="classification")
    with pytest.raises(PlanError, match="measured for task = None, this plan has 'classification'"):
        load_measurements(tmp_path, classifier, {}, ["fp32"], budget=BUDGET)


def test_replanning_a_trained_classifier_whose_first_plan_pruned(tmp_path: Path) -> None:
    """A user's trained classifier (file and weights), planned with a top-1 budget on one link,
    some lossy tails pruned; re-planned from its measurements for another link, a 4x slower
    edge and a KL budget: the pruned candidates come back in the task's terms (they failed with
    "accuracy metric 'kl' does not apply ... expected one of rel"), those measured before keep
    their figures, and those no longer beaten everywhere are measured now, in KL too."""
    spec = trained_classifier(tmp_path)
    first = plan_model(
        PlanRequest(
            model_spec=spec,
            input_shape=INPUT,
            links=(parse_link("ethernet"),),
            task="classification",
            accuracy_budget="top1=0.9",
            edge_slowdown=2,
            calibration=8,
            repeats=2,
        )
    )
    pruned = {(m.cut, m.codec) for m in first.measurements if m.dominated_by}
    assert pruned, "the first plan pruned nothing: the re-plan would not read a pruned entry"
    write_plan_directory(first, tmp_path / "plan")

    here = first.cloud  # measured on this machine: the same figures for both sides' reuse
    again = plan_model(
        dataclasses.replace(
            first.request,
            links=(parse_link("bw=1mbit,rtt=100ms"), parse_link("3g")),
            accuracy_budget="kl=1e-3",
            edge_slowdown=None,
            edge_profile=here.scaled(8),
            cloud_profile=here,
            objective="bytes",
            reuse_measurements=tmp_path / "plan",
        )
    )
    assert again.request.task == "classification" and again.request.budget.metric == "kl"
    before = {(m.cut, m.codec): m for m in first.measurements}
    for m in again.measurements:
        if m.dominated_by:
            assert (m.cut, m.codec) in pruned and m.metrics is None
            continue
        assert m.metrics is not None and m.metrics.kl is not None, (m.cut, m.codec)
        assert m.accuracy_cost == m.metrics.kl
        old = before[(m.cut, m.codec)]
        # Measured the first time: the same figures, not re-run; except a candidate measured on
        # the screen only that the re-plan's fronts or picks now need, measured on every input
        # (which ones depends on the profiles' timings).
        rerun = (old.evidence is not None and m.evidence is not None
                 and m.evidence.inputs > old.evidence.inputs)  # fmt: skip
        if old.metrics is not None and not rerun:
            assert m.metrics == old.metrics and m.bytes_wire == old.bytes_wire, (m.cut, m.codec)
    pick = again.choice
    assert pick.accuracy_cost <= 1e-3
