from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    INVALID_ARGUMENT: _ClassVar[ErrorCode]
    PLAN_MISMATCH: _ClassVar[ErrorCode]
    UNAUTHENTICATED: _ClassVar[ErrorCode]
    RESOURCE_EXHAUSTED: _ClassVar[ErrorCode]
    STALE: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    UNSUPPORTED_VERSION: _ClassVar[ErrorCode]
    PROTOCOL_VIOLATION: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
INVALID_ARGUMENT: ErrorCode
PLAN_MISMATCH: ErrorCode
UNAUTHENTICATED: ErrorCode
RESOURCE_EXHAUSTED: ErrorCode
STALE: ErrorCode
INTERNAL: ErrorCode
UNSUPPORTED_VERSION: ErrorCode
PROTOCOL_VIOLATION: ErrorCode
UNAVAILABLE: ErrorCode

class TensorHeader(_message.Message):
    __slots__ = ("dtype", "shape", "scheme", "zstd_level", "channel_axis", "scales", "offsets", "raw_size", "payload_size", "checksum", "name", "byte_shuffle", "part_sizes", "param_dtype")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    ZSTD_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_AXIS_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    RAW_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BYTE_SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    PART_SIZES_FIELD_NUMBER: _ClassVar[int]
    PARAM_DTYPE_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    scheme: str
    zstd_level: int
    channel_axis: int
    scales: bytes
    offsets: bytes
    raw_size: int
    payload_size: int
    checksum: int
    name: str
    byte_shuffle: bool
    part_sizes: _containers.RepeatedScalarFieldContainer[int]
    param_dtype: str
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., scheme: _Optional[str] = ..., zstd_level: _Optional[int] = ..., channel_axis: _Optional[int] = ..., scales: _Optional[bytes] = ..., offsets: _Optional[bytes] = ..., raw_size: _Optional[int] = ..., payload_size: _Optional[int] = ..., checksum: _Optional[int] = ..., name: _Optional[str] = ..., byte_shuffle: _Optional[bool] = ..., part_sizes: _Optional[_Iterable[int]] = ..., param_dtype: _Optional[str] = ...) -> None: ...

class EdgeMessage(_message.Message):
    __slots__ = ("hello", "chunk")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    chunk: FrameChunk
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., chunk: _Optional[_Union[FrameChunk, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "edge_id", "model_hash", "cut_id", "codec", "max_in_flight")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    edge_id: str
    model_hash: str
    cut_id: str
    codec: str
    max_in_flight: int
    def __init__(self, protocol_version: _Optional[int] = ..., edge_id: _Optional[str] = ..., model_hash: _Optional[str] = ..., cut_id: _Optional[str] = ..., codec: _Optional[str] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class FrameChunk(_message.Message):
    __slots__ = ("seq", "capture_ts_ns", "chunk_index", "chunk_count", "tensors", "payload", "cut_id", "codec", "queue_budget_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TS_NS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CUT_ID_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    capture_ts_ns: int
    chunk_index: int
    chunk_count: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorHeader]
    payload: bytes
    cut_id: str
    codec: str
    queue_budget_ms: int
    def __init__(self, seq: _Optional[int] = ..., capture_ts_ns: _Optional[int] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorHeader, _Mapping]]] = ..., payload: _Optional[bytes] = ..., cut_id: _Optional[str] = ..., codec: _Optional[str] = ..., queue_budget_ms: _Optional[int] = ...) -> None: ...

class CloudMessage(_message.Message):
    __slots__ = ("accept", "reject", "result", "error", "end")
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    accept: Accept
    reject: Reject
    result: ResultChunk
    error: FrameError
    end: SessionEnd
    def __init__(self, accept: _Optional[_Union[Accept, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., result: _Optional[_Union[ResultChunk, _Mapping]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., end: _Optional[_Union[SessionEnd, _Mapping]] = ...) -> None: ...

class Accept(_message.Message):
    __slots__ = ("protocol_version", "session_id", "server_id", "max_in_flight", "max_chunk_bytes", "cut_ids", "max_frame_bytes")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    CUT_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    server_id: str
    max_in_flight: int
    max_chunk_bytes: int
    cut_ids: _containers.RepeatedScalarFieldContainer[str]
    max_frame_bytes: int
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., server_id: _Optional[str] = ..., max_in_flight: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., cut_ids: _Optional[_Iterable[str]] = ..., max_frame_bytes: _Optional[int] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    reason: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("seq", "capture_ts_ns", "chunk_index", "chunk_count", "tensors", "payload", "queue_ns", "decode_ns", "compute_ns", "encode_ns", "batch_size")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TS_NS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NS_FIELD_NUMBER: _ClassVar[int]
    DECODE_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_NS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_NS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    capture_ts_ns: int
    chunk_index: int
    chunk_count: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorHeader]
    payload: bytes
    queue_ns: int
    decode_ns: int
    compute_ns: int
    encode_ns: int
    batch_size: int
    def __init__(self, seq: _Optional[int] = ..., capture_ts_ns: _Optional[int] = ..., chunk_index: _Optional[int] = ..., chunk_count: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorHeader, _Mapping]]] = ..., payload: _Optional[bytes] = ..., queue_ns: _Optional[int] = ..., decode_ns: _Optional[int] = ..., compute_ns: _Optional[int] = ..., encode_ns: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("seq", "capture_ts_ns", "code", "message", "field")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TS_NS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    seq: int
    capture_ts_ns: int
    code: ErrorCode
    message: str
    field: str
    def __init__(self, seq: _Optional[int] = ..., capture_ts_ns: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class SessionEnd(_message.Message):
    __slots__ = ("code", "reason", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    reason: str
    retry_after_ms: int
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., reason: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...
