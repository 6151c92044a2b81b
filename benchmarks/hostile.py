"""``splitwire bench hostile``: each attack of the hardening issue against real processes, judged.

    splitwire bench hostile [--plan DIR] [--attack NAME ...] [--quiet-s S] [--attack-s S] [--json]

Tail attacks (:mod:`splitwire.benchmarks.hostile_tail`) each get a fresh ``splitwire cloud``
process on a loopback port and a well-behaved *bystander* session beside the attacker (one frame
in flight, 20 frames/s). The benchmark measures, for the attacked process:

* its peak RSS during the attack minus its RSS just before (the kernel's own peak, ``VmHWM``,
  reset with ``/proc/PID/clear_refs``, so spikes between samples count);
* the bystander's p95 latency during the attack against its p95 in a quiet stretch of the same
  run just before (the ratio);
* the attack's own facts (no bomb computed, every refused call ``UNAUTHENTICATED``, ...).

Edge attacks (:mod:`splitwire.benchmarks.hostile_edge`) run ``splitwire edge`` as a process
against a fake tail in this process; plan attacks (:mod:`splitwire.benchmarks.hostile_plans`)
hand crafted plan directories to both runtimes.

Targets (the issue's): RSS growth ≤ 200 MB under every attack; the bystander's p95 ≤ 2× its
quiet p95; no code runs from any crafted plan; every refused call ``UNAUTHENTICATED``.

A remote attacker's own CPU is not the server's; on one machine it would be. The tail and the
bystander therefore run on every core but the last and the attacking coroutines on the last
(:class:`~splitwire.benchmarks.processes.AttackerCore`), so what the bystander feels is what
the server spends on the attack. On a one-core machine they share it, and the report says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitwire.benchmarks.hostile_edge import EDGE_SCENARIOS, EdgeScenario, run_edge_scenario
from splitwire.benchmarks.hostile_plans import PLAN_ATTACKS
from splitwire.benchmarks.hostile_tail import (
    AttackOutcome,
    Bystander,
    TailAttack,
    TailTarget,
    announce_and_stall,
    batch_bomb,
    forged_log_lines,
    never_reads,
    no_token,
    silent_sessions,
)
from splitwire.benchmarks.processes import AttackerCore, PeakRss, TailReplica, free_port
from splitwire.cloud.config import DEFAULT_IDLE_TIMEOUT_S
from splitwire.partitioner.runtime import RunnablePlan

logger = logging.getLogger(__name__)

RSS_TARGET_MB = 200.0
P95_RATIO_TARGET = 2.0
# Answers the bystander needs in the quiet stretch for its p95 to mean something.
MIN_QUIET_ANSWERS = 20


@dataclass(frozen=True)
class TailScenario:
    """One attack on the tail and how the server under it is configured.

    Attributes:
        name: the attack's name on the command line and in the report.
        attack: the attacking client.
        server_args: ``splitwire cloud`` flags beyond the defaults (the defaults are what is
            judged: a scenario adds flags only where the attack needs them, e.g. a token file).
        token: run the server with a token file (the bystander presents the token).
        min_attack_s: the attack needs at least this long (e.g. a timeout must pass).
    """

    name: str
    attack: TailAttack
    server_args: tuple[str, ...] = ()
    token: bool = False
    min_attack_s: float = 0.0


TAIL_SCENARIOS: tuple[TailScenario, ...] = (
    TailScenario("batch-bomb", batch_bomb),
    TailScenario("never-reads", never_reads),
    TailScenario("announce-and-stall", announce_and_stall),
    # Silent sessions hold their slots until the idle timeout frees them: the attack outlasts it.
    TailScenario(
        "silent-sessions",
        silent_sessions,
        server_args=("--max-sessions", "16"),
        min_attack_s=DEFAULT_IDLE_TIMEOUT_S + 6.0,
    ),
    TailScenario("forged-log-lines", forged_log_lines),
    TailScenario("no-token", no_token, token=True),
)


@dataclass
class AttackRecord:
    """One attack's measured figures and verdict (the JSON record and a table row)."""

    attack: str
    side: str
    sent: str
    rss_before_mb: float | None = None
    rss_growth_mb: float | None = None
    quiet_p95_ms: float | None = None
    attack_p95_ms: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    detail: str = ""

    @property
    def p95_ratio(self) -> float | None:
        """The bystander's p95 under attack over its quiet p95."""
        if self.quiet_p95_ms is None or self.attack_p95_ms is None:
            return None
        return self.attack_p95_ms / self.quiet_p95_ms

    @property
    def failures(self) -> list[str]:
        """What missed its target (empty: the attack was refused or bounded)."""
        missed = [name for name, held in self.checks.items() if not held]
        growth = self.rss_growth_mb
        if growth is not None and not growth <= RSS_TARGET_MB:
            missed.append(f"RSS growth {growth:.0f} MB > {RSS_TARGET_MB:.0f} MB")
        ratio = self.p95_ratio
        if ratio is not None and not ratio <= P95_RATIO_TARGET:
            missed.append(f"bystander p95 {ratio:.2f}x quiet > {P95_RATIO_TARGET:.0f}x")
        return missed

    @property
    def verdict(self) -> str:
        return "FAIL" if self.failures else "pass"

    def as_json(self) -> dict[str, Any]:
        """The record with its derived figures, NaN-free (strict JSON)."""
        data = dataclasses.asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, float):
                data[key] = round(value, 3) if math.isfinite(value) else None
        ratio = self.p95_ratio
        data["p95_ratio"] = round(ratio, 3) if ratio is not None else None
        data["verdict"] = self.verdict
        data["failures"] = self.failures
        return data


async def run_tail_scenario(
    scenario: TailScenario,
    *,
    plan_dir: Path,
    plan: RunnablePlan,
    cut: str,
    quiet_s: float,
    attack_s: float,
) -> AttackRecord:
    """Start a tail, serve the bystander quietly, attack, and judge."""
    with tempfile.TemporaryDirectory(prefix="splitwire-hostile-") as scratch:
        args = list(scenario.server_args)
        token = None
        if scenario.token:
            token = secrets.token_urlsafe(24)
            token_file = Path(scratch) / "tokens"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            args += ["--token-file", str(token_file)]
        args += ["--metrics", f"127.0.0.1:{free_port()}"]
        replica = TailReplica([plan_dir], args=args, server_id=f"hostile-{scenario.name}")
        cores = AttackerCore()
        with cores.server_side():
            replica.start()
        try:
            target = TailTarget(
                address=replica.address, plan=plan, cut=cut, token=token, log=replica.log
            )
            memory = PeakRss(replica.pid)
            with cores.server_side():
                bystander = Bystander(target)
                await bystander.start()
            try:
                await asyncio.sleep(1.0)  # warm-up: first frames pay for lazy set-up
                bystander.mark("quiet")
                await asyncio.sleep(quiet_s)
                before = memory.reset()
                bystander.mark("attack")
                with cores.attacker_side():
                    outcome = await scenario.attack(target, max(attack_s, scenario.min_attack_s))
                # What an attack leaves behind (buffers, queued work) counts as its cost too.
                bystander.mark("after")
                await asyncio.sleep(1.0)
                peak = memory.peak_mb()
                memory.stop()
            finally:
                await bystander.stop()
            record = _record(scenario.name, "tail", outcome, bystander)
            record.rss_before_mb, record.rss_growth_mb = before, peak - before
            record.checks["server still running"] = replica.running()
            # A hostile input is an expected event: one log line, never a traceback.
            record.checks["no traceback in the server's log"] = "Traceback" not in replica.log()
            return record
        finally:
            replica.close()


def _record(name: str, side: str, outcome: AttackOutcome, bystander: Bystander) -> AttackRecord:
    quiet, attack = bystander.p95_ms("quiet"), bystander.p95_ms("attack")
    checks = dict(outcome.checks)
    failures = bystander.failures()
    checks["bystander served throughout"] = (
        not failures and bystander.answered("attack") > 0 and bystander.answered("after") > 0
    )
    detail = outcome.detail
    if not checks["bystander served throughout"]:
        answered = ", ".join(f"{p} {bystander.answered(p)}" for p in ("quiet", "attack", "after"))
        detail += f"; bystander results: {answered}"
    if failures:
        detail += "; bystander: " + ", ".join(f"{k} x{n}" for k, n in failures.items())
    if bystander.answered("quiet") < MIN_QUIET_ANSWERS:
        checks["bystander's quiet p95 measured"] = False
    return AttackRecord(
        attack=name,
        side=side,
        sent=outcome.sent,
        quiet_p95_ms=quiet,
        attack_p95_ms=attack,
        checks=checks,
        detail=detail.strip("; "),
    )


# The plan the benchmark makes when given none: ResNet-18 (10 classes, random weights: the
# attacks need real halves and real compute, not accuracy) at 64x64, with the input cut, a split
# and the all-on-edge cut shipped. About 10 s on this machine.
DEFAULT_MODEL = "zoo:resnet18?num_classes=10"
DEFAULT_INPUT = (1, 3, 64, 64)


def default_plan(directory: Path) -> Path:
    """Plan :data:`DEFAULT_MODEL` into ``directory`` (see above); returns the plan directory."""
    from splitwire.partitioner.link import parse_link
    from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory

    request = PlanRequest(
        model_spec=DEFAULT_MODEL,
        input_shape=DEFAULT_INPUT,
        links=(parse_link("wifi"),),
        calibration=2,
        repeats=2,
    )
    outcome = plan_model(request)
    cuts = outcome.cuts
    ship = ("c0000", cuts[len(cuts) // 3].id, cuts[-1].id)
    request = dataclasses.replace(request, ship=ship)
    write_plan_directory(dataclasses.replace(outcome, request=request), directory)
    return directory


def attack_names() -> list[str]:
    """Every attack the benchmark knows, in the order it runs them."""
    return [
        *(s.name for s in TAIL_SCENARIOS),
        *(s.name for s in EDGE_SCENARIOS),
        *PLAN_ATTACKS,
    ]


async def _edge_record(scenario: EdgeScenario, **kwargs: Any) -> AttackRecord:
    run = await run_edge_scenario(scenario, **kwargs)
    return AttackRecord(
        attack=scenario.name,
        side="edge",
        sent=run.outcome.sent,
        rss_before_mb=run.rss_before_mb,
        rss_growth_mb=run.rss_growth_mb,
        quiet_p95_ms=run.quiet_p95_ms,
        attack_p95_ms=run.attack_p95_ms,
        checks=run.outcome.checks,
        detail=run.outcome.detail,
    )


async def run_hostile(
    *,
    plan_dir: Path,
    plan: RunnablePlan,
    cut: str,
    attacks: Sequence[str],
    quiet_s: float,
    attack_s: float,
    progress: Callable[[str], None] = lambda _: None,
) -> list[AttackRecord]:
    """Run the named attacks one after the other; a record each."""
    records = []
    if any(scenario.name in attacks for scenario in TAIL_SCENARIOS):
        progress(f"tail attacks: {AttackerCore().describe()}")
    for scenario in TAIL_SCENARIOS:
        if scenario.name not in attacks:
            continue
        progress(f"attack {scenario.name}: tail under attack for {attack_s:.0f} s")
        record = await run_tail_scenario(
            scenario, plan_dir=plan_dir, plan=plan, cut=cut, quiet_s=quiet_s, attack_s=attack_s
        )
        progress(f"attack {scenario.name}: {record.verdict} {'; '.join(record.failures)}")
        records.append(record)
    for edge in EDGE_SCENARIOS:
        if edge.name not in attacks:
            continue
        progress(f"attack {edge.name}: splitwire edge against a hostile tail for {attack_s:.0f} s")
        record = await _edge_record(
            edge, plan_dir=plan_dir, plan=plan, cut=cut, quiet_s=quiet_s, attack_s=attack_s
        )
        progress(f"attack {edge.name}: {record.verdict} {'; '.join(record.failures)}")
        records.append(record)
    for name, plan_attack in PLAN_ATTACKS.items():
        if name not in attacks:
            continue
        progress(f"attack {name}: a crafted plan directory for splitwire cloud and edge")
        outcome = await asyncio.to_thread(plan_attack, plan_dir, cut)
        record = AttackRecord(
            attack=name, side="plan", sent=outcome.sent, checks=outcome.checks,
            detail=outcome.detail,
        )  # fmt: skip
        progress(f"attack {name}: {record.verdict} {'; '.join(record.failures)}")
        records.append(record)
    return records


def table(records: Sequence[AttackRecord]) -> str:
    """The report as a Markdown table (the README's)."""
    lines = [
        "| attack | side | what was sent | RSS growth MB (≤ 200) | bystander p95 quiet → "
        "attack ms (ratio ≤ 2) | verdict | details |",
        "| --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for r in records:
        growth = "–" if r.rss_growth_mb is None else f"{r.rss_growth_mb:.0f}"
        if r.p95_ratio is None:
            p95 = "–"
        else:
            p95 = f"{r.quiet_p95_ms:.1f} → {r.attack_p95_ms:.1f} ({r.p95_ratio:.2f}×)"
        verdict = r.verdict if not r.failures else "FAIL: " + "; ".join(r.failures)
        lines.append(
            f"| {r.attack} | {r.side} | {r.sent} | {growth} | {p95} | {verdict} | {r.detail} |"
        )
    return "\n".join(lines)
