"""Generate the Python stubs of ``protocol/splitwire.proto``.

Run from anywhere, with the dev extra installed::

    python -m protocol.codegen            # rewrites protocol/splitwire_pb2*.py{,i}
    python -m protocol.codegen --out DIR  # writes DIR/protocol/... (the staleness test does)

The proto is compiled with the repository root as include path, so the generated gRPC module
imports ``protocol.splitwire_pb2`` by its package path instead of as a top-level module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO = PACKAGE_DIR / "splitwire.proto"
GENERATED = ("splitwire_pb2.py", "splitwire_pb2.pyi", "splitwire_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Compile the proto into ``out_root/protocol/`` and return the generated files.

    Raises:
        RuntimeError: protoc reported an error (its exit code is in the message).
    """
    from grpc_tools import protoc  # dev-only dependency

    root = PACKAGE_DIR.parent
    (out_root / "protocol").mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(PROTO.relative_to(root)),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {PROTO}")
    return [out_root / "protocol" / name for name in GENERATED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=PACKAGE_DIR.parent, help="root to write protocol/ under"
    )
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
