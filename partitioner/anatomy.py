"""The roles the nodes of a captured graph play, and what each side of a cut must compute.

Every node of a captured graph is one of:

* a **model input** (a placeholder);
* **compute**: a call node whose value is a tensor, or a list of tensors (``unbind``), computed
  from the *values* of a model input. Only these are placed on the edge or in the cloud, timed
  by the profiler, and sent across a cut;
* **recomputable**: everything else, evaluated by whichever side needs it: parameters and
  constants (``get_attr``) and tensors computed from them alone, shape arithmetic (``sym_size``,
  SymInt maths) and the export guard check ``_guards_fn`` (value ``None``, no users, so neither
  half ever needs it; each half gets its own guards when it is exported).

"Computed from the values of an input" follows tensor arguments only. ViT's
``expand(cls_token, [N, -1, -1])`` reads the batch size N, a shape, but none of the input's
values: it is recomputable, and a tail rebuilds its (N, 1, D) cls tokens instead of receiving
them. Sizes are recomputed too: in a tail, every node whose value is the batch size (recognised
by recording the graph at two batch sizes) reads it from dim 0 of the first tensor received, so
``x.shape[0]`` works though ``x`` stayed on the edge. Any other recomputable node that reads an edge
tensor the cut does not send (``x.shape[2:]`` in a ``torch.fx`` capture) makes the cut
unsplittable.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import fx
from torch.fx.node import Argument, map_aggregate

from splitwire.partitioner.capture import MAX_BATCH, CapturedGraph
from splitwire.partitioner.errors import CaptureError
from splitwire.partitioner.recording import ValueInfo, record_values

__all__ = ["Anatomy", "CutPlan", "UnsplittableCut", "analyse", "head_nodes", "plan_cut"]

_CALLS = frozenset({"call_function", "call_method", "call_module"})
# The cut enumeration and every split of a graph share one analysis (two recorded runs); an entry
# goes when its CapturedGraph does (the anatomy refers to the graph's nodes, never to the key).
_ANALYSES: weakref.WeakKeyDictionary[CapturedGraph, Anatomy] = weakref.WeakKeyDictionary()


class UnsplittableCut(Exception):
    """A cut position at which the graph cannot be split; the message says why.

    Internal: :func:`splitwire.partitioner.cuts.enumerate_cuts` skips such positions and
    :func:`splitwire.partitioner.split.split` re-raises it as a ``SplitError``.
    """


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Roles of the nodes of one captured graph, and facts about their values.

    Attributes:
        inputs: the model inputs (placeholders), in order.
        compute: the compute nodes in graph (topological) order; cut ``k`` runs ``compute[:k]``
            on the edge.
        position: ``compute[i] -> i`` and ``input -> -1`` (inputs are always on the edge).
        order: every node's index in the graph, to put node sets back in graph order.
        outputs: the leaves of the output node's argument (nodes, or constants such as ``None``).
        values: every node's value at the graph's input shape.
        batch_first: tensor nodes whose dim 0 is the batch.
        batch_sizes: non-tensor nodes whose value is the batch size.
        last_use: for each input or compute node, the position of its last compute consumer, or
            ``len(compute)`` if it is a model output; unused values are absent.
    """

    inputs: tuple[fx.Node, ...]
    compute: tuple[fx.Node, ...]
    position: Mapping[fx.Node, int]
    order: Mapping[fx.Node, int]
    outputs: tuple[Argument, ...]
    values: Mapping[fx.Node, ValueInfo]
    batch_first: frozenset[fx.Node]
    batch_sizes: frozenset[fx.Node]
    last_use: Mapping[fx.Node, int]

    def on_edge(self, node: fx.Node, k: int) -> bool:
        """Whether ``node`` is an input or a compute node that cut ``k`` runs on the edge."""
        return node in self.position and self.position[node] < k


@dataclass(frozen=True)
class CutPlan:
    """What crosses cut ``k`` and what the tail computes from it.

    Attributes:
        k: the number of compute nodes on the edge.
        crossing: the values sent, inputs first, then in graph order; empty at ``k == n``.
        tail_nodes: the nodes the tail copies, in graph order (empty at ``k == n``).
        batch_size_reads: nodes of the original graph whose value is the batch size and that the
            tail needs; it reads the batch size from dim 0 of ``crossing[0]`` instead.
    """

    k: int
    crossing: tuple[fx.Node, ...]
    tail_nodes: tuple[fx.Node, ...]
    batch_size_reads: frozenset[fx.Node]


def analyse(graph: CapturedGraph) -> Anatomy:
    """Assign every node of ``graph`` its role (memoised while ``graph`` lives).

    Args:
        graph: a captured model.

    Returns:
        The graph's anatomy at ``graph.input_shape``.

    Raises:
        CaptureError: the graph does not run at two different batch sizes.
    """
    anatomy = _ANALYSES.get(graph)
    if anatomy is None:
        anatomy = _ANALYSES[graph] = _analyse(graph)
    return anatomy


def plan_cut(anatomy: Anatomy, k: int) -> CutPlan:
    """Work out what crosses cut ``k`` and what the tail must compute.

    Args:
        anatomy: the graph's anatomy.
        k: compute nodes on the edge, ``0 <= k <= len(anatomy.compute)``.

    Returns:
        The plan of the cut.

    Raises:
        UnsplittableCut: a crossing value is not a tensor (a list from ``unbind`` before its
            ``getitem``\\ s) or lacks the batch on dim 0, or the tail would need a size of an
            edge tensor other than the batch size.
    """
    n = len(anatomy.compute)
    if k == n:
        # Everything, the output included, runs on the edge: nothing is sent.
        return CutPlan(k, (), (), frozenset())
    crossing = tuple(
        value
        for value in (*anatomy.inputs, *anatomy.compute[:k])
        if anatomy.last_use.get(value, -1) >= k
    )
    for value in crossing:
        info = anatomy.values[value]
        if info.kind != "tensor":
            raise UnsplittableCut(f"{value.name} crosses, and is not a tensor")
        # The cloud batches frames from many edges along dim 0, the tail reads the batch size
        # from it, and export marks it dynamic: a tensor without the batch on dim 0 (ViT's
        # (3, N, heads, T, d) q/k/v stack) cannot be sent.
        if value not in anatomy.batch_first:
            raise UnsplittableCut(
                f"{value.name} crosses, and its dim 0 is not the batch (shape {info.shape})"
            )
    # For k < n the crossing is never empty (every cloud compute node descends from an input),
    # so the tail always has a crossing[0] to read the batch size from.
    nodes, reads = _tail_closure(anatomy, k, crossing)
    return CutPlan(k, crossing, nodes, reads)


def head_nodes(anatomy: Anatomy, k: int, targets: Iterable[Argument]) -> tuple[fx.Node, ...]:
    """The nodes the head of cut ``k`` copies to compute ``targets``, in graph order.

    Args:
        anatomy: the graph's anatomy.
        k: compute nodes on the edge.
        targets: what the head returns (crossing values, or the outputs at ``k == n``);
            non-node targets are constants and need nothing.

    Returns:
        The non-placeholder nodes the head must compute, in graph order.
    """
    # Compute nodes without users are kept for their effect (an in-place op whose result is
    # unused still changes the tensor it writes to).
    seeds = [t for t in targets if isinstance(t, fx.Node)]
    seeds += [node for node in anatomy.compute[:k] if not node.users]
    needed: set[fx.Node] = set()
    stack = seeds
    while stack:
        node = stack.pop()
        if node in needed or node.op == "placeholder":
            continue
        needed.add(node)
        stack.extend(node.all_input_nodes)
    return tuple(sorted(needed, key=anatomy.order.__getitem__))


def _tail_closure(
    anatomy: Anatomy, k: int, crossing: tuple[fx.Node, ...]
) -> tuple[tuple[fx.Node, ...], frozenset[fx.Node]]:
    sent = set(crossing)
    needed: set[fx.Node] = set()
    reads: set[fx.Node] = set()
    stack = [leaf for leaf in anatomy.outputs if isinstance(leaf, fx.Node)]
    stack += [node for node in anatomy.compute[k:] if not node.users]
    while stack:
        node = stack.pop()
        if node in needed or node in reads or node in sent:
            continue
        if node in anatomy.batch_sizes:
            # Any read of the batch size (``sym_size(x, 0)``, ``x.shape[0]`` in fx) gives the
            # same number: read it from what the tail receives, whatever it was read from.
            reads.add(node)
            continue
        unsent = [
            arg for arg in node.all_input_nodes if anatomy.on_edge(arg, k) and arg not in sent
        ]
        if unsent:
            # Only a recomputable node gets here (the edge arguments of a cloud compute node
            # cross, and so do edge outputs): it reads something other than the batch size off
            # an edge tensor that is not sent.
            raise UnsplittableCut(
                f"the tail needs {node.name}, which reads {unsent[0].name} on the edge and is not "
                "the batch size"
            )
        needed.add(node)
        stack.extend(node.all_input_nodes)
    return tuple(sorted(needed, key=anatomy.order.__getitem__)), frozenset(reads)


def _analyse(graph: CapturedGraph) -> Anatomy:
    module = graph.module
    nodes = list(module.graph.nodes)
    batch = graph.input_shape[0]
    # Two runs, at the plan's batch and another: a dim or a number equal to the batch in both is
    # the batch (a constant cannot equal two different values).
    other_batch = batch + 1 if batch < MAX_BATCH else batch - 1
    try:
        values = record_values(module, _at_batch(graph.example_inputs, batch))
        other = record_values(module, _at_batch(graph.example_inputs, other_batch))
    except Exception as exc:  # the interpreter re-raises whatever an operation raised
        lines = str(exc).strip().splitlines()
        raise CaptureError(
            f"the captured graph does not run at batch {batch} and {other_batch} "
            f"({type(exc).__name__}: {lines[0] if lines else ''}); cuts need a batch dimension "
            "that can vary: remove batch sizes fixed in forward, e.g. reshape(1, ...)"
        ) from exc

    inputs = tuple(node for node in nodes if node.op == "placeholder")
    data: set[fx.Node] = set(inputs)
    compute: list[fx.Node] = []
    for node in nodes:
        if (
            node.op in _CALLS
            and values[node].kind != "other"
            and any(arg in data for arg in node.all_input_nodes)
        ):
            data.add(node)
            compute.append(node)
    position = {node: -1 for node in inputs} | {node: i for i, node in enumerate(compute)}

    last_use: dict[fx.Node, int] = {}
    for i, node in enumerate(compute):  # graph order, so the last assignment is the last use
        for arg in node.all_input_nodes:
            if arg in data:
                last_use[arg] = i
    outputs = _output_leaves(module.graph)
    for leaf in outputs:
        if isinstance(leaf, fx.Node) and leaf in data:
            last_use[leaf] = len(compute)

    return Anatomy(
        inputs=inputs,
        compute=tuple(compute),
        position=position,
        order={node: i for i, node in enumerate(nodes)},
        outputs=outputs,
        values=values,
        batch_first=frozenset(
            node
            for node, info in values.items()
            if info.kind == "tensor"
            and info.shape[:1] == (batch,)
            and other[node].shape[:1] == (other_batch,)
        ),
        batch_sizes=frozenset(
            node
            for node, info in values.items()
            if info.number == batch and other[node].number == other_batch
        ),
        last_use=last_use,
    )


def _at_batch(examples: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    # The first sample repeated: shapes are what is recorded, and dtypes stay the example's.
    return tuple(e[:1].expand(batch, *e.shape[1:]).contiguous() for e in examples)


def _output_leaves(graph: fx.Graph) -> tuple[Argument, ...]:
    leaves: list[Argument] = []
    map_aggregate(graph.output_node().args[0], leaves.append)
    return tuple(leaves)
