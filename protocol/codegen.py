"""Generate the Python stubs of ``protocol/splitwire.proto``.

Run from anywhere, with the dev extra installed::

    python -m splitwire.protocol.codegen            # rewrites protocol/splitwire_pb2*.py{,i}
    python -m splitwire.protocol.codegen --out DIR  # writes the stubs into DIR (the staleness test)

protoc names imports after the proto's path below its include root. The folder is ``protocol/``
in the repository but the package is ``splitwire.protocol``, so the proto is compiled from a
staging copy at ``splitwire/protocol/splitwire.proto``: the generated gRPC module then imports
``splitwire.protocol.splitwire_pb2``, never a top-level ``protocol``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO = PACKAGE_DIR / "splitwire.proto"
GENERATED = ("splitwire_pb2.py", "splitwire_pb2.pyi", "splitwire_pb2_grpc.py")
_PACKAGE_PATH = Path("splitwire", "protocol")


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto and write the generated stubs into ``out_dir``.

    Returns:
        The paths of the generated files.

    Raises:
        RuntimeError: protoc reported an error (its exit code is in the message).
    """
    from grpc_tools import protoc  # dev-only dependency

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        (root / _PACKAGE_PATH).mkdir(parents=True)
        shutil.copyfile(PROTO, root / _PACKAGE_PATH / PROTO.name)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"--python_out={root}",
                f"--pyi_out={root}",
                f"--grpc_python_out={root}",
                str(_PACKAGE_PATH / PROTO.name),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {PROTO}")
        written = []
        for name in GENERATED:
            target = out_dir / name
            shutil.copyfile(root / _PACKAGE_PATH / name, target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=PACKAGE_DIR, help="directory to write the stubs into"
    )
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
