"""Skip the accuracy measurement of lossy candidates that cannot reach any front.

Running the tail on decoded activations is what makes planning slow; bytes on the wire (known
after encoding) and compute times (from the profiles) are cheap, and so is pricing them on every
link. An accuracy cost is never negative, and an exact candidate (a lossless codec, or nothing
sent) costs exactly 0. So when an exact candidate ``L`` is at least as good as a lossy candidate
``X`` on latency, throughput, bytes and edge ms, and strictly better on one of them, on *every*
link, then ``L`` dominates ``X`` whatever ``X``'s accuracy turns out to be:

* ``X`` is on no link's front (``L`` is no worse on the fifth objective either);
* removing ``X`` changes no other candidate's front membership: anything ``X`` dominates, ``L``
  dominates too (dominance is transitive);
* ``X`` is never a link's pick: ``L`` is within any budget and no worse on the objective, the
  bytes and the latency the pick is ranked by;
* ``X`` is never the robust pick: ``L``'s ratio to each link's best is no worse on any link.

Example (ResNet-18, lte): after ``layer4.1.relu`` the int8 codes of the 512×7×7 activation
(23 kB) cost an encode on top of nearly the whole model, so all-on-edge (no bytes, same edge
time less the encode, no RTT) beats it on every objective: its tail is not run.

Such a candidate stays in the table with ``dominated_by`` naming ``L`` (accuracy unknown,
``accuracy_cost`` = ``inf``). The dominance is decided on the very figures the decision uses
(:func:`splitwire.partitioner.cost.evaluate`), so it is exact, not an estimate. It holds for the
links planned for only: measurements reused for other links are checked again, and the
candidates no longer dominated are measured then (:func:`recheck_skipped`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from splitwire.partitioner.cost import DEFAULT_WINDOW, Measurement, evaluate
from splitwire.partitioner.link import LinkModel

# The objectives besides accuracy, as "smaller is better" signs (throughput is maximised).
_CHEAP = (("latency_ms", 1.0), ("throughput_fps", -1.0), ("bytes_wire", 1.0), ("edge_ms", 1.0))


def is_pending(measurement: Measurement) -> bool:
    """Whether ``measurement`` has no accuracy yet (a lossy codec whose tail has not run)."""
    return measurement.metrics is None and not measurement.dominated_by


def dominated_lossy(
    measurements: Sequence[Measurement],
    links: Sequence[LinkModel],
    *,
    window: float = DEFAULT_WINDOW,
) -> dict[tuple[str, str], str]:
    """The pending (lossy, unmeasured) candidates an exact one dominates on every link.

    Args:
        measurements: every candidate, priced; exact ones have ``accuracy_cost == 0`` and
            metrics, pending ones have no metrics (:func:`is_pending`).
        links: every link state planned for.
        window: frames in flight, as the decision prices them.

    Returns:
        ``{(cut, codec): "cut/codec" of a dominating exact candidate}``.
    """
    exact = [m for m in measurements if m.metrics is not None and m.accuracy_cost == 0.0]
    pending = [m for m in measurements if is_pending(m)]
    if not exact or not pending or not links:
        return {}
    beaten = np.ones((len(pending), len(exact)), dtype=bool)
    for link in links:
        known = _points(exact, link, window)  # (E, 4)
        unknown = _points(pending, link, window)  # (P, 4)
        # (P, E): exact e is <= pending p everywhere and < somewhere, on this link.
        no_worse = (known[None, :, :] <= unknown[:, None, :]).all(axis=2)
        better = (known[None, :, :] < unknown[:, None, :]).any(axis=2)
        beaten &= no_worse & better
    out = {}
    for p, row in enumerate(beaten):
        hits = np.flatnonzero(row)
        if hits.size:
            winner = exact[int(hits[0])]
            out[(pending[p].cut, pending[p].codec)] = f"{winner.cut}/{winner.codec}"
    return out


def recheck_skipped(
    measurements: Sequence[Measurement],
    links: Sequence[LinkModel],
    *,
    window: float = DEFAULT_WINDOW,
) -> list[Measurement]:
    """Reused measurements on other links: a candidate skipped when they were made keeps its
    mark only if an exact candidate still beats it on every one of ``links``; the others come
    back pending (:func:`is_pending`), to be measured now."""
    if not any(m.dominated_by for m in measurements):
        return list(measurements)
    fresh = [replace(m, dominated_by=None) if m.dominated_by else m for m in measurements]
    still = dominated_lossy(fresh, links, window=window)
    return [
        replace(m, dominated_by=still[(m.cut, m.codec)]) if (m.cut, m.codec) in still else m
        for m in fresh
    ]


def _points(measurements: Sequence[Measurement], link: LinkModel, window: float) -> np.ndarray:
    rows = []
    for m in measurements:
        c = evaluate(m, link, window=window)
        rows.append([sign * c.objective(name) for name, sign in _CHEAP])
    return np.asarray(rows, dtype=np.float64)
