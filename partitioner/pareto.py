"""Pareto dominance and the exact non-dominated set of a list of plans' objective vectors.

Each candidate plan is a point of objectives (latency, uplink bytes, edge energy, accuracy
loss, …), each to be minimised or maximised. ``a`` *dominates* ``b`` when ``a`` is at least as
good on every objective and strictly better on at least one; the *front* is the set of points
no other point dominates. Identical points do not dominate each other, so duplicates of a front
point are all on the front (a planner may then tie-break by any rule it likes).

The sweep, on a worked example (both objectives minimised)::

    index:   0       1       2       3       4
    point: (3, 1)  (1, 3)  (2, 2)  (2, 3)  (1, 3)

1. Flip the sign of every ``max`` objective, so that smaller is better everywhere.
2. Visit the points in lexicographic order: 1 (1, 3), 4 (1, 3), 2 (2, 2), 3 (2, 3), 0 (3, 1).
   If ``a`` dominates ``b``, then ``a`` ≤ ``b`` component-wise and ``a ≠ b``, so ``a`` comes
   strictly earlier: a point can only be dominated by points visited before it.
3. Keep the front of the points visited so far, and test each new point against it alone:
   whatever dominates ``p`` is itself on the front or dominated by a front point, which then
   dominates ``p`` too. A point that survives joins the front, and no later point can remove it
   (step 2).

   * (1, 3): front empty → front {1}.
   * (1, 3): equal to point 1, not dominated → front {1, 4}.
   * (2, 2): not ≥ (1, 3) on the second objective → front {1, 4, 2}.
   * (2, 3): (2, 2) ≤ (2, 3) and strictly better on the second → dominated, dropped.
   * (3, 1): better than everything on the second objective → front {1, 4, 2, 0}.

   ``pareto_front`` returns ``[0, 1, 2, 4]`` (indices ascending).

4. Vectorised: rather than one point at a time, a block of up to ``BLOCK`` consecutive points
   (in the sorted order) is tested at once, against the front so far and against every point
   of the block itself (a dominator may sit in the same block). For each pair the two tests
   ``F <= P`` on every objective and ``F < P`` on some objective are accumulated one objective
   at a time into two ``(block, front)`` boolean matrices; numpy reduces over a trailing axis
   of length m (``np.all(..., axis=-1)``) several times slower than it combines 2-D matrices.

The cost is O(n · (|front| + BLOCK) · m) comparisons, all in numpy, with n / BLOCK Python
iterations: 2 000 points with 5 objectives take about 10 ms (random) to 35 ms (every point
on the front) on a 2-core machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Sense = Literal["min", "max"]

# Points tested together: (BLOCK, front) boolean matrices stay around a megabyte for fronts
# of a few thousand points.
BLOCK = 256


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[Sense]) -> bool:
    """Whether ``a`` Pareto-dominates ``b``.

    Args:
        a: objective values of the first point.
        b: objective values of the second point, same length.
        senses: ``"min"`` or ``"max"`` per objective.

    Returns:
        True if ``a`` is at least as good as ``b`` on every objective and strictly better on
        one. Equal points do not dominate each other.

    Raises:
        ValueError: for mismatched lengths, an unknown sense or a NaN objective.
    """
    _check_senses(senses)
    if len(a) != len(senses) or len(b) != len(senses):
        raise ValueError(f"points have {len(a)} and {len(b)} objectives, senses have {len(senses)}")
    strictly_better = False
    for x, y, sense in zip(a, b, senses, strict=True):
        if math.isnan(x) or math.isnan(y):
            raise ValueError(f"NaN objective in {list(a)!r} or {list(b)!r}")
        if sense == "max":
            x, y = -x, -y
        if x > y:
            return False
        strictly_better = strictly_better or x < y
    return strictly_better


def pareto_front(
    points: Sequence[Sequence[float]] | npt.NDArray[Any], senses: Sequence[Sense]
) -> list[int]:
    """Indices of the exact non-dominated set (see the module docstring for the sweep).

    Args:
        points: ``n`` points of ``m`` objectives each (a sequence of sequences or an
            ``(n, m)`` array). Infinities are allowed and compare as usual.
        senses: ``"min"`` or ``"max"`` per objective, ``m`` of them.

    Returns:
        The indices of the points no other point dominates, ascending. Identical points are
        all kept; an empty input gives ``[]``.

    Raises:
        ValueError: for ragged or non-numeric points, a points/senses length mismatch, an
            unknown sense, no objectives, or a NaN objective (naming the point and objective).
    """
    _check_senses(senses)
    if len(points) == 0:
        return []
    try:
        values = np.array(points, dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"points must be an (n, m) array of numbers: {err}") from err
    if values.ndim != 2 or values.shape[1] != len(senses):
        raise ValueError(
            f"points have shape {values.shape}, expected (n, {len(senses)}) for senses {senses}"
        )
    nan = np.argwhere(np.isnan(values))
    if nan.size:
        row, column = (int(v) for v in nan[0])
        raise ValueError(f"point {row} has a NaN objective {column}: {values[row].tolist()}")
    # Minimise everything: negate the objectives to be maximised.
    values[:, np.array([s == "max" for s in senses])] *= -1.0
    # lexsort sorts by its last key first, so reversed columns give lexicographic order.
    order = np.lexsort(values.T[::-1])
    values = values[order]
    front = values[:0]
    on_front: list[npt.NDArray[np.intp]] = []
    for start in range(0, len(values), BLOCK):
        block = values[start : start + BLOCK]
        dominated = _dominated_by(block, front) | _dominated_by(block, block)
        front = np.concatenate([front, block[~dominated]])
        on_front.append(order[start : start + BLOCK][~dominated])
    return sorted(int(i) for i in np.concatenate(on_front))


def _dominated_by(
    targets: npt.NDArray[np.float64], others: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Which ``targets`` rows some row of ``others`` dominates (all objectives minimised)."""
    no_worse = np.ones((len(targets), len(others)), dtype=bool)
    better = np.zeros((len(targets), len(others)), dtype=bool)
    for column in range(targets.shape[1]):
        mine = targets[:, column, None]  # (t, 1)
        theirs = others[None, :, column]  # (1, o)
        no_worse &= theirs <= mine
        better |= theirs < mine
    return np.any(no_worse & better, axis=1)


def _check_senses(senses: Sequence[str]) -> None:
    if len(senses) == 0:
        raise ValueError("need at least one objective sense")
    bad = [s for s in senses if s not in ("min", "max")]
    if bad:
        raise ValueError(f"senses must be 'min' or 'max', got {bad!r}")
