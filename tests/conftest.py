"""Shared test configuration: hypothesis profiles and a torch thread cap."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

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
