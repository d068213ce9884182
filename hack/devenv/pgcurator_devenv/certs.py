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


def build_cert(
    subject: x509.Name,
    key: Key,
    issuer: Issued | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    ca: bool | None = None,
    usages: Sequence[x509.ObjectIdentifier] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    key_ids: bool = False,
) -> x509.Certificate:
    """The dev environment's one X.509 builder: `key`'s certificate, signed by `issuer` (self-signed
    when None). `ca` None writes neither BasicConstraints nor KeyUsage (a bare leaf, as the TLS
    tests' servers use); True/False writes both, critical. `key_ids` adds the subject and
    authority key identifiers (the control plane's PKI: Go's verifier chains on them)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if key_ids:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is not None:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
            builder = builder.add_extension(aki, critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def make_ca(name: str = "pgcurator test CA", days: int = 3650) -> Issued:
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = build_cert(subject, key, None, now - dt.timedelta(minutes=5), now + dt.timedelta(days=days), ca=True)
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
    cert = build_cert(subject, key, ca, start, start + lifetime, usages=[ExtendedKeyUsageOID.SERVER_AUTH],
                      dns_names=dns_names, ip_addresses=ip_addresses)
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
