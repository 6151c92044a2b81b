"""Tail replicas behind a real gRPC load balancer, with a fleet of real edge agents:

    splitwire bench scaleout --plan plans/resnet18 --scenario kill --sessions 64 --duration 30

Every scenario starts ``--replicas`` ``splitwire cloud`` processes on loopback, nginx in front
of them with the shipped ``deploy/nginx/grpc-balancer.conf``, and ``--sessions`` edge agents
(:class:`~splitwire.edge.agent.EdgeAgent`, all in this process, sharing one loaded plan, each
with its own synthetic camera paced at ``--fps``) that reach the tails only through the
balancer. Then, while the agents stream:

* ``spread``: nothing; how the sessions spread over the replicas is reported.
* ``kill``: at a third of the run one replica gets SIGKILL (a crash: nothing drained). Its
  sessions move to the other replicas through the agents' reconnect; reported is how long each
  moved agent went without a remote answer, and where every frame went.
* ``rolling``: a rolling restart: each replica in turn gets SIGTERM (it drains: frames in flight
  are answered, sessions end with ``SessionEnd UNAVAILABLE``), exits, is started again on the
  same port and becomes SERVING, then the next.
* ``soak``: nothing injected for ``--duration`` seconds; the replicas' RSS is sampled through
  the run and its growth after warm-up reported.

Accounting comes from the agents' own frame lines: every ``seq`` of every agent must appear
exactly once, and each line says whether the frame was answered remotely (by which replica), or
why not.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitwire.benchmarks.balancer import GrpcBalancer
from splitwire.benchmarks.processes import TailReplica
from splitwire.edge.agent import AgentExecutors, EdgeAgent
from splitwire.edge.config import EdgeConfig
from splitwire.errors import SplitwireError
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.stats import percentile

SCENARIOS = ("spread", "kill", "rolling", "soak")
# When the scenario's fault happens, as a fraction of the run.
FAULT_AT = 1 / 3
# RSS "after warm-up" is the first sample after this fraction of the run.
WARMUP_FRACTION = 0.2
RSS_EVERY_S = 5.0
# After the agents' last frame, how long their drain may take before the run is failed.
DRAIN_S = 60.0


@dataclass(frozen=True)
class ScaleoutLoad:
    """One scenario's set-up."""

    plan_dir: Path
    scenario: str = "spread"
    sessions: int = 16
    replicas: int = 2
    fps: float = 5.0
    duration_s: float = 20.0
    window: int = 4
    budget_ms: float = 3000.0
    cut: str | None = None
    codec: str | None = None
    tail_args: tuple[str, ...] = ()
    seed: int = 0
    # Agents start evenly over this many seconds (default: 0.1 s per agent, at most 30 s): a
    # fleet that powers on at once would send every Hello, and every head's warm-up, at once.
    ramp_s: float | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise SplitwireError(
                f"unknown scenario {self.scenario!r}; expected one of {', '.join(SCENARIOS)}"
            )
        if self.sessions < 1 or self.replicas < 1 or self.fps <= 0 or self.duration_s <= 0:
            raise SplitwireError("expected sessions >= 1, replicas >= 1, fps > 0, duration > 0")
        if self.scenario in ("kill", "rolling") and self.replicas < 2:
            raise SplitwireError(f"scenario {self.scenario} needs at least 2 replicas")

    @property
    def frames_per_agent(self) -> int:
        return max(1, round(self.fps * self.duration_s))

    @property
    def ramp(self) -> float:
        return self.ramp_s if self.ramp_s is not None else min(30.0, 0.1 * self.sessions)


@dataclass
class AgentOutcome:
    """One agent's frame lines, reduced to what the scenarios check."""

    edge_id: str
    frames: int
    records: list[dict[str, Any]]
    reconnects: int

    def seqs(self) -> Counter[int]:
        return Counter(int(r["seq"]) for r in self.records)

    @property
    def missing(self) -> int:
        """Frames without a line."""
        return len(set(range(1, self.frames + 1)) - set(self.seqs()))

    @property
    def duplicates(self) -> int:
        """Lines beyond the first for the same frame."""
        return sum(n - 1 for n in self.seqs().values() if n > 1)

    def servers(self) -> Counter[str]:
        """Remote answers per replica (its server_id)."""
        return Counter(str(r["server"]) for r in self.records if r["source"] == "remote")


@dataclass
class ScaleoutRun:
    """What a scenario measured."""

    load: ScaleoutLoad
    agents: list[AgentOutcome] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rss_mb: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    exit_codes: dict[str, list[int]] = field(default_factory=dict)
    # kill: for each agent whose session was on the killed replica, seconds from the kill to
    # its first remote answer from another replica (inf if none came).
    recovery_s: dict[str, float] = field(default_factory=dict)
    sessions_at_fault: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    balancer_log: str = ""

    @property
    def frames(self) -> int:
        return sum(a.frames for a in self.agents)

    @property
    def lines(self) -> int:
        return sum(len(a.records) for a in self.agents)

    def by_source(self) -> Counter[str]:
        return Counter(r["source"] for a in self.agents for r in a.records)

    def by_reason(self) -> Counter[str]:
        return Counter(
            str(r["reason"]) for a in self.agents for r in a.records if r["source"] != "remote"
        )

    def answered_by(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for agent in self.agents:
            total.update(agent.servers())
        return total

    def latency_ms(self, q: int) -> float:
        """Percentile ``q`` of capture-to-answer latency over the remotely answered frames."""
        return percentile(
            [float(r["latency_ms"]) for a in self.agents for r in a.records
             if r["source"] == "remote"],
            q,
        )  # fmt: skip

    def rss_growth(self, server_id: str) -> float:
        """Growth of a replica's RSS from the first sample after warm-up to the last, for a
        replica that ran throughout (NaN otherwise)."""
        samples = self.rss_mb.get(server_id, [])
        warm_t = self.load.ramp + WARMUP_FRACTION * self.load.duration_s
        after = [mb for t, mb in samples if t >= warm_t]
        # A replica killed (NaN samples from then on) or restarted (an exit code) did not.
        if len(after) < 2 or any(math.isnan(mb) for mb in after) or self.exit_codes.get(server_id):
            return math.nan
        return after[-1] / after[0] - 1.0

    def _rss_summary(self, server_id: str) -> dict[str, float | None]:
        alive = [mb for _, mb in self.rss_mb[server_id] if not math.isnan(mb)]
        return {
            "first": round(alive[0], 1) if alive else None,
            "last": round(alive[-1], 1) if alive else None,
            "max": round(max(alive), 1) if alive else None,
            "growth_after_warmup": _round(self.rss_growth(server_id), 4),
        }

    def as_json(self) -> dict[str, Any]:
        recovery = list(self.recovery_s.values())
        return {
            "scenario": self.load.scenario,
            "sessions": self.load.sessions,
            "replicas": self.load.replicas,
            "fps_per_session": self.load.fps,
            "duration_s": self.load.duration_s,
            "wall_s": round(self.wall_s, 1),
            "frames": self.frames,
            "lines": self.lines,
            "missing": sum(a.missing for a in self.agents),
            "duplicates": sum(a.duplicates for a in self.agents),
            "by_source": dict(self.by_source()),
            "by_reason": dict(self.by_reason()),
            "answered_by": dict(self.answered_by()),
            "sessions_at_fault": self.sessions_at_fault,
            "reconnects": sum(a.reconnects for a in self.agents),
            "latency_p50_ms": _round(self.latency_ms(50), 1),
            "latency_p95_ms": _round(self.latency_ms(95), 1),
            "moved_sessions": len(recovery),
            "recovery_max_s": round(max(recovery), 3) if recovery else None,
            "recovery_p50_s": round(statistics.median(recovery), 3) if recovery else None,
            "exit_codes": self.exit_codes,
            "rss_mb": {sid: self._rss_summary(sid) for sid in self.rss_mb},
            "events": self.events,
        }


def run_scaleout(
    load: ScaleoutLoad, *, progress: Callable[[str], None] | None = None
) -> ScaleoutRun:
    """Run one scenario end to end (replicas, balancer, agents) and return what it measured.

    Raises:
        SplitwireError: a replica or nginx would not start, or the agents did not finish.
    """
    say = progress or (lambda _: None)
    plan = open_plan(load.plan_dir)
    args = ("--max-sessions", str(max(256, 2 * load.sessions)), "--grace-s", "10", *load.tail_args)
    replicas = [
        TailReplica([load.plan_dir], args=args, server_id=f"tail-{i + 1}")
        for i in range(load.replicas)
    ]
    try:
        for replica in replicas:
            replica.start()
            say(f"{replica.server_id} SERVING on {replica.address}")
        with GrpcBalancer([r.address for r in replicas]) as balancer:
            say(f"nginx balancing on {balancer.address}")
            run = asyncio.run(_scenario(load, plan, replicas, balancer, say))
            run.balancer_log = balancer.log()
            return run
    finally:
        for replica in replicas:
            replica.close()


async def _scenario(
    load: ScaleoutLoad,
    plan: RunnablePlan,
    replicas: list[TailReplica],
    balancer: GrpcBalancer,
    say: Callable[[str], None],
) -> ScaleoutRun:
    run = ScaleoutRun(load=load, rss_mb={r.server_id: [] for r in replicas})
    agents, outputs = _fleet(load, plan, balancer.address)
    # Every agent warms its heads first, one after another on the shared compute thread: a
    # warm-up while others stream would hold their frames back (dropped for room, measured).
    prepare_started = time.monotonic()
    for agent in agents:
        await agent.prepare()
    say(f"{load.sessions} agents prepared in {time.monotonic() - prepare_started:.1f} s")
    started = time.monotonic()

    def event(what: str, **details: Any) -> None:
        t = time.monotonic() - started
        run.events.append({"t_s": round(t, 3), "event": what, **details})
        say(f"t={t:6.1f} s {what} {json.dumps(details) if details else ''}")

    async def agent_task(index: int, agent: EdgeAgent) -> None:
        # Spread the cameras' phases too: synchronised shutters would make every frame a burst.
        phase = random.Random(load.seed + index).uniform(0, 1 / load.fps)
        await asyncio.sleep(load.ramp * index / load.sessions + phase)
        await agent.run()

    tasks = [asyncio.create_task(agent_task(i, a)) for i, a in enumerate(agents)]
    sampler = asyncio.create_task(_sample_rss(run, replicas, started))
    event("agents started", sessions=load.sessions)
    fault = asyncio.create_task(_inject(load, run, replicas, agents, event))
    try:
        async with asyncio.timeout(load.ramp + load.duration_s + DRAIN_S):
            await asyncio.gather(*tasks)
    except TimeoutError as exc:
        raise SplitwireError(
            f"the agents did not finish within {load.ramp + load.duration_s + DRAIN_S:.0f} s"
        ) from exc
    finally:
        for task in (*tasks, sampler):
            task.cancel()
        await asyncio.gather(*tasks, sampler, return_exceptions=True)
    await fault
    event("agents finished")
    run.wall_s = time.monotonic() - started
    for agent, out in zip(agents, outputs, strict=True):
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        run.agents.append(
            AgentOutcome(agent.edge_id, load.frames_per_agent, records, agent.view.reconnects)
        )
    if load.scenario == "kill":
        _recovery(run)
    return run


def _fleet(
    load: ScaleoutLoad, plan: RunnablePlan, address: str
) -> tuple[list[EdgeAgent], list[io.StringIO]]:
    agents, outputs = [], []
    shared = AgentExecutors.new()
    for i in range(load.sessions):
        out = io.StringIO()
        config = EdgeConfig(
            plan=load.plan_dir,
            cloud=address,
            frames=load.frames_per_agent,
            fps=load.fps,
            window=load.window,
            budget_ms=load.budget_ms,
            policy="fixed",
            cut=load.cut,
            codec=load.codec,
            edge_id=f"edge-{i + 1:03d}",
            seed=load.seed + i,
            reconnect_initial_s=0.05,
            reconnect_max_s=1.0,
        )
        agents.append(EdgeAgent(config, plan=plan, output=out, executors=shared))
        outputs.append(out)
    return agents, outputs


async def _inject(
    load: ScaleoutLoad,
    run: ScaleoutRun,
    replicas: list[TailReplica],
    agents: list[EdgeAgent],
    event: Callable[..., None],
) -> None:
    await asyncio.sleep(load.ramp + load.duration_s * FAULT_AT)
    run.sessions_at_fault = dict(Counter(str(a.view.server_id) for a in agents))
    event("sessions per replica", **run.sessions_at_fault)
    if load.scenario == "kill":
        victim = replicas[0]
        run.events.append({"kill_ts_ns": time.time_ns(), "replica": victim.server_id})
        await asyncio.to_thread(victim.kill)
        event("SIGKILL", replica=victim.server_id)
    elif load.scenario == "rolling":
        for replica in replicas:
            event("SIGTERM", replica=replica.server_id)
            code = await asyncio.to_thread(replica.stop)
            run.exit_codes.setdefault(replica.server_id, []).append(code)
            event("exited", replica=replica.server_id, code=code)
            await asyncio.to_thread(replica.start)
            event("SERVING again", replica=replica.server_id)


async def _sample_rss(run: ScaleoutRun, replicas: list[TailReplica], started: float) -> None:
    while True:
        t = time.monotonic() - started
        for replica in replicas:
            run.rss_mb[replica.server_id].append((round(t, 1), replica.rss_mb()))
        await asyncio.sleep(RSS_EVERY_S)


def _recovery(run: ScaleoutRun) -> None:
    """For every agent that streamed to the killed replica: the time from the kill to its first
    remote answer from another replica (on the same wall clock as its frame lines)."""
    kill = next(e for e in run.events if "kill_ts_ns" in e)
    kill_ns, victim = int(kill["kill_ts_ns"]), str(kill["replica"])
    for agent in run.agents:
        before = [r for r in agent.records if r["emit_ts_ns"] < kill_ns and r["source"] == "remote"]
        if not before or before[-1]["server"] != victim:
            continue
        after = [
            r["emit_ts_ns"]
            for r in agent.records
            if r["emit_ts_ns"] >= kill_ns and r["source"] == "remote" and r["server"] != victim
        ]
        run.recovery_s[agent.edge_id] = (min(after) - kill_ns) / 1e9 if after else math.inf


# The targets: 5 s to serve a killed replica's sessions again, RSS growth after
# warm-up below 10 %.
RECOVERY_TARGET_S = 5.0
RSS_GROWTH_TARGET = 0.10


def targets(run: ScaleoutRun) -> list[dict[str, Any]]:
    """The scenario's targets, each with what was measured and whether it was met."""
    j = run.as_json()
    checks = [
        {"name": "every frame answered exactly once", "target": "0 missing, 0 duplicates",
         "measured": f"{j['missing']} missing, {j['duplicates']} duplicates",
         "met": j["missing"] == 0 and j["duplicates"] == 0},
    ]  # fmt: skip
    # A frame the edge answered with its own model while its session moved to the other
    # replica (the plan ships the local fallback) is answered, not lost; it is counted apart.
    dropped = j["by_source"].get("dropped", 0)
    local = j["by_source"].get("local", 0)
    if run.load.scenario in ("rolling", "soak", "spread"):
        checks.append({"name": "frames lost (dropped)", "target": "0",
                       "measured": f"{dropped} ({local} answered by the edge's own model)",
                       "met": dropped == 0})  # fmt: skip
    if run.load.scenario == "kill":
        worst = j["recovery_max_s"]
        checks.append({"name": "killed replica's sessions served again",
                       "target": f"<= {RECOVERY_TARGET_S:.0f} s",
                       "measured": f"{worst} s max over {j['moved_sessions']} sessions",
                       "met": worst is not None and worst <= RECOVERY_TARGET_S})  # fmt: skip
    if run.load.scenario == "rolling":
        codes = [c for cs in j["exit_codes"].values() for c in cs]
        clean = bool(codes) and set(codes) == {0}
        checks.append({"name": "graceful exits", "target": "exit 0 after SIGTERM",
                       "measured": str(codes), "met": clean})  # fmt: skip
    if run.load.scenario == "soak":
        for sid, rss in j["rss_mb"].items():
            growth = rss["growth_after_warmup"]
            checks.append({"name": f"{sid} RSS growth after warm-up",
                           "target": f"< {RSS_GROWTH_TARGET:.0%}",
                           "measured": "n/a" if growth is None else f"{growth:.1%}",
                           "met": growth is not None and growth < RSS_GROWTH_TARGET})  # fmt: skip
    return checks


def report(run: ScaleoutRun) -> str:
    """A human-readable summary of one scenario."""
    j = run.as_json()
    lines = [
        f"scenario {j['scenario']}: {j['sessions']} sessions x {j['fps_per_session']} fps over "
        f"{j['replicas']} replicas behind nginx, {j['duration_s']:.0f} s (wall {j['wall_s']} s)",
        f"  frames {j['frames']}, lines {j['lines']}, missing {j['missing']}, "
        f"duplicates {j['duplicates']}",
        f"  by source {j['by_source']}; not remote, by reason {j['by_reason'] or '{}'}",
        f"  latency of remote answers p50 {j['latency_p50_ms']} ms, p95 {j['latency_p95_ms']} ms",
        f"  answered by {j['answered_by']}; sessions per replica at the fault "
        f"{j['sessions_at_fault']}; reconnects {j['reconnects']}",
    ]
    if j["moved_sessions"]:
        lines.append(
            f"  {j['moved_sessions']} sessions moved; served again after "
            f"{j['recovery_p50_s']} s p50, {j['recovery_max_s']} s max (target 5 s)"
        )
    if j["exit_codes"]:
        lines.append(f"  exit codes after SIGTERM {j['exit_codes']}")
    for sid, rss in j["rss_mb"].items():
        lines.append(
            f"  {sid} RSS {rss['first']} -> {rss['last']} MB (max {rss['max']}), "
            f"growth after warm-up {rss['growth_after_warmup']}"
        )
    return "\n".join(lines)


def _round(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)
