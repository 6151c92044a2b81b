"""Certificates for the TLS tests, made with ``cryptography``: a CA, a server certificate for
127.0.0.1 (IP SAN, plus DNS localhost) and a client certificate, and a second CA that signs an
impostor of each. EC keys: generating them takes milliseconds."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # Signed by another CA.
    other_ca: Path
    impostor_server_cert: Path
    impostor_server_key: Path
    impostor_client_cert: Path
    impostor_client_key: Path


def _issue(
    name: str,
    *,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
    server: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and certificate: a self-signed CA without ``issuer``, else a leaf it signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def _write(directory: Path, name: str, key: Any, cert: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def issue_pki(directory: Path) -> Pki:
    """Write a CA, a server and a client certificate it signs, and impostors of each signed
    by another CA, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _issue("splitwire test CA")
    other = _issue("some other CA")
    paths = {
        "ca": _write(directory, "ca", *ca)[0],
        "other_ca": _write(directory, "other-ca", *other)[0],
    }
    for prefix, issuer in (("", ca), ("impostor_", other)):
        for role in ("server", "client"):
            cert, key = _write(
                directory,
                f"{prefix}{role}",
                *_issue(f"{prefix}{role}", issuer=issuer, server=role == "server"),
            )
            paths[f"{prefix}{role}_cert"], paths[f"{prefix}{role}_key"] = cert, key
    return Pki(**paths)
