"""Package namespaces whose names are imported on first use (PEP 562), so ``splitwire --help``
does not pay for torch or grpc::

    _LOCATIONS = {"CloudConfig": "splitwire.cloud.config", ...}
    __all__ = sorted(_LOCATIONS)
    __getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, locations: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        locations: exported name → the module that defines it.
        namespace: the package's ``globals()``; each name is cached there once imported.
    """

    def __getattr__(name: str) -> Any:
        if name not in locations:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(locations[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *locations])

    return __getattr__, __dir__
