"""Each package exports a small public surface (ruff's RUF022 keeps ``__all__`` sorted), and
every exported name exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "package",
    [
        "splitwire.cloud",
        "splitwire.partitioner",
        "splitwire.partitioner.models",
        "splitwire.protocol",
    ],
)
def test_all_names_resolve(package: str) -> None:
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert not name.startswith("_")
        assert getattr(module, name) is not None
