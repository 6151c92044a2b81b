"""A plan directory for one side: the edge ships its heads, the cloud its tails, nothing more.

    splitwire plan pack plans/r18 --side cloud --out packs/r18-cloud   # plan.yaml + the tails
    splitwire plan pack plans/r18 --side edge --out packs/r18-edge     # + the heads, and the
                                                                       #   whole model (fallback)
    splitwire plan pack plans/r18 --side edge --no-local --out ...     # no whole model
    splitwire cloud --plan packs/r18-cloud ...    splitwire edge --plan packs/r18-edge ...

Keeping the tail off a device is half of why a model is split (its memory, and not shipping the
whole model to every camera), so each runtime loads only its side's halves
(:func:`~splitwire.partitioner.plan_file.side_halves`) and accepts a full plan directory or its
side's pack. A pack holds:

============  ==================================================================================
``plan.yaml``  copied byte for byte, so its signature (``plan.yaml.sig``, copied when present)
               still holds: it names and hashes every half of both sides, so one signature
               covers each side's pack as it covers the plan
cloud          the tail of every cut
edge           the head of every cut; the all-on-edge option's head is the whole model, packed
               unless ``--no-local`` (the edge then runs only options that send: a frame the
               cloud cannot serve is dropped with its reason)
``pack.yaml``  the manifest (``side``, ``local``); unsigned, it can only narrow what is loaded
============  ==================================================================================

A pack is written into a temporary folder beside ``OUT`` and renamed into place once every half
has been copied and hashed, so an interrupted pack leaves no half-written ``OUT``; then it is
read back as its runtime reads it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.plan_file import (
    HALF_OF_SIDE,
    PACK_FILE,
    PACK_SCHEMA,
    PLAN_FILE,
    PackManifest,
    Plan,
    Side,
    inside,
    load_plan,
    read_pack_manifest,
    sha256_file,
    side_halves,
)
from splitwire.partitioner.signing import TRUST_AS_IS, PlanTrust, signature_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackedFile:
    """One file of a pack: its path relative to the pack, its size, and what it is for."""

    path: str
    bytes: int
    role: str


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack_plan` wrote.

    Attributes:
        directory: the pack.
        source: the plan directory it was packed from.
        manifest: its ``pack.yaml``.
        files: every file of the pack, ``plan.yaml`` first.
        left_out_bytes: the bytes of the other side's halves (and, under ``--no-local``, the
            whole model) the source holds and the pack does not.
    """

    directory: Path
    source: Path
    manifest: PackManifest
    files: tuple[PackedFile, ...]
    left_out_bytes: int

    @property
    def bytes(self) -> int:
        """The pack's size: every file in it."""
        return sum(f.bytes for f in self.files)

    @property
    def signed(self) -> bool:
        """Whether ``plan.yaml.sig`` came along."""
        return any(f.path == signature_path(Path(PLAN_FILE)).name for f in self.files)

    def as_json(self) -> dict[str, object]:
        """``splitwire plan pack --json``'s document."""
        return {
            "directory": str(self.directory),
            "source": str(self.source),
            "side": self.manifest.side,
            "local": self.manifest.local,
            "signed": self.signed,
            "files": [{"path": f.path, "bytes": f.bytes, "role": f.role} for f in self.files],
            "bytes": self.bytes,
            "left_out_bytes": self.left_out_bytes,
        }


def pack_plan(
    source: Path,
    out: Path,
    *,
    side: Side,
    local: bool = True,
    trust: PlanTrust = TRUST_AS_IS,
) -> PackResult:
    """Write ``side``'s pack of the plan at ``source`` into ``out`` (see the module docstring).

    Args:
        source: a full plan directory (or a pack for ``side`` holding what is asked).
        out: the pack to write: a new path or an empty directory.
        side: ``"edge"`` or ``"cloud"``.
        local: for the edge, pack the whole model (the all-on-edge option's head) for the local
            fallback; False leaves it out. Must stay True for the cloud, which never runs it.
        trust: what ``source``'s ``plan.yaml`` must satisfy (``--plan-public-key``); the pack
            is read back under the same trust.

    Returns:
        What was written, with each file's size.

    Raises:
        PlanError: ``out`` exists and is not an empty directory or cannot be written; the
            source does not load for ``side`` (signature, a half missing or modified); the edge
            without a local model would have nothing to run; ``local`` False for the cloud.
    """
    if side == "cloud" and not local:
        raise PlanError(
            "--no-local is for the edge's pack (the local fallback is the edge's); the cloud's "
            "pack holds the tails only"
        )
    source = source.parent if source.name == PLAN_FILE and source.is_file() else source
    _check_out(out, source)
    manifest = PackManifest(side=side, local=side == "edge" and local)
    origin = read_pack_manifest(source) if source.is_dir() else None
    if origin is not None and origin.side == "edge" and manifest.local and not origin.local:
        raise PlanError(
            f"{source} is {origin.describe()}: it holds no whole model to pack; pack from the "
            "full plan directory, or give --no-local"
        )
    plan = load_plan(source, trust=trust, side=side)
    halves = side_halves(plan, side, local=manifest.local)
    _check_runnable(plan, manifest, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        files = [_copy(source, work, PLAN_FILE, "the plan (byte for byte)")]
        signature = signature_path(source / PLAN_FILE)
        if signature.is_file():
            files.append(_copy(source, work, signature.name, "plan.yaml's signature"))
        local_cuts = {o.cut for o in plan.options if o.local}
        for half in halves:
            copied = _copy(source, work, half.path, _role(half.cut, half.half, local_cuts))
            if sha256_file(work / half.path) != half.sha256:
                raise PlanError(
                    f"{source / half.path} changed while it was packed (its sha256 no longer "
                    "matches plan.yaml); pack again"
                )
            files.append(copied)
        (work / PACK_FILE).write_text(_manifest_text(manifest))
        size = (work / PACK_FILE).stat().st_size
        files.append(PackedFile(PACK_FILE, size, "the pack's manifest (unsigned)"))
        os.chmod(work, 0o755)  # mkdtemp makes it 0700: runtimes in containers run as others
        if out.exists():
            out.rmdir()  # empty, checked above
        work.rename(out)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise PlanError(
            f"cannot write the pack {out}: {exc.strerror} ({exc.filename}); expected a "
            "writable place with room for the halves"
        ) from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    # Read back as its runtime reads it: what was written is what will run.
    load_plan(out, trust=trust, side=side)
    kept = {h.path for h in halves}
    left_out = sum(
        (source / h.path).stat().st_size
        for h in side_halves(plan, None)
        if h.path not in kept and (source / h.path).is_file()
    )
    result = PackResult(out, source, manifest, tuple(files), left_out)
    logger.info(
        "packed %s for the %s into %s: %d files, %d bytes", source, side, out, len(files),
        result.bytes,
    )  # fmt: skip
    return result


def _check_out(out: Path, source: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PlanError(
            f"--out {out} exists and is not an empty directory; expected a new path for the "
            "pack (a pack is never written over another directory's files)"
        )
    if out.resolve().is_relative_to(source.resolve()):
        raise PlanError(
            f"--out {out} is inside the plan directory {source}; expected a path outside it"
        )


def _check_runnable(plan: Plan, manifest: PackManifest, source: Path) -> None:
    """Refuse an edge pack with nothing to run; warn when its pick is left out."""
    if manifest.side != "edge" or manifest.local:
        return
    if not any(not o.local for o in plan.options):
        raise PlanError(
            f"{source}: every option the plan ships runs all on the edge; --no-local would "
            "leave the edge nothing to run: pack without it"
        )
    choice = plan.choice
    if any(o.local and (o.cut, o.codec) == (choice.cut, choice.codec) for o in plan.options):
        logger.warning(
            "the plan's choice is all on the edge (%s), which --no-local leaves out: the edge "
            "starts on an option that sends instead",
            choice.cut,
        )


def _copy(source: Path, work: Path, relative: str, role: str) -> PackedFile:
    origin = inside(source, relative, where=f"{source}")
    target = work / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(origin, target)
    return PackedFile(relative, target.stat().st_size, role)


def _role(cut: str, half: str, local_cuts: set[str]) -> str:
    if half == "head" and cut in local_cuts:
        return f"cut {cut}'s head: the whole model (the local fallback)"
    return f"cut {cut}'s {half}"


def _manifest_text(manifest: PackManifest) -> str:
    # Written by hand, not yaml.dump: three keys, and a comment for whoever opens the file.
    held = HALF_OF_SIDE[manifest.side]
    return (
        f"# splitwire plan pack: plan.yaml and the {held}s the {manifest.side} runs"
        + (", with the whole model for the local fallback" if manifest.local else "")
        + ".\n# Unsigned: it only narrows what is loaded; plan.yaml names and hashes each half.\n"
        f"pack: {PACK_SCHEMA}\nside: {manifest.side}\nlocal: {str(manifest.local).lower()}\n"
    )
