"""The README does what it says: its Python example runs as written, every command its quickstart
shows exists with the flags it shows, and every link into ``docs/`` resolves."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _section(title: str) -> str:
    """The README's text under the ``##`` heading starting with ``title``."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _blocks(section: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section) if lang == language]


def _commands(section: str) -> list[list[str]]:
    """Each ``splitwire ...`` command line of the section's sh blocks, continuation lines joined
    and comments dropped, as words."""
    commands = []
    for block in _blocks(section, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("splitwire "):
                commands.append(shlex.split(line.split("&", 1)[0]))
    return commands


def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    (example,) = _blocks(_section("Python API"), "python")
    run = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]


def test_every_quickstart_command_exists_with_its_flags() -> None:
    commands = _commands(_section("Quickstart")) + _commands(_section("Plan your own model"))
    assert len(commands) >= 5, commands
    for words in commands:
        subcommand = [w for w in words[1:3] if not w.startswith("-") and "/" not in w]
        # `splitwire plan show DIR`: the second word is a subcommand only if help knows it.
        help_text = _help(subcommand)
        if len(subcommand) == 2 and f"{subcommand[1]}" not in _help(subcommand[:1]):
            subcommand, help_text = subcommand[:1], _help(subcommand[:1])
        for flag in (w.split("=", 1)[0] for w in words if w.startswith("--")):
            assert flag in help_text, f"`splitwire {' '.join(subcommand)}` has no {flag}"


def _help(subcommand: list[str]) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "splitwire", *subcommand, "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, f"splitwire {' '.join(subcommand)} --help: {run.stderr[-2000:]}"
    return run.stdout


@pytest.mark.parametrize(
    "page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which is missing"
