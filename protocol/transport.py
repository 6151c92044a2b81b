"""How both ends of a session configure gRPC: the protocol version, message-size limits,
keepalive and the authentication header.

One constant per side, so the limits a server enforces and the ones a client expects are
written once. gRPC's own compression stays off: the codec compresses each tensor.
"""

from __future__ import annotations

from splitwire.protocol.codec_spec import CodecSpec
from splitwire.protocol.framing import MAX_CHUNK_BYTES

# Version 2: per-frame cut/codec and queue budgets, SessionEnd, jpeg part sizes, batch size.
# Version 3: int8/int4 scales and offsets as float16 (param_dtype), all-zero offsets left out.
PROTOCOL_VERSION = 3

# A chunk carries at most MAX_CHUNK_BYTES of payload; chunk 0 adds up to 64 tensor headers
# (with per-channel scales: at most 2 × 4 bytes × channels each). 4 MiB leaves room for 2048-channel
# headers and is gRPC's own default, so a stray 100 MB message is refused before parsing.
MAX_MESSAGE_BYTES = max(4 << 20, 2 * MAX_CHUNK_BYTES)

# The tail's outputs travel back exactly, as they are: logits do not compress, and each call of
# the codec costs the server time per frame.
RESULT_CODEC = CodecSpec(scheme="fp32")

# Call metadata that carries the bearer token ("authorization: Bearer <token>").
AUTH_METADATA_KEY = "authorization"
AUTH_SCHEME = "Bearer"

# Keepalive: pings every 20 s find a dead peer (a vanished edge, a cut cable) within ~30 s on a
# stream that may be idle between frames; the server allows clients to ping that often.
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
)

CLIENT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # The edge opens a new channel per session attempt and backs off itself (capped). With
    # grpc's process-wide subchannel pool a new channel would inherit the old one's connect
    # backoff (1 s, x1.6 per refusal, up to 120 s) and stay away from a restarted tail for
    # seconds after it is back.
    ("grpc.use_local_subchannel_pool", 1),
)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents ``token``."""
    return ((AUTH_METADATA_KEY, f"{AUTH_SCHEME} {token}"),)
