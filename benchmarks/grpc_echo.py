"""The floor under any gRPC service here: a bare ``grpc.aio`` server that speaks the session
protocol and does nothing else.

It answers a Hello with an Accept and every frame with one fixed, pre-encoded result (ten
float32 logits, as a classifier's tail returns), after spending ``--compute-ms`` in a worker
thread on torch work (one thread, like the tail). The tail benchmark starts it as a child
process, like the real server, and drives it with the very same client code and frames, so the
difference between the two is what the tail service itself costs: decoding and checking,
batching, encoding, its tasks and locks.

The compute matters: after ~10 ms of it the event loop and gRPC's poller wake up cold, which
costs more than an immediate echo on this kind of machine.

    python -m splitwire.benchmarks.grpc_echo 127.0.0.1:50222 --compute-ms 9.5
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import torch
from grpc import aio

from splitwire.protocol import (
    MAX_CHUNK_BYTES,
    PROTOCOL_VERSION,
    SERVER_OPTIONS,
    ResultTimings,
    encode,
    result_chunks,
)
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc
from splitwire.protocol.transport import RESULT_CODEC

# What the echo answers every frame with.
_RESULT = encode(torch.zeros(1, 10), RESULT_CODEC, name="output0")


def _work(ms: float, matrix: torch.Tensor) -> int:
    """Busy torch work for ``ms`` (in the worker thread); returns the ns spent."""
    start = time.perf_counter_ns()
    while time.perf_counter_ns() - start < ms * 1e6:
        matrix @ matrix
    return time.perf_counter_ns() - start


class _Echo(pb_grpc.SplitSessionServicer):
    def __init__(self, compute_ms: float) -> None:
        self._compute_ms = compute_ms
        self._matrix = torch.randn(256, 256)

    async def Session(self, request_iterator: Any, context: aio.ServicerContext) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await context.read()
            if message is aio.EOF:
                return
            if message.WhichOneof("kind") == "hello":
                hello = message.hello
                accept = pb.Accept(
                    protocol_version=PROTOCOL_VERSION,
                    max_in_flight=hello.max_in_flight or 1,
                    max_chunk_bytes=MAX_CHUNK_BYTES,
                    cut_ids=[hello.cut_id],
                )
                await context.write(pb.CloudMessage(accept=accept))
                continue
            chunk = message.chunk
            if chunk.chunk_index + 1 < chunk.chunk_count:
                continue
            start = time.perf_counter_ns()
            if self._compute_ms > 0:
                await loop.run_in_executor(None, _work, self._compute_ms, self._matrix)
            timings = ResultTimings(compute_ns=time.perf_counter_ns() - start)
            (reply,) = result_chunks(chunk.seq, chunk.capture_ts_ns, [_RESULT], timings=timings)
            await context.write(pb.CloudMessage(result=reply))


async def serve(address: str, *, compute_ms: float = 0.0) -> None:
    """Echo on ``address`` until SIGTERM or SIGINT."""
    torch.set_num_threads(1)
    server = aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_SplitSessionServicer_to_server(_Echo(compute_ms), server)
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("serving", flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT to listen on (loopback)")
    parser.add_argument("--compute-ms", type=float, default=0.0, help="torch work per frame")
    args = parser.parse_args()
    asyncio.run(serve(args.address, compute_ms=args.compute_ms))


if __name__ == "__main__":
    main()
