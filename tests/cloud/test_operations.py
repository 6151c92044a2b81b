"""What an operator relies on: health transitions, scraped metrics, graceful shutdown with frames
in flight, queue budgets (STALE) and RESOURCE_EXHAUSTED at every limit."""

from __future__ import annotations

import asyncio
import gc
import time
import urllib.request

import pytest
import torch
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import (
    SessionClosed,
    SessionFrameError,
    SessionRejected,
    SessionResult,
)

from .conftest import encoded, exchange, head_outputs, inputs, result

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health(address: str, service: str = "") -> int:
    async with aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(answer.status)


def frame(seed: int = 0) -> list:
    return encoded([inputs(seed)], "fp32")


async def test_graceful_shutdown_answers_frames_in_flight(start_server, connect) -> None:
    server = await start_server(max_batch=1, grace_s=30)
    assert await health(server.address) == SERVING
    assert await health(server.address, "splitwire.v1.SplitSession") == SERVING
    session = await connect(server, codec="fp32", max_in_flight=8)
    for seq in range(1, 9):
        await session.send(seq, time.time_ns(), frame(seq))
    # Wait until the server holds all eight, then shut down under them.
    deadline = time.monotonic() + 30
    while server.metrics.registry.get_sample_value("splitwire_frames_in_flight") < 8:
        assert time.monotonic() < deadline, "the frames never reached the server"
        await asyncio.sleep(0.005)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.01)
    assert await health(server.address) == NOT_SERVING
    assert await health(server.address, "splitwire.v1.SplitSession") == NOT_SERVING
    with pytest.raises(SessionRejected, match="shutting down") as caught:
        await connect(server, codec="fp32")
    assert pb.ErrorCode.Name(caught.value.code) == "UNAVAILABLE"
    events = []
    while (event := await session.receive()) is not None:
        events.append(event)
    await stopping
    results = [e for e in events if isinstance(e, SessionResult)]
    assert sorted(r.seq for r in results) == list(range(1, 9)), events
    assert isinstance(events[-1], SessionClosed), events[-1]
    assert events[-1].code_name == "UNAVAILABLE" and events[-1].retry_after_ms > 0
    assert "shutting down" in events[-1].reason


async def test_metrics_are_scraped_over_http(start_server, connect) -> None:
    server = await start_server(metrics="127.0.0.1:0")
    session = await connect(server, codec="fp32")
    await exchange(session, [frame(1), frame(2)])
    await exchange(session, [encoded([inputs(3)[:, :2]], "fp32")], first_seq=3)  # wrong shape
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    model = server.service.registry.plans[0].model_hash[:12]
    assert samples[f'splitwire_results_total{{cut="c0000",model="{model}"}}'] == 2
    assert samples[f'splitwire_frames_total{{cut="c0000",model="{model}"}}'] == 3
    assert samples['splitwire_frame_errors_total{code="INVALID_ARGUMENT"}'] == 1
    assert samples['splitwire_sessions_total{outcome="accepted"}'] == 1
    assert samples["splitwire_open_sessions"] == 1
    assert samples["splitwire_bytes_received_total"] > 3 * 3 * 64 * 64 * 4 * 0.6
    assert samples[f'splitwire_batch_size_count{{cut="c0000",model="{model}"}}'] == 2
    for histogram in ("queue_wait", "decode", "encode"):
        assert samples[f"splitwire_{histogram}_seconds_count"] >= 2
    assert samples[f'splitwire_compute_seconds_count{{cut="c0000",model="{model}"}}'] == 2


async def test_queue_budgets_make_late_frames_stale(start_server, connect) -> None:
    server = await start_server(max_batch=1)
    busy = await connect(server, codec="fp32")
    late = await connect(server, codec="fp32")
    for seq in range(1, 5):  # ~4 whole-model runs queued ahead
        await busy.send(seq, time.time_ns(), frame(seq))
    await asyncio.sleep(0.005)
    answers = await exchange(late, [frame(9)], queue_budget_ms=1)
    stale = answers[1]
    assert isinstance(stale, SessionFrameError) and stale.code_name == "STALE", stale
    assert stale.field == "queue_budget_ms" and "budget was 1.0 ms" in stale.message
    generous = await exchange(late, [frame(9)], first_seq=2, queue_budget_ms=60_000)
    result(generous[2])
    for _ in range(4):
        assert isinstance(await busy.receive(), SessionResult)
    assert server.metrics.registry.get_sample_value("splitwire_stale_frames_total") == 1


async def test_more_frames_than_accept_allows_are_refused_one_by_one(start_server, connect) -> None:
    server = await start_server(max_batch=1)
    session = await connect(server, codec="fp32", max_in_flight=2)
    assert session.accept.max_in_flight == 2
    answers = await exchange(session, [frame(i) for i in range(6)])
    refused = [a for a in answers.values() if isinstance(a, SessionFrameError)]
    assert refused and all(a.code_name == "RESOURCE_EXHAUSTED" for a in refused)
    assert "frames in flight (the limit Accept gave)" in refused[0].message
    assert sum(isinstance(a, SessionResult) for a in answers.values()) >= 2


async def test_a_full_batch_queue_is_resource_exhausted(start_server, connect) -> None:
    server = await start_server(max_batch=1, max_queued_frames=1)
    session = await connect(server, codec="fp32")
    answers = await exchange(session, [frame(i) for i in range(6)])
    refused = [a for a in answers.values() if isinstance(a, SessionFrameError)]
    assert refused and all(a.code_name == "RESOURCE_EXHAUSTED" for a in refused)
    assert "waiting for the tail (the limit)" in refused[0].message
    # Answered, not lost: every frame has exactly one answer.
    assert len(answers) == 6


async def test_a_frame_beyond_max_frame_bytes_is_refused(start_server, connect) -> None:
    server = await start_server(max_frame_bytes=10_000)
    session = await connect(server, codec="fp32")
    answers = await exchange(session, [frame(1)])
    error = answers[1]
    assert isinstance(error, SessionFrameError) and error.code_name == "RESOURCE_EXHAUSTED"
    assert "exceeds the limit of 10000" in error.message
    assert session.accept.max_frame_bytes == 10_000


async def test_batching_merges_sessions_and_matches_unbatched_runs(
    start_server, connect, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    cut = split_cuts[1]
    batched = await start_server(max_batch=8, max_wait_ms=200)
    single = await start_server(max_batch=1)
    frames = [encoded(head_outputs(plan, cut, inputs(seed)), "int8+zstd1") for seed in range(8)]

    async def run(server) -> dict[int, object]:
        sessions = [await connect(server, cut=cut) for _ in range(4)]
        answers = await asyncio.gather(
            *(exchange(s, frames[2 * i : 2 * i + 2], first_seq=2 * i + 1)
              for i, s in enumerate(sessions))
        )  # fmt: skip
        return {seq: a for per in answers for seq, a in per.items()}

    together = await run(batched)
    alone = await run(single)
    sizes = [result(a).batch_size for a in together.values()]
    assert max(sizes) > 1, f"no batch formed: {sizes}"
    assert all(result(a).batch_size == 1 for a in alone.values())
    for seq in together:
        for x, y in zip(result(together[seq]).outputs, result(alone[seq]).outputs, strict=True):
            # The same frame, computed with others or alone: equal up to float rounding of
            # batched kernels (observed here: exactly equal or within 1e-6).
            assert x.shape == y.shape
            assert (x - y).abs().max().item() <= 1e-5 * max(1.0, y.abs().max().item())


async def test_refused_frames_leave_no_tensor_to_the_cycle_collector(start_server, connect) -> None:
    """A frame refused after decoding (here STALE) must be freed by reference counting: a
    reference cycle through its exception kept decoded tensors alive until a full collection,
    which under load let RSS swing by hundreds of MB."""
    server = await start_server(max_batch=1)
    busy = await connect(server, codec="fp32")
    late = await connect(server, codec="fp32")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for seq in range(1, 4):
            await busy.send(seq, time.time_ns(), frame(seq))
        await asyncio.sleep(0.005)
        answers = await exchange(late, [frame(9), frame(10), frame(11)], queue_budget_ms=1)
        assert any(
            isinstance(a, SessionFrameError) and a.code_name == "STALE" for a in answers.values()
        )
        for _ in range(3):
            await busy.receive()
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not leaked, f"{len(leaked)} tensors were only reachable through reference cycles"
