"""The planner: turn a model, device profiles and network links into a deployable plan.

    >>> from splitwire.partitioner import PlanRequest, parse_link, plan_model, write_plan_directory
    >>> outcome = plan_model(PlanRequest(model_spec="zoo:resnet18", input_shape=(1, 3, 224, 224),
    ...                                  links=(parse_link("wifi"),), edge_slowdown=4))
    >>> write_plan_directory(outcome, Path("plans/resnet18"))

Pure torch and the standard library: no gRPC, no MQTT. The edge and the cloud only read what
this package writes (``plan.yaml`` and the ``.pt2`` halves, see
:mod:`splitwire.partitioner.plan_file`), through :func:`open_plan`.
"""

from splitwire.lazy import lazy_exports

# Names are imported on first use (PEP 562): `splitwire --help` must not pay for torch.
_LOCATIONS = {
    "AUTO_CODECS": "splitwire.partitioner.planner",
    "Candidate": "splitwire.partitioner.cost",
    "CapturedGraph": "splitwire.partitioner.capture",
    "CrossingTensor": "splitwire.partitioner.cuts",
    "Cut": "splitwire.partitioner.cuts",
    "LinkModel": "splitwire.partitioner.link",
    "LinkTrace": "splitwire.partitioner.link",
    "Measurement": "splitwire.partitioner.cost",
    "Outage": "splitwire.partitioner.link",
    "PartitionerError": "splitwire.partitioner.errors",
    "Plan": "splitwire.partitioner.plan_file",
    "PlanCut": "splitwire.partitioner.plan_file",
    "PlanOption": "splitwire.partitioner.plan_file",
    "Price": "splitwire.partitioner.cost",
    "Preprocess": "splitwire.partitioner.plan_file",
    "RunnablePlan": "splitwire.partitioner.runtime",
    "TensorSpec": "splitwire.partitioner.plan_file",
    "TensorSpecError": "splitwire.partitioner.errors",
    "check_tensors": "splitwire.partitioner.runtime",
    "open_plan": "splitwire.partitioner.runtime",
    "PlanOutcome": "splitwire.partitioner.planner",
    "PlanRequest": "splitwire.partitioner.planner",
    "Profile": "splitwire.partitioner.profile_format",
    "SplitModel": "splitwire.partitioner.split",
    "capture": "splitwire.partitioner.capture",
    "compute_nodes": "splitwire.partitioner.cuts",
    "dominates": "splitwire.partitioner.pareto",
    "enumerate_cuts": "splitwire.partitioner.cuts",
    "export_split": "splitwire.partitioner.split",
    "load_plan": "splitwire.partitioner.plan_file",
    "load_trace": "splitwire.partitioner.link",
    "pareto_front": "splitwire.partitioner.pareto",
    "price_option": "splitwire.partitioner.cost",
    "parse_link": "splitwire.partitioner.link",
    "plan_model": "splitwire.partitioner.planner",
    "profile_graph": "splitwire.partitioner.profiling",
    "split": "splitwire.partitioner.split",
    "write_plan_directory": "splitwire.partitioner.planner",
}
__all__ = sorted(_LOCATIONS)

__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
