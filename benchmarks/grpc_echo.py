"""The floor under any gRPC service here: a bare ``grpc.aio`` echo of the same messages.

The tail benchmark starts it as a child process (like the real server) and sends it the same
frame chunks one at a time; each frame is answered with one small message, as the tail answers
with its result, after spending ``--compute-ms`` in a worker thread on torch work (one thread,
like the tail). The compute matters: after ~10 ms of it the event loop and gRPC's poller wake
up cold, which costs ~0.5 ms more than an immediate echo on this kind of machine. Round trip
minus that compute is what gRPC, loopback and waking up cost, which no service built on grpcio
can avoid; the tail's own cost is what it adds on top.

    python -m splitwire.benchmarks.grpc_echo 127.0.0.1:50222 --compute-ms 9.5
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Sequence
from typing import Any

import torch
from grpc import aio

from splitwire.protocol import CLIENT_OPTIONS, SERVER_OPTIONS
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc

# What the echo answers a frame with: about the size of a classifier's encoded result.
REPLY_BYTES = 64


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
            chunk = message.chunk
            if chunk.chunk_index + 1 < chunk.chunk_count:
                continue
            start = time.perf_counter_ns()
            if self._compute_ms > 0:
                await loop.run_in_executor(None, _work, self._compute_ms, self._matrix)
            reply = pb.ResultChunk(seq=chunk.seq, chunk_count=1, payload=bytes(REPLY_BYTES))
            reply.compute_ns = time.perf_counter_ns() - start
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


async def round_trips_ms(
    address: str, frames: Sequence[Sequence[pb.FrameChunk]], *, count: int
) -> list[float]:
    """Send ``count`` frames one at a time (cycling through ``frames``); for each, the round
    trip minus the echo's compute, in ms.

    Raises:
        grpc.aio.AioRpcError: the echo is not there.
    """
    async with aio.insecure_channel(address, options=CLIENT_OPTIONS) as channel:
        call = pb_grpc.SplitSessionStub(channel).Session()
        out = []
        for i in range(count):
            chunks = frames[i % len(frames)]
            start = time.perf_counter()
            for chunk in chunks:
                await call.write(pb.EdgeMessage(chunk=chunk))
            answer = await call.read()
            elapsed = time.perf_counter() - start
            out.append(elapsed * 1000 - answer.result.compute_ns / 1e6)
        await call.done_writing()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT to listen on (loopback)")
    parser.add_argument("--compute-ms", type=float, default=0.0, help="torch work per frame")
    args = parser.parse_args()
    asyncio.run(serve(args.address, compute_ms=args.compute_ms))


if __name__ == "__main__":
    main()
