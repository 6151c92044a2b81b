"""Errors of the partitioner (model specs, capture, cuts, plans).

Tree::

    SplitwireError
    +-- PartitionerError
        +-- ModelSpecError   a model spec that does not resolve, or weights that do not fit
        +-- CaptureError     a model that cannot be captured as a graph

"""

from splitwire.errors import SplitwireError


class PartitionerError(SplitwireError):
    """Root of the partitioner's errors."""


class ModelSpecError(PartitionerError):
    """A model spec (``zoo:NAME``, ``file.py:callable``, ``model.pt2``, ``hf:Class``) that cannot
    be resolved, or a checkpoint that does not fit the model it names."""


class CaptureError(PartitionerError):
    """A model that neither ``torch.export`` nor ``torch.fx`` can turn into a graph."""
