"""The PyTorch RPC reference backend: real tail and edge processes over TensorPipe on
127.0.0.1, on the shared ResNet-18 64² plan (``tests/conftest.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from splitwire.benchmarks.torch_rpc import (
    RpcRunResult,
    TorchRpcError,
    bench_inputs,
    fp32_activations,
    rpc_available,
    rpc_tail_outputs,
    run_torch_rpc,
)
from splitwire.errors import SplitwireError
from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.runtime import RunnablePlan


@pytest.fixture(scope="module")
def cut(split_cuts: tuple[str, str]) -> str:
    """The plan's first split cut (a third of the way through the graph)."""
    return split_cuts[0]


def test_rpc_is_available() -> None:
    assert rpc_available()


@pytest.mark.slow
def test_run_reports_every_measured_frame(plan_dir: Path, plan: RunnablePlan, cut: str) -> None:
    result = run_torch_rpc(plan_dir, cut, frames=12, window=3, warmup=4, timeout_s=90)

    assert isinstance(result, RpcRunResult)
    assert (result.frames, result.window) == (12, 3)
    # frames counts the measured frames; the warm-up frames ran before them, uncounted.
    assert len(result.latencies_ms) == 12
    assert all(0 < v < 90_000 for v in result.latencies_ms)
    assert result.duration_s > 0
    assert result.throughput_fps == pytest.approx(12 / result.duration_s)
    fp32_bytes = sum(math.prod(t.shape) * 4 for t in plan.crossing(cut, "fp32"))
    assert result.bytes_per_frame == fp32_bytes
    assert 0 < result.percentile(50) <= result.percentile(99)
    assert result.as_json()["frames"] == 12


@pytest.mark.slow
def test_outputs_are_the_tail_of_the_head(plan: RunnablePlan, plan_dir: Path, cut: str) -> None:
    inputs = bench_inputs(plan.plan.input_shape, count=3)

    received = rpc_tail_outputs(plan_dir, cut, inputs, window=2, timeout_s=90)

    assert len(received) == 3
    head, tail = plan.head(cut), plan.tail(cut)
    with torch.inference_mode():
        for x, outputs in zip(inputs, received, strict=True):
            expected = tail(*fp32_activations(head(x)))
            expected = tuple(expected) if isinstance(expected, tuple | list) else (expected,)
            assert len(outputs) == len(expected)
            for got, want in zip(outputs, expected, strict=True):
                torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_a_tail_that_cannot_start_is_reported_with_its_output(
    plan_dir: Path, cut: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the tail process dies at start-up (the edge comes up and waits for it).
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "if sys.argv[1:2] == ['tail']:\n"
        "    raise SystemExit('the tail refuses to start: test')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    with pytest.raises(TorchRpcError, match="tail process exited") as caught:
        run_torch_rpc(plan_dir, cut, frames=2, window=1, warmup=0, timeout_s=60)
    assert "the tail refuses to start: test" in str(caught.value)


def test_bad_arguments_fail_before_any_process(plan_dir: Path, cut: str) -> None:
    with pytest.raises(TorchRpcError, match="window"):
        run_torch_rpc(plan_dir, cut, frames=4, window=0)
    with pytest.raises(TorchRpcError, match="transport"):
        run_torch_rpc(plan_dir, cut, frames=4, window=1, transport="carrier-pigeon")
    with pytest.raises(PlanError):
        run_torch_rpc(plan_dir, "c9999", frames=4, window=1)
    assert issubclass(TorchRpcError, SplitwireError)


def test_activations_are_fp32_and_own_their_bytes() -> None:
    base = torch.arange(24, dtype=torch.float16).reshape(2, 12)
    view = base[:, :4]
    ids = torch.arange(3)

    sent = fp32_activations((view, ids))

    assert sent[0].dtype == torch.float32 and sent[0].is_contiguous()
    assert sent[0].untyped_storage().nbytes() == 2 * 4 * 4
    assert sent[1].dtype == torch.int64
    torch.testing.assert_close(sent[0], view.float())
    assert fp32_activations(torch.ones(2))[0].shape == (2,)
