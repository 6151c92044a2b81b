"""Ed25519 signatures over ``plan.yaml``: who vouches for a plan directory.

``plan.yaml`` records the sha256 of every half, so one signature over its exact bytes covers the
whole directory::

    splitwire keygen --out keys/plans              # keys/plans.key (0600) and keys/plans.pub
    splitwire plan ... --out plans/r18 --sign-key keys/plans.key    # plans/r18/plan.yaml.sig
    splitwire cloud ... --plan plans/r18 --plan-public-key keys/plans.pub
    splitwire edge  ... --plan plans/r18 --plan-public-key keys/plans.pub

A runtime given a public key reads ``plan.yaml`` and ``plan.yaml.sig``, verifies the signature
over those bytes, and only then parses them and hashes the halves
(:func:`splitwire.partitioner.plan_file.load_plan` with a :class:`PlanTrust`). Without a key,
the plan directory is trusted as it is: the halves are still hashed and inspected
(:mod:`splitwire.partitioner.archive`), but anyone who can write the directory chooses what runs.

The files are the standard ones, so OpenSSL (3.0 or later) makes and checks the same::

    openssl genpkey -algorithm ed25519 -out plans.key
    openssl pkey -in plans.key -pubout -out plans.pub
    openssl pkeyutl -sign -inkey plans.key -rawin -in plan.yaml -out plan.yaml.sig
    openssl pkeyutl -verify -pubin -inkey plans.pub -rawin -in plan.yaml -sigfile plan.yaml.sig

Keys are PEM (PKCS#8 private key without a passphrase, SubjectPublicKeyInfo public key); a
signature is the raw 64 bytes Ed25519 defines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from splitwire.partitioner.errors import PlanSignatureError, SigningKeyError

logger = logging.getLogger(__name__)

SIGNATURE_SUFFIX = ".sig"
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub"
SIGNATURE_BYTES = 64
# A PEM Ed25519 key is about 120 bytes; anything much larger is not one.
MAX_KEY_FILE_BYTES = 16 << 10


@dataclass(frozen=True)
class PlanTrust:
    """What a runtime requires of a plan directory before it reads anything else in it.

    ``PlanTrust()`` (:data:`TRUST_AS_IS`) takes ``plan.yaml`` as it is; one made by
    :meth:`from_public_key` refuses a ``plan.yaml`` without a valid signature by that key.

    Attributes:
        public_key: the key plans must be signed by, or None.
        key_file: where it was read from (named in messages).
    """

    public_key: Ed25519PublicKey | None = None
    key_file: Path | None = None

    @classmethod
    def from_public_key(cls, path: Path | None) -> PlanTrust:
        """Require plans signed by the Ed25519 public key in ``path`` (PEM); None (no
        ``--plan-public-key``) gives :data:`TRUST_AS_IS`.

        Raises:
            SigningKeyError: the file cannot be read or holds no Ed25519 public key.
        """
        if path is None:
            return cls()
        data = _read_key_file(path, "public")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(
                f"{path}: not a PEM public key ({exc}); expected the .pub file "
                "`splitwire keygen` wrote"
            ) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(
                f"{path}: a {type(key).__name__}; expected an Ed25519 public key "
                "(`splitwire keygen` or `openssl genpkey -algorithm ed25519`)"
            )
        return cls(public_key=key, key_file=path)

    @property
    def signed(self) -> bool:
        """True when plans must carry a valid signature."""
        return self.public_key is not None

    def verify(self, plan_file: Path, data: bytes) -> None:
        """Check ``plan_file``'s signature over ``data`` (its bytes, read once by the caller).

        Does nothing when no public key is set.

        Raises:
            PlanSignatureError: the signature file is missing, malformed, or not by the key.
        """
        if self.public_key is None:
            return
        signature_file = signature_path(plan_file)
        expected = (
            f"expected {signature_file.name}, an Ed25519 signature of {plan_file.name} by the "
            f"key in {self.key_file} (splitwire plan --sign-key)"
        )
        try:
            with signature_file.open("rb") as f:
                signature = f.read(SIGNATURE_BYTES + 1)
        except FileNotFoundError as exc:
            raise PlanSignatureError(f"{plan_file} is not signed: {expected}") from exc
        except OSError as exc:
            raise PlanSignatureError(f"cannot read {signature_file}: {exc.strerror}") from exc
        if len(signature) != SIGNATURE_BYTES:
            raise PlanSignatureError(
                f"{signature_file}: {len(signature)}{'+' * (len(signature) > SIGNATURE_BYTES)} "
                f"bytes; {expected}, {SIGNATURE_BYTES} bytes"
            )
        try:
            self.public_key.verify(signature, data)
        except InvalidSignature as exc:
            raise PlanSignatureError(
                f"{plan_file}: the signature in {signature_file.name} does not match: the plan "
                f"was modified after signing, or signed by another key than {self.key_file}; "
                "plan and sign it again"
            ) from exc


# The default of the loaders: plan directories are trusted as they are.
TRUST_AS_IS = PlanTrust()


def log_trust(trust: PlanTrust, plans: Sequence[Path]) -> None:
    """Say once, at a runtime's start, how far its plan directories are trusted.

    Without a public key this is a WARNING: the halves are hashed and inspected, but whoever
    can write the directories chooses what runs.
    """
    where = ", ".join(str(p) for p in plans)
    if trust.public_key is None:
        logger.warning(
            "plan directory %s is trusted as it is: no --plan-public-key, so nobody vouches for "
            "plan.yaml (sign plans with `splitwire plan --sign-key` and pass the public key)",
            where,
        )
    else:
        logger.info("plan directory %s: plan.yaml must be signed by %s", where, trust.key_file)


def signature_path(plan_file: Path) -> Path:
    """Where the detached signature of ``plan_file`` lives: ``plan.yaml.sig`` beside it."""
    return plan_file.with_name(plan_file.name + SIGNATURE_SUFFIX)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (PEM, no passphrase).

    Raises:
        SigningKeyError: the file cannot be read, is encrypted, or holds another kind of key.
    """
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's word for "this key has a passphrase"
        raise SigningKeyError(
            f"{path}: the key is encrypted; expected an unencrypted PEM key (keep it in a file "
            "only the planner can read: `splitwire keygen` writes it with mode 0600)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"{path}: not a PEM private key ({exc}); expected the .key file `splitwire keygen` "
            "wrote"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"{path}: a {type(key).__name__}; expected an Ed25519 private key "
            "(`splitwire keygen` or `openssl genpkey -algorithm ed25519`)"
        )
    return key


def sign_file(path: Path, key: Ed25519PrivateKey) -> Path:
    """Write the detached signature of ``path``'s bytes beside it (``path`` + ``.sig``).

    Returns:
        The signature's path.
    """
    signature = signature_path(path)
    signature.write_bytes(key.sign(path.read_bytes()))
    return signature


def generate_key_pair(prefix: Path) -> tuple[Path, Path]:
    """Make an Ed25519 key pair: ``PREFIX.key`` (PKCS#8 PEM, mode 0600) and ``PREFIX.pub``.

    Neither file may exist: a key is never overwritten.

    Returns:
        The paths of the private and the public key.

    Raises:
        SigningKeyError: a file exists already or cannot be written.
    """
    private = prefix.with_name(prefix.name + PRIVATE_KEY_SUFFIX)
    public = prefix.with_name(prefix.name + PUBLIC_KEY_SUFFIX)
    for path in (private, public):
        if path.exists():
            raise SigningKeyError(
                f"{path} exists; refusing to overwrite a key (remove it, or pick another --out)"
            )
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # O_EXCL with the mode at creation: the private key is never readable by others, even
        # for a moment, and a file created meanwhile is not clobbered.
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        with public.open("xb") as f:
            f.write(public_pem)
    except OSError as exc:
        raise SigningKeyError(f"cannot write {exc.filename}: {exc.strerror}") from exc
    return private, public


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"cannot read the {kind} key {path}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SigningKeyError(
            f"{path}: more than {MAX_KEY_FILE_BYTES} bytes; expected a PEM Ed25519 {kind} key"
        )
    return data
