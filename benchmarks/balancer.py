"""nginx as a gRPC load balancer in front of tail replicas, run from the shipped
``deploy/nginx/grpc-balancer.conf`` with loopback addresses put in: what the scale-out
scenarios and tests start, so that they exercise the file an operator deploys."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitwire.benchmarks.processes import free_port, terminate
from splitwire.errors import SplitwireError

# The repository's deploy/ folder (the project is installed editable, in place).
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
BALANCER_CONFIG = DEPLOY_DIR / "nginx" / "grpc-balancer.conf"
START_TIMEOUT_S = 10.0

_LISTEN = re.compile(r"^(\s*listen\s+)\S+(\s+http2;)", re.MULTILINE)
_UPSTREAM = re.compile(r"(upstream\s+splitwire_tails\s*\{\n)(.*?)(\n\s*\})", re.DOTALL)
_SERVER = re.compile(r"^\s*server\s+\S+(.*);$", re.MULTILINE)


def render_balancer_config(template: str, *, listen: str, backends: Sequence[str]) -> str:
    """The shipped config with its ``listen`` address and upstream ``server`` lines replaced.

    Every backend keeps the options of the template's first ``server`` line.

    Raises:
        SplitwireError: the template lacks the ``listen ... http2;`` line or the
            ``upstream splitwire_tails`` block with a ``server`` line.
    """
    if not backends:
        raise SplitwireError("a load balancer needs at least one backend")
    if len(_LISTEN.findall(template)) != 1:
        raise SplitwireError("expected exactly one 'listen ADDRESS http2;' line in the config")
    upstream = _UPSTREAM.search(template)
    server = _SERVER.search(upstream.group(2)) if upstream else None
    if upstream is None or server is None:
        raise SplitwireError(
            "expected an 'upstream splitwire_tails { server ADDRESS ...; }' block in the config"
        )
    options = server.group(1)
    lines = "\n".join(f"        server {address}{options};" for address in backends)

    def servers(body: str) -> str:
        # The first server line becomes the backends' lines; the others go; comments stay.
        first = _SERVER.search(body)
        assert first is not None
        rest = _SERVER.sub("", body[first.end() :])
        kept = "\n".join(line for line in rest.split("\n") if line.strip())
        return body[: first.start()] + lines + ("\n" + kept if kept else "")

    text = _LISTEN.sub(lambda m: f"{m.group(1)}{listen}{m.group(2)}", template)
    return _UPSTREAM.sub(lambda m: f"{m.group(1)}{servers(m.group(2))}{m.group(3)}", text)


class GrpcBalancer:
    """nginx (``grpc_pass``) on a loopback port, balancing streams over ``backends``.

    Args:
        backends: tail addresses (HOST:PORT).
        config: the nginx config to run (default: the shipped one).
        port: where it listens on 127.0.0.1 (default: a free port).

    Raises:
        SplitwireError: nginx is not installed, rejects the config or does not start.
    """

    def __init__(
        self, backends: Sequence[str], *, config: Path = BALANCER_CONFIG, port: int | None = None
    ) -> None:
        binary = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
        )
        if binary is None:
            raise SplitwireError(
                "nginx is not installed: `make test` installs it (Debian package nginx-light)"
            )
        self.address = f"127.0.0.1:{port or free_port()}"
        self._prefix = Path(tempfile.mkdtemp(prefix="splitwire-lb-"))
        (self._prefix / "tmp").mkdir()
        self.config_path = self._prefix / "nginx.conf"
        self.config_path.write_text(
            render_balancer_config(config.read_text(), listen=self.address, backends=backends)
        )
        self._command = [binary, "-p", str(self._prefix), "-c", str(self.config_path),
                         "-e", "stderr", "-g", "daemon off;"]  # fmt: skip
        self._log = self._prefix / "nginx.log"
        self.process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        """Check the config (``nginx -t``), start nginx, return once its port accepts."""
        check = subprocess.run([*self._command, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SplitwireError(f"nginx rejects {self.config_path}:\n{check.stderr}")
        with self._log.open("a") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=log)
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SplitwireError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((host, int(port)), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SplitwireError(f"nginx did not listen on {self.address} within {START_TIMEOUT_S} s")

    def log(self) -> str:
        return self._log.read_text() if self._log.exists() else ""

    def stop(self) -> None:
        """Stop nginx (SIGTERM: fast shutdown) and remove its prefix."""
        if self.process is not None and self.process.poll() is None:
            terminate(self.process, timeout_s=10)
        shutil.rmtree(self._prefix, ignore_errors=True)

    def __enter__(self) -> GrpcBalancer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
