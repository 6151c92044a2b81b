"""Errors of the delay corrector.

Tree::

    SplitwireError
    +-- CorrectorError          root (exit code 2: bad input)
        +-- TaskConfigError     a synthetic-task, training or evaluation setting out of range
        +-- CheckpointError     a checkpoint directory that is missing, malformed or does not fit
        +-- ConvergenceError    training that did not reach its quality bar (exit code 3)
        +-- FeatureShapeError   remote features or frames that disagree with the checkpoint
"""

from __future__ import annotations

from splitwire.errors import SplitwireError


class CorrectorError(SplitwireError):
    """Root of the delay corrector's errors."""


class TaskConfigError(CorrectorError):
    """A setting of the synthetic task, the training or the evaluation that is out of range; the
    message names the setting, the value and what is allowed."""


class CheckpointError(CorrectorError):
    """A checkpoint directory that cannot be used: missing files, a malformed ``corrector.json``,
    or weights that do not fit the models it describes."""


class ConvergenceError(CorrectorError):
    """Training that stayed below its quality bar after every extension it was allowed.

    Attributes:
        phase: ``heavy`` or the fusion variant's name.
        miou: the held-out mIoU reached.
        required: the bar it had to reach.
    """

    exit_code = 3

    def __init__(self, message: str, *, phase: str, miou: float, required: float) -> None:
        super().__init__(message)
        self.phase = phase
        self.miou = miou
        self.required = required


class FeatureShapeError(CorrectorError):
    """Remote features (or frames) whose shape or dtype disagree with the checkpoint, or a delay
    that is not a count of frames >= 0."""
