"""How ``splitwire plan`` shows it is alive: a bar in a terminal, log lines everywhere else.

A progress bar is for a person watching a terminal. Redirected to a file, a CI log or a pipe
(stderr not a terminal), or next to ``--json`` on stdout, a bar is either invisible or noise, so
the same loop logs a line at each tenth of its items instead, and every phase logs when it
starts and how long it took::

    INFO splitwire.partitioner.progress: capture: started
    INFO splitwire.partitioner.progress: capture: done in 5.8 s
    INFO splitwire.partitioner.progress: encoding cuts: 18/174 cuts (10 %), 12.1 s
    ...

The lines are INFO records of :data:`logger`; the command line shows them at its default
verbosity (:func:`show_progress_lines`), a library caller sees them only if it asks.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A line per this share of a loop's items: ten lines however long the loop.
LINES_PER_LOOP = 10


def show_progress_lines(*, quiet: bool) -> None:
    """Let the progress lines through at the command line's default verbosity (WARNING), unless
    ``quiet`` (``splitwire -q``). Called by the CLI only: library code configures no logging."""
    logger.setLevel(logging.ERROR if quiet else logging.INFO)


def bars_shown(*, bars: bool) -> bool:
    """Whether a loop shows a bar: asked for (``bars``) and stderr is a terminal."""
    return bars and sys.stderr.isatty()


def track(items: Sequence[T], *, desc: str, unit: str, bars: bool) -> Iterator[T]:
    """Iterate ``items`` showing progress: a tqdm bar when :func:`bars_shown`, else a log line
    at each tenth of them (and at the last), e.g. ``encoding cuts: 35/174 cuts (20 %), 8.0 s``.

    Args:
        items: what the loop runs over (its length is the total).
        desc: what the loop does, e.g. ``"encoding cuts"``.
        unit: what an item is, e.g. ``"cut"``.
        bars: a bar is wanted (``splitwire plan`` without ``--json``).
    """
    if bars_shown(bars=bars):
        yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr)
        return
    yield from _logged(items, desc=desc, unit=unit)


def _logged(items: Sequence[T], *, desc: str, unit: str) -> Iterable[T]:
    total = len(items)
    start = time.perf_counter()
    next_line = 1
    for done, item in enumerate(items, start=1):
        yield item
        # Line k of LINES_PER_LOOP once k tenths are done; a short loop logs each item.
        if done * LINES_PER_LOOP >= next_line * total:
            logger.info(
                "%s: %d/%d %ss (%d %%), %.1f s",
                desc,
                done,
                total,
                unit,
                100 * done // total,
                time.perf_counter() - start,
            )
            while next_line * total <= done * LINES_PER_LOOP:
                next_line += 1


@contextmanager
def phase(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Time a planning phase into ``seconds[name]``, logging its start and its duration."""
    logger.info("%s: started", name)
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = time.perf_counter() - start
    logger.info("%s: done in %.1f s", name, seconds[name])
