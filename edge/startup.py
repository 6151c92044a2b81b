"""What the agent starts from: its plan, its source, its delay corrector and its first option,
each checked once before any frame, each failure an :class:`EdgeConfigError` naming the flag.

    plan = open_edge_plan(config)                 # signature, plan.yaml, the heads' sha256
    option = starting_option(config, plan)        # --cut/--codec, else the plan's pick
"""

from __future__ import annotations

import logging

from splitwire.edge.config import EdgeConfig
from splitwire.edge.correction import FrameCorrector, SegmentationScore
from splitwire.edge.errors import EdgeConfigError
from splitwire.edge.policy import option_label
from splitwire.edge.sources import FrameSource, open_source
from splitwire.edge.window import FrameScorer
from splitwire.partitioner.errors import (
    LinkError,
    PlanError,
    PlanSignatureError,
    SigningKeyError,
)
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.partitioner.signing import PlanTrust, log_trust

logger = logging.getLogger("splitwire.edge")


def open_edge_plan(config: EdgeConfig) -> RunnablePlan:
    """``config.plan``, refused unless signed by ``--plan-public-key`` when one is given.

    Raises:
        EdgeConfigError: the key does not load, or the plan is not signed by it.
        PlanError: the plan directory is not a valid plan.
    """
    try:
        trust = PlanTrust.from_public_key(config.plan_public_key)
    except SigningKeyError as exc:
        raise EdgeConfigError(f"--plan-public-key: {exc}") from exc
    log_trust(trust, [config.plan])
    logger.info("loading the plan %s", config.plan)
    try:
        return open_plan(config.plan, trust=trust, side="edge")
    except PlanSignatureError as exc:
        raise EdgeConfigError(f"--plan {config.plan}: {exc}") from exc


def open_plan_source(config: EdgeConfig, plan: RunnablePlan) -> FrameSource:
    """``config.source``, giving frames of the plan's camera size."""
    _, channels, height, width = plan.camera_frame().shape
    return open_source(
        config.source,
        channels=channels,
        height=height,
        width=width,
        seed=config.seed,
        loop=config.loop,
    )


def open_corrector(config: EdgeConfig, plan: RunnablePlan) -> FrameCorrector | None:
    """The delay corrector of ``--corrector``, fusing the features of the plan's first split.

    Raises:
        EdgeConfigError: the corrector does not load, or the plan has no split to fuse.
    """
    if config.corrector is None:
        return None
    from splitwire.corrector import CorrectorError, load_corrector

    split = next((o for o in plan.options if not o.local), None)
    if split is None:
        raise EdgeConfigError(
            "--corrector: the plan runs everything on the edge, so there are no remote "
            "features to fuse; plan a split of the corrector's heavy model"
        )
    try:
        corrector = load_corrector(config.corrector, fusion=config.corrector_fusion)
        interval = round(1e9 / config.fps) if config.fps else None
        frame_corrector = FrameCorrector(
            corrector, outputs=plan.outputs(split.cut), frame_interval_ns=interval
        )
    except (CorrectorError, ValueError) as exc:
        raise EdgeConfigError(f"--corrector {config.corrector}: {exc}") from exc
    logger.info(
        "delay corrector %s (fusion %s): remote features up to %d frames old are fused",
        config.corrector,
        corrector.fusion,
        corrector.tau_max,
    )
    return frame_corrector


def starting_option(config: EdgeConfig, plan: RunnablePlan) -> PlanOption:
    """The option the first frame runs: ``--cut``/``--codec`` when given; else the plan's
    choice (unless it needs a cloud and none is given: then the all-on-edge option).

    Raises:
        EdgeConfigError: the plan ships no options, or not the ``--cut``/``--codec`` asked for.
    """
    if not plan.options:
        raise EdgeConfigError(f"plan {plan.directory} ships no options to run")
    if config.cut is not None or config.codec is not None:
        cut = config.cut or plan.plan.choice.cut
        codec = config.codec or next(o.codec for o in plan.options if o.cut == cut)
        try:
            pinned = plan.option(cut, codec)
        except PlanError as exc:
            raise EdgeConfigError(f"--cut/--codec: {exc}") from exc
        return _needs_no_cloud(config, pinned)
    choice = plan.plan.choice
    for option in plan.options:
        chosen = (option.cut, option.codec) == (choice.cut, choice.codec)
        if chosen and (option.local or config.cloud is not None):
            return option
    local = next((o for o in plan.options if o.local), None)
    if config.cloud is None and local is not None:
        return local
    return _needs_no_cloud(config, plan.options[0])


def starting_reason(
    config: EdgeConfig,
    plan: RunnablePlan,
    option: PlanOption,
    *,
    policy: str,
    fallback: PlanOption | None,
) -> str:
    """Why the agent starts on ``option``, for its start-up line: ``the plan's pick for lte;
    policy auto, all-on-edge c0069 is the fallback`` (``fallback``: the option frames the
    cloud does not answer run on, if any)."""
    choice = plan.plan.choice
    if config.cut is not None or config.codec is not None:
        why = "as --cut/--codec asked"
    elif (option.cut, option.codec) == (choice.cut, choice.codec):
        why = f"the plan's pick for {_link_name(choice.link)}"
    elif option.local:
        why = "all on the edge, as " + ("--local-only asks" if config.local_only else "no --cloud")
    else:
        why = "the plan's first shipped option"
    if option.local:
        rest = "no session needed"
    elif fallback is None:
        rest = "no local fallback: frames the cloud does not answer are dropped"
    else:
        rest = f"all-on-edge {fallback.cut} is the fallback"
    return f"{why}; policy {policy}, {rest}"


def _link_name(spec: str) -> str:
    """``wifi`` for the plan's link ``name=wifi,bw=50mbit,...`` (the spec itself if unnamed)."""
    try:
        return parse_link(spec).name or spec
    except (LinkError, ValueError, OSError):  # a trace file's name, say: shown as written
        return spec


def _needs_no_cloud(config: EdgeConfig, option: PlanOption) -> PlanOption:
    if not option.local and config.cloud is None:
        raise EdgeConfigError(
            f"option {option_label(option)} runs its tail in the cloud: give --cloud "
            "HOST:PORT (only an all-on-edge plan runs without one)"
        )
    return option


def read_token(config: EdgeConfig) -> str | None:
    """The bearer token of ``--token-file``, if any (a warning when it would travel in clear).

    Raises:
        EdgeConfigError: the file cannot be read or holds no token.
    """
    token = config.read_token()
    if token is not None and config.tls is None and config.cloud is not None:
        logger.warning(
            "the bearer token goes to %s without TLS: anyone on the path can read it and "
            "use it; give --tls-ca (the tail's CA) to encrypt the session",
            config.cloud,
        )
    return token


def open_scorer(source: FrameSource, plan: RunnablePlan) -> FrameScorer | None:
    """For a labelled source, what scores the segmentation outputs against its labels."""
    if not source.labelled:
        return None
    outputs = plan.outputs(plan.options[0].cut)
    return FrameScorer(source, SegmentationScore(int(outputs[0].shape[1])))
