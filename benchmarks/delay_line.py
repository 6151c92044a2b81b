"""A TCP delay line on loopback: every byte crossing it arrives ``delay_ms`` later.

This machine's kernel has no ``netem`` qdisc, so latency is emulated in user space: a proxy
that accepts on 127.0.0.1, connects to the real server, and forwards each chunk it reads after
holding it for the one-way delay (chunks keep their order; the delay does not throttle
throughput). gRPC runs over it unchanged::

    async with DelayLine("127.0.0.1:50051", delay_ms=50) as line:
        ...  # connect the edge agent to line.address: a 100 ms round trip is added

Bandwidth limits, jitter and loss belong to the end-to-end benchmark's link emulator; this is
the smallest piece that gives a real delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

__all__ = ["DelayLine"]

_CHUNK = 1 << 16


class DelayLine:
    """Forward TCP connections from a loopback port to ``target`` with a one-way delay.

    Args:
        target: ``HOST:PORT`` of the real server.
        delay_ms: one-way delay added in each direction (the round trip gains twice this).
    """

    def __init__(self, target: str, *, delay_ms: float) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms {delay_ms}: expected >= 0")
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.delay_s = delay_ms / 1000.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""

    async def __aenter__(self) -> DelayLine:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        # Reading and writing are decoupled by a queue so that a chunk read now leaves at
        # read time + delay, whatever is still waiting ahead of it.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sink.write(data)
                await sink.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while data := await source.read(_CHUNK):
                queue.put_nowait((time.monotonic() + self.delay_s, data))
            queue.put_nowait((0.0, b""))
            await delivery
        except ConnectionError:
            pass  # either end went away: the other end sees the close below
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await delivery
            sink.close()
