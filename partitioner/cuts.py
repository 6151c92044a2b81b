"""Enumerate the cuts of a captured graph: where the edge stops, and which tensors it sends.

The compute nodes of a graph (see :mod:`splitwire.partitioner.anatomy`) are numbered in graph order,
0..n-1. Cut ``k`` runs the first ``k`` on the edge and the rest in the cloud; it *crosses* every
value made on the edge (or a model input) and used in the cloud, skip connections included.
Cut 0 sends the input; cut n runs everything on the edge and sends nothing.

Worked example: a residual block ``relu(bn(conv(x)) + x)`` (submodules ``conv``, ``bn``,
``relu``) captures as four compute nodes::

    x ──► 0 conv2d ──► 1 batch_norm ──► 2 add ──► 3 relu ──► y
    └───────────────────────────────────┘ (skip)

    cut  name      edge                        crossing         why
    0    input     -                           x                all in the cloud: send the input
    1    conv      conv2d                      x, conv2d        add, in the cloud, needs the skip
    2    bn        conv2d, batch_norm          x, batch_norm    likewise
    3    add       conv2d, batch_norm, add     add              the skip was used on the edge
    4    output    all four                    -                all on the edge: nothing is sent

A position is not a cut when something that crosses cannot be sent: a list of tensors (right
after ``unbind``, before its ``getitem``\\ s: a ``getitem`` belongs with its producer), a tensor
without the batch on dim 0, or a dtype the wire has no name for. Those positions are skipped,
so the indices of the cuts returned are not contiguous.

Cut ids are ``"c"`` and the zero-padded index (``"c0000"``..``"c0173"``): short, unique,
sortable, and the same for the same model and input shape. Names are readable but not unique:
the module path of the last node on the edge (``"layer2.1.relu"``), that node's name for
operations outside any submodule (``"flatten"``), ``"input"`` and ``"output"`` at the ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import fx

from splitwire.partitioner.anatomy import Anatomy, UnsplittableCut, analyse, plan_cut
from splitwire.partitioner.capture import CapturedGraph
from splitwire.protocol.header import DTYPE_NAMES

__all__ = ["CrossingTensor", "Cut", "compute_nodes", "enumerate_cuts"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossingTensor:
    """One tensor a cut sends from the edge to the cloud, at the plan's input shape.

    Attributes:
        node: the graph node that produces it (a model input at cut 0).
        shape: its shape, batch included (usually 1).
        dtype: its wire dtype name (``splitwire.protocol.header.DTYPES``), e.g. ``"float32"``.
        nbytes: its size before any codec.
    """

    node: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class Cut:
    """A place to split the model between edge and cloud.

    Attributes:
        index: how many compute nodes run on the edge (0..n).
        id: a short unique id, ``"c"`` plus the zero-padded index (``"c0042"``).
        name: a readable place, the module path of the last edge node; not unique.
        crossing: the tensors sent, model inputs first, then in graph order.
        edge_nodes: the compute nodes run on the edge, in graph order.
    """

    index: int
    id: str
    name: str
    crossing: tuple[CrossingTensor, ...]
    edge_nodes: tuple[str, ...]

    @property
    def bytes_raw(self) -> int:
        """Bytes sent per frame before any codec: the sum of the crossing tensors' sizes."""
        return sum(t.nbytes for t in self.crossing)


def compute_nodes(graph: CapturedGraph) -> list[str]:
    """The names of the graph's compute nodes, in the order cuts count them.

    These are the nodes placed on one side or the other and timed by the profiler; parameter
    and shape computations are recomputed where needed and not counted.

    Args:
        graph: a captured model.

    Returns:
        Compute-node names in graph order; cut ``k`` runs the first ``k`` on the edge.

    Raises:
        CaptureError: the graph does not run at two different batch sizes (see
            :func:`enumerate_cuts`).
    """
    return [node.name for node in analyse(graph).compute]


def enumerate_cuts(graph: CapturedGraph) -> list[Cut]:
    """Every valid cut of ``graph``, from cut 0 (send the input) to cut n (send nothing).

    Runs the graph twice (at the input shape's batch and one more) to learn shapes, dtypes and
    which dimension is the batch.

    Args:
        graph: a captured model.

    Returns:
        The valid cuts by increasing index; positions where the crossing values cannot be sent
        are left out (see the module docstring).

    Raises:
        CaptureError: the graph does not run at two different batch sizes (a batch size fixed
            in the model's code); the cloud batches frames, so the batch must vary.
    """
    anatomy = analyse(graph)
    n = len(anatomy.compute)
    cuts = []
    for k in range(n + 1):
        try:
            crossing = _describe_crossing(anatomy, plan_cut(anatomy, k).crossing)
        except UnsplittableCut as reason:
            logger.debug("position %d (%s) is not a cut: %s", k, _cut_name(anatomy, k), reason)
            continue
        cuts.append(
            Cut(
                index=k,
                id=f"c{k:04d}",
                name=_cut_name(anatomy, k),
                crossing=crossing,
                edge_nodes=tuple(node.name for node in anatomy.compute[:k]),
            )
        )
    return cuts


def _describe_crossing(
    anatomy: Anatomy, crossing: tuple[fx.Node, ...]
) -> tuple[CrossingTensor, ...]:
    described = []
    for node in crossing:
        info = anatomy.values[node]
        assert info.dtype is not None  # plan_cut admits tensors only
        if info.dtype not in DTYPE_NAMES:
            raise UnsplittableCut(f"{node.name} crosses, and the wire has no dtype {info.dtype}")
        described.append(
            CrossingTensor(node.name, info.shape, DTYPE_NAMES[info.dtype], info.nbytes)
        )
    return tuple(described)


def _cut_name(anatomy: Anatomy, k: int) -> str:
    if k == 0:
        return "input"
    if k == len(anatomy.compute):
        return "output"
    last = anatomy.compute[k - 1]
    # export records (path, class) per enclosing module, innermost last; the root's path is "".
    stack = last.meta.get("nn_module_stack")
    if stack:
        path = str(list(stack.values())[-1][0])
        if path:
            return path
    if last.op == "call_module":  # torch.fx captures name leaf modules by their path
        return str(last.target)
    return last.name
