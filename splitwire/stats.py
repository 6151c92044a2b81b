"""The project's one percentile, for the runtimes' summaries and the benchmarks' figures alike.

    percentile([12.0, 15.0, 11.0, 40.0], 50)   # 13.5
    percentile(latencies_ms, 95)

Linear interpolation between the two nearest ranks (numpy's default, the ``inclusive`` method
of :func:`statistics.quantiles`): with ``n`` sorted values, the q-th percentile sits at rank
``q / 100 · (n - 1)``, so 0 is the minimum, 50 the median and 100 the maximum, and it never
leaves the range of the values. Worked example, ``[11, 12, 15, 40]`` at q = 95: rank
0.95 · 3 = 2.85, between 15 (rank 2) and 40 (rank 3): 15 + 0.85 · 25 = 36.25.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (see the module docstring for the method).

    Args:
        values: numbers in any order (they are sorted here).
        q: the percentile, 0 to 100 (0 the minimum, 50 the median, 100 the maximum).

    Returns:
        The percentile as a float; NaN when there are no values (callers that print or
        serialise it say "n/a" or leave the figure out).

    Raises:
        ValueError: ``q`` outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q!r}: expected a number from 0 to 100")
    data = sorted(values)
    if not data:
        return math.nan
    rank = q / 100 * (len(data) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return float(data[low] + (data[high] - data[low]) * (rank - low))
