"""Subcommands owned by the partitioner.

splitwire models                      # the zoo and the spec forms
splitwire models zoo:resnet18 --json  # what a spec resolves to
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add the partitioner's subcommands to the ``splitwire`` parser."""
    models = subparsers.add_parser(
        "models",
        help="list the reference models, or show what a model spec resolves to",
        description=(
            "Without SPEC, list the zoo. With SPEC (zoo:NAME, path/file.py:callable, "
            "path/model.pt2, hf:ClassName; optional ?key=value&... options and @weights.pt), "
            "build the model and print its parameter count, input shape and hash."
        ),
    )
    models.add_argument("spec", nargs="?", help="a model spec, e.g. zoo:resnet18?num_classes=10")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from partitioner.models import load_model, model_hash, zoo_entry, zoo_names

    if args.spec is None:
        entries = [zoo_entry(name) for name in zoo_names()]
        if args.json:
            rows = [
                {
                    "spec": f"zoo:{e.name}",
                    "input_shape": list(e.input_shape),
                    "task": e.task,
                    "description": e.description,
                }
                for e in entries
            ]
            print(json.dumps(rows, indent=2))
        else:
            for e in entries:
                shape = "x".join(map(str, e.input_shape))
                print(f"zoo:{e.name:<14} {shape:<14} {e.task:<15} {e.description}")
        return 0
    loaded = load_model(args.spec)
    info = {
        "spec": loaded.spec,
        "class": type(loaded.module).__name__,
        "parameters": sum(p.numel() for p in loaded.module.parameters()),
        "input_shape": list(loaded.input_shape) if loaded.input_shape else None,
        "task": loaded.task,
        "hash": model_hash(loaded.module),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:<12} {value}")
    return 0
