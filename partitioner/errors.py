"""Errors of the partitioner (model specs, capture, cuts, plans).

Tree::

    SplitwireError
    +-- PartitionerError
        +-- ModelSpecError   a model spec that does not resolve, or weights that do not fit
        +-- CaptureError     a model that cannot be captured as a graph
        +-- LinkError        a link spec or link trace that does not parse or is out of range
        +-- SplitError       a cut whose head and tail cannot be built or exported
        +-- InputShapeError  an input shape that does not parse (``--input-shape 1,3,224,224``)
        +-- ProfileError     a profile file that is malformed, or was taken for another model
        +-- PlanError        a plan directory that is missing, malformed or modified
        |   +-- TensorSpecError     tensors that disagree with the plan's specs (shape, dtype)
        |   +-- ArchiveError        a .pt2 half holding what splitwire never loads (pickles, code)
        |   +-- PlanSignatureError  a plan.yaml without a valid signature by the required key
        +-- SigningKeyError  a signing key file that is missing, malformed or of another kind

"""

from splitwire.errors import SplitwireError


class PartitionerError(SplitwireError):
    """Root of the partitioner's errors."""


class ModelSpecError(PartitionerError):
    """A model spec (``zoo:NAME``, ``file.py:callable``, ``model.pt2``, ``hf:Class``) that cannot
    be resolved, or a checkpoint that does not fit the model it names."""


class CaptureError(PartitionerError):
    """A model that neither ``torch.export`` nor ``torch.fx`` can turn into a graph."""


class SplitError(PartitionerError):
    """A cut whose halves cannot be built from the graph, or cannot be exported.

    Attributes:
        cut: the id of the cut, e.g. ``"c0042"``.
    """

    def __init__(self, message: str, *, cut: str) -> None:
        super().__init__(message)
        self.cut = cut


class LinkError(PartitionerError):
    """A link spec (``lte,rtt=80ms``, ``bw=20mbit,rtt=40ms``), a link trace file, or link
    parameters (negative RTT, loss >= 1) that cannot describe a network link."""


class InputShapeError(PartitionerError):
    """An input shape given as text (``1,3,224,224``) that is not a list of positive sizes."""


class ProfileError(PartitionerError):
    """A device profile that cannot be used: a malformed or wrong-schema file (the message names
    the key and value), or one taken for another model, input shape or graph."""


class PlanError(PartitionerError):
    """A plan directory that is missing, malformed, of an unknown schema, or modified."""


class TensorSpecError(PlanError):
    """Tensors that disagree with what the plan says crosses the cut (count, shape, dtype).

    Attributes:
        field: which tensor and property, e.g. ``"tensors[1].shape"``.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class ArchiveError(PlanError):
    """A ``.pt2`` half that holds an entry splitwire never loads: one that ``torch.export.load``
    would unpickle or run as code, or anything else its own exports do not contain.

    Attributes:
        archive: the archive's path.
        entry: the entry refused, as named inside the archive (None: the archive as a whole).
    """

    def __init__(self, message: str, *, archive: str, entry: str | None) -> None:
        super().__init__(message)
        self.archive = archive
        self.entry = entry


class PlanSignatureError(PlanError):
    """A ``plan.yaml`` that is unsigned, or whose signature is not by the required key."""


class SigningKeyError(PartitionerError):
    """An Ed25519 key file (``--sign-key``, ``--plan-public-key``) that cannot be used."""
