"""``decode`` and the frame assembler against truncated, mutated and random input.

Properties: every failure is a ``CodecError`` (never another exception, never a crash), and
nothing is allocated beyond the configured bounds — the last test enforces that with an address
space limit in a child process, where a single oversized allocation is a MemoryError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import textwrap
import zlib

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from splitwire.protocol import (
    ChecksumError,
    CodecError,
    DecodeLimits,
    EncodedTensor,
    FrameAssembler,
    FrameLimits,
    LimitError,
    PayloadError,
    TensorHeader,
    decode,
    encode,
    frame_chunks,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.header import DTYPES, WIRE_SCHEMES

SMALL = DecodeLimits(max_rank=6, max_elements=1 << 16, max_tensor_bytes=1 << 18)


def _valid(spec: str) -> EncodedTensor:
    gen = torch.Generator().manual_seed(7)
    return encode(torch.relu(torch.randn(1, 4, 6, 6, generator=gen)), spec)


SAMPLES = {spec: _valid(spec) for spec in ("fp32", "fp16+zstd1", "int8+zstd1", "int4", "bf16")}
# Per-channel parameters in each of their wire forms: float16 without offsets (the ReLU samples
# above), float16 with offsets, and float32 (an offset float16 cannot hold within the bound).
_SIGNED = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(8))
SAMPLES["int8-offsets"] = encode(_SIGNED, "int8+zstd1")
SAMPLES["int4-fp32-params"] = encode(_SIGNED + 1000.0, "int4")
assert SAMPLES["int8+zstd1"].header.param_dtype == "float16"
assert not SAMPLES["int8+zstd1"].header.offsets
assert SAMPLES["int8-offsets"].header.param_dtype == "float16"
assert SAMPLES["int8-offsets"].header.offsets
assert SAMPLES["int4-fp32-params"].header.param_dtype == "float32"
# A batch of two small camera images: mutations then reach Pillow's parser and decoder.
_CAMERA = torch.linspace(0, 255, 2 * 3 * 8 * 8).to(torch.uint8).view(2, 3, 8, 8)
SAMPLES["jpeg90"] = encode(_CAMERA, "jpeg90")
SAMPLES["jpeg90s444"] = encode(_CAMERA, "jpeg90s444")
SAMPLES["frame+zstd1"] = encode(_CAMERA, "frame+zstd1")


def _decode_or_codec_error(header: TensorHeader, payload: bytes) -> None:
    try:
        out = decode(header, payload, limits=SMALL)
    except CodecError:
        return
    # Succeeding is allowed only for a self-consistent input, and gives what the header says.
    assert tuple(out.shape) == header.shape
    assert out.dtype == DTYPES[header.dtype]
    assert out.numel() * out.element_size() <= SMALL.max_tensor_bytes


headers = st.builds(
    TensorHeader,
    dtype=st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=8)),
    shape=st.lists(st.integers(-3, 2**62), max_size=10).map(tuple),
    scheme=st.one_of(st.sampled_from(WIRE_SCHEMES), st.text(max_size=6)),
    zstd_level=st.integers(-2, 30),
    raw_size=st.integers(-1, 2**40),
    payload_size=st.integers(-1, 2**40),
    checksum=st.integers(-1, 2**33),
    channel_axis=st.integers(-3, 10),
    scales=st.binary(max_size=64),
    offsets=st.binary(max_size=64),
    byte_shuffle=st.booleans(),
    part_sizes=st.lists(st.integers(-1, 2**40), max_size=4).map(tuple),
)


@given(header=headers, payload=st.binary(max_size=512))
def test_random_headers_and_payloads(header: TensorHeader, payload: bytes) -> None:
    _decode_or_codec_error(header, payload)


@given(header=headers, payload=st.binary(max_size=512))
def test_random_headers_with_matching_checksum(header: TensorHeader, payload: bytes) -> None:
    """Get past the size and checksum checks so the deeper validation is exercised too."""
    header = dataclasses.replace(header, payload_size=len(payload), checksum=zlib.crc32(payload))
    _decode_or_codec_error(header, payload)


@given(spec=st.sampled_from(sorted(SAMPLES)), cut=st.integers(0, 10_000))
def test_truncated_payload(spec: str, cut: int) -> None:
    enc = SAMPLES[spec]
    assume(cut < len(enc.payload))
    with pytest.raises(PayloadError):
        decode(enc.header, enc.payload[:cut], limits=SMALL)


@given(
    spec=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=8),
    fix_checksum=st.booleans(),
)
def test_mutated_payload(spec: str, edits: list[tuple[int, int]], fix_checksum: bool) -> None:
    enc = SAMPLES[spec]
    payload = bytearray(enc.payload)
    for pos, xor in edits:
        payload[pos % len(payload)] ^= xor
    assume(payload != enc.payload)  # two edits of one byte may cancel out
    header = enc.header
    if fix_checksum:
        header = dataclasses.replace(header, checksum=zlib.crc32(payload))
        _decode_or_codec_error(header, bytes(payload))
    else:
        with pytest.raises(ChecksumError):
            decode(header, bytes(payload), limits=SMALL)


FIELDS = {
    "dtype": st.sampled_from(["float32", "int64", "bool", "complex64", ""]),
    "shape": st.lists(st.integers(0, 2**40), max_size=9).map(tuple),
    "scheme": st.sampled_from([*WIRE_SCHEMES, "int2", ""]),
    "zstd_level": st.integers(0, 25),
    "raw_size": st.integers(0, 2**40),
    "channel_axis": st.integers(-2, 6),
    "scales": st.binary(max_size=40),
    "offsets": st.binary(max_size=40),
    "byte_shuffle": st.booleans(),
    "part_sizes": st.lists(st.integers(0, 2000), max_size=3).map(tuple),
    "param_dtype": st.sampled_from(["float32", "float16", "float64", "bfloat16", ""]),
}


_F16_INF, _F16_NAN, _F16_MINUS_ONE = b"\x00\x7c", b"\x00\x7e", b"\x00\xbc"


@pytest.mark.parametrize(
    ("spec", "changes", "field", "message"),
    [
        # float32-sized parameters announced as float16, and the reverse
        ("int8-offsets", {"param_dtype": "float32"}, "scales", "expected 16 \\(one float32"),
        ("int4-fp32-params", {"param_dtype": "float16"}, "scales", "expected 8 \\(one float16"),
        ("int8+zstd1", {"param_dtype": "float64"}, "param_dtype", "unknown param_dtype"),
        ("int8+zstd1", {"param_dtype": ""}, "param_dtype", "unknown param_dtype"),
        ("fp16+zstd1", {"param_dtype": "float16"}, "param_dtype", "carries no scales"),
        ("int8+zstd1", {"offsets": b"\x00"}, "offsets", "or none \\(all offsets 0\\)"),
        ("int8+zstd1", {"offsets": b"\x00" * 16}, "offsets", "expected 8"),
        ("int8+zstd1", {"scales": b""}, "scales", "0 bytes for 4 channels"),
        ("int8-offsets", {"scales": _F16_INF * 4}, "scales", "non-finite"),
        ("int8-offsets", {"offsets": _F16_NAN * 4}, "scales", "non-finite"),
        ("int8-offsets", {"scales": _F16_MINUS_ONE * 4}, "scales", "negative scale"),
    ],
)
def test_quantisation_parameters_are_validated(
    spec: str, changes: dict[str, object], field: str, message: str
) -> None:
    """Version 3's float16 parameters and omitted offsets: each inconsistency names its field."""
    enc = SAMPLES[spec]
    with pytest.raises(CodecError, match=message) as info:
        decode(dataclasses.replace(enc.header, **changes), enc.payload, limits=SMALL)
    assert info.value.field == field


@given(
    spec=st.sampled_from(sorted(SAMPLES)),
    changes=st.fixed_dictionaries({}, optional=FIELDS),
)
def test_mutated_header_fields(spec: str, changes: dict[str, object]) -> None:
    enc = SAMPLES[spec]
    _decode_or_codec_error(dataclasses.replace(enc.header, **changes), enc.payload)


def test_bombs_are_refused_before_decompression() -> None:
    """A zstd frame that expands 1000× is refused unless the header announced that size."""
    import zstandard

    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(1 << 24))
    header = TensorHeader(
        dtype="uint8",
        shape=(1 << 10,),
        scheme="raw",
        zstd_level=1,
        raw_size=1 << 10,
        payload_size=len(bomb),
        checksum=zlib.crc32(bomb),
    )
    with pytest.raises(PayloadError, match="declares 16777216 bytes"):
        decode(header, bomb)
    honest = dataclasses.replace(header, shape=(1 << 24,), raw_size=1 << 24)
    with pytest.raises(LimitError):
        decode(honest, bomb, limits=SMALL)


def test_error_names_field_value_and_expectation() -> None:
    enc = SAMPLES["int8+zstd1"]
    with pytest.raises(CodecError) as info:
        decode(dataclasses.replace(enc.header, raw_size=5), enc.payload)
    message = str(info.value)
    assert info.value.field == "raw_size"
    assert "raw_size 5" in message and "expected 144" in message


@given(data=st.binary(max_size=2048))
def test_random_chunk_messages(data: bytes) -> None:
    """Arbitrary bytes parsed as a chunk message, fed to an assembler."""
    chunk = pb.FrameChunk()
    try:
        chunk.ParseFromString(data)
    except Exception:
        return
    assembler = FrameAssembler(FrameLimits(max_frame_bytes=1 << 16, tensor=SMALL))
    with contextlib.suppress(CodecError):
        assembler.add(chunk)


@given(
    drop=st.integers(0, 20),
    extra=st.binary(max_size=64),
    index_shift=st.integers(-2, 2),
)
def test_mangled_chunk_streams(drop: int, extra: bytes, index_shift: int) -> None:
    tensors = [SAMPLES["fp32"], SAMPLES["int8+zstd1"]]
    chunks = frame_chunks(3, 0, tensors, max_chunk_bytes=100)
    victim = chunks[drop % len(chunks)]
    victim.payload += extra
    assume(extra or index_shift)
    assume(victim.chunk_index + index_shift >= 0)
    victim.chunk_index += index_shift
    assembler = FrameAssembler(FrameLimits(max_chunk_bytes=200, tensor=SMALL))
    with pytest.raises(CodecError) as info:
        for chunk in chunks:
            assembler.add(chunk)
        raise AssertionError("a mangled frame was accepted")
    assert info.value.seq == 3


def test_no_allocation_beyond_bounds_under_an_address_space_limit() -> None:
    """Hostile headers claiming terabytes, under RLIMIT_AS = current usage + 256 MiB.

    If any code path allocated what a header claims before checking it, the child would die
    with MemoryError (or worse) instead of printing the count of clean CodecErrors.
    """
    script = textwrap.dedent(
        """
        import random, resource, zlib, dataclasses
        import torch
        from splitwire.protocol import CodecError, decode, encode, FrameAssembler
        from splitwire.protocol import splitwire_pb2 as pb
        from splitwire.protocol.wire import header_to_proto

        base = encode(torch.randn(1, 8, 4, 4), "int8+zstd1")
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
        rng = random.Random(1)
        huge = [1 << 40, 1 << 33, (1 << 31) - 1, 1 << 28]
        errors = 0
        for i in range(3000):
            shape = tuple(rng.choice(huge + [1, 3, 8]) for _ in range(rng.randint(1, 4)))
            h = dataclasses.replace(
                base.header, shape=shape, raw_size=rng.choice(huge),
                payload_size=rng.choice(huge + [len(base.payload)]),
                scheme=rng.choice(["raw", "int8", "int4", "fp16"]), dtype="float32")
            if rng.random() < 0.5:  # consistent sizes, so only the limits stand in the way
                n = 1
                for d in shape: n *= d
                size = min(4 * n, (1 << 64) - 1)  # what a uint64 field can carry
                h = dataclasses.replace(h, scheme="raw", raw_size=size, zstd_level=0,
                                        payload_size=size, scales=b"", offsets=b"")
            try:
                decode(h, base.payload)
            except CodecError:
                errors += 1
            chunk = pb.FrameChunk(seq=i, chunk_count=rng.choice([1, 1 << 30]))
            chunk.tensors.append(header_to_proto(h))
            try:
                FrameAssembler().add(chunk)
            except CodecError:
                errors += 1
        print(errors)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) == 6000
