"""The planner: turn a model, device profiles and network links into a deployable plan.

    >>> from partitioner import PlanRequest, parse_link, plan_model, write_plan_directory
    >>> outcome = plan_model(PlanRequest(model_spec="zoo:resnet18", input_shape=(1, 3, 224, 224),
    ...                                  links=(parse_link("wifi"),), edge_slowdown=4))
    >>> write_plan_directory(outcome, Path("plans/resnet18"))

Pure torch and the standard library: no gRPC, no MQTT. The edge and the cloud only read what
this package writes (``plan.yaml`` and the ``.pt2`` halves, see :mod:`partitioner.plan_file`).
"""

import importlib
from typing import Any

# Names are imported on first use (PEP 562): `splitwire --help` must not pay for torch.
_LOCATIONS = {
    "AUTO_CODECS": "partitioner.planner",
    "Candidate": "partitioner.cost",
    "CapturedGraph": "partitioner.capture",
    "CrossingTensor": "partitioner.cuts",
    "Cut": "partitioner.cuts",
    "LinkModel": "partitioner.link",
    "LinkTrace": "partitioner.link",
    "Measurement": "partitioner.cost",
    "PartitionerError": "partitioner.errors",
    "Plan": "partitioner.plan_file",
    "PlanCut": "partitioner.plan_file",
    "PlanOutcome": "partitioner.planner",
    "PlanRequest": "partitioner.planner",
    "Profile": "partitioner.profile_format",
    "SplitModel": "partitioner.split",
    "capture": "partitioner.capture",
    "compute_nodes": "partitioner.cuts",
    "dominates": "partitioner.pareto",
    "enumerate_cuts": "partitioner.cuts",
    "export_split": "partitioner.split",
    "load_plan": "partitioner.plan_file",
    "load_trace": "partitioner.link",
    "pareto_front": "partitioner.pareto",
    "parse_link": "partitioner.link",
    "plan_model": "partitioner.planner",
    "profile_graph": "partitioner.profiling",
    "split": "partitioner.split",
    "write_plan_directory": "partitioner.planner",
}
__all__ = sorted(_LOCATIONS)


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'partitioner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LOCATIONS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LOCATIONS])
