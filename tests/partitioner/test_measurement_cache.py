"""A measurements file that is malformed or made for another plan is refused with PlanError."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from splitwire.partitioner.accuracy import AccuracyBudget
from splitwire.partitioner.baselines import camera_codecs
from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.measurement_cache import CacheKey, load_measurements

GRID = tuple(str(c) for c in camera_codecs((50, 75, 90)))
KEY = CacheKey("h" * 64, (1, 3, 8, 8), 2, GRID)
BUDGET = AccuracyBudget("rel", 0.01)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"schema": 4}, "not a schema-3 measurements file"),
        ({"schema": 1, "key": KEY.as_json(), "entries": []}, "measured before task metrics"),
        ({"schema": 2, "key": KEY.as_json(), "entries": []},
         "measured before the camera-frame baselines"),
        ({"schema": 3, "key": [], "entries": []}, "expected a 'key' mapping"),
        ({"schema": 3, "key": KEY.as_json(), "entries": {}}, "an 'entries' list"),
        ({"schema": 3, "key": KEY.as_json() | {"calibration": 4}, "entries": []},
         "measured for calibration = 4, this plan has 2"),
        ({"schema": 3, "key": KEY.as_json(), "entries": [5]}, "malformed entry 5"),
        ({"schema": 3, "key": KEY.as_json(), "entries": [], "camera_ms": {"frame": 3}},
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
    document = {"schema": 3, "key": key.as_json() | {field: stale}, "entries": []}
    (tmp_path / "measurements.json").write_text(json.dumps(document))
    with pytest.raises(PlanError, match=f"measured for {field} = '{stale}'"):
        load_measurements(tmp_path, key, {}, ["fp32"], budget=BUDGET)


def test_a_cache_made_with_another_jpeg_grid_is_refused(tmp_path: Path) -> None:
    """The JPEG grid decides which baselines were measured: a cache of another grid (here an
    older plan's single quality at 4:2:0 only) is stale, and the message names both grids."""
    old = CacheKey("h" * 64, (1, 3, 8, 8), 2, tuple(str(c) for c in camera_codecs((90,))))
    document = {"schema": 3, "key": old.as_json(), "entries": []}
    (tmp_path / "measurements.json").write_text(json.dumps(document))
    with pytest.raises(PlanError) as info:
        load_measurements(tmp_path, KEY, {}, ["fp32"], budget=BUDGET)
    message = str(info.value)
    assert "measured for camera_codecs = ['frame', 'frame+zstd1', 'jpeg90', 'jpeg90s444']" in (
        message
    )
    assert "jpeg50s444" in message and "drop --reuse-measurements" in message
