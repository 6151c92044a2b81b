"""What a model's outputs mean (its task), and which accuracy metrics that gives a meaning to.

    splitwire plan --model mynet.py:build@runs/mynet.pt --task classification \
        --accuracy-budget top1=0.99 --link lte --out plans/mynet

``zoo:`` and ``hf:`` models know their task; ``--task`` names it for any other spec (a
``file.py:callable``, a ``.pt2``) or overrides a known one. The task decides which metrics are
measured (:mod:`splitwire.partitioner.accuracy`), so which ``--accuracy-budget`` applies, and
what the edge calls a result (``plan.yaml``'s ``model.task``)::

    task             first output                 metrics
    classification   (N, K) class logits, K >= 2  rel, kl, top1, top5
    segmentation     (N, K, H, W) logits, K >= 2  rel, pixel, miou
    regression       any                          rel
    (unknown)        any                          rel

A task is checked against the captured graph's outputs before anything is measured: a
``--task classification`` on a model whose first output is (1, 64, 8, 8) fails in the first
seconds, naming the shape, not after the measurement with a metric that "does not apply".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from splitwire.partitioner.accuracy import (
    CLASSIFIER_METRICS,
    SEGMENTATION_METRICS,
    AccuracyBudget,
)
from splitwire.partitioner.capture import CapturedGraph
from splitwire.partitioner.errors import PartitionerError
from splitwire.partitioner.plan_file import TASKS

__all__ = ["TASKS", "check_task", "output_shapes", "task_metric_names"]

# The first output's dimensions each task needs: (N, K) and (N, K, H, W).
_OUTPUT_DIMS = {"classification": 2, "segmentation": 4}


def task_metric_names(task: str | None) -> tuple[str, ...]:
    """The metrics measured for ``task`` (see the module table)."""
    if task == "classification":
        return CLASSIFIER_METRICS
    if task == "segmentation":
        return SEGMENTATION_METRICS
    return ("rel",)


def output_shapes(graph: CapturedGraph) -> list[tuple[int, ...]]:
    """The shapes of the graph's tensor outputs at its example inputs' batch, in order.

    Read from the output node's recorded values where the capture kept them (``torch.export``),
    else from one forward pass on the example inputs.
    """
    node = next(n for n in reversed(graph.module.graph.nodes) if n.op == "output")
    values = [
        getattr(arg, "meta", {}).get("val") for arg in torch.utils._pytree.tree_leaves(node.args)
    ]
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        with torch.no_grad():
            result = graph.module(*graph.example_inputs)
        values = list(torch.utils._pytree.tree_leaves(result))
    return [tuple(int(d) for d in v.shape) for v in values if isinstance(v, torch.Tensor)]


def check_task(
    task: str | None,
    *,
    outputs: Sequence[tuple[int, ...]],
    budget: AccuracyBudget,
    spec: str,
) -> None:
    """Check that ``task`` fits the model's ``outputs`` and that ``budget``'s metric applies.

    Args:
        task: one of :data:`TASKS`, or None when unknown.
        outputs: the model's output shapes (:func:`output_shapes`).
        budget: the accuracy budget the plan will hold picks to.
        spec: the model spec, quoted in messages.

    Raises:
        PartitionerError: an unknown task; a classification or segmentation task whose first
            output does not have that task's shape; a budget in a metric the task does not
            measure (the message says which ``--task`` or budget would do).
    """
    if task is not None and task not in TASKS:
        raise PartitionerError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    dims = _OUTPUT_DIMS.get(task or "")
    if dims is not None:
        first = outputs[0] if outputs else ()
        if len(first) != dims or first[1] < 2:
            wanted = "(N, K) class logits" if dims == 2 else "(N, K, H, W) per-pixel logits"
            raise PartitionerError(
                f"{spec}: task {task} expects its first output to be {wanted} with K >= 2; "
                f"the model's first output is {list(first)}; give the --task its outputs mean "
                f"({', '.join(TASKS)})"
            )
    applicable = task_metric_names(task)
    if budget.metric not in applicable:
        needs = next(t for t in TASKS if budget.metric in task_metric_names(t))
        what = f"task {task}" if task else "a model of unknown task"
        raise PartitionerError(
            f"--accuracy-budget {budget.text}: {budget.metric} is a {needs} metric, and {spec} "
            f"is {what}, measured in {', '.join(applicable)}; give --task {needs} if that is "
            f"what its outputs mean, or a budget in {', '.join(applicable)}"
        )
