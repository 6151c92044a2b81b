"""Accuracy measured lazily: lossy candidates screened on a few calibration inputs, every front
member and every pick confirmed on all of them, with the same picks as measuring everything."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from splitwire.partitioner.link import parse_link
from splitwire.partitioner.measure import BYTES_MIN_FRAMES, is_camera_baseline
from splitwire.partitioner.planner import (
    DEFAULT_CALIBRATION,
    SCREEN_INPUTS,
    PlanRequest,
    decide,
    plan_model,
    write_plan_directory,
)
from splitwire.partitioner.report import outcome_json

pytestmark = pytest.mark.slow

SMALL = """
import torch
from torch import nn


class Small(nn.Module):
    # A stem, two residual blocks and a classifier: a dozen cuts of different sizes.
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.a(x) + x)
        x = torch.relu(self.down(x))
        x = torch.relu(self.b(x) + x)
        return self.head(x.mean(dim=(2, 3)))


def build() -> nn.Module:
    torch.manual_seed(0)
    return Small()
"""

CALIBRATION = 12
SCREEN = 3


def test_fronts_and_picks_rest_on_every_input_and_match_measuring_all(tmp_path: Path) -> None:
    (tmp_path / "small.py").write_text(SMALL)
    request = PlanRequest(
        model_spec=f"{tmp_path / 'small.py'}:build",
        input_shape=(1, 3, 32, 32),
        links=tuple(parse_link(t) for t in ("wifi", "lte", "bw=2mbit,rtt=80ms,name=slow")),
        edge_slowdown=4.0,
        calibration=CALIBRATION,
        screen=SCREEN,
        repeats=2,
    )
    lazy = plan_model(request)
    assert {"measure.encode", "measure.screen", "measure.confirm"} <= set(lazy.seconds)
    measured = [m for m in lazy.measurements if m.evidence is not None]
    assert measured, "expected lossy candidates whose tails ran"
    assert {m.evidence.inputs for m in measured if m.evidence} <= {SCREEN, CALIBRATION}
    for decision in lazy.decisions:
        for c in decision.candidates:
            m = c.measurement
            if c.pareto or c is decision.pick:
                # A front member or a pick: exact by construction, or measured on every input.
                assert m.evidence is None or m.evidence.inputs == CALIBRATION, (m.cut, m.codec)
                assert m.accuracy_interval is not None
            record = c.as_json()
            assert {"accuracy_inputs", "accuracy_interval", "bytes_frames"} <= record.keys()
            if m.evidence is not None:
                low, high = m.accuracy_interval or (math.nan, math.nan)
                assert low <= m.metrics.value("rel") <= high if m.metrics else False
            if m.sends and not is_camera_baseline(m):
                assert BYTES_MIN_FRAMES <= m.bytes_frames <= CALIBRATION
    assert lazy.choice.evidence is None or lazy.choice.evidence.inputs == CALIBRATION

    # Everything measured on every input, on the same profiles: the same picks, and each
    # confirmed candidate's accuracy is what measuring all inputs at once gives.
    full = plan_model(
        dataclasses.replace(
            request,
            edge_profile=lazy.edge,
            cloud_profile=lazy.cloud,
            edge_slowdown=None,
            prune=False,
        )
    )
    assert all(m.evidence is None or m.evidence.inputs == CALIBRATION for m in full.measurements)
    # The camera baselines' JPEG times are measured anew in each run (noise): give the full
    # table the lazy run's, so the two differ only in how accuracy was measured (the bytes
    # are the same: the same frames encoded the same way).
    camera = {(m.cut, m.codec): m for m in lazy.measurements if is_camera_baseline(m)}
    fulls = {(m.cut, m.codec): m for m in full.measurements}
    table = [
        dataclasses.replace(
            m,
            encode_ms=camera[(m.cut, m.codec)].encode_ms,
            decode_ms=camera[(m.cut, m.codec)].decode_ms,
        )
        if (m.cut, m.codec) in camera
        else m
        for m in full.measurements
    ]
    for m in lazy.measurements:
        assert m.bytes_wire == fulls[(m.cut, m.codec)].bytes_wire or is_camera_baseline(m)
    for m in lazy.measurements:
        if m.evidence is not None and m.evidence.inputs == CALIBRATION:
            want = fulls[(m.cut, m.codec)].accuracy_cost
            assert m.accuracy_cost == pytest.approx(want, rel=1e-3, abs=1e-9)
    full_decisions, full_choice, _ = decide(table, full.request)
    for a, b in zip(full_decisions, lazy.decisions, strict=True):
        assert (a.pick.measurement.cut, a.pick.measurement.codec) == (
            b.pick.measurement.cut,
            b.pick.measurement.codec,
        )
    assert (full_choice.cut, full_choice.codec) == (lazy.choice.cut, lazy.choice.codec)


def test_the_json_reports_no_screened_pick_or_front_member(tmp_path: Path) -> None:
    """With the default calibration (32 inputs, screened on 4) every pick and front member in
    the ``--json`` document rests on all 32 inputs or is exact (no tail ran); a candidate
    measured on the screen only says so (``accuracy_inputs`` 4) and is neither."""
    (tmp_path / "small.py").write_text(SMALL)
    request = PlanRequest(
        model_spec=f"{tmp_path / 'small.py'}:build",
        input_shape=(1, 3, 32, 32),
        links=tuple(parse_link(t) for t in ("wifi", "bw=2mbit,rtt=80ms,name=slow")),
        edge_slowdown=4.0,
        repeats=2,
    )
    assert (request.calibration, request.screen) == (DEFAULT_CALIBRATION, SCREEN_INPUTS)
    document = outcome_json(plan_model(request), None)
    records = document["candidates"]
    screened = [r for r in records if r["accuracy_inputs"] == SCREEN_INPUTS]
    # Whether any candidate stays on the screen only depends on the fronts, which move with the
    # profile's timings (3 runs in 4 confirmed every screened one here): what holds every time
    # is that the fronts and picks rest on every input. A stored screened candidate is covered
    # deterministically by the re-plan test below.
    assert any(r["accuracy_inputs"] == DEFAULT_CALIBRATION for r in records)
    assert {r["accuracy_inputs"] for r in records} <= {None, SCREEN_INPUTS, DEFAULT_CALIBRATION}
    for r in records:
        if r["pareto"]:
            assert r["accuracy_inputs"] in (None, DEFAULT_CALIBRATION), (r["cut"], r["codec"])
        if r["accuracy_inputs"] is not None:
            low, high = r["accuracy_interval"]
            assert low <= high
    choice = document["choice"]
    for pick in [choice, *choice["links"]]:
        assert pick["accuracy_inputs"] in (None, DEFAULT_CALIBRATION), pick
        assert pick["accuracy_interval"] is not None
    picked = {(p["cut"], p["codec"]) for p in [choice, *choice["links"]]}
    assert not picked & {(r["cut"], r["codec"]) for r in screened}


def test_a_replan_measures_again_what_it_finds_screened_on_a_front(tmp_path: Path) -> None:
    """Measurements reused for other links, objectives or budgets: a candidate stored as
    measured on the screen only that the re-plan puts on a front (or picks) is measured on
    every input again, so the re-plan's fronts and picks rest on every input too. The stored
    file says so of every lossy front member of the first plan (as if other links had left
    them off their fronts), with their figures unchanged."""
    (tmp_path / "small.py").write_text(SMALL)
    first = plan_model(
        PlanRequest(
            model_spec=f"{tmp_path / 'small.py'}:build",
            input_shape=(1, 3, 32, 32),
            links=(parse_link("wifi"),),
            edge_slowdown=4.0,
            calibration=CALIBRATION,
            screen=SCREEN,
            repeats=2,
        )
    )
    write_plan_directory(first, tmp_path / "plan")
    front = {
        (c.measurement.cut, c.measurement.codec)
        for c in first.decisions[0].candidates
        if c.pareto and c.measurement.evidence is not None
    }
    assert front, "expected lossy candidates on the front"
    stored = tmp_path / "plan" / "measurements.json"
    document = json.loads(stored.read_text())
    for entry in document["entries"]:
        if (entry["cut"], entry["codec"]) in front:
            entry["evidence"]["inputs"] = SCREEN
    stored.write_text(json.dumps(document))
    again = plan_model(
        dataclasses.replace(
            first.request,
            edge_profile=first.edge,
            cloud_profile=first.cloud,
            edge_slowdown=None,
            reuse_measurements=tmp_path / "plan",
        )
    )
    after = {(m.cut, m.codec): m for m in again.measurements}
    for decision in again.decisions:
        for c in decision.candidates:
            if c.pareto or c is decision.pick:
                m = c.measurement
                assert m.evidence is None or m.evidence.inputs == CALIBRATION, (m.cut, m.codec)
    assert again.choice.evidence is None or again.choice.evidence.inputs == CALIBRATION
    # Measured again from the start: the figures the first plan had on every input.
    before = {(m.cut, m.codec): m for m in first.measurements}
    for key in front:
        if after[key].evidence is not None and after[key].evidence.inputs == CALIBRATION:
            assert after[key].accuracy_cost == pytest.approx(before[key].accuracy_cost, rel=1e-3)
    assert any(after[key].evidence.inputs == CALIBRATION for key in front)
