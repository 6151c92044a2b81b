"""The tail server's lifecycle: build it from a :class:`CloudConfig`, start, drain, stop.

    async with create_server(config) as server:    # listening, health SERVING
        print(server.address)
        await server.wait_for_shutdown_signal()    # SIGTERM / SIGINT
    # leaving: health NOT_SERVING, new sessions rejected, frames in flight answered within
    # --grace-s, every session ended with SessionEnd UNAVAILABLE, then the port closes

Registered next to ``SplitSession``: ``grpc.health.v1.Health`` (overall ``""`` and
``splitwire.v1.SplitSession``) and server reflection. Prometheus metrics are served over HTTP
on ``--metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import torch
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from splitwire.cloud.auth import TokenInterceptor, load_tokens
from splitwire.cloud.batcher import TailBatcher
from splitwire.cloud.config import CloudConfig, split_address
from splitwire.cloud.errors import ConfigError
from splitwire.cloud.metrics import CloudMetrics
from splitwire.cloud.registry import TailRegistry
from splitwire.cloud.service import SplitSessionServicer, TailService
from splitwire.protocol import SERVER_OPTIONS
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol import splitwire_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SESSION_SERVICE = pb.DESCRIPTOR.services_by_name["SplitSession"].full_name
# After the grace period, how long gRPC gets to close the streams still open.
_CLOSE_S = 1.0


class CloudServer:
    """A running tail service (see the module docstring). Create with :func:`create_server`."""

    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.metrics = CloudMetrics()
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tail")
        self._codec = ThreadPoolExecutor(max_workers=2, thread_name_prefix="codec")
        self._batcher = TailBatcher(
            executor=self._compute,
            max_batch=config.max_batch,
            # One sample per frame (the plan's batch), or the largest frame allowed, alone.
            max_samples=max(config.max_batch, config.max_frame_batch or 1),
            max_wait_ms=config.max_wait_ms,
            max_queued_frames=config.max_queued_frames,
            metrics=self.metrics,
        )
        self._server: aio.Server | None = None
        self._health = health.aio.HealthServicer()
        # prometheus_client's (WSGIServer, its thread).
        self._metrics_http: tuple[Any, threading.Thread] | None = None
        self._service: TailService | None = None
        self._stopped = False
        self.port = 0

    @property
    def address(self) -> str:
        """``HOST:PORT`` the server listens on (the real port when 0 was asked)."""
        host, _ = split_address(self.config.listen, flag="--listen")
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        """The port the Prometheus endpoint listens on (None without ``--metrics``)."""
        if self._metrics_http is None:
            return None
        http_server, _ = self._metrics_http
        port: int = http_server.server_port
        return port

    @property
    def service(self) -> TailService:
        """The state its sessions share (for tests and the benchmark's introspection)."""
        assert self._service is not None, "server not started"
        return self._service

    async def start(self) -> None:
        """Load every tail, bind the port, start serving.

        Raises:
            ConfigError: a plan, the token file or a certificate is unusable, or the address
                cannot be bound.
        """
        config = self.config
        torch.set_num_threads(config.threads)
        loop = asyncio.get_running_loop()
        registry = await loop.run_in_executor(
            self._compute, lambda: TailRegistry(config.plans, public_key=config.plan_public_key)
        )
        # Everything loaded so far (torch, the tails) lives as long as the process: keep it out
        # of the collector's generations, so a collection costs the frames' garbage only.
        gc.freeze()
        interceptors = []
        if config.token_file is not None:
            if config.tls is None:
                logger.warning(
                    "--token-file without --tls-cert: bearer tokens travel in clear text, and "
                    "anyone on the path can read and replay them; give --tls-cert and --tls-key"
                )
            tokens = load_tokens(config.token_file)
            interceptors.append(
                TokenInterceptor(tokens, on_refused=self.metrics.unauthenticated.inc)
            )
        credentials = _credentials(config)
        await self._batcher.__aenter__()
        self._service = TailService(
            config=config,
            registry=registry,
            batcher=self._batcher,
            codec_pool=self._codec,
            metrics=self.metrics,
        )
        server = aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        pb_grpc.add_SplitSessionServicer_to_server(SplitSessionServicer(self._service), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SESSION_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )  # fmt: skip
        try:
            if credentials is None:
                self.port = server.add_insecure_port(config.listen)
            else:
                self.port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {config.listen}: {exc}") from exc
        if not self.port:
            raise ConfigError(f"cannot listen on {config.listen}: the address is in use or invalid")
        await server.start()
        self._server = server
        for name in ("", SESSION_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if config.metrics is not None:
            host, port = split_address(config.metrics, flag="--metrics")
            try:
                self._metrics_http = start_http_server(port, host, registry=self.metrics.registry)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {config.metrics}: {exc}") from exc
        logger.info(
            "listening on %s (%s), %d plans, max batch %d, %d torch threads",
            self.address,
            "TLS" if credentials else "plaintext",
            len(registry.plans),
            config.max_batch,
            config.threads,
        )

    async def stop(self) -> None:
        """Drain and stop: health ``NOT_SERVING``, new sessions rejected, frames in flight
        answered within ``grace_s``, sessions ended with ``SessionEnd UNAVAILABLE``."""
        if self._stopped:
            return
        self._stopped = True
        service, server = self._service, self._server
        if service is not None and server is not None:
            await self._health.enter_graceful_shutdown()
            service.drained.set()
            open_sessions = len(service.sessions)
            logger.info("shutting down: %d sessions to finish, grace %.1f s",
                        open_sessions, self.config.grace_s)  # fmt: skip
            deadline = time.monotonic() + self.config.grace_s
            while service.sessions and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if service.sessions:
                logger.warning("%d sessions still open after the grace period; closing them",
                               len(service.sessions))  # fmt: skip
            await server.stop(_CLOSE_S)
        await self._batcher.__aexit__(None, None, None)
        self._compute.shutdown(wait=True, cancel_futures=True)
        self._codec.shutdown(wait=True, cancel_futures=True)
        if self._metrics_http is not None:
            http_server, thread = self._metrics_http
            http_server.shutdown()
            thread.join(timeout=5)
        logger.info("stopped")

    async def wait_for_shutdown_signal(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the signal's number."""
        loop = asyncio.get_running_loop()
        received: asyncio.Future[int] = loop.create_future()

        def on_signal(number: int) -> None:
            if not received.done():
                received.set_result(number)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, int(sig))
        try:
            number = await received
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        logger.info("received %s", signal.Signals(number).name)
        return number

    async def __aenter__(self) -> CloudServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def create_server(config: CloudConfig) -> CloudServer:
    """A server for ``config``; ``async with`` it (or call ``start``/``stop``)."""
    return CloudServer(config)


async def serve(config: CloudConfig) -> int:
    """Run the service until SIGTERM/SIGINT, then drain; returns the exit code (0)."""
    async with create_server(config) as server:
        await server.wait_for_shutdown_signal()
    return 0


def _credentials(config: CloudConfig) -> grpc.ServerCredentials | None:
    tls = config.tls
    if tls is None:
        return None
    key, cert = _read(tls.key, "--tls-key"), _read(tls.cert, "--tls-cert")
    client_ca = _read(tls.client_ca, "--client-ca") if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{flag} {path}: not a PEM file (expected '-----BEGIN ...')")
    return data
