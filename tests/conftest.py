"""Shared test configuration: hypothesis profiles, a torch thread cap, and the fixtures the
runtime tests share: one real plan (ResNet-18 at 64²: the input cut, two splits and the
all-on-edge cut, exported) and real tail servers on 127.0.0.1:0."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

from splitwire.cloud import CloudConfig, CloudServer, create_server
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory
from splitwire.partitioner.runtime import RunnablePlan, open_plan

from .pki import Pki, issue_pki

MODEL = "zoo:resnet18?num_classes=10"
INPUT = (1, 3, 64, 64)

# CI machines have 2 cores; one torch thread keeps tests from fighting each other for them.
torch.set_num_threads(1)

settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# These folders' tests run the agent, the link emulator and tails against wall-clock rates,
# delays and deadlines: `make test` runs them after the rest, with nothing beside them.
TIMED_FOLDERS = ("edge", "benchmarks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under :data:`TIMED_FOLDERS` ``timed``."""
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        if folder in TIMED_FOLDERS:
            item.add_marker(pytest.mark.timed)


@pytest.fixture(scope="session")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real plan directory: cut 0 (all in cloud), two splits and the last cut."""
    request = PlanRequest(
        model_spec=MODEL,
        input_shape=INPUT,
        links=(parse_link("wifi"),),
        calibration=2,
        repeats=2,
    )
    outcome = plan_model(request)
    cuts = outcome.cuts
    ship = ("c0000", cuts[len(cuts) // 3].id, cuts[len(cuts) // 2].id, cuts[-1].id)
    outcome = dataclasses.replace(outcome, request=dataclasses.replace(request, ship=ship))
    out = tmp_path_factory.mktemp("plan") / "resnet18"
    write_plan_directory(outcome, out)
    return out


@pytest.fixture(scope="session")
def plan(plan_dir: Path) -> RunnablePlan:
    """The plan as the edge loads it (heads for the test's frames, tails for references)."""
    return open_plan(plan_dir)


@pytest.fixture(scope="session")
def split_cuts(plan: RunnablePlan) -> tuple[str, str]:
    """The two split cuts the plan ships (neither the input nor the last cut)."""
    cuts = sorted(plan.plan.cuts)
    return cuts[1], cuts[2]


ServerFactory = Callable[..., Awaitable[CloudServer]]


@pytest.fixture
async def start_server(plan_dir: Path) -> AsyncIterator[ServerFactory]:
    """``await start_server(max_batch=4, ...)``: a real server on 127.0.0.1:0 serving the
    plan, with ``CloudConfig`` fields overridden; every one started is stopped afterwards."""
    servers: list[CloudServer] = []

    async def start(**overrides: Any) -> CloudServer:
        fields: dict[str, Any] = {"listen": "127.0.0.1:0", "plans": (plan_dir,), "grace_s": 5.0}
        fields.update(overrides)
        server = create_server(CloudConfig(**fields))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates for TLS tests (see :mod:`tests.pki`)."""
    return issue_pki(tmp_path / "pki")
