"""Pareto dominance and the non-dominated set (splitwire.partitioner.pareto).

Run: .venv/bin/python -m pytest tests/partitioner/test_pareto.py -q
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitwire.partitioner import pareto
from splitwire.partitioner.pareto import Sense, dominates, pareto_front

MIN2: list[Sense] = ["min", "min"]
# latency, accuracy, uplink bytes, throughput, edge energy
MIXED5: list[Sense] = ["min", "max", "min", "max", "min"]


def brute_dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[Sense]) -> bool:
    """Independent reference: written from the definition, not from the implementation."""
    as_good = all(
        (x <= y) if s == "min" else (x >= y) for x, y, s in zip(a, b, senses, strict=True)
    )
    better = any((x < y) if s == "min" else (x > y) for x, y, s in zip(a, b, senses, strict=True))
    return as_good and better


def brute_front(points: Sequence[Sequence[float]], senses: Sequence[Sense]) -> list[int]:
    return [
        i
        for i, p in enumerate(points)
        if not any(brute_dominates(q, p, senses) for j, q in enumerate(points) if j != i)
    ]


# --- dominance by hand ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "senses", "expected"),
    [
        ((1, 2), (2, 3), MIN2, True),  # better on both
        ((1, 2), (1, 3), MIN2, True),  # tie on one, better on the other
        ((1, 3), (2, 2), MIN2, False),  # a trade-off: neither dominates
        ((2, 2), (1, 3), MIN2, False),
        ((1, 2), (1, 2), MIN2, False),  # equal points never dominate
        ((2, 3), (1, 2), MIN2, False),
        ((10, 0.9), (12, 0.8), ["min", "max"], True),  # faster and more accurate
        ((10, 0.7), (12, 0.8), ["min", "max"], False),  # faster but less accurate
        ((10, 0.8), (10, 0.8), ["min", "max"], False),
        ((1, 1), (2, 2), ["max", "max"], False),
        ((2, 2), (1, 2), ["max", "max"], True),
        ((-math.inf, 0), (0, 0), MIN2, True),
        ((math.inf, 0), (math.inf, 0), MIN2, False),
        # 5-D, mixed senses
        ((10, 0.9, 100, 30, 5), (12, 0.9, 100, 25, 5), MIXED5, True),
        ((10, 0.9, 100, 30, 5), (10, 0.9, 100, 30, 5), MIXED5, False),
        ((10, 0.9, 100, 30, 5), (10, 0.91, 100, 30, 5.1), MIXED5, False),
        ((10, 0.91, 100, 30, 5.1), (10, 0.9, 100, 30, 5), MIXED5, False),
        ((10, 0.9, 100, 30, 5), (10, 0.9, 100, 30, 5.0001), MIXED5, True),
        ((10, 0.9, 100, 30, 5), (10, 0.9, 100, 31, 5), MIXED5, False),
    ],
)
def test_dominates_by_hand(
    a: tuple[float, ...], b: tuple[float, ...], senses: list[Sense], expected: bool
) -> None:
    assert dominates(a, b, senses) is expected
    assert brute_dominates(a, b, senses) is expected


def test_dominates_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        dominates((1, math.nan), (1, 2), MIN2)
    with pytest.raises(ValueError, match="objectives"):
        dominates((1, 2, 3), (1, 2), MIN2)
    with pytest.raises(ValueError, match="'min' or 'max'"):
        dominates((1, 2), (1, 2), ["min", "maximise"])  # type: ignore[list-item]


# --- the front by hand ----------------------------------------------------------------------


def test_docstring_example() -> None:
    points = [(3, 1), (1, 3), (2, 2), (2, 3), (1, 3)]
    assert pareto_front(points, MIN2) == [0, 1, 2, 4]


def test_front_2d_mixed_senses() -> None:
    # (latency s, accuracy): 2 is beaten by 0 (same accuracy, slower); 3 by 1 (same accuracy,
    # slower); 0, 1, 4, 5 each trade latency for accuracy.
    points = [(10, 0.70), (20, 0.80), (15, 0.70), (30, 0.80), (5, 0.60), (25, 0.90)]
    assert pareto_front(points, ["min", "max"]) == [0, 1, 4, 5]
    # Maximising latency instead reverses who wins on it.
    assert pareto_front(points, ["max", "max"]) == [3, 5]


def test_front_5d_mixed_senses() -> None:
    points = [
        (10, 0.90, 100, 30, 5.0),  # 0: on the front
        (12, 0.90, 100, 25, 5.0),  # 1: dominated by 0
        (10, 0.91, 100, 30, 5.1),  # 2: more accurate than 0, more energy: on the front
        (9, 0.50, 200, 10, 9.0),  # 3: the fastest: on the front
        (12, 0.85, 150, 20, 6.0),  # 4: dominated by 0 on every objective
        (10, 0.90, 100, 30, 5.0),  # 5: a duplicate of 0: kept
    ]
    assert pareto_front(points, MIXED5) == [0, 2, 3, 5]


def test_duplicates_single_and_empty() -> None:
    points = [(1, 2), (1, 2), (2, 1), (2, 2), (2, 2)]
    assert pareto_front(points, MIN2) == [0, 1, 2]  # both copies of the dominated (2, 2) go
    assert pareto_front([(5, 5)] * 4, MIN2) == [0, 1, 2, 3]
    assert pareto_front([(7, 1)], MIN2) == [0]
    assert pareto_front([], MIN2) == []
    assert pareto_front(np.empty((0, 2)), MIN2) == []


def test_numpy_input_and_infinities() -> None:
    points = np.array([[1.0, np.inf], [np.inf, 1.0], [2.0, 2.0], [np.inf, np.inf]])
    assert pareto_front(points, MIN2) == [0, 1, 2]
    assert pareto_front(points, ["max", "max"]) == [3]


@pytest.mark.parametrize(
    ("points", "senses", "fragment"),
    [
        ([(1, 2), (3, math.nan)], MIN2, "point 1 has a NaN objective 1"),
        (np.array([[math.nan, 1.0]]), MIN2, "point 0 has a NaN objective 0"),
        ([(1, 2), (3,)], MIN2, "(n, m) array"),
        ([(1, 2, 3)], MIN2, "expected (n, 2)"),
        ([(1, 2)], ["min", "best"], "'min' or 'max'"),
        ([(1, 2)], [], "at least one objective"),
        ([("a", 2)], MIN2, "(n, m) array"),
    ],
)
def test_front_rejects_bad_input(
    points: Sequence[Sequence[float]], senses: list[Sense], fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        pareto_front(points, senses)
    assert fragment in str(info.value)


# --- against the brute force ----------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[Sense]]:
    objectives = draw(st.integers(1, 5))
    sense: st.SearchStrategy[Sense] = st.sampled_from(["min", "max"])
    senses = draw(st.lists(sense, min_size=objectives, max_size=objectives))
    # Small integers make ties and exact duplicates common.
    point = st.tuples(*[st.integers(0, 4)] * objectives)
    return draw(st.lists(point, max_size=40)), senses


@given(problem=problems(), block=st.sampled_from([1, 3, 256]))
def test_front_equals_brute_force(
    problem: tuple[list[tuple[int, ...]], list[Sense]], block: int
) -> None:
    points, senses = problem
    # Small blocks exercise the block boundaries that 40 points never reach with BLOCK = 256.
    with mock.patch.object(pareto, "BLOCK", block):
        front = pareto_front(points, senses)
    assert front == brute_front(points, senses)
    for i in set(range(len(points))) - set(front):
        assert any(dominates(points[j], points[i], senses) for j in front)
    for i in front:
        assert not any(dominates(points[j], points[i], senses) for j in range(len(points)))


def test_front_equals_brute_force_across_blocks() -> None:
    rng = np.random.default_rng(7)
    points = rng.integers(0, 12, size=(700, 3)).tolist()
    senses: list[Sense] = ["min", "max", "min"]
    assert pareto_front(points, senses) == brute_front(points, senses)


def test_fast_for_2000_points_in_5d() -> None:
    rng = np.random.default_rng(0)
    random_points = rng.random((2000, 5))
    antichain = rng.random((2000, 5))
    antichain[:, 1] = -antichain[:, 0]  # every point is on the front
    for points, expected in ((random_points, None), (antichain, list(range(2000)))):
        start = time.perf_counter()
        front = pareto_front(points, ["min"] * 5)
        # ~10–40 ms here; the bound only catches an accidental O(n²) Python loop.
        assert time.perf_counter() - start < 2.0
        if expected is not None:
            assert front == expected
