"""splitwire.corrector exports a sorted, resolvable public surface without importing torch on
``import splitwire.corrector`` alone (the CLI's --help stays fast)."""

from __future__ import annotations

import subprocess
import sys

import splitwire.corrector as corrector


def test_all_names_are_sorted_unique_and_resolve() -> None:
    assert corrector.__all__ == sorted(set(corrector.__all__))
    for name in corrector.__all__:
        assert not name.startswith("_")
        assert getattr(corrector, name) is not None


def test_importing_the_package_and_its_cli_does_not_import_torch() -> None:
    code = "import sys, splitwire.corrector, splitwire.corrector.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
