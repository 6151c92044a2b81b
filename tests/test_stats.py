"""The project's one percentile (splitwire.stats): hand-computed cases, and agreement with the
standard library's inclusive quantiles it replaces."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitwire.stats import percentile


def test_hand_computed() -> None:
    values = [40.0, 11.0, 15.0, 12.0]  # sorted: 11, 12, 15, 40
    assert percentile(values, 0) == 11.0
    assert percentile(values, 50) == 13.5  # rank 1.5: halfway between 12 and 15
    assert percentile(values, 95) == pytest.approx(36.25)  # rank 2.85: 15 + 0.85 · 25
    assert percentile(values, 100) == 40.0
    assert percentile([7], 95) == 7.0
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_q_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="from 0 to 100"):
        percentile([1.0], q)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=50),
    st.integers(1, 99),
)
def test_matches_inclusive_quantiles(values: list[float], q: int) -> None:
    expected = statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    assert percentile(values, q) == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert min(values) <= percentile(values, q) <= max(values)
    assert percentile(values, 50) == pytest.approx(statistics.median(values), rel=1e-9, abs=1e-6)
