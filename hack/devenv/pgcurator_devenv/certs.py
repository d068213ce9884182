"""Certificates for tests and benchmarks, in exactly the layout cert-manager writes.

cert-manager's Secret (type kubernetes.io/tls) holds `tls.crt` (the leaf, then any
intermediates), `tls.key` (PKCS#1 `RSA PRIVATE KEY` / SEC1 `EC PRIVATE KEY` by default,
`PRIVATE KEY` with encoding PKCS8) and `ca.crt` (the issuing CA; for a self-signed
certificate, itself), plus cert-manager.io/* annotations.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass
class Issued:
    cert: x509.Certificate
    key: Key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, pkcs8: bool = False) -> bytes:
        fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
        return self.key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def new_key(algorithm: str = "ECDSA") -> Key:
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name: str = "pgcurator test CA", days: int = 3650) -> Issued:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued | None,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = (),
    *,
    not_before: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(days=90),
    algorithm: str = "ECDSA",
    key: Key | None = None,
) -> Issued:
    """A server certificate signed by `ca` (self-signed when None)."""
    key = key or new_key(algorithm)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "server")])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + lifetime)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    return Issued(cert, key)


def secret_data(leaf: Issued, ca: Issued | None, *, key_pem: bytes | None = None,
                chain: Sequence[Issued] = ()) -> dict[str, bytes]:
    """Decoded values of a cert-manager Secret."""
    data = {
        "tls.crt": leaf.cert_pem + b"".join(c.cert_pem for c in chain),
        "tls.key": key_pem if key_pem is not None else leaf.key_pem(),
    }
    data["ca.crt"] = (ca or leaf).cert_pem
    return data


def secret_manifest(name: str, namespace: str, data: dict[str, bytes], issuer: str = "ca-issuer") -> dict[str, Any]:
    """A kubernetes.io/tls Secret as cert-manager writes it (annotations included)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {
                "cert-manager.io/certificate-name": name,
                "cert-manager.io/issuer-name": issuer,
                "cert-manager.io/issuer-kind": "Issuer",
                "cert-manager.io/issuer-group": "cert-manager.io",
            },
        },
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
