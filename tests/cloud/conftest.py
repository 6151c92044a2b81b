"""Fixtures of the tail service tests: one real plan (ResNet-18 at 64², exported halves of the
input cut and two splits), and a real server on 127.0.0.1:0 per test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import torch

from splitwire.cloud import CloudConfig, CloudServer, create_server
from splitwire.partitioner.link import parse_link
from splitwire.partitioner.planner import PlanRequest, plan_model, write_plan_directory
from splitwire.partitioner.runtime import RunnablePlan, open_plan
from splitwire.protocol import PROTOCOL_VERSION
from splitwire.protocol import splitwire_pb2 as pb
from splitwire.protocol.client import SessionClient, open_channel

MODEL = "zoo:resnet18?num_classes=10"
INPUT = (1, 3, 64, 64)


@pytest.fixture(scope="session")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real plan directory: cut 0 (all in cloud) and two splits, by torch.export."""
    request = PlanRequest(
        model_spec=MODEL,
        input_shape=INPUT,
        links=(parse_link("wifi"),),
        codecs=tuple(),  # replaced below; the dataclass refuses an empty tuple
    ) if False else PlanRequest(
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
