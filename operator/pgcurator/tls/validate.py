"""Is a certificate Secret fit to be served? Pure checks, no I/O.

A Secret is delivered to the server only when every rule passes: PostgreSQL keeps the old
files at a reload when the new ones are bad, but refuses to *start* with them at the next
restart, so a bad file on disk is a time bomb. The chain is judged as a verify-full client
would judge it (`verify.verify_chain`, cryptography's X.509 verifier); this module parses the
Secret and checks what the verifier does not see: the private key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..timefmt import k8s_time
from .verify import key_description, names_problem, structure_problem, verify_chain

# One PEM block. Only plain base64 bodies: encrypted keys carry "Proc-Type:" headers, and
# PostgreSQL cannot be given a passphrase here.
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)
_BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/=]*$")

CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
CA_KEY = "ca.crt"


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase, for conditions
    message: str


@dataclass(frozen=True)
class CertInfo:
    """What the status shows about a certificate."""

    fingerprint: str  # SHA-256 of the DER, lower-case hex
    serial: str  # upper-case hex
    not_before: datetime
    not_after: datetime
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]

    def as_status(self) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint,
            "serial": self.serial,
            "notBefore": k8s_time(self.not_before),
            "notAfter": k8s_time(self.not_after),
            "subject": self.subject,
            "issuer": self.issuer,
        }


@dataclass(frozen=True)
class Material:
    """A validated key pair, as normalised PEM text ready to be written to the server."""

    cert_pem: str  # leaf first, then any intermediates, as in tls.crt
    key_pem: str = field(repr=False)
    ca_pem: str | None
    leaf: CertInfo


@dataclass(frozen=True)
class Validation:
    material: Material | None  # None when any rule failed
    problems: tuple[Problem, ...]
    leaf: CertInfo | None = None  # parsed even when other rules failed, for the status

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(p.message for p in self.problems)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def cert_info(cert: x509.Certificate) -> CertInfo:
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        serial=format(cert.serial_number, "X"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns,
        ip_addresses=ips,
    )


def pem_blocks(data: bytes) -> list[tuple[str, str]]:
    """(type, normalised PEM text) for each block; raises ValueError on a malformed body."""
    out = []
    for m in _PEM_BLOCK.finditer(data):
        kind = m.group(1).decode()
        lines = [ln.strip() for ln in m.group(2).splitlines() if ln.strip()]
        if not lines or not all(_BASE64_LINE.match(ln) for ln in lines):
            raise ValueError(f"the {kind} block has headers or characters outside base64 (encrypted or damaged)")
        body = "\n".join(ln.decode() for ln in lines)
        out.append((kind, f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"))
    return out


def parse_certificates(data: bytes, what: str) -> tuple[list[x509.Certificate], str]:
    blocks = [(k, t) for k, t in pem_blocks(data) if k == "CERTIFICATE"]
    if not blocks:
        raise ValueError("it holds no PEM CERTIFICATE block (-----BEGIN CERTIFICATE-----)")
    certs = []
    for n, (_, text) in enumerate(blocks, 1):
        try:
            certs.append(x509.load_pem_x509_certificate(text.encode()))
        except ValueError:  # the parser's own message is a debugging dump of the DER error
            raise ValueError(f"CERTIFICATE block {n} of {len(blocks)} is not an X.509 certificate "
                             "(damaged or truncated)") from None
    return certs, "".join(t for _, t in blocks)


def parse_private_key(data: bytes) -> tuple[PrivateKeyTypes, str]:
    blocks = [(k, t) for k, t in pem_blocks(data) if k.endswith("PRIVATE KEY")]
    if len(blocks) != 1:
        raise ValueError(f"tls.key must hold exactly one PEM private key block (found {len(blocks)})")
    kind, text = blocks[0]
    if kind == "ENCRYPTED PRIVATE KEY":
        raise ValueError("tls.key is encrypted; PostgreSQL needs an unencrypted key")
    try:
        return serialization.load_pem_private_key(text.encode(), password=None), text
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"the {kind} block is not a usable private key (damaged, or a key type PostgreSQL "
                         "cannot use)") from None


def _spki(key: object) -> bytes:
    public_bytes = key.public_bytes  # type: ignore[attr-defined]
    return bytes(public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


def validate_secret(
    data: Mapping[str, bytes],
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    now: datetime | None = None,
) -> Validation:
    """Every rule a key pair must pass before it reaches the server.

    `data` holds the Secret's decoded values (bytes), keyed tls.crt / tls.key / ca.crt.
    """
    now = now or datetime.now(UTC)
    problems: list[Problem] = []
    cert_data, key_data = data.get(CERT_KEY) or b"", data.get(KEY_KEY) or b""
    missing = [k for k, v in ((CERT_KEY, cert_data), (KEY_KEY, key_data)) if not v.strip()]
    if missing:
        return Validation(None, (Problem("SecretIncomplete", f"the Secret has no {' and no '.join(missing)}"),))

    try:
        chain, cert_pem = parse_certificates(cert_data, CERT_KEY)
    except ValueError as exc:
        return Validation(None, (Problem("CertificateUnreadable", f"tls.crt does not parse: {_plain(exc)}"),))
    leaf = cert_info(chain[0])
    structure = structure_problem(chain)
    if structure is not None:  # the leaf-based checks below would describe the wrong certificate
        return Validation(None, (Problem(structure.reason, structure.message),), leaf)

    key_pem, key_problem = _check_key(key_data, chain[0])
    problems += key_problem

    ca_pem: str | None = None
    roots: list[x509.Certificate] | None = None
    ca_data = data.get(CA_KEY) or b""
    if ca_data.strip():
        try:
            roots, ca_pem = parse_certificates(ca_data, CA_KEY)
        except ValueError as exc:
            problems.append(Problem("CaUnreadable", f"ca.crt does not parse: {_plain(exc)}"))
            return Validation(None, tuple(problems), leaf)
    path, chain_problems = verify_chain(chain, roots, dns_names, ip_addresses, now)
    problems += [Problem(p.reason, p.message) for p in chain_problems]
    if path is None and not any(p.reason == "NamesNotCovered" for p in problems):
        # the chain failed first; still say which declared names the certificate lacks
        uncovered = [n for n in [*dns_names, *ip_addresses] if not _names_cover(leaf, n)]
        if uncovered:
            problems.append(Problem("NamesNotCovered", names_problem(chain[0], uncovered).message))

    if problems or path is None:
        return Validation(None, tuple(problems), leaf)
    return Validation(Material(cert_pem, key_pem, ca_pem, leaf), (), leaf)


def _check_key(key_data: bytes, leaf: x509.Certificate) -> tuple[str, list[Problem]]:
    """The key's normalised PEM, and what is wrong with it: unreadable, or not the leaf's key."""
    try:
        key, key_pem = parse_private_key(key_data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return "", [Problem("KeyUnreadable", f"tls.key does not parse: {_plain(exc)}")]
    if key_matches(leaf, key):
        return key_pem, []
    return key_pem, [Problem("KeyMismatch", f"tls.key ({key_description(key.public_key())}) is not the private "
                             f"key of the certificate in tls.crt ({key_description(leaf.public_key())})")]


def _plain(exc: Exception) -> str:
    """A parser's message without its debugging tail (cryptography appends a Rust error's Debug form)."""
    text = str(exc).split(" See https://")[0].split(" Details: ")[0]
    return text.rstrip(".") or type(exc).__name__


def _names_cover(leaf: CertInfo, name: str) -> bool:
    """Whether one of the leaf's SANs covers `name` (only to complete a message; the verdict is the verifier's)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in {ipaddress.ip_address(i) for i in leaf.ip_addresses}
    name = name.lower().rstrip(".")
    for san in (s.lower().rstrip(".") for s in leaf.dns_names):
        if san == name or (san.startswith("*.") and name.partition(".")[2] == san[2:] and not name.startswith("*.")):
            return True
    return False


def leaf_of_pem(data: bytes) -> CertInfo:
    """The first certificate of a PEM file (e.g. the file on the server), parsed."""
    chain, _ = parse_certificates(data, "the file")
    return cert_info(chain[0])


def info_of_der(der: bytes) -> CertInfo:
    return cert_info(x509.load_der_x509_certificate(der))
