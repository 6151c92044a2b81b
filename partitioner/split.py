"""Build the two halves of a cut, a head for the edge and a tail for the cloud, and export them.

    >>> graph = capture(model, (1, 3, 224, 224))
    >>> cut = enumerate_cuts(graph)[40]
    >>> halves = split(graph, cut)
    >>> torch.equal(halves.tail(*halves.head(x))[0], model(x))
    True
    >>> export_split(halves, graph, Path("plans") / cut.id)  # head.pt2, tail.pt2

Each half is a new fx graph copied node by node from the captured one: the same ATen operations
in the same order on the same weights, so the halves reproduce the model bit for bit. A half owns
only the parameters its nodes use. Parameter-only computations and shape arithmetic are copied
into whichever half needs them (both, if both do); the tail reads the batch size from dim 0 of
the first tensor it receives (see :mod:`splitwire.partitioner.anatomy`).

The halves' signatures:

* ``head(*model_inputs)`` returns the crossing tensors, in ``cut.crossing`` order;
* ``tail(*crossing)`` returns the model's flattened outputs, as a tuple.

At cut 0 the head returns the inputs unchanged. At the last cut nothing crosses
(``cut.crossing == ()``): the head computes the whole model and returns its outputs, and the tail
is the identity on them, so ``tail(*head(x))`` is the model's output at every cut; the planner
treats this all-on-edge cut on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx
from torch.fx.node import Argument

from splitwire.partitioner.anatomy import (
    Anatomy,
    CutPlan,
    UnsplittableCut,
    analyse,
    head_nodes,
    plan_cut,
)
from splitwire.partitioner.capture import MAX_BATCH, CapturedGraph
from splitwire.partitioner.cuts import Cut
from splitwire.partitioner.errors import SplitError

__all__ = ["SplitModel", "export_split", "split"]


@dataclass(frozen=True)
class SplitModel:
    """The two halves of a model at one cut.

    Attributes:
        cut: where the model was split.
        head: runs on the edge: ``head(*model_inputs)`` returns the crossing tensors in
            ``cut.crossing`` order (the model's outputs at the last cut).
        tail: runs in the cloud: ``tail(*crossing)`` returns the model's flattened outputs.
    """

    cut: Cut
    head: fx.GraphModule
    tail: fx.GraphModule


def split(graph: CapturedGraph, cut: Cut) -> SplitModel:
    """Split ``graph`` at ``cut`` into a head and a tail.

    Args:
        graph: the captured model.
        cut: a cut from ``enumerate_cuts(graph)``.

    Returns:
        The halves; ``tail(*head(*inputs))`` equals the model's outputs exactly.

    Raises:
        SplitError: the cut was enumerated on another graph (or input shape), or cannot be split.
        CaptureError: the graph does not run at two different batch sizes.
    """
    anatomy = analyse(graph)
    n = len(anatomy.compute)
    if not 0 <= cut.index <= n:
        raise SplitError(
            f"cut {cut.id} ({cut.name}) runs {cut.index} compute nodes on the edge, but this graph "
            f"has {n}; enumerate the cuts of this graph again",
            cut=cut.id,
        )
    try:
        plan = plan_cut(anatomy, cut.index)
    except UnsplittableCut as reason:
        raise SplitError(
            f"cut {cut.id} ({cut.name}) cannot be split: {reason}; choose a cut from "
            "enumerate_cuts(graph)",
            cut=cut.id,
        ) from reason
    _check_same_graph(anatomy, plan, cut)

    if cut.index == n:
        outputs = anatomy.outputs
        head = _half(graph.module, "Head", anatomy.inputs, head_nodes(anatomy, n, outputs), outputs)
        return SplitModel(cut, head, _identity(outputs))
    head_body = head_nodes(anatomy, cut.index, plan.crossing)
    head = _half(graph.module, "Head", anatomy.inputs, head_body, plan.crossing)
    tail = _half(
        graph.module,
        "Tail",
        plan.crossing,
        plan.tail_nodes,
        anatomy.outputs,
        batch_size_reads=plan.batch_size_reads,
    )
    return SplitModel(cut, head, tail)


def export_split(split: SplitModel, graph: CapturedGraph, out_dir: Path) -> tuple[Path, Path]:
    """Export both halves with ``torch.export``, batch dimension dynamic, and save them.

    Args:
        split: halves from :func:`split` on ``graph``.
        graph: the captured model (its example inputs, of batch >= 2, trace the halves).
        out_dir: where to write ``head.pt2`` and ``tail.pt2``; created if missing.

    Returns:
        The paths of the head and tail archives; ``torch.export.load(p).module()`` runs them.

    Raises:
        SplitError: ``torch.export`` fails on a half, or an archive cannot be written; the
            message names the cut, the half and the reason.
    """
    cut = split.cut
    anatomy = analyse(graph)
    # Clones: a model that writes to its input in place must not change the graph's examples.
    inputs = tuple(t.clone() for t in graph.example_inputs)
    with torch.no_grad():
        sent = tuple(split.head(*inputs))
    if cut.index == len(anatomy.compute):
        # The tail is the identity on the outputs; only outputs with a batch dim get a dynamic one.
        tail_batched = [leaf in anatomy.batch_first for leaf in anatomy.outputs]
    else:
        tail_batched = [True] * len(sent)  # plan_cut admits batch-first crossings only
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SplitError(f"cannot create {out_dir} for cut {cut.id}: {exc}", cut=cut.id) from exc
    # Both exports before any write: a failure leaves no half-written plan behind.
    head = _export(split.head, inputs, [True] * len(inputs), cut, "head")
    tail = _export(split.tail, sent, tail_batched, cut, "tail")
    return _save(head, out_dir / "head.pt2", cut), _save(tail, out_dir / "tail.pt2", cut)


def _check_same_graph(anatomy: Anatomy, plan: CutPlan, cut: Cut) -> None:
    edge = tuple(node.name for node in anatomy.compute[: cut.index])
    crossing = tuple(node.name for node in plan.crossing)
    sends = tuple(t.node for t in cut.crossing)
    if cut.edge_nodes != edge or sends != crossing:
        raise SplitError(
            f"cut {cut.id} ({cut.name}) does not belong to this graph: it sends {list(sends)}, "
            f"the graph's cut {cut.index} sends {list(crossing)}; enumerate the cuts of this "
            "graph again",
            cut=cut.id,
        )


def _half(
    root: fx.GraphModule,
    class_name: str,
    placeholders: Sequence[fx.Node],
    body: Sequence[fx.Node],
    returns: Sequence[Argument],
    *,
    batch_size_reads: frozenset[fx.Node] = frozenset(),
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in placeholders:
        env[node] = graph.placeholder(node.name)
    if batch_size_reads:
        # (N, ...) -> N from the first input: every crossing tensor has the batch on dim 0.
        batch = graph.create_node(
            "call_function", torch.ops.aten.sym_size.int, (env[placeholders[0]], 0), name="batch"
        )
        env.update(dict.fromkeys(batch_size_reads, batch))
    for node in body:
        env[node] = graph.node_copy(node, env.__getitem__)
    graph.output(tuple(env[r] if isinstance(r, fx.Node) else r for r in returns))
    # GraphModule copies from ``root`` exactly the attributes the graph's get_attr and
    # call_module nodes name: each half owns only the weights it uses.
    return fx.GraphModule(root, graph, class_name=class_name)


def _identity(outputs: Sequence[Argument]) -> fx.GraphModule:
    graph = fx.Graph()
    names = [
        leaf.name if isinstance(leaf, fx.Node) else f"output_{i}" for i, leaf in enumerate(outputs)
    ]
    graph.output(tuple(graph.placeholder(name) for name in names))
    return fx.GraphModule(torch.nn.Module(), graph, class_name="Tail")


def _export(
    module: fx.GraphModule,
    args: tuple[torch.Tensor, ...],
    batched: Sequence[bool],
    cut: Cut,
    half: str,
) -> torch.export.ExportedProgram:
    # An example of batch >= 2 keeps the dimension symbolic; batch 1 would be specialised.
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = tuple({0: batch} if is_batched else None for is_batched in batched)
    try:
        return torch.export.export(module, args, dynamic_shapes=dynamic)
    except Exception as exc:  # export raises many unrelated types; all mean "cannot export"
        raise SplitError(
            f"cannot export the {half} of cut {cut.id} ({cut.name}): {_first_line(exc)}; "
            "choose a neighbouring cut",
            cut=cut.id,
        ) from exc


def _save(program: torch.export.ExportedProgram, path: Path, cut: Cut) -> Path:
    try:
        torch.export.save(program, path)
    except OSError as exc:
        raise SplitError(f"cannot write {path} for cut {cut.id}: {exc}", cut=cut.id) from exc
    return path


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
