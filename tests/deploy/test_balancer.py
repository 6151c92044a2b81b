"""The shipped nginx config: nginx itself accepts it, and what the scale-out runs put in is
exactly the listen address and the upstream servers."""

from __future__ import annotations

import pytest

from splitwire.benchmarks.balancer import BALANCER_CONFIG, GrpcBalancer, render_balancer_config
from splitwire.errors import SplitwireError
from splitwire.protocol.health import check_health


def test_rendering_replaces_the_listen_address_and_the_servers_only() -> None:
    template = BALANCER_CONFIG.read_text()
    text = render_balancer_config(
        template, listen="127.0.0.1:7000", backends=["127.0.0.1:7001", "127.0.0.1:7002"]
    )
    assert "listen 127.0.0.1:7000 http2;" in text
    assert "server 127.0.0.1:7001 max_fails=0;" in text
    assert "server 127.0.0.1:7002 max_fails=0;" in text
    assert "8500" not in text and "8501" not in text and "8502" not in text
    kept = [
        line for line in template.splitlines() if "listen" not in line and "server " not in line
    ]
    assert kept == [line for line in text.splitlines() if "listen" not in line
                    and "server " not in line]  # fmt: skip


def test_a_config_without_the_upstream_is_refused() -> None:
    with pytest.raises(SplitwireError, match="upstream splitwire_tails"):
        render_balancer_config("listen 1.2.3.4:5 http2;\n", listen="x:1", backends=["y:2"])
    with pytest.raises(SplitwireError, match="listen"):
        render_balancer_config("upstream splitwire_tails {\n server a:1;\n}", listen="x:1",
                               backends=["y:2"])  # fmt: skip


def test_nginx_runs_the_shipped_config_on_loopback_and_proxies_health(plan_dir) -> None:
    from splitwire.benchmarks.processes import TailReplica

    tail = TailReplica([plan_dir])
    try:
        tail.start()
        with GrpcBalancer([tail.address]) as balancer:
            assert balancer.address.startswith("127.0.0.1:")
            # grpc.health.v1 through nginx reaches the tail.
            assert check_health(balancer.address, timeout_s=5) == "SERVING"
    finally:
        tail.close()
