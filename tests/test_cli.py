"""The ``splitwire`` command as a user runs it: a real subprocess, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CODEC_FIELDS = {
    "model",
    "layer",
    "spec",
    "raw_bytes",
    "pickle_bytes",
    "wire_bytes",
    "ratio_vs_pickle",
    "rel_rmse",
    "encode_mb_s",
    "decode_mb_s",
}


def splitwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitwire", *args], capture_output=True, text=True, timeout=300
    )


def test_help_teaches_the_subcommands() -> None:
    result = splitwire("--help")
    assert result.returncode == 0
    for command in ("models", "bench"):
        assert command in result.stdout


def test_building_the_parser_imports_no_torch() -> None:
    """Every package's and every benchmark's subcommand registers without importing torch or
    grpc (their handlers import them), so ``splitwire --help`` stays fast."""
    code = (
        "import sys\n"
        "from splitwire.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'grpc', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_benchmark_and_netem_has_its_help() -> None:
    from splitwire.benchmarks.cli import BENCHMARK_MODULES

    names = [module.rsplit(".", 1)[1] for module in BENCHMARK_MODULES]
    listing = splitwire("bench", "--help")
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in names)
    for name in names:
        result = splitwire("bench", name, "--help")
        assert result.returncode == 0 and f"usage: splitwire bench {name}" in result.stdout
    netem = splitwire("netem", "--help")
    assert netem.returncode == 0
    for flag in ("--listen", "--upstream", "--link", "--trace", "--interval", "--duration",
                 "--seed", "--json"):  # fmt: skip
        assert flag in netem.stdout


def test_user_error_exits_2_without_traceback() -> None:
    result = splitwire("models", "zoo:no_such_model")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown zoo model 'no_such_model'" in result.stderr
    assert "resnet18" in result.stderr  # the message lists what is available


def test_bad_codec_exits_2() -> None:
    result = splitwire("bench", "codec", "--models", "resnet18", "--specs", "int9")
    assert result.returncode == 2
    assert "unknown scheme 'int9'" in result.stderr


def test_models_lists_the_zoo_as_json() -> None:
    result = splitwire("models", "--json")
    assert result.returncode == 0
    specs = {row["spec"] for row in json.loads(result.stdout)}
    assert {"zoo:resnet18", "zoo:resnet50", "zoo:mobilenet_v2", "zoo:vit_tiny"} <= specs


@pytest.mark.slow
def test_bench_codec_json_records() -> None:
    result = splitwire(
        "bench", "codec", "--models", "resnet18", "--specs", "int8+zstd1", "fp32",
        "--repeats", "1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 5 * 2  # five taps of ResNet-18, two codecs
    for record in records:
        assert record.keys() >= CODEC_FIELDS
        assert record["wire_bytes"] > 0 and record["pickle_bytes"] > record["raw_bytes"]
    fp32 = [r for r in records if r["spec"] == "fp32"]
    assert all(r["rel_rmse"] == 0.0 and r["exact"] for r in fp32)
    int8 = [r for r in records if r["spec"] == "int8+zstd1"]
    assert all(r["ratio_vs_pickle"] > 4 and r["rel_rmse"] < 0.01 for r in int8)
