"""One import namespace: every role folder installs as ``splitwire.<role>``, and nothing else
lands at the top level of site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("protocol", "partitioner", "benchmarks", "cloud", "netem")


@pytest.mark.parametrize("role", ROLES)
def test_roles_import_under_splitwire_only(role: str, tmp_path: Path) -> None:
    # A clean directory as cwd: the repository's folders must not be reachable by accident.
    code = (
        f"import importlib.util, splitwire.{role}\n"
        f"assert importlib.util.find_spec({role!r}) is None, 'top-level {role} is importable'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("splitwire-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"splitwire", next(t for t in top if t.endswith(".dist-info"))}, top
    for role in ROLES:
        assert f"splitwire/{role}/__init__.py" in names
    assert "splitwire/protocol/splitwire.proto" in names
    assert "splitwire/partitioner/models/__init__.py" in names
