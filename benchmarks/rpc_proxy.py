"""A link emulator between the PyTorch RPC reference's edge and tail (``run_torch_rpc(...,
link=SPEC)`` in :mod:`splitwire.benchmarks.torch_rpc`).

TensorPipe workers do not take a peer's address from their caller. Each agent listens on an
ephemeral port and publishes its URL in the rendezvous store, the tail's under
:data:`TAIL_ADDRESS_KEY` (``rpc_prefix_0/``: ``init_rpc``'s prefix for its first call in a
process; ``addrs/``: the agent's own; then the worker name), e.g. ``uv://127.0.0.1:36539``
with only the ``uv`` transport. The edge reads it while its agent starts and opens its pipe
to the tail there: one TCP connection, whose first answer from the tail (TensorPipe's
"brochure answer") names the tail's listening address again, plain ``127.0.0.1:36539``. The
edge opens the pipe's other connections to *that* address: in torch 2.13 one for the tail's
descriptor replies, plus one per channel connection (``basic`` needs one), which carries the
tensors. So the proxy goes in at both places:

1. The caller hosts the store (:class:`TailLinkProxy`: a ``TCPStore`` master on a free port);
   the tail joins it through a plain ``tcp://`` init method, as without a link.
2. Once the tail has published its URL, the caller starts, on 127.0.0.1 and in a thread of its
   own process (which only waits meanwhile), a
   :class:`~splitwire.netem.LinkEmulator` whose upstream is the tail, and in front of
   it a relay that rewrites the tail's address in each connection's first answer into the
   emulator's (in place: both are ephemeral ports, of the same length). It publishes the
   relay's URL under ``splitwire-proxy/`` + the tail's key.
3. The edge joins through ``splitwire-proxy://HOST:PORT`` (:func:`register_rendezvous`): a
   client of the same store, wrapped in a :class:`RedirectingStore` whose ``get`` of the tail's
   key returns the relay's URL instead (waiting for it as any ``get`` waits).

Every connection of the edge's pipe thus crosses the emulator (the first one through the
relay too), in its one bottleneck per direction, and the tail's answers come back on them.
Not emulated: the store, the Gloo group ``init_rpc`` builds for its barriers, and the tail's
own pipe to the edge (``init_rpc``'s and ``shutdown``'s all-gathers). Channels that open other
connections (``mpt_uv``'s lanes, to addresses exchanged inside the channel) or none (``shm``,
``cma``) would bypass the emulator: :mod:`~splitwire.benchmarks.torch_rpc` allows only ``uv``
+ ``basic`` with a link, and checks the emulator's byte count afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch.distributed as dist

from splitwire.netem.emulator import LinkEmulator, NetemError, require_loopback
from splitwire.partitioner.link import LinkModel, LinkTrace

# The edge's rendezvous scheme: ``splitwire-proxy://HOST:PORT`` (init_rpc adds the rank and
# world size, as for ``tcp://``).
SCHEME = "splitwire-proxy"
# Where the tail's agent publishes its URL, as the store under init_rpc's prefix sees it.
TAIL_ADDRESS_KEY = "rpc_prefix_0/addrs/tail"
# Where the caller publishes the relay's URL in its place.
PROXIED_PREFIX = "splitwire-proxy/"
URL_SCHEME = "uv://"
# Emulators started until one's port has as many digits as the tail's (the rewrite keeps the
# message's length); ephemeral ports almost always agree at once.
PORT_ATTEMPTS = 20
# How far into a connection's answers the relay looks for the tail's address.
SCAN_LIMIT_BYTES = 64 * 1024
RELAY_CHUNK_BYTES = 64 * 1024

# The edge's stores, kept alive from Python: the C++ agent holds only the C++ half of a Python
# subclass, whose Python methods vanish ("Not implemented.") once Python drops its object.
_live_stores: list[dist.Store] = []


class RedirectingStore(dist.Store):
    """Everything as ``inner``, except that reading a key of ``redirect`` reads
    ``PROXIED_PREFIX + key`` instead (``get`` waits for a missing key, up to the timeout)."""

    def __init__(self, inner: dist.Store, *, redirect: frozenset[str]) -> None:
        super().__init__()
        self.inner = inner
        self.redirect = redirect

    def get(self, key: str) -> bytes:
        return self.inner.get(PROXIED_PREFIX + key if key in self.redirect else key)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        return [self.get(key) for key in keys]

    def set(self, key: str, value: bytes | str) -> None:
        self.inner.set(key, value)  # type: ignore[arg-type]  # the stub says str; bytes work

    def multi_set(self, keys: list[str], values: list[bytes]) -> None:
        for key, value in zip(keys, values, strict=True):
            self.set(key, value)

    def append(self, key: str, value: bytes) -> None:
        self.inner.append(key, value)  # type: ignore[attr-defined]

    def add(self, key: str, value: int) -> int:
        return self.inner.add(key, value)

    def compare_set(self, key: str, expected_value: bytes | str,
                    desired_value: bytes | str) -> bytes:  # fmt: skip
        return self.inner.compare_set(key, expected_value, desired_value)  # type: ignore[arg-type]

    def check(self, keys: list[str]) -> bool:
        return self.inner.check(keys)

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        if timeout is None:
            self.inner.wait(keys)
        else:
            self.inner.wait(keys, timeout)

    def delete_key(self, key: str) -> bool:
        return self.inner.delete_key(key)

    def num_keys(self) -> int:
        return self.inner.num_keys()

    def set_timeout(self, timeout: timedelta) -> None:
        self.inner.set_timeout(timeout)

    def clone(self) -> dist.Store:
        inner = self.inner.clone()  # type: ignore[attr-defined]
        clone = RedirectingStore(inner, redirect=self.redirect)
        _live_stores.append(clone)
        return clone

    def has_extended_api(self) -> bool:
        return bool(self.inner.has_extended_api())  # type: ignore[attr-defined]

    # The C++ trampoline looks these two up by their C++ names.
    getNumKeys = num_keys
    deleteKey = delete_key


def register_rendezvous() -> None:
    """Let ``init_rpc`` take ``splitwire-proxy://HOST:PORT``: a client of the TCPStore there
    (hosted by :class:`TailLinkProxy`) that reads the relay's URL for the tail's."""
    dist.register_rendezvous_handler(SCHEME, _rendezvous)


def _rendezvous(url: str, timeout: timedelta = timedelta(minutes=30),
                **_: Any) -> Iterator[tuple[dist.Store, int, int]]:  # fmt: skip
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    if parsed.hostname is None or parsed.port is None or not {"rank", "world_size"} <= set(query):
        raise ValueError(f"{url!r}: expected {SCHEME}://HOST:PORT?rank=R&world_size=N")
    rank, world_size = int(query["rank"][0]), int(query["world_size"][0])
    inner = dist.TCPStore(parsed.hostname, parsed.port, world_size, is_master=False,
                          timeout=timeout)  # fmt: skip
    store = RedirectingStore(inner, redirect=frozenset({TAIL_ADDRESS_KEY}))
    _live_stores.append(store)
    yield store, rank, world_size
    raise RuntimeError(f"{SCHEME}:// cannot rendezvous again")


class TailLinkProxy:
    """The caller's side: host the store and, once the tail has published its URL, put the
    link emulator and the rewriting relay in front of it (see the module docstring).

        with TailLinkProxy(link=parse_link("bw=20mbit,rtt=40ms")) as proxy:
            ...  # the tail on proxy.tail_init_method, the edge on proxy.edge_init_method
            while the_edge_runs:
                proxy.poll()
            stats = proxy.stats()

    Args:
        link: the emulated link (a trace's time 0 is when the emulator starts).
        seed: the emulator's jitter and loss seed.
        timeout: the store's timeout (a ``get`` of a missing key waits that long).
    """

    def __init__(self, *, link: LinkModel | LinkTrace, seed: int = 0,
                 timeout: timedelta = timedelta(minutes=5)) -> None:  # fmt: skip
        self.link = link
        self._seed = seed
        self._timeout = timeout
        self._store: dist.TCPStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._emulator: LinkEmulator | None = None
        self._relay: _RewritingRelay | None = None
        self.upstream = ""  # the tail's listening address, once published

    def __enter__(self) -> TailLinkProxy:
        self._store = dist.TCPStore("127.0.0.1", 0, None, is_master=True, timeout=self._timeout,
                                    wait_for_workers=False)  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="splitwire-rpc-link", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None and self._thread is not None
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
        self._store = None  # the store's server stops with its last reference

    @property
    def port(self) -> int:
        """The store's port."""
        assert self._store is not None, "enter the proxy first"
        return int(self._store.port)

    @property
    def tail_init_method(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def edge_init_method(self) -> str:
        return f"{SCHEME}://127.0.0.1:{self.port}"

    def poll(self) -> bool:
        """Start the emulator and the relay if the tail has published its URL and they do not
        run yet; whether they run. Returns at once otherwise.

        Raises:
            NetemError: the tail published something else than ``uv://`` and a loopback
                address, or no emulator port of the tail's port's length could be had.
        """
        if self._relay is not None:
            return True
        assert self._store is not None, "enter the proxy first"
        if not self._store.check([TAIL_ADDRESS_KEY]):
            return False
        url = self._store.get(TAIL_ADDRESS_KEY).decode()
        if not url.startswith(URL_SCHEME):
            raise NetemError(
                f"the tail published {url!r} under {TAIL_ADDRESS_KEY}: expected a {URL_SCHEME} "
                "URL (TensorPipe restricted to the uv transport)"
            )
        self.upstream = url.removeprefix(URL_SCHEME)
        require_loopback(self.upstream, what="the tail's TensorPipe address")
        relay_address = self._call(self._start(self.upstream))
        self._store.set(PROXIED_PREFIX + TAIL_ADDRESS_KEY, URL_SCHEME + relay_address)
        return True

    def stats(self) -> dict[str, Any] | None:
        """The emulator's :meth:`~splitwire.netem.LinkEmulator.stats`, plus
        ``"rewrites"`` (connections through the relay whose answer named the tail, and now
        names the emulator); None before they started."""
        emulator, relay = self._emulator, self._relay
        if emulator is None or relay is None:
            return None

        async def read() -> dict[str, Any]:
            return {**emulator.stats(), "rewrites": relay.rewrites}

        stats: dict[str, Any] = self._call(read())
        return stats

    async def _start(self, upstream: str) -> str:
        for _ in range(PORT_ATTEMPTS):
            emulator = LinkEmulator(upstream=upstream, link=self.link, seed=self._seed)
            await emulator.__aenter__()
            if len(emulator.address) == len(upstream):
                break
            await emulator.__aexit__(None, None, None)
        else:
            raise NetemError(
                f"no emulator port of the length of the tail's ({upstream}) in {PORT_ATTEMPTS} "
                "tries: the relay rewrites one address into the other in place"
            )
        self._emulator = emulator
        relay = _RewritingRelay(target=emulator.address, old=upstream, new=emulator.address)
        address = await relay.start()
        self._relay = relay
        return address

    async def _stop(self) -> None:
        if self._relay is not None:
            await self._relay.close()
        if self._emulator is not None:
            await self._emulator.__aexit__(None, None, None)

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)


class _RewritingRelay:
    """A loopback TCP relay to ``target`` that replaces ``old`` by ``new`` (as long) the first
    time it appears in the first ``SCAN_LIMIT_BYTES`` a connection receives from ``target``."""

    def __init__(self, *, target: str, old: str, new: str) -> None:
        if len(old) != len(new):
            raise NetemError(f"cannot rewrite {old!r} into {new!r} in place: lengths differ")
        self._target = require_loopback(target, what="relay target")
        self._old, self._new = old.encode(), new.encode()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.rewrites = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                return
            writers = (writer, up_writer)
            for each in writers:
                sock = each.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.gather(
                    self._copy(reader, up_writer, rewrite=False),
                    self._copy(up_reader, writer, rewrite=True),
                )
            except (ConnectionError, OSError):
                pass
            finally:
                for each in writers:
                    each.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _copy(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *,
                    rewrite: bool) -> None:  # fmt: skip
        held = b""  # the scanned bytes not yet sent: a split address's first part
        scanning, scanned = rewrite, 0
        while data := await source.read(RELAY_CHUNK_BYTES):
            if scanning:
                held += data
                scanned += len(data)
                if self._old in held:
                    data, held, scanning = held.replace(self._old, self._new, 1), b"", False
                    self.rewrites += 1
                elif scanned > SCAN_LIMIT_BYTES:
                    data, held, scanning = held, b"", False
                else:
                    keep = len(self._old) - 1
                    data, held = held[:-keep], held[-keep:]
            if data:
                sink.write(data)
                await sink.drain()
        if held:
            sink.write(held)
        if sink.can_write_eof():
            sink.write_eof()
