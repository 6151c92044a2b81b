"""What a running agent shows of itself: the control plane's view and the run's summary.

    view = AgentView(agent)
    view.status()             # the fields of the retained online status
    view.telemetry()          # one telemetry message
    view.apply_desired({"cut": "c0023", "codec": "int8+zstd1"})   # the plan/reported answer
    view.summary()            # what EdgeAgent.run returns

The view reads the agent's parts (plan, option, link monitor, window, uplink, head runner) and
builds the payloads whose shapes :mod:`~splitwire.edge.control` defines. A desired plan is
checked there (:func:`~splitwire.edge.control.choose_desired`) and applied through the agent's
``set_option``, the one way its option changes from outside; the view changes nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from splitwire.edge.config import EdgeConfig
from splitwire.edge.control import Telemetry, choose_desired, reported, status_fields
from splitwire.edge.correction import FrameCorrector
from splitwire.edge.head_runner import HeadRunner
from splitwire.edge.link_monitor import LinkMonitor
from splitwire.edge.policy import CutSwitch
from splitwire.edge.records import RunStats
from splitwire.edge.sources import FrameSource
from splitwire.edge.uplink import Uplink
from splitwire.edge.window import FrameScorer, FrameWindow
from splitwire.partitioner.link import LinkModel
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.runtime import RunnablePlan

logger = logging.getLogger("splitwire.edge")


class ViewedAgent(Protocol):
    """What the view reads of the agent (:class:`~splitwire.edge.agent.EdgeAgent`)."""

    config: EdgeConfig
    plan: RunnablePlan
    option: PlanOption
    policy_mode: str
    switches: list[CutSwitch]
    monitor: LinkMonitor
    stats: RunStats
    window: FrameWindow
    runner: HeadRunner
    uplink: Uplink | None
    source: FrameSource
    corrector: FrameCorrector | None
    scorer: FrameScorer | None
    started_s: float  # monotonic, when the run started

    def measured_link(self) -> LinkModel | None: ...

    def set_option(self, option: PlanOption, *, reason: str, policy: str = "fixed") -> None: ...


class AgentView:
    """The control plane's view of one agent (a :class:`~splitwire.edge.control.ControlledAgent`
    once the agent hands it on), and its summary."""

    def __init__(self, agent: ViewedAgent) -> None:
        self._agent = agent
        self.edge_id = agent.config.edge_id

    @property
    def server_id(self) -> str | None:
        """The tail replica of the open session (its ``Accept.server_id``), or None."""
        uplink = self._agent.uplink
        return uplink.server_id if uplink is not None else None

    @property
    def reconnects(self) -> int:
        """Sessions opened after an outage."""
        uplink = self._agent.uplink
        return uplink.reconnects if uplink is not None else 0

    @property
    def connected_since(self) -> float | None:
        """When the open session was opened (monotonic seconds), or None."""
        uplink = self._agent.uplink
        return uplink.connected_since if uplink is not None else None

    def status(self) -> dict[str, Any]:
        """Fields of the retained ``online`` status."""
        agent = self._agent
        return status_fields(plan=agent.plan, option=agent.option, policy=agent.policy_mode,
                             cloud=agent.config.cloud)  # fmt: skip

    def telemetry(self) -> dict[str, Any]:
        """A snapshot of the link, the frames and the plan (published every few seconds)."""
        agent = self._agent
        return Telemetry(
            connected=agent.uplink is not None and agent.uplink.connected,
            server_id=self.server_id,
            option=agent.option,
            policy=agent.policy_mode,
            rtt_s=agent.monitor.smoothed_rtt_s,
            uplink_bps=agent.monitor.uplink_bps,
            link=agent.measured_link(),
            elapsed_s=time.monotonic() - agent.started_s,
            stats=agent.stats,
            in_flight=len(agent.window.frames),
            reconnects=self.reconnects,
            edge_scale=agent.runner.edge_scale,
            switches=agent.switches,
        ).as_json()

    def apply_desired(self, desired: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a desired plan ``{"cut", "codec"}`` or ``{"policy": "auto"|"fixed"}``;
        returns the ``plan/reported`` answer (applied, or refused with the reason)."""
        agent = self._agent
        accept = agent.uplink.accept if agent.uplink is not None else None
        served: Sequence[str] | None = tuple(accept.cut_ids) if accept is not None else None
        chosen = choose_desired(desired, plan=agent.plan, cloud=agent.config.cloud, served=served)
        if isinstance(chosen, str):
            logger.warning("desired plan %s refused: %s", dict(desired), chosen)
            return reported(
                applied=False, option=agent.option, policy=agent.policy_mode, reason=chosen
            )
        option, policy = chosen
        if option is None:
            agent.policy_mode = policy
            logger.info("policy set to %s over the control plane", policy)
        else:
            agent.set_option(option, reason="desired plan from the control plane", policy=policy)
        return reported(applied=True, option=agent.option, policy=agent.policy_mode)

    def summary(self) -> dict[str, Any]:
        """The run's figures so far (the summary ``EdgeAgent.run`` returns)."""
        agent = self._agent
        extra: dict[str, Any] = {}
        if agent.corrector is not None:
            extra["corrector"] = agent.corrector.summary()
        if agent.scorer is not None:
            extra["segmentation"] = agent.scorer.score.summary()
        return (
            agent.stats.summary(time.monotonic() - agent.started_s)
            | {
                "cut": agent.option.cut,
                "codec": agent.option.codec,
                "policy": agent.policy_mode,
                "switches": [s.as_json() for s in agent.switches],
                "reconnects": self.reconnects,
                # Inputs the source passed over as unreadable (a bad file in a dir: source).
                "source_skipped": agent.source.skipped,
                # Stated in every summary: figures from an emulated device are not a device's.
                "edge_slowdown": agent.config.edge_slowdown,
            }
            | extra
        )
