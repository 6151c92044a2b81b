"""Sessions against a real server: accept and reject, every plan kind, per-frame cut switches,
several sessions at once, and results equal to running the tail locally."""

from __future__ import annotations

import asyncio

import pytest
import torch

from splitwire.partitioner.runtime import RunnablePlan
from splitwire.protocol import PROTOCOL_VERSION, decode, encode
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import SessionFrameError, SessionRejected

from .conftest import (
    encoded,
    exchange,
    head_outputs,
    inputs,
    result,
    tail_outputs,
)


def decoded(tensors: list[torch.Tensor], codec: str) -> list[torch.Tensor]:
    """What the cloud decodes from ``tensors`` sent with ``codec``."""
    out = []
    for t in tensors:
        e = encode(t, codec)
        out.append(decode(e.header, e.payload))
    return out


async def test_split_results_equal_the_local_tail(
    start_server, connect, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    server = await start_server(max_batch=1)
    cut = split_cuts[0]
    session = await connect(server, cut=cut, codec="int8+zstd1")
    assert session.accept is not None
    assert session.accept.protocol_version == PROTOCOL_VERSION
    assert set(session.accept.cut_ids) == set(plan.plan.cuts)
    frames = [list(head_outputs(plan, cut, inputs(seed))) for seed in range(3)]
    answers = await exchange(session, [encoded(f, "int8+zstd1") for f in frames])
    for i, frame in enumerate(frames):
        got = result(answers[i + 1])
        expected = tail_outputs(plan, cut, decoded(frame, "int8+zstd1"))
        assert len(got.outputs) == len(expected)
        for a, b in zip(got.outputs, expected, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert got.timings.compute_ns > 0 and got.timings.decode_ns > 0
        assert got.batch_size == 1


async def test_all_in_cloud_raw_and_jpeg(start_server, connect, plan: RunnablePlan) -> None:
    server = await start_server()
    x = inputs(7)
    raw = await connect(server, cut="c0000", codec="fp32")
    got = result((await exchange(raw, [encoded([x], "fp32")]))[1])
    torch.testing.assert_close(got.outputs[0], tail_outputs(plan, "c0000", [x])[0])

    # A camera frame: uint8 pixels, JPEG on the wire, the plan's preprocessing in the cloud.
    pixels = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 255).to(
        torch.uint8
    )
    jpeg = await connect(server, cut="c0000", codec="jpeg90")
    got = result((await exchange(jpeg, [encoded([pixels], "jpeg90")]))[1])
    (received,) = decoded([pixels], "jpeg90")
    expected = tail_outputs(plan, "c0000", [plan.preprocess(received)])[0]
    torch.testing.assert_close(got.outputs[0], expected)


@pytest.mark.parametrize("codec", ["frame", "frame+zstd1", "jpeg75s444"])
async def test_camera_frame_options_equal_the_whole_model(
    start_server, connect, plan: RunnablePlan, codec: str
) -> None:
    """The plan ships the camera baselines as options; the cloud decodes the uint8 frame,
    applies the plan's preprocessing and runs the whole model: for the raw frame that is
    exactly the whole model on the preprocessed frame, for 4:4:4 JPEG on the decoded one."""
    assert plan.option("c0000", codec).baseline in ("all-in-cloud-raw", "all-in-cloud-jpeg")
    server = await start_server(max_batch=1)
    session = await connect(server, cut="c0000", codec=codec)
    gen = torch.Generator().manual_seed(12)
    frames = [torch.randint(0, 256, (1, 3, 64, 64), generator=gen, dtype=torch.uint8)
              for _ in range(3)]  # fmt: skip
    answers = await exchange(session, [encoded([f], codec) for f in frames])
    last = max(plan.plan.cuts)  # all on the edge: the whole model, the edge's reference
    for i, pixels in enumerate(frames):
        got = result(answers[i + 1]).outputs[0]
        (received,) = decoded([pixels], codec)
        if codec.startswith("frame"):
            assert torch.equal(received, pixels)
        whole = head_outputs(plan, last, plan.preprocess(received))[0]
        torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, tail_outputs(plan, "c0000", [plan.preprocess(received)])[0],
                                   rtol=0, atol=0)  # fmt: skip
    # A float input under a camera codec is refused for that frame, saying what was expected.
    bad = await exchange(session, [encoded([inputs(2)], "fp32")], first_seq=9)
    assert isinstance(bad[9], SessionFrameError) and bad[9].code_name == "INVALID_ARGUMENT"
    assert "expected dtype uint8, got float32" in bad[9].message
    small = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)  # a frame of another camera
    wrong = await exchange(session, [encoded([small], codec)], first_seq=10)
    assert isinstance(wrong[10], SessionFrameError) and wrong[10].code_name == "INVALID_ARGUMENT"
    assert "expected shape (N, 3, 64, 64) uint8, got (1, 3, 32, 32) uint8" in wrong[10].message


async def test_two_sessions_on_different_cuts_at_once(
    start_server, connect, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    sessions = [await connect(server, cut=cut) for cut in split_cuts]
    x = inputs(11)
    frames = [encoded(head_outputs(plan, cut, x), "fp32") for cut in split_cuts]
    answers = await asyncio.gather(
        *(exchange(s, [f] * 3, codec="fp32") for s, f in zip(sessions, frames, strict=True))
    )
    reference = tail_outputs(plan, "c0000", [x])[0]
    for per_session in answers:
        for event in per_session.values():
            torch.testing.assert_close(result(event).outputs[0], reference, rtol=1e-4, atol=1e-4)


async def test_a_frame_may_switch_cut_and_codec(
    start_server, connect, plan: RunnablePlan, split_cuts: tuple[str, str]
) -> None:
    server = await start_server()
    first, second = split_cuts
    session = await connect(server, cut=first, codec="int8+zstd1")
    x = inputs(5)
    a = await exchange(session, [encoded(head_outputs(plan, first, x), "int8+zstd1")])
    b = await exchange(
        session,
        [encoded(head_outputs(plan, second, x), "fp16+zstd1")],
        first_seq=2,
        cut_id=second,
        codec="fp16+zstd1",
    )
    assert result(a[1]).outputs[0].shape == result(b[2]).outputs[0].shape
    # A cut the server does not have is refused for that frame only.
    c = await exchange(session, [encoded(head_outputs(plan, first, x), "fp32")], first_seq=3,
                       cut_id="c9999")  # fmt: skip
    assert isinstance(c[3], SessionFrameError) and c[3].code_name == "PLAN_MISMATCH"
    d = await exchange(session, [encoded(head_outputs(plan, first, x), "fp32")], first_seq=4)
    result(d[4])


@pytest.mark.parametrize(
    ("hello", "code", "words"),
    [
        ({"model_hash": "0" * 64}, "PLAN_MISMATCH", "edge runs model '000000000000', cut 'c0000'"),
        ({"cut_id": "c0042"}, "PLAN_MISMATCH", "with cuts c0000, "),
        ({"codec": "int9"}, "INVALID_ARGUMENT", "int9"),
        ({"codec": "none"}, "PLAN_MISMATCH", "sends nothing"),
        ({"protocol_version": 2}, "UNSUPPORTED_VERSION", "version 2; this server speaks 3"),
    ],
)
async def test_rejected_hellos_say_what_differs(
    start_server, connect, hello: dict[str, object], code: str, words: str
) -> None:
    server = await start_server()
    with pytest.raises(SessionRejected) as caught:
        await connect(server, **hello)
    assert pb.ErrorCode.Name(caught.value.code) == code
    assert words in caught.value.reason
    # The server goes on serving.
    session = await connect(server, codec="fp32")
    result((await exchange(session, [encoded([inputs(1)], "fp32")]))[1])


@pytest.mark.parametrize("codec", ["jpeg90", "jpeg50s444", "frame"])
async def test_camera_codecs_need_the_input_cut(start_server, connect, split_cuts, codec) -> None:
    server = await start_server()
    with pytest.raises(SessionRejected) as caught:
        await connect(server, cut=split_cuts[0], codec=codec)
    assert "needs the cut that sends the input" in caught.value.reason


async def test_max_sessions_is_resource_exhausted(start_server, connect) -> None:
    server = await start_server(max_sessions=2)
    await connect(server)
    await connect(server)
    with pytest.raises(SessionRejected, match="2 sessions open") as caught:
        await connect(server)
    assert pb.ErrorCode.Name(caught.value.code) == "RESOURCE_EXHAUSTED"
