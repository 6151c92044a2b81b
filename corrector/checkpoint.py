"""The checkpoint directory that ``splitwire corrector train`` writes::

    corrector.json          format, config, seed, steps, losses, held-out mIoU, file digests
    heavy.pt                the heavy model's state dict (``zoo:texture_unet@DIR/heavy.pt``)
    local-<fusion>.pt       one local model + fusion operator per trained variant

State dicts are written with ``torch.save`` and read with ``torch.load(..., weights_only=True)``
into models rebuilt from ``corrector.json``, with ``strict=True``: nothing is unpickled, and a
checkpoint that does not fit fails loudly instead of running with random weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from splitwire.corrector.errors import CheckpointError
from splitwire.corrector.fusion import make_fusion
from splitwire.corrector.local import LocalModel
from splitwire.partitioner.models.texture_unet import TextureUNet, texture_unet

__all__ = ["FORMAT", "META_FILE", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "splitwire-corrector/1"
META_FILE = "corrector.json"
HEAVY_FILE = "heavy.pt"


def local_file(fusion: str) -> str:
    """The file name of a fusion variant's local model."""
    return f"local-{fusion}.pt"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint, models in eval mode.

    Attributes:
        directory: where it was read from.
        meta: the parsed ``corrector.json``.
        heavy: the heavy model.
        locals: fusion name → local model (with its fusion operator).
    """

    directory: Path
    meta: dict[str, Any]
    heavy: TextureUNet
    locals: dict[str, LocalModel]

    @property
    def tau_max(self) -> int:
        return int(self.meta["tau_max"])

    @property
    def primary(self) -> str:
        """The fusion variant used when none is named (Dedelayed's ``add`` when trained)."""
        return str(self.meta["primary"])


def build_heavy(options: dict[str, int]) -> TextureUNet:
    """The heavy model from its builder options (``meta["heavy"]["options"]``)."""
    return texture_unet(**options)


def build_local(
    *, fusion: str, width: int, remote_channels: int, tau_max: int, num_classes: int
) -> LocalModel:
    """A local model with the named fusion operator."""
    op = make_fusion(fusion, channels=width, remote_channels=remote_channels, tau_max=tau_max)
    return LocalModel(fusion=op, num_classes=num_classes)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(
    directory: Path, *, heavy: TextureUNet, locals: dict[str, LocalModel], meta: dict[str, Any]
) -> None:
    """Write the state dicts and ``corrector.json`` (``meta`` plus the format and digests).

    Raises:
        CheckpointError: the directory or a file cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(heavy.state_dict(), directory / HEAVY_FILE)
        files = {"heavy": {"file": HEAVY_FILE, "sha256": _sha256(directory / HEAVY_FILE)}}
        for name, model in locals.items():
            path = directory / local_file(name)
            torch.save(model.state_dict(), path)
            files[name] = {"file": path.name, "sha256": _sha256(path)}
        full = {"format": FORMAT, **meta, "files": files}
        (directory / META_FILE).write_text(json.dumps(full, indent=2) + "\n")
    except OSError as exc:
        raise CheckpointError(f"cannot write the checkpoint to {directory}: {exc}") from exc


def load_checkpoint(directory: Path, *, fusions: list[str] | None = None) -> Checkpoint:
    """Read a checkpoint directory.

    Args:
        directory: what ``splitwire corrector train --out`` wrote.
        fusions: the variants to load (default: every one it holds).

    Returns:
        The models in eval mode and the metadata.

    Raises:
        CheckpointError: a missing or malformed file, a digest mismatch, a variant it does not
            hold, or weights that do not fit the models ``corrector.json`` describes.
    """
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{meta_path} does not exist; expected a directory written by "
            "'splitwire corrector train --out DIR'"
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {meta_path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: expected format {FORMAT!r}, got {got!r}")
    try:
        files = meta["files"]
        heavy = build_heavy(dict(meta["heavy"]["options"]))
        _load_into(heavy, directory, files["heavy"])
        available = [name for name in files if name != "heavy"]
        wanted = available if fusions is None else fusions
        locals_ = {}
        for name in wanted:
            if name not in files:
                raise CheckpointError(
                    f"{directory} holds no fusion variant {name!r}; it holds "
                    f"{', '.join(available)} (train it with --fusion {name})"
                )
            model = build_local(
                fusion=name,
                width=int(meta["local"]["width"]),
                remote_channels=heavy.downlink_channels,
                tau_max=int(meta["tau_max"]),
                num_classes=heavy.num_classes,
            )
            _load_into(model, directory, files[name])
            locals_[name] = model
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} is malformed: {type(exc).__name__}: {exc}") from exc
    return Checkpoint(directory, meta, heavy.eval(), {k: m.eval() for k, m in locals_.items()})


def _load_into(model: torch.nn.Module, directory: Path, entry: dict[str, str]) -> None:
    path = directory / entry["file"]
    try:
        digest = _sha256(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}… differs from {entry['sha256'][:12]}… recorded in "
            f"{META_FILE}; the file was modified or belongs to another run — train again"
        )
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:  # pickle refusals are RuntimeErrors too
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {exc}") from exc
