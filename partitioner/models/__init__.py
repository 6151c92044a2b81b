"""Reference models and the spec strings that name a model everywhere.

    >>> from splitwire.partitioner.models import load_model
    >>> loaded = load_model("zoo:resnet18?num_classes=10")
    >>> loaded.input_shape
    (1, 3, 224, 224)

See :mod:`splitwire.partitioner.models.spec` for the grammar (``zoo:``, ``file.py:callable``,
``.pt2``, ``hf:``, ``?options``, ``@weights``, ``@pretrained``).
"""

from splitwire.partitioner.models.hashing import graph_text, model_hash, weights_hash
from splitwire.partitioner.models.spec import LoadedModel, ModelSpec, load_model, parse_spec
from splitwire.partitioner.models.zoo import (
    PretrainedWeights,
    ZooEntry,
    pretrained_names,
    zoo_entry,
    zoo_names,
)

__all__ = [
    "LoadedModel",
    "ModelSpec",
    "PretrainedWeights",
    "ZooEntry",
    "graph_text",
    "load_model",
    "model_hash",
    "parse_spec",
    "pretrained_names",
    "weights_hash",
    "zoo_entry",
    "zoo_names",
]
