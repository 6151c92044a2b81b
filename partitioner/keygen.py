"""``splitwire keygen``: the Ed25519 key pair that signs plan directories.

    splitwire keygen --out keys/plans      # keys/plans.key (mode 0600) and keys/plans.pub

See :mod:`splitwire.partitioner.signing` for what is signed and how the runtimes check it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``splitwire keygen`` to the ``splitwire`` parser."""
    keygen = subparsers.add_parser(
        "keygen",
        help="make the Ed25519 key pair that signs plan directories",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write an Ed25519 key pair: PREFIX.key, the private key (PEM, PKCS#8, no passphrase, "
            "mode 0600), and PREFIX.pub, the public key (PEM). Existing files are never "
            "overwritten.\n\n"
            "A .pt2 half can run code when it loads, so a runtime should only load plan "
            "directories someone vouches for. Keep PREFIX.key where plans are made and sign "
            "each plan with it; give PREFIX.pub to every tail and edge, which then refuse a "
            "plan.yaml without a valid signature before reading anything else of the directory "
            "(plan.yaml holds the sha256 of every half, so its signature covers them all)."
        ),
        epilog=(
            "example:\n"
            "  splitwire keygen --out keys/plans\n"
            "  splitwire plan --model zoo:resnet18 ... --out plans/r18 --sign-key keys/plans.key\n"
            "  splitwire cloud --plan plans/r18 --plan-public-key keys/plans.pub ...\n"
            "  splitwire edge --plan plans/r18 --plan-public-key keys/plans.pub ...\n"
            "OpenSSL 3 makes the same files: openssl genpkey -algorithm ed25519 -out plans.key; "
            "openssl pkey -in plans.key -pubout -out plans.pub"
        ),
    )
    keygen.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="PREFIX",
        help="where to write PREFIX.key and PREFIX.pub (the folder must exist)",
    )
    keygen.set_defaults(func=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    from splitwire.partitioner.signing import generate_key_pair

    private, public = generate_key_pair(args.out)
    print(f"wrote {private} (private: keep it where plans are made, mode 0600)")
    print(f"wrote {public} (public: give it to tails and edges as --plan-public-key)")
    return 0
