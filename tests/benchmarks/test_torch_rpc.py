"""The PyTorch RPC reference backend: real tail and edge processes over TensorPipe on
127.0.0.1, on the shared ResNet-18 64² plan (``tests/conftest.py``), directly and through the
link emulator."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from splitwire.benchmarks.rpc_proxy import (
    PROXIED_PREFIX,
    TAIL_ADDRESS_KEY,
    RedirectingStore,
    _RewritingRelay,
)
from splitwire.benchmarks.torch_rpc import (
    RpcRunResult,
    TorchRpcError,
    activation_bytes,
    bench_inputs,
    fp32_activations,
    rpc_available,
    rpc_tail_outputs,
    run_torch_rpc,
)
from splitwire.errors import SplitwireError
from splitwire.partitioner.errors import LinkError, PlanError
from splitwire.partitioner.runtime import RunnablePlan

# Slow enough that the link shows in every frame: 64 KiB of activations take 52 ms to send.
SLOW_LINK = "bw=10mbit,rtt=80ms"


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
@pytest.mark.parametrize("link", [None, SLOW_LINK], ids=["loopback", "emulated"])
def test_outputs_are_the_tail_of_the_head(
    plan: RunnablePlan, plan_dir: Path, cut: str, link: str | None
) -> None:
    inputs = bench_inputs(plan.plan.input_shape, count=3)

    received = rpc_tail_outputs(plan_dir, cut, inputs, window=2, timeout_s=90, link=link)

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
def test_an_emulated_link_carries_every_frame_and_adds_its_round_trip(
    plan_dir: Path, plan: RunnablePlan, cut: str
) -> None:
    loopback = run_torch_rpc(plan_dir, cut, frames=3, window=1, warmup=1, timeout_s=90)

    emulated = run_torch_rpc(
        plan_dir, cut, frames=3, window=1, warmup=1, timeout_s=90, link=SLOW_LINK
    )

    assert (loopback.link, loopback.emulator) == ("loopback", None)
    assert emulated.link == "name=custom,bw=10mbit,rtt=80ms"
    assert len(emulated.latencies_ms) == 3
    stats = emulated.emulator
    assert stats is not None
    # The tensors of all four frames (warm-up included) went up through the emulator, and the
    # answers (the logits, plus their pickles) came back through it.
    assert stats["up"]["bytes"] >= 4 * emulated.bytes_per_frame
    with torch.inference_mode():
        x = bench_inputs(plan.plan.input_shape, count=1)[0]
        logits = plan.tail(cut)(*fp32_activations(plan.head(cut)(x)))
    assert stats["down"]["bytes"] >= 4 * activation_bytes(fp32_activations(logits))
    assert stats["rewrites"] == 1
    # One frame at a time: each waits a round trip more, plus its send time (52 ms).
    assert emulated.percentile(50) >= loopback.percentile(50) + 80
    record = emulated.as_json()
    assert record["link"] == emulated.link
    assert record["link_up_bytes"] == stats["up"]["bytes"]
    assert record["link_up_delay_p50_ms"] == pytest.approx(40, abs=10)


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
    with pytest.raises(TorchRpcError, match="tcp-basic"):
        run_torch_rpc(plan_dir, cut, frames=4, window=1, transport="tcp", link=SLOW_LINK)
    with pytest.raises(LinkError):
        run_torch_rpc(plan_dir, cut, frames=4, window=1, link="bw=fast")
    assert issubclass(TorchRpcError, SplitwireError)


def test_the_edge_store_reads_the_proxy_for_the_tail_through_torch() -> None:
    store = dist.HashStore()
    store.set(TAIL_ADDRESS_KEY, "uv://127.0.0.1:36539")
    store.set(PROXIED_PREFIX + TAIL_ADDRESS_KEY, "uv://127.0.0.1:41000")
    store.set("rpc_prefix_0/addrs/edge", "uv://127.0.0.1:35000")
    # As TensorPipe reads it: through init_rpc's and the agent's C++ prefix stores.
    # (Python must keep the wrapper: the C++ prefix stores hold only its C++ half.)
    redirecting = RedirectingStore(store, redirect=frozenset({TAIL_ADDRESS_KEY}))
    seen = dist.PrefixStore("addrs", dist.PrefixStore("rpc_prefix_0", redirecting))

    assert seen.get("tail") == b"uv://127.0.0.1:41000"
    assert seen.get("edge") == b"uv://127.0.0.1:35000"
    seen.set("other", b"\x00\x01")
    assert store.get("rpc_prefix_0/addrs/other") == b"\x00\x01"
    assert seen.add("count", 2) == 2


async def test_the_relay_rewrites_the_tail_address_once_even_split() -> None:
    answer = [b"brochure 127.0.0", b".1:36539 basic", b" then 127.0.0.1:36539 as data"]

    async def tail(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in answer:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        assert await reader.read() == b"call"
        writer.close()

    server = await asyncio.start_server(tail, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = _RewritingRelay(target=f"127.0.0.1:{port}", old="127.0.0.1:36539",
                            new="127.0.0.1:41000")  # fmt: skip
    address = await relay.start()
    try:
        host, relay_port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(relay_port))
        writer.write(b"call")
        writer.write_eof()
        received = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await relay.close()
        server.close()

    assert received == b"brochure 127.0.0.1:41000 basic then 127.0.0.1:36539 as data"
    assert relay.rewrites == 1


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
