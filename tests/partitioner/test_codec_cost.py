"""A codec's time is a cost per call plus a cost per byte of the cut's own tensors, on
hand-computed cases, and the line those two come from."""

from __future__ import annotations

import pytest

from splitwire.partitioner.accuracy import AccuracyBudget, TaskMetrics
from splitwire.partitioner.cuts import CrossingTensor, Cut
from splitwire.partitioner.device import DeviceInfo
from splitwire.partitioner.measure import reprice, unpriced
from splitwire.partitioner.plan_file import PlanOption
from splitwire.partitioner.planner import plan_option
from splitwire.partitioner.profile_format import SCHEMA, CodecTiming, NodeTiming, Profile
from splitwire.partitioner.profiling import fit_call_and_byte_cost

NODES = ("conv", "relu", "fc")
# int8+zstd1 at 0.2 ms per call and 400 MB/s encoding, 0.1 ms and 1000 MB/s decoding.
INT8 = CodecTiming(
    "int8+zstd1", encode_mb_s=400.0, decode_mb_s=1000.0, encode_call_ms=0.2, decode_call_ms=0.1
)


def _profile() -> Profile:
    return Profile(
        schema=SCHEMA,
        model_spec="m",
        model_hash="ab" * 32,
        input_shape=(1, 3, 8, 8),
        device=DeviceInfo("cpu", 1, "2.13.0"),
        nodes=tuple(NodeTiming(n, "op", 1.0, 4) for n in NODES),
        codecs=(INT8,),
        call_overhead_ms=0.5,
        total_ms=3.5,
    )


def _cut(*shapes: tuple[int, ...]) -> Cut:
    crossing = tuple(
        CrossingTensor(f"t{i}", shape, "float32", 4 * _numel(shape))
        for i, shape in enumerate(shapes)
    )
    return Cut(index=2, id="c0002", name="relu", crossing=crossing, edge_nodes=NODES[:2])


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _priced(cut: Cut) -> tuple[float, float]:
    budget = AccuracyBudget("rel", 0.01)
    m = unpriced(
        cut,
        codec="int8+zstd1",
        baseline=None,
        bytes_wire=100.0,
        result_bytes=40,
        metrics=TaskMetrics.exact(None),
        budget=budget,
    )
    profile = _profile()
    priced = reprice(m, cut, edge=profile, cloud=profile, all_nodes=NODES)
    return priced.encode_ms, priced.decode_ms


def test_small_tensor_the_call_dominates() -> None:
    """(1, 16, 4, 4): 1 kB of float32. Encode 0.2 + 1024 / 400e3 = 0.20256 ms (99 % the call);
    decode 0.1 + 1024 / 1e6 = 0.101024 ms. One MB/s figure fitted on large tensors would have
    said 0.0026 ms."""
    encode_ms, decode_ms = _priced(_cut((1, 16, 4, 4)))
    assert encode_ms == pytest.approx(0.20256)
    assert decode_ms == pytest.approx(0.101024)


def test_big_tensor_the_bytes_dominate() -> None:
    """(1, 64, 112, 112): 3 211 264 bytes. Encode 0.2 + 8.02816 = 8.22816 ms (2 % the call);
    decode 0.1 + 3.211264 = 3.311264 ms."""
    encode_ms, decode_ms = _priced(_cut((1, 64, 112, 112)))
    assert encode_ms == pytest.approx(8.22816)
    assert decode_ms == pytest.approx(3.311264)


def test_each_crossing_tensor_is_one_call() -> None:
    """A residual cut sends two tensors of 1 kB and 4 kB: two calls, 5 kB.
    Encode 2 × 0.2 + 5120 / 400e3 = 0.4128 ms."""
    encode_ms, decode_ms = _priced(_cut((1, 16, 4, 4), (1, 64, 4, 4)))
    assert encode_ms == pytest.approx(0.4128)
    assert decode_ms == pytest.approx(0.2 + 5120 / 1e6)


def test_the_plan_ships_the_same_times_the_planner_priced() -> None:
    """plan.yaml's edge ms and cloud ms per option are the head plus the encoder, the decoder
    plus the tail: what the edge re-prices with is what the planner decided on."""
    cut = _cut((1, 16, 4, 4))
    budget = AccuracyBudget("rel", 0.01)
    m = unpriced(
        cut, codec="int8+zstd1", baseline=None, bytes_wire=100.0, result_bytes=40,
        metrics=TaskMetrics.exact(None), budget=budget,
    )  # fmt: skip
    profile = _profile()
    priced = reprice(m, cut, edge=profile, cloud=profile, all_nodes=NODES)
    option: PlanOption = plan_option(priced)
    # head: conv + relu + call overhead = 2.5 ms; tail: fc + overhead = 1.5 ms.
    assert option.edge_ms == pytest.approx(2.5 + 0.20256)
    assert option.cloud_ms == pytest.approx(0.101024 + 1.5)


def test_fit_recovers_call_and_byte_cost() -> None:
    """Exact points on 0.15 ms + 1 byte / 400 MB/s come back as they went in."""
    sizes = [1e3, 1.25e4, 1e5, 8e5, 3.2e6]
    seconds = [0.15e-3 + x / 400e6 for x in sizes]
    call, per_byte = fit_call_and_byte_cost(sizes, seconds)
    assert call == pytest.approx(0.15e-3)
    assert 1 / per_byte == pytest.approx(400e6)


def test_fit_never_goes_negative() -> None:
    # Noise that would put the intercept below 0: the line goes through the origin instead.
    call, per_byte = fit_call_and_byte_cost([1e3, 1e6], [0.0, 2e-3])
    assert call >= 0 and per_byte > 0
    # Times that fall with size (noise only): the mean is the call cost, bytes nearly free.
    call, per_byte = fit_call_and_byte_cost([1e3, 1e6], [2e-3, 1e-3])
    assert call == pytest.approx(1.5e-3) and per_byte > 0
    # One size only: all of the time is per byte.
    call, per_byte = fit_call_and_byte_cost([1e4], [1e-3])
    assert call == 0.0 and per_byte == pytest.approx(1e-7)


def test_codec_timing_formula() -> None:
    assert INT8.encode_ms(4e5) == pytest.approx(0.2 + 1.0)
    assert INT8.encode_ms(4e5, calls=3) == pytest.approx(0.6 + 1.0)
    assert INT8.decode_ms(0.0) == pytest.approx(0.1)
