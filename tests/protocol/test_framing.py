"""Frames split into chunks and reassembled; every broken stream is reported for its frame."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import torch

from splitwire.protocol import (
    MAX_CHUNK_BYTES,
    AssembledFrame,
    ChecksumError,
    ChunkError,
    EncodedTensor,
    FrameAssembler,
    FrameLimits,
    HeaderError,
    LimitError,
    ResultTimings,
    TensorHeader,
    decode_frame,
    encode,
    frame_chunks,
    result_chunks,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.framing import ByteBudget


@pytest.fixture
def tensors() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [
        torch.randn(1, 16, 20, 20, generator=gen),
        torch.randint(0, 100, (1, 50), generator=gen),
        torch.randn(1, 8, 10, 10, generator=gen),
    ]


def _assemble(assembler: FrameAssembler, chunks: list) -> object:
    frame = None
    for chunk in chunks:
        assert frame is None, "frame completed before its last chunk"
        frame = assembler.add(chunk)
    return frame


@pytest.mark.parametrize("chunk_bytes", [1, 97, 1000, 4096, MAX_CHUNK_BYTES])
def test_roundtrip_across_chunk_sizes(tensors: list[torch.Tensor], chunk_bytes: int) -> None:
    encoded = [encode(t, "fp32") for t in tensors]
    chunks = frame_chunks(42, 123_456_789, encoded, max_chunk_bytes=chunk_bytes)
    total = sum(len(e.payload) for e in encoded)
    assert len(chunks) == -(-total // chunk_bytes)
    assert all(len(c.payload) <= chunk_bytes for c in chunks)
    assert len(chunks[0].tensors) == 3 and all(not c.tensors for c in chunks[1:])

    frame = _assemble(FrameAssembler(FrameLimits(max_chunk_bytes=chunk_bytes)), chunks)
    assert frame.seq == 42 and frame.capture_ts_ns == 123_456_789
    for original, decoded in zip(tensors, decode_frame(frame), strict=True):
        assert torch.equal(original, decoded)


def test_large_activation_stays_within_message_limit() -> None:
    """A 64×112×112 fp32 stem activation (3.2 MB) becomes 4 messages of ≤ 1 MiB payload."""
    enc = encode(torch.randn(1, 64, 112, 112), "fp32")
    chunks = frame_chunks(1, 0, [enc])
    assert len(chunks) == 4
    assert max(c.ByteSize() for c in chunks) <= MAX_CHUNK_BYTES + 1024
    wire = [pb.FrameChunk.FromString(c.SerializeToString()) for c in chunks]
    frame = _assemble(FrameAssembler(), wire)
    assert torch.equal(decode_frame(frame)[0], decode_frame(frame)[0])


def test_empty_frame_payload_is_one_chunk() -> None:
    chunks = frame_chunks(5, 0, [encode(torch.empty(0, 3), "int8+zstd1")])
    assert len(chunks) == 1
    frame = FrameAssembler().add(chunks[0])
    assert decode_frame(frame)[0].shape == (0, 3)


def test_results_carry_timings() -> None:
    timings = ResultTimings(queue_ns=1, decode_ns=2, compute_ns=3, encode_ns=4)
    chunks = result_chunks(9, 77, [encode(torch.ones(10), "fp16")], timings=timings)
    frame = _assemble(FrameAssembler(), chunks)
    assert (frame.first.queue_ns, frame.first.compute_ns, frame.first.encode_ns) == (1, 3, 4)
    assert frame.capture_ts_ns == 77


def test_frames_may_interleave(tensors: list[torch.Tensor]) -> None:
    a = frame_chunks(1, 0, [encode(tensors[0], "fp32")], max_chunk_bytes=5000)
    b = frame_chunks(2, 0, [encode(tensors[2], "fp32")], max_chunk_bytes=5000)
    assembler = FrameAssembler(FrameLimits(max_chunk_bytes=5000))
    done = []
    for pair in zip(a, b, strict=False):
        for chunk in pair:
            frame = assembler.add(chunk)
            if frame is not None:
                done.append(frame.seq)
    for chunk in a[len(b) :]:
        frame = assembler.add(chunk)
        if frame is not None:
            done.append(frame.seq)
    assert sorted(done) == [1, 2]
    assert assembler.pending() == []


def test_out_of_order_chunk_reports_its_frame_once(tensors: list[torch.Tensor]) -> None:
    chunks = frame_chunks(7, 0, [encode(tensors[0], "fp32")], max_chunk_bytes=1000)
    assembler = FrameAssembler(FrameLimits(max_chunk_bytes=1000))
    assembler.add(chunks[0])
    with pytest.raises(ChunkError) as info:
        assembler.add(chunks[2])
    assert info.value.seq == 7 and info.value.field == "chunk_index"
    assert "expected chunk 1" in str(info.value)
    # The rest of the broken frame is ignored, not reported again; other frames go on.
    assert all(assembler.add(c) is None for c in chunks[3:])
    other = frame_chunks(8, 0, [encode(tensors[1], "fp32")])
    assert assembler.add(other[0]).seq == 8


def test_missing_first_chunk() -> None:
    chunks = frame_chunks(3, 0, [encode(torch.randn(3000), "fp32")], max_chunk_bytes=1000)
    with pytest.raises(ChunkError, match="before chunk 0"):
        FrameAssembler(FrameLimits(max_chunk_bytes=1000)).add(chunks[1])


def test_frame_shorter_than_announced() -> None:
    chunks = frame_chunks(3, 0, [encode(torch.randn(100), "fp32")])
    chunks[0].payload = chunks[0].payload[:-4]
    with pytest.raises(ChunkError, match="headers announce 400"):
        FrameAssembler().add(chunks[0])


def test_chunk_count_too_small_for_payload() -> None:
    chunks = frame_chunks(3, 0, [encode(torch.randn(1000), "fp32")], max_chunk_bytes=1000)
    chunks[0].chunk_count = 2
    with pytest.raises(ChunkError, match="expected at least 4"):
        FrameAssembler(FrameLimits(max_chunk_bytes=1000)).add(chunks[0])


def test_oversized_chunk_is_refused() -> None:
    chunks = frame_chunks(3, 0, [encode(torch.randn(1000), "fp32")])
    chunks[0].chunk_count = 4  # a count that could carry the frame, with a chunk too large
    with pytest.raises(LimitError, match="chunk payload of 4000 bytes"):
        FrameAssembler(FrameLimits(max_chunk_bytes=1000)).add(chunks[0])


def test_bad_header_is_reported_with_its_index() -> None:
    chunks = frame_chunks(4, 0, [encode(torch.ones(4), "fp32"), encode(torch.ones(4), "int8")])
    chunks[0].tensors[1].dtype = "complex64"
    with pytest.raises(HeaderError) as info:
        FrameAssembler().add(chunks[0])
    assert info.value.field == "tensors[1].dtype" and info.value.seq == 4
    assert str(info.value).startswith("frame 4: tensors[1].dtype: unknown dtype 'complex64'")


def test_corrupt_payload_is_reported_by_decode_frame() -> None:
    chunks = frame_chunks(6, 0, [encode(torch.ones(4), "fp32"), encode(torch.ones(8), "fp32")])
    payload = bytearray(chunks[0].payload)
    payload[20] ^= 0xFF  # a byte of the second tensor
    chunks[0].payload = bytes(payload)
    frame = FrameAssembler().add(chunks[0])
    with pytest.raises(ChecksumError) as info:
        decode_frame(frame)
    assert info.value.field == "tensors[1].checksum" and info.value.seq == 6


def test_pending_frames_are_bounded_and_listed() -> None:
    limits = FrameLimits(max_chunk_bytes=100, max_pending_frames=2)
    assembler = FrameAssembler(limits)
    for seq in (1, 2):
        assembler.add(
            frame_chunks(seq, 0, [encode(torch.ones(100), "fp32")], max_chunk_bytes=100)[0]
        )
    assert assembler.pending() == [1, 2]
    third = frame_chunks(3, 0, [encode(torch.ones(100), "fp32")], max_chunk_bytes=100)
    with pytest.raises(LimitError) as info:
        assembler.add(third[0])
    assert info.value.seq == 3
    assembler.drop(1)
    assert assembler.pending() == [2]


def test_frame_byte_limit() -> None:
    chunks = frame_chunks(1, 0, [encode(torch.ones(1000), "fp32")], max_chunk_bytes=1000)
    with pytest.raises(LimitError, match="exceeds the limit of 3500"):
        FrameAssembler(FrameLimits(max_chunk_bytes=1000, max_frame_bytes=3500)).add(chunks[0])


# -- what a receiver holds -----------------------------------------------------------------


def _claim(size: int, chunk_bytes: int = MAX_CHUNK_BYTES) -> list[pb.FrameChunk]:
    """The chunks of a raw float32 frame of ``size`` bytes (zeros)."""
    header = TensorHeader(dtype="float32", scheme="raw", shape=(size // 4,), raw_size=size,
                          payload_size=size, checksum=0, zstd_level=0)  # fmt: skip
    return frame_chunks(1, 5, [EncodedTensor(header, bytes(size))], max_chunk_bytes=chunk_bytes)


def test_chunk_0_holds_only_the_bytes_that_arrived() -> None:
    first = _claim(32 << 20)[0]
    first.payload = b"\0" * 44  # a frame announcing 32 MiB, 44 bytes of it sent
    assembler = FrameAssembler(FrameLimits(max_frame_bytes=64 << 20))
    tracemalloc.start()
    try:
        assert assembler.add(first) is None
        allocated, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert allocated < 64 << 10, f"chunk 0 allocated {allocated} bytes"
    assert assembler.budget.held == 44
    assembler.drop(1)
    assert assembler.budget.held == 0


def test_a_session_budget_inside_a_server_budget() -> None:
    server = ByteBudget(6000, name="--max-buffered-bytes")
    one = FrameAssembler(budget=ByteBudget(4000, name="--max-session-bytes", parent=server))
    two = FrameAssembler(budget=ByteBudget(4000, name="--max-session-bytes", parent=server))
    frame = _claim(4000, 1000)  # four chunks of 1000 bytes
    for chunk in frame[:3]:
        assert one.add(chunk) is None
    again = [pb.FrameChunk() for _ in frame]
    for copy, chunk in zip(again, frame, strict=True):
        copy.CopyFrom(chunk)
        copy.seq = 2
    one.add(again[0])  # 4000 held: the session's bound, reached
    with pytest.raises(LimitError, match="would exceed --max-session-bytes") as info:
        one.add(again[1])
    assert info.value.field == "payload" and info.value.seq == 2
    assert one.budget.held == 3000 == server.held  # the failed frame gave its bytes back
    for chunk in frame[:3]:
        two.add(chunk)
    # The server's bound: 3000 + 3000 held; the next chunk of either is refused.
    with pytest.raises(LimitError, match="would exceed --max-buffered-bytes"):
        two.add(frame[3])
    assert server.held == 3000
    # The other completes: a complete frame's bytes are its holder's to count.
    assert isinstance(one.add(frame[3]), AssembledFrame)
    assert server.held == 0
    # A frame that could never fit is refused on chunk 0, before any of it is held.
    with pytest.raises(LimitError, match="can never fit"):
        FrameAssembler(budget=ByteBudget(100, name="--max-session-bytes")).add(frame[0])


def test_frames_started_too_long_ago_are_listed_and_failed() -> None:
    chunks = _claim(3000, 1000)
    assembler = FrameAssembler()
    assembler.add(chunks[0])
    before = time.monotonic()
    assert assembler.started_before(before - 60) == []
    assert assembler.started_before(before + 1) == [(1, 5)]
    assembler.fail(1)
    assert assembler.pending() == [] and assembler.budget.held == 0
    assert assembler.add(chunks[1]) is None  # the rest of a failed frame is ignored
    assert assembler.pending() == []


def test_a_complete_frame_keeps_one_copy_of_its_payload(tensors: list[torch.Tensor]) -> None:
    chunks = frame_chunks(3, 9, [encode(t, "fp32") for t in tensors], max_chunk_bytes=1000)
    frame = _assemble(FrameAssembler(), chunks)
    assert isinstance(frame, AssembledFrame)
    # Chunk 0 as the frame keeps it: its fields, not its payload (held once, in payloads).
    assert frame.first.payload == b"" and len(frame.first.tensors) == 3
    assert frame.first.capture_ts_ns == 9
    for tensor, decoded in zip(tensors, decode_frame(frame), strict=True):
        assert torch.equal(tensor, decoded)
