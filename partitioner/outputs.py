"""Where ``splitwire plan`` writes: checked before any measuring, tidied after writing.

A plan takes minutes; an ``--out`` that is a file, or a ``--plot`` into a folder that cannot be
written, must fail in the first second, not after the measurement::

    check_plan_directory(Path("plans/r18"))    # PlanError now, not after the measuring
    check_plot_file(Path("figs/r18.png"))      # creates figs/ if missing
    ... plan, export the halves, write plan.yaml ...
    remove_stale_cuts(Path("plans/r18"), keep={"c0000", "c0042"})

Re-planning into a directory replaces ``plan.yaml``; the cut folders an earlier plan shipped and
this one does not would stay behind, so :func:`remove_stale_cuts` removes them, and only them:
folders of ``DIR/cuts`` named like a cut id (``c0042``) holding nothing but the halves
splitwire writes. Anything else (a file of the user's, a symbolic link, a folder with other
files) is left where it is, with a warning.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Collection
from pathlib import Path

from splitwire.partitioner.errors import PartitionerError, PlanError

logger = logging.getLogger(__name__)

# DIR/cuts/<cut id>/{head,tail}.pt2 (see plan_file.py's layout).
CUTS_FOLDER = "cuts"
HALF_FILES = frozenset({"head.pt2", "tail.pt2"})
_CUT_ID = re.compile(r"c[0-9]{4,}")


def check_plan_directory(directory: Path) -> None:
    """Check that a plan can be written to ``directory`` (created later, when the plan is).

    Raises:
        PlanError: ``directory`` is an existing file, one of its parents is a file, or the
            folder that would hold it cannot be written.
    """
    if directory.exists() and not directory.is_dir():
        raise PlanError(
            f"--out {directory} is a file; expected a plan directory (new, or one an earlier "
            "`splitwire plan` wrote): choose another path or remove the file"
        )
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise PlanError(
            f"--out {directory}: {existing} is a file, so no directory can be made under it; "
            "expected a path whose parents are directories"
        )
    _check_writable(existing, what=f"--out {directory}")


def check_plot_file(path: Path) -> None:
    """Check that a plot can be written to ``path``, creating its folder if it is missing.

    Raises:
        PartitionerError: matplotlib is not installed; ``path`` is a directory, has a suffix
            matplotlib cannot write, or its folder cannot be made or written.
    """
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        raise PartitionerError("--plot needs matplotlib: pip install 'splitwire[plot]'") from exc
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise PartitionerError(
            f"--plot {path}: expected a file name ending in one of "
            f"{', '.join('.' + f for f in sorted(formats))} (e.g. front.png)"
        )
    if path.is_dir():
        raise PartitionerError(
            f"--plot {path} is a directory; expected a file name, e.g. front.png"
        )
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PartitionerError(
            f"--plot {path}: cannot make its folder {folder}: {exc.strerror}; expected a path "
            "whose parents are directories you can write"
        ) from exc
    _check_writable(folder, what=f"--plot {path}")


def remove_stale_cuts(directory: Path, *, keep: Collection[str]) -> list[str]:
    """Remove the cut folders of ``directory`` that the plan just written does not ship.

    Args:
        directory: the plan directory.
        keep: the ids of the cuts the plan ships.

    Returns:
        The ids of the folders removed, sorted.
    """
    cuts = directory / CUTS_FOLDER
    if cuts.is_symlink() or not cuts.is_dir():
        return []
    removed = []
    for folder in sorted(cuts.iterdir()):
        if folder.name in keep or not _CUT_ID.fullmatch(folder.name):
            continue
        if folder.is_symlink() or not folder.is_dir():
            logger.warning("left %s in place: not a cut folder splitwire wrote", folder)
            continue
        entries = list(folder.iterdir())
        if not all(e.name in HALF_FILES and e.is_file() and not e.is_symlink() for e in entries):
            logger.warning(
                "left stale cut folder %s in place: it holds more than the halves splitwire "
                "writes (%s)",
                folder,
                ", ".join(sorted(e.name for e in entries if e.name not in HALF_FILES)) or "links",
            )
            continue
        for entry in entries:
            entry.unlink()
        folder.rmdir()
        removed.append(folder.name)
    if removed:
        logger.info("removed %d cut folders the new plan does not ship", len(removed))
    return removed


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the current directory at worst)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path, *, what: str) -> None:
    """Create and remove a file in ``folder``: permissions, read-only mounts and full disks
    are all found this way, for any user (``os.access`` answers yes to root on every path)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".splitwire-check-"):
            pass
    except OSError as exc:
        raise PlanError(
            f"{what}: cannot write in {folder}: {exc.strerror}; expected a folder you can write"
        ) from exc
