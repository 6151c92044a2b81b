"""Crafted plan directories handed to ``splitwire cloud`` and ``splitwire edge`` processes.

Each attack copies a real plan and changes it as an attacker with write access to the plan
directory would (plan.yaml is unsigned, so the attacker also rewrites its sha256 lines):

=====================  =====================================================================
pickled-weights        one weight of a head and of a tail marked ``use_pickle`` and replaced
                       by a pickle that creates a marker file when unpickled
missing-sha256         the ``tail_sha256`` line of a cut deleted
deep-plan-yaml         ``plan.yaml`` replaced by ``[`` × 100 000
unsigned-plan          the plan as it is, to runtimes given ``--plan-public-key``
tampered-signed-plan   a signed plan whose ``plan.yaml`` had one predicted figure changed
                       after signing
=====================  =====================================================================

Each crafted plan goes to both runtimes; the attack holds when both refuse to start (a non-zero
exit, one error line naming the problem, no traceback) and no marker file exists afterwards. As
a control, ``torch.export.load`` on the crafted archive, in a child process, must create the
marker: otherwise the crafted file would prove nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from splitwire.benchmarks.hostile_tail import AttackOutcome
from splitwire.benchmarks.processes import TailReplica, free_port
from splitwire.edge.cli import EXIT_CLOUD_SERVED_NOTHING
from splitwire.errors import SplitwireError
from splitwire.partitioner.plan_file import PLAN_FILE, sha256_file
from splitwire.partitioner.signing import (
    generate_key_pair,
    load_signing_key,
    sign_file,
    signature_path,
)

# How long a runtime may take to refuse a plan (it imports torch first).
REFUSAL_TIMEOUT_S = 120.0


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: harmless, and visible afterwards."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def pickle_one_weight(archive: Path, marker: Path) -> None:
    """Rewrite ``archive`` so its first weight is a pickle that creates ``marker``."""
    import pickle

    with zipfile.ZipFile(archive) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    config_name = next(n for n in entries if n.endswith("data/weights/model_weights_config.json"))
    root = config_name[: -len("data/weights/model_weights_config.json")]
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    entries[f"{root}data/weights/{first['path_name']}"] = pickle.dumps(_CreatesFile(marker))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for name, data in entries.items():
            out.writestr(name, data)


def _rewrite_plan(plan_dir: Path, edit: Callable[[dict[str, object]], None]) -> None:
    path = plan_dir / PLAN_FILE
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@dataclass(frozen=True)
class Refusal:
    """How one runtime met a crafted plan."""

    exit_code: int | None
    last_line: str
    traceback: bool

    @property
    def refused(self) -> bool:
        # The edge is given a dead --cloud: an edge that took the plan runs, serves no frame
        # remotely and exits EXIT_CLOUD_SERVED_NOTHING, which is no refusal of the plan.
        return self.exit_code not in (None, 0, EXIT_CLOUD_SERVED_NOTHING)


def _start(runtime: str, plan_dir: Path, cut: str, *, public_key: Path | None = None) -> Refusal:
    if runtime == "cloud":
        args = ["cloud", "--plan", str(plan_dir), "--listen", f"127.0.0.1:{free_port()}"]
    else:
        args = ["edge", "--plan", str(plan_dir), "--frames", "2", "--cut", cut,
                "--codec", "int8+zstd1", "--cloud", f"127.0.0.1:{free_port()}"]  # fmt: skip
    if public_key is not None:
        args += ["--plan-public-key", str(public_key)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "splitwire", *args],
            capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        still = f"still running after {REFUSAL_TIMEOUT_S:.0f} s"
        return Refusal(None, still, "Traceback" in stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return Refusal(done.returncode, lines[-1] if lines else "", "Traceback" in done.stderr)


def _torch_runs_it(archive: Path, marker: Path) -> bool:
    """The control: plain ``torch.export.load`` on the archive, in a child process."""
    subprocess.run(
        [sys.executable, "-c", "import sys, torch; torch.export.load(sys.argv[1])", str(archive)],
        capture_output=True, timeout=REFUSAL_TIMEOUT_S,
    )  # fmt: skip
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ran


def _judge(refusals: dict[str, Refusal], checks: dict[str, bool]) -> tuple[dict[str, bool], str]:
    for runtime, refusal in refusals.items():
        checks[f"{runtime} refused"] = refusal.refused
        checks[f"{runtime}: no traceback"] = not refusal.traceback
    detail = "; ".join(
        f"{runtime} exit {r.exit_code}: {r.last_line[-160:]}" for runtime, r in refusals.items()
    )
    return checks, detail


def pickled_weights(plan_dir: Path, cut: str) -> AttackOutcome:
    """One weight of ``cut``'s head and tail replaced by a code-running pickle."""
    with tempfile.TemporaryDirectory(prefix="splitwire-crafted-") as scratch:
        crafted = Path(scratch) / "plan"
        shutil.copytree(plan_dir, crafted)
        marker = Path(scratch) / "code-ran"
        halves = {}
        for side in ("head", "tail"):
            archive = crafted / "cuts" / cut / f"{side}.pt2"
            pickle_one_weight(archive, marker)
            halves[side] = archive
        control = _torch_runs_it(halves["tail"], marker)

        def rehash(data: dict[str, object]) -> None:
            entry = data["cuts"][cut]  # type: ignore[index]
            for side, archive in halves.items():
                entry[f"{side}_sha256"] = sha256_file(archive)

        _rewrite_plan(crafted, rehash)
        refusals = {runtime: _start(runtime, crafted, cut) for runtime in ("cloud", "edge")}
        checks, detail = _judge(refusals, {"control: torch.export.load runs it": control})
        checks["no code ran"] = not marker.exists()
    return AttackOutcome(
        sent=f"cut {cut}'s head.pt2 and tail.pt2 with a pickled weight (sha256 lines rewritten)",
        checks=checks,
        detail=detail,
    )


def missing_sha256(plan_dir: Path, cut: str) -> AttackOutcome:
    """A plan whose ``tail_sha256`` and ``head_sha256`` lines of ``cut`` are deleted."""
    with tempfile.TemporaryDirectory(prefix="splitwire-crafted-") as scratch:
        crafted = Path(scratch) / "plan"
        shutil.copytree(plan_dir, crafted)

        def drop(data: dict[str, object]) -> None:
            entry = data["cuts"][cut]  # type: ignore[index]
            del entry["tail_sha256"], entry["head_sha256"]

        _rewrite_plan(crafted, drop)
        refusals = {runtime: _start(runtime, crafted, cut) for runtime in ("cloud", "edge")}
        checks, detail = _judge(refusals, {})
    return AttackOutcome(sent=f"plan.yaml without cut {cut}'s sha256 lines", checks=checks,
                         detail=detail)  # fmt: skip


def deep_plan_yaml(plan_dir: Path, cut: str) -> AttackOutcome:
    """``plan.yaml`` replaced by 100 000 opening brackets."""
    with tempfile.TemporaryDirectory(prefix="splitwire-crafted-") as scratch:
        crafted = Path(scratch) / "plan"
        shutil.copytree(plan_dir, crafted)
        (crafted / PLAN_FILE).write_text("[" * 100_000)
        refusals = {runtime: _start(runtime, crafted, cut) for runtime in ("cloud", "edge")}
        checks, detail = _judge(refusals, {})
    return AttackOutcome(sent="plan.yaml of 100 000 '['", checks=checks, detail=detail)


def unsigned_plan(plan_dir: Path, cut: str) -> AttackOutcome:
    """The plan, unsigned, to runtimes that are given a public key."""
    with tempfile.TemporaryDirectory(prefix="splitwire-crafted-") as scratch:
        crafted = Path(scratch) / "plan"
        shutil.copytree(plan_dir, crafted)
        signature_path(crafted / PLAN_FILE).unlink(missing_ok=True)
        _, public = generate_key_pair(Path(scratch) / "plans")
        refusals = {
            runtime: _start(runtime, crafted, cut, public_key=public)
            for runtime in ("cloud", "edge")
        }
        checks, detail = _judge(refusals, {})
    return AttackOutcome(sent="an unsigned plan to runtimes with --plan-public-key",
                         checks=checks, detail=detail)  # fmt: skip


def tampered_signed_plan(plan_dir: Path, cut: str) -> AttackOutcome:
    """A signed plan whose plan.yaml changed after signing (one predicted figure)."""
    with tempfile.TemporaryDirectory(prefix="splitwire-crafted-") as scratch:
        crafted = Path(scratch) / "plan"
        shutil.copytree(plan_dir, crafted)
        private, public = generate_key_pair(Path(scratch) / "plans")
        sign_file(crafted / PLAN_FILE, load_signing_key(private))
        replica = TailReplica([crafted], args=["--plan-public-key", str(public)])
        try:
            replica.start(timeout_s=REFUSAL_TIMEOUT_S)
            control = True
        except SplitwireError:
            control = False
        finally:
            replica.close()

        def nudge(data: dict[str, object]) -> None:
            predicted = data["choice"]["predicted"]  # type: ignore[index]
            key = next(iter(predicted))
            predicted[key] = float(predicted[key]) * 0.5

        _rewrite_plan(crafted, nudge)
        refusals = {
            runtime: _start(runtime, crafted, cut, public_key=public)
            for runtime in ("cloud", "edge")
        }
        # The control: the same plan, signed and untouched, is served.
        checks, detail = _judge(refusals, {"control: the signed plan is served": control})
    return AttackOutcome(sent="a signed plan.yaml with one figure changed after signing",
                         checks=checks, detail=detail)  # fmt: skip


PlanAttack = Callable[[Path, str], AttackOutcome]
PLAN_ATTACKS: dict[str, PlanAttack] = {
    "pickled-weights": pickled_weights,
    "missing-sha256": missing_sha256,
    "deep-plan-yaml": deep_plan_yaml,
    "unsigned-plan": unsigned_plan,
    "tampered-signed-plan": tampered_signed_plan,
}
