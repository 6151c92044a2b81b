"""A plan directory never runs code, and a signed one is taken only as signed.

Each archive attack is a real half of the session's ResNet-18 plan, rewritten the way an
attacker would (a weight marked ``use_pickle``, a pickled constant, a legacy blob, booby-trapped
sample inputs, a ``sympify`` or guard payload in ``model.json``). The payload creates a marker
file when it runs. Each test shows that splitwire's loader refuses the archive, naming it and
the entry, without creating the marker, and — the control that makes the test able to fail —
that plain ``torch.export.load`` on the same file does run the payload.

The signature tests run the real :class:`~splitwire.cloud.CloudServer`, the real edge agent and
the real ``splitwire`` command line with keys made by ``splitwire keygen``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from splitwire.cli import main
from splitwire.cloud import CloudConfig, create_server
from splitwire.cloud.errors import ConfigError
from splitwire.cloud.registry import TailRegistry
from splitwire.edge.config import EdgeConfigError
from splitwire.partitioner.archive import load_program
from splitwire.partitioner.errors import ArchiveError, PlanError, PlanSignatureError
from splitwire.partitioner.plan_file import load_plan, sha256_file, write_plan
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.partitioner.signing import (
    PlanTrust,
    generate_key_pair,
    load_signing_key,
    sign_file,
)

from ..conftest import INPUT
from ..edge.agent_runs import make_agent, run_agent


class Payload:
    """Pickled, it recreates itself as ``open(marker, "w")``: running it leaves the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


Entries = dict[str, bytes]


def rewrite(src: Path, dst: Path, edit: Callable[[str, Entries], None]) -> None:
    """Copy the archive ``src`` to ``dst`` with ``edit(root, entries)`` applied, as stored
    entries the way torch writes them."""
    with zipfile.ZipFile(src) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    root = next(iter(entries)).split("/")[0]
    edit(root, entries)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)


def _json(entries: Entries, name: str) -> dict:
    return json.loads(entries[name])


def pickled_weight(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        name = f"{root}/data/weights/model_weights_config.json"
        config = _json(entries, name)
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        entries[name] = json.dumps(config).encode()
        record = f"{root}/data/weights/{first['path_name']}"
        entries[record] = pickle.dumps(
            Payload(marker), protocol=2
        )  # a legacy pickle: torch.load runs it
        return record

    return edit


def pickled_constant(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        name = f"{root}/data/constants/model_constants_config.json"
        config = _json(entries, name)
        config["config"]["lifted_tensor"] = {
            "path_name": "tensor_constant_0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }
        entries[name] = json.dumps(config).encode()
        record = f"{root}/data/constants/tensor_constant_0"
        entries[record] = pickle.dumps(Payload(marker), protocol=2)
        return record

    return edit


def opaque_constant(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        name = f"{root}/data/constants/model_constants_config.json"
        config = _json(entries, name)
        config["config"]["state"] = {
            "path_name": "opaque_obj_0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }
        entries[name] = json.dumps(config).encode()
        record = f"{root}/data/constants/opaque_obj_0"
        entries[record] = pickle.dumps(Payload(marker), protocol=2)
        return record

    return edit


def legacy_weights(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        record = f"{root}/data/weights/model.pt"
        entries[record] = pickle.dumps(Payload(marker), protocol=2)
        return record

    return edit


def sample_inputs(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        record = f"{root}/data/sample_inputs/model.pt"
        entries[record] = pickle.dumps(Payload(marker), protocol=2)
        return record

    return edit


def sympy_expression(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        name = f"{root}/models/model.json"
        text = entries[name].decode()
        assert "Symbol('s" in text, "the half has no dynamic batch symbol to booby-trap"
        # sympify evals the string: the payload runs and the symbol comes out the same.
        payload = f"Symbol(open({str(marker)!r}, 'w').name[:0] + 's"
        entries[name] = text.replace("Symbol('s", payload, 1).encode()
        return name

    return edit


def guard_code(marker: Path) -> Callable[[str, Entries], str]:
    def edit(root: str, entries: Entries) -> str:
        name = f"{root}/models/model.json"
        program = _json(entries, name)
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]
        entries[name] = json.dumps(program).encode()
        return name

    return edit


ATTACKS = {
    "weight marked use_pickle": pickled_weight,
    "tensor constant marked use_pickle": pickled_constant,
    "opaque object constant": opaque_constant,
    "legacy weights blob": legacy_weights,
    "sympy expression": sympy_expression,
    "guard code": guard_code,
}


@dataclass(frozen=True)
class Half:
    """A real tail of the session plan and the inputs it runs on."""

    path: Path
    inputs: tuple[torch.Tensor, ...]


@pytest.fixture(scope="module")
def half(plan: RunnablePlan, split_cuts: tuple[str, str]) -> Half:
    cut = plan.plan.cut(split_cuts[0])
    assert cut.tail is not None
    x = torch.randn((2, *INPUT[1:]), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out = plan.head(cut.id)(x)
    return Half(plan.directory / cut.tail, tuple(out) if isinstance(out, tuple | list) else (out,))


def run_with_torch(path: Path, inputs: tuple[torch.Tensor, ...]) -> None:
    """What splitwire did before: torch.export.load, then run the module (errors ignored: only
    whether the payload ran matters)."""
    with contextlib.suppress(Exception), torch.inference_mode():
        torch.export.load(path).module()(*inputs)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_crafted_half_is_refused_and_its_code_never_runs(
    attack: str, half: Half, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    crafted = tmp_path / "tail.pt2"
    entry: list[str] = []
    rewrite(half.path, crafted, lambda root, e: entry.append(ATTACKS[attack](marker)(root, e)))

    with pytest.raises(ArchiveError) as refused:
        load_program(crafted, sha256=sha256_file(crafted))
    assert refused.value.entry == entry[0]
    assert str(crafted) in str(refused.value) and entry[0] in str(refused.value)
    assert not marker.exists(), "splitwire's loader ran the archive's code"

    # The control: the crafted file is a real attack, which torch alone falls for.
    run_with_torch(crafted, half.inputs)
    assert marker.exists(), f"{attack}: torch.export.load did not run the payload"


def test_booby_trapped_sample_inputs_are_never_read(half: Half, tmp_path: Path) -> None:
    # The sample inputs only serve re-tracing: splitwire hands torch a copy with them emptied,
    # so whatever they hold is never unpickled, and the half still runs.
    marker = tmp_path / "ran"
    crafted = tmp_path / "tail.pt2"
    rewrite(half.path, crafted, sample_inputs(marker))
    with torch.inference_mode():
        module = load_program(crafted, sha256=sha256_file(crafted))
        out = module(*half.inputs)
    assert out[0].shape[0] == half.inputs[0].shape[0]
    assert not marker.exists(), "splitwire's loader unpickled the sample inputs"

    run_with_torch(crafted, half.inputs)
    assert marker.exists(), "torch.export.load did not run the sample inputs' payload"


@pytest.mark.parametrize(
    ("change", "entry", "message"),
    [
        (
            lambda root, e: e.update({f"{root}/data/aotinductor/model/model.so": b"\x7fELF"}),
            "data/aotinductor/model/model.so",
            "AOTInductor compiled code",
        ),
        (
            lambda root, e: e.update({f"{root}/extra/notes.txt": b"hi"}),
            "extra/notes.txt",
            "an extra file",
        ),
        (
            lambda root, e: e.update({f"{root}/data/weights/weight_9999": b"\0" * 8}),
            "data/weights/weight_9999",
            "not listed in the weights or constants config",
        ),
        (
            lambda root, e: e.update({"other/models/model.json": b"{}"}),
            "other/models/model.json",
            "outside the archive's root folder",
        ),
        (
            lambda root, e: e.update(
                {
                    f"{root}/models/model.json": e[f"{root}/models/model.json"].replace(
                        b'"torch.ops.aten.conv2d.default"', b'"torch.os.system"', 1
                    )
                }
            ),
            "models/model.json",
            "node target 'torch.os.system' is not an ATen operator",
        ),
        (
            lambda root, e: e.update(
                {
                    f"{root}/models/model.json": e[f"{root}/models/model.json"].replace(
                        b'"torch.ops.aten.conv2d.default"', b'"torch.ops.aten.from_file.default"'
                    )
                }
            ),
            "models/model.json",
            "torch.ops.aten.from_file.default",
        ),
    ],
    ids=["aotinductor", "extra file", "unlisted record", "second root", "os target", "from_file"],
)
def test_entries_our_exports_never_hold_are_refused(
    half: Half, tmp_path: Path, change: Callable[[str, Entries], None], entry: str, message: str
) -> None:
    crafted = tmp_path / "tail.pt2"
    rewrite(half.path, crafted, change)
    with pytest.raises(ArchiveError, match=re.escape(message)) as refused:
        load_program(crafted, sha256=None)
    assert refused.value.entry is not None and refused.value.entry.endswith(entry)


def test_the_pre_2_8_archive_format_is_refused(tmp_path: Path) -> None:
    # torch.export.load falls back to this layout when the .pt2 one fails; its state dict and
    # constants go through torch.load with a weights_only=False fallback.
    legacy = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(legacy, "w") as z:
        z.writestr("version", "8.20")
        z.writestr("serialized_exported_program.json", "{}")
        z.writestr("serialized_state_dict.json", pickle.dumps({"w": 1}, protocol=2))
    with pytest.raises(ArchiveError, match="one root folder") as refused:
        load_program(legacy, sha256=None)
    assert refused.value.entry == "version"


def test_an_empty_record_may_not_declare_a_huge_tensor(half: Half, tmp_path: Path) -> None:
    # torch would fill an empty record with zeros of the declared size: ~1 TB from 0 bytes.
    def bomb(root: str, entries: Entries) -> None:
        name = f"{root}/data/weights/model_weights_config.json"
        config = _json(entries, name)
        first = next(iter(config["config"].values()))
        first["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
        entries[name] = json.dumps(config).encode()
        entries[f"{root}/data/weights/{first['path_name']}"] = b""

    crafted = tmp_path / "tail.pt2"
    rewrite(half.path, crafted, bomb)
    with pytest.raises(ArchiveError, match=re.escape("empty, but declared of size [1048576")):
        load_program(crafted, sha256=None)


def test_compressed_and_duplicate_entries_are_refused(plan: RunnablePlan, tmp_path: Path) -> None:
    small = plan.directory / str(plan.plan.cut("c0000").head)  # the input cut's identity head
    load_program(small, sha256=None)  # as exported, it loads
    with zipfile.ZipFile(small) as z:
        entries = [(info.filename, z.read(info)) for info in z.infolist()]
    compressed = tmp_path / "deflated.pt2"
    with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    with pytest.raises(ArchiveError, match="compressed or encrypted"):
        load_program(compressed, sha256=None)
    twice = tmp_path / "twice.pt2"
    with zipfile.ZipFile(twice, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in [*entries, entries[-1]]:
            z.writestr(name, data)
    with pytest.raises(ArchiveError, match="appears twice"):
        load_program(twice, sha256=None)


def test_the_loaded_half_computes_what_torch_loads(half: Half) -> None:
    # The checked copy (sample inputs emptied) runs exactly as the archive torch wrote.
    with torch.inference_mode():
        ours = load_program(half.path, sha256=sha256_file(half.path))(*half.inputs)
        theirs = torch.export.load(half.path).module()(*half.inputs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(PlanError, match="does not match its recorded sha256"):
        load_program(half.path, sha256="0" * 64)


# ---- a crafted half inside a plan directory, through the runtimes -----------------------------


def clone_plan(src: Path, dst: Path) -> Path:
    """A copy of the plan directory ``src``: plan.yaml copied, the halves hard-linked (tests
    replace a half by unlinking it first, so the session's plan is never touched)."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".pt2":
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return dst


def plant(plan_dir: Path, cut: str, crafted: Path) -> None:
    """Replace ``cut``'s tail with ``crafted`` and record its sha256 in plan.yaml, as an
    attacker who can write the (unsigned) directory would."""
    tail = plan_dir / "cuts" / cut / "tail.pt2"
    tail.unlink()
    shutil.copyfile(crafted, tail)
    path = plan_dir / "plan.yaml"
    data = yaml.safe_load(path.read_text())
    data["cuts"][cut]["tail_sha256"] = sha256_file(tail)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def crafted_plan(plan_dir: Path, split_cuts: tuple[str, str], half: Half, tmp_path: Path) -> Path:
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pt2"
    rewrite(half.path, crafted, pickled_weight(marker))
    cloned = clone_plan(plan_dir, tmp_path / "plan")
    plant(cloned, split_cuts[0], crafted)
    return cloned


async def test_the_cloud_refuses_a_plan_with_a_crafted_tail(
    crafted_plan: Path, split_cuts: tuple[str, str], tmp_path: Path
) -> None:
    server = create_server(CloudConfig(listen="127.0.0.1:0", plans=(crafted_plan,)))
    with pytest.raises(ConfigError, match=r"refused to load .*tail\.pt2, entry 'tail/data/weig"):
        await server.start()
    await server.stop()
    assert not (tmp_path / "ran").exists()
    # The edge refuses the same half when it loads it.
    plan = open_plan(crafted_plan)
    with pytest.raises(ArchiveError, match="marked use_pickle"):
        plan.tail(split_cuts[0])
    assert not (tmp_path / "ran").exists()


def test_splitwire_cloud_exits_2_with_one_line(crafted_plan: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "splitwire", "cloud", "--listen", "127.0.0.1:0",
         "--plan", str(crafted_plan)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "marked use_pickle" in errors[0], result.stderr[-2000:]
    assert "trusted as it is" in result.stderr  # no --plan-public-key: said once
    assert not (tmp_path / "ran").exists()


# ---- signed plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    private, public = generate_key_pair(tmp_path_factory.mktemp("keys") / "plans")
    return Keys(private, public)


@pytest.fixture
def signed_plan(plan_dir: Path, keys: Keys, tmp_path: Path) -> Path:
    cloned = clone_plan(plan_dir, tmp_path / "signed")
    sign_file(cloned / "plan.yaml", load_signing_key(keys.private))
    return cloned


@pytest.mark.timed  # a real agent against a real tail, frames within wall-clock budgets
async def test_a_signed_plan_is_served_and_run_with_the_public_key(
    signed_plan: Path, keys: Keys, split_cuts: tuple[str, str]
) -> None:
    server = create_server(
        CloudConfig(listen="127.0.0.1:0", plans=(signed_plan,), plan_public_key=keys.public)
    )
    await server.start()
    try:
        _, records = await run_agent(
            signed_plan,
            cloud=server.address,
            frames=3,
            cut=split_cuts[0],
            codec="fp32",
            policy="fixed",
            plan_public_key=keys.public,
        )
    finally:
        await server.stop()
    assert [r["source"] for r in records] == ["remote"] * 3, records


def test_the_warning_is_logged_once_without_a_key(
    plan_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="splitwire"):
        TailRegistry([plan_dir, plan_dir])
    warnings = [r for r in caplog.records if "trusted as it is" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def _tamper_one_byte(plan_dir: Path) -> None:
    path = plan_dir / "plan.yaml"
    text = path.read_text()
    # A figure the runtimes price with: 0.01 -> 0.02, the file otherwise byte for byte the same.
    assert "accuracy_budget: 0.01" in text
    path.write_text(text.replace("accuracy_budget: 0.01", "accuracy_budget: 0.02", 1))


def _delete_a_sha256_line(plan_dir: Path) -> None:
    path = plan_dir / "plan.yaml"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if "tail_sha256" not in line))


def _drop_signature(plan_dir: Path) -> None:
    (plan_dir / "plan.yaml.sig").unlink()


def _other_key(plan_dir: Path) -> None:
    private, _ = generate_key_pair(plan_dir / "intruder")
    sign_file(plan_dir / "plan.yaml", load_signing_key(private))


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (_drop_signature, "plan.yaml is not signed: expected plan.yaml.sig, an Ed25519 signature"),
        (_tamper_one_byte, "the signature in plan.yaml.sig does not match"),
        (_delete_a_sha256_line, "the signature in plan.yaml.sig does not match"),
        (_other_key, "signed by another key than"),
    ],
    ids=["unsigned", "one byte changed", "sha256 line deleted", "another key"],
)
async def test_with_a_public_key_a_plan_not_signed_by_it_is_refused_before_any_half(
    signed_plan: Path, keys: Keys, attack: Callable[[Path], None], message: str
) -> None:
    attack(signed_plan)
    # No half is there to hash or load: the refusal must come before either.
    shutil.rmtree(signed_plan / "cuts")
    server = create_server(
        CloudConfig(listen="127.0.0.1:0", plans=(signed_plan,), plan_public_key=keys.public)
    )
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        await server.start()
    await server.stop()
    assert f"--plan {signed_plan}" in str(refused.value)
    assert str(keys.public) in str(refused.value)  # what was expected: a signature by this key
    with pytest.raises(EdgeConfigError, match=re.escape(message)):
        make_agent(signed_plan, plan_public_key=keys.public)


def test_without_a_key_a_deleted_sha256_line_is_refused(signed_plan: Path) -> None:
    _delete_a_sha256_line(signed_plan)
    with pytest.raises(PlanError, match="has no tail_sha256; every half's sha256 is required"):
        load_plan(signed_plan)


def test_the_edge_opens_a_signed_plan_and_refuses_a_bad_key_file(
    signed_plan: Path, keys: Keys, tmp_path: Path
) -> None:
    agent, _ = make_agent(signed_plan, plan_public_key=keys.public, cloud="127.0.0.1:1")
    assert agent.plan.directory == signed_plan.resolve()
    (tmp_path / "not-a-key.pub").write_text("hello\n")
    for bad, message in (
        (tmp_path / "absent.pub", "cannot read the public key"),
        (tmp_path / "not-a-key.pub", "not a PEM public key"),
        (keys.private, "not a PEM public key"),
    ):
        with pytest.raises(EdgeConfigError, match=f"--plan-public-key: .*{message}"):
            make_agent(signed_plan, plan_public_key=bad)


def test_writing_a_plan_unsigned_removes_a_stale_signature(signed_plan: Path, keys: Keys) -> None:
    plan = load_plan(signed_plan, trust=PlanTrust.from_public_key(keys.public))
    write_plan(plan, signed_plan)
    assert not (signed_plan / "plan.yaml.sig").exists()
    write_plan(plan, signed_plan, signing_key=load_signing_key(keys.private))
    _, other = generate_key_pair(signed_plan / "other")
    with pytest.raises(PlanSignatureError):  # the check is real: another key fails it
        load_plan(signed_plan, trust=PlanTrust.from_public_key(other))
    assert load_plan(signed_plan, trust=PlanTrust.from_public_key(keys.public)) == plan


def test_keygen_round_trip_through_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "plans"
    assert main(["keygen", "--out", str(prefix)]) == 0
    private, public = tmp_path / "plans.key", tmp_path / "plans.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "wrote" in capsys.readouterr().out
    before = private.read_bytes()
    assert main(["keygen", "--out", str(prefix)]) == 2  # never overwrites a key
    assert private.read_bytes() == before
    plan = tmp_path / "plan.yaml"
    plan.write_text("schema: 2\n")
    sign_file(plan, load_signing_key(private))
    PlanTrust.from_public_key(public).verify(plan, plan.read_bytes())
    with pytest.raises(PlanSignatureError):
        PlanTrust.from_public_key(public).verify(plan, b"schema: 3\n")


def test_plan_refuses_a_bad_sign_key_before_measuring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["plan", "--model", "zoo:resnet18", "--input-shape", "1,3,32,32", "--link", "wifi",
            "--out", str(tmp_path / "p"), "--sign-key", str(tmp_path / "absent.key")]  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="splitwire"):
        assert main(args) == 2
    assert "cannot read the private key" in caplog.text
    assert not (tmp_path / "p").exists()


def test_keygen_help_teaches_the_whole_round(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["keygen", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for step in ("--sign-key", "--plan-public-key", "0600", "openssl genpkey"):
        assert step in text, step


def test_the_signature_is_over_the_exact_bytes(signed_plan: Path, keys: Keys) -> None:
    # A YAML-equivalent rewrite (same data, other formatting) is a different plan.yaml.
    path = signed_plan / "plan.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()), sort_keys=True))
    with pytest.raises(PlanSignatureError, match="does not match"):
        load_plan(signed_plan, trust=PlanTrust.from_public_key(keys.public))


def test_io_error_reading_the_signature_is_a_plan_error(signed_plan: Path, keys: Keys) -> None:
    sig = signed_plan / "plan.yaml.sig"
    sig.unlink()
    sig.mkdir()  # reading a directory fails with an OSError other than "missing"
    with pytest.raises(PlanSignatureError, match="cannot read"):
        load_plan(signed_plan, trust=PlanTrust.from_public_key(keys.public))
