"""A corpus of good and hostile certificate Secrets, generated with `cryptography`.

Each case is a Secret as cert-manager would write it (tls.crt leaf first, tls.key, ca.crt) plus the
names the DbTlsCert declares. `accept` is what pgcurator must decide; `openssl` is what
`openssl verify -x509_strict -auth_level 2 -purpose sslserver` decides for the chain (None: not a
chain-validity case, e.g. a key that does not match); `stricter` says why pgcurator deliberately
refuses a chain openssl would accept, `lenient` why it accepts one strict openssl refuses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
NAME = "db.example.com"
IP = "10.20.30.40"
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass
class Node:
    cert: x509.Certificate
    key: Key

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, pkcs8: bool = False) -> bytes:
        fmt = serialization.PrivateFormat.PKCS8 if pkcs8 or isinstance(self.key, ed25519.Ed25519PrivateKey) \
            else serialization.PrivateFormat.TraditionalOpenSSL
        return self.key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def key_of(kind: str = "p256") -> Key:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "k256": ec.SECP256K1()}[kind]
    return ec.generate_private_key(curve)


_CA_KU = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                       encipher_only=False, decipher_only=False)
_EE_KU = x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                       key_encipherment=True, data_encipherment=False, key_agreement=False,
                       encipher_only=False, decipher_only=False)
_NO_CERT_SIGN = x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
_UNSET = object()


def make(cn: str, issuer: Node | None, *, ca: bool | None = False, path_len: int | None = None,
         ku: x509.KeyUsage | object | None = _UNSET, eku: Sequence[x509.ObjectIdentifier] | None = (
             ExtendedKeyUsageOID.SERVER_AUTH,), sans: Sequence[str] | None = None, key: Key | None = None,
         not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
         digest: hashes.HashAlgorithm | None = None, aki: bool = True,
         constraints: x509.NameConstraints | None = None, unknown_critical: bool = False,
         sign_with: Key | None = None) -> Node:
    """One certificate; `issuer` None makes it self-signed. Defaults: a CA when ca=True, else a server leaf."""
    key = key or key_of()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 30 * DAY)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), critical=True)
    if ku is _UNSET:
        ku = _CA_KU if ca else _EE_KU
    if ku is not None:
        assert isinstance(ku, x509.KeyUsage)
        b = b.add_extension(ku, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans is None and not ca:
        sans = [NAME]
    if sans:
        names: list[x509.GeneralName] = []
        for s in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if issuer is not None and aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)  # type: ignore[arg-type]
    if constraints is not None:
        b = b.add_extension(constraints, critical=True)
    if unknown_critical:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
                            critical=True)
    signer = sign_with or (issuer.key if issuer else key)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else (digest or hashes.SHA256())
    return Node(b.sign(signer, algorithm), key)  # type: ignore[arg-type]


_SHA256_RSA = bytes.fromhex("2a864886f70d01010b")  # OID 1.2.840.113549.1.1.11, DER body
_SHA1_RSA = bytes.fromhex("2a864886f70d010105")  # OID 1.2.840.113549.1.1.5


def sha1_signed(node: Node, signer: rsa.RSAPrivateKey) -> Node:
    """The same certificate re-signed with SHA-1 (cryptography no longer signs with it): swap the
    algorithm OID (same length) in the TBS and the outer AlgorithmIdentifier, then replace the signature."""
    der = node.cert.public_bytes(serialization.Encoding.DER)
    assert der.count(_SHA256_RSA) == 2, "an RSA/SHA-256 signed certificate is expected"
    swapped = der.replace(_SHA256_RSA, _SHA1_RSA)
    tbs = x509.load_der_x509_certificate(swapped).tbs_certificate_bytes
    signature = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    assert len(signature) == signer.key_size // 8
    return Node(x509.load_der_x509_certificate(swapped[: -len(signature)] + signature), node.key)


def _ca_defaults(kw: dict[str, object]) -> dict[str, object]:
    # a CA-shaped certificate even when a case sets ca=False/None: no SANs, no extendedKeyUsage
    return {"ca": True, "sans": [], "eku": None, "ku": _CA_KU, **kw}


def root(cn: str = "Corpus Root", **kw: object) -> Node:
    return make(cn, None, **_ca_defaults(kw))  # type: ignore[arg-type]


def inter(cn: str, parent: Node, **kw: object) -> Node:
    return make(cn, parent, **_ca_defaults(kw))  # type: ignore[arg-type]


@dataclass
class Case:
    name: str
    data: dict[str, bytes]
    accept: bool
    reason: str | None = None  # the first problem's reason, for refusals
    mentions: tuple[str, ...] = ()  # words the message must contain (lower-case compare)
    dns_names: tuple[str, ...] = (NAME,)
    ip_addresses: tuple[str, ...] = ()
    openssl: bool | None = None  # openssl's verdict on the chain; None: not compared
    stricter: str | None = None  # why pgcurator refuses a chain openssl accepts
    lenient: str | None = None  # why pgcurator accepts a chain strict openssl refuses (libpq is not strict)
    tags: tuple[str, ...] = field(default_factory=tuple)


def secret(leaf: Node, chain: Sequence[Node] = (), ca: Sequence[Node] | None = None,
           key: bytes | None = None) -> dict[str, bytes]:
    data = {"tls.crt": leaf.pem + b"".join(c.pem for c in chain),
            "tls.key": key if key is not None else leaf.key_pem()}
    if ca is not None:
        data["ca.crt"] = b"".join(c.pem for c in ca)
    return data


def _good() -> list[Case]:
    r = root()
    i1 = inter("Corpus Intermediate 1", r)
    i2 = inter("Corpus Intermediate 2", i1)
    out: list[Case] = []

    def good(name: str, data: dict[str, bytes], **kw: object) -> None:
        out.append(Case(name, data, True, openssl=True, **kw))  # type: ignore[arg-type]

    good("leaf signed by the root", secret(make(NAME, r), ca=[r]))
    good("leaf, one intermediate", secret(make(NAME, i1), [i1], [r]))
    good("leaf, two intermediates", secret(make(NAME, i2), [i2, i1], [r]))
    good("tls.crt ends with the root too", secret(make(NAME, i1), [i1, r], [r]))
    good("RSA 2048 leaf", secret(make(NAME, r, key=key_of("rsa2048")), ca=[r]))
    rsa_root = root("Corpus RSA Root", key=key_of("rsa3072"))
    good("RSA 3072 root, SHA-384", secret(make(NAME, rsa_root, key=key_of("rsa2048"), digest=hashes.SHA384()),
                                         ca=[rsa_root]))
    good("P-384 leaf, SHA-384", secret(make(NAME, r, key=key_of("p384"), digest=hashes.SHA384()), ca=[r]))
    good("PKCS#8 key", secret(leaf := make(NAME, r), ca=[r], key=leaf.key_pem(pkcs8=True)))
    good("wildcard SAN covers the declared name", secret(make(NAME, r, sans=["*.example.com"]), ca=[r]))
    good("IP SAN covers the declared IP", secret(make(NAME, r, sans=[IP]), ca=[r]), dns_names=(), ip_addresses=(IP,))
    good("DNS and IP both declared", secret(make(NAME, r, sans=[NAME, IP]), ca=[r]), ip_addresses=(IP,))
    good("IPv6 SAN", secret(make(NAME, r, sans=["fd00::5"]), ca=[r]), dns_names=(), ip_addresses=("fd00::5",))
    good("no names declared", secret(make(NAME, r), ca=[r]), dns_names=())
    good("leaf without extendedKeyUsage", secret(make(NAME, r, eku=None), ca=[r]))
    good("serverAuth among other usages", secret(make(NAME, r, eku=[ExtendedKeyUsageOID.CLIENT_AUTH,
                                                                     ExtendedKeyUsageOID.SERVER_AUTH]), ca=[r]))
    p0 = inter("Corpus Path0", r, path_len=0)
    good("pathLen 0 intermediate issues the leaf", secret(make(NAME, p0), [p0], [r]))
    nc = inter("Corpus Constrained", r, constraints=x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None))
    good("leaf inside the intermediate's nameConstraints", secret(make(NAME, nc), [nc], [r]))
    good("ca.crt holds the intermediate and the root", secret(make(NAME, i1), [i1], [i1, r]))
    good("ca.crt holds another root too", secret(make(NAME, r), ca=[root("Corpus Other Root"), r]))
    ss = make(NAME, None)
    good("self-signed leaf, ca.crt is itself (cert-manager SelfSigned)", secret(ss, ca=[ss]))
    out.append(Case("leaf without authorityKeyIdentifier", secret(make(NAME, r, aki=False), ca=[r]), True,
                    openssl=False, lenient="strict mode demands authorityKeyIdentifier; libpq does not use strict "
                    "mode and cert-manager's SelfSigned certificates have none"))
    good("leaf expiring in an hour", secret(make(NAME, r, not_after=NOW + dt.timedelta(hours=1)), ca=[r]))
    return out


def _refused() -> list[Case]:
    r = root()
    i1 = inter("Corpus Intermediate 1", r)
    out: list[Case] = []

    def bad(name: str, data: dict[str, bytes], reason: str, *mentions: str, openssl: bool | None = False,
            **kw: object) -> None:
        out.append(Case(name, data, False, reason, tuple(mentions), openssl=openssl, **kw))  # type: ignore[arg-type]

    # basic constraints and key usage of the CAs
    nca = inter("Corpus NotCA", r, ca=False, ku=_CA_KU)
    bad("intermediate with CA:FALSE", secret(make(NAME, nca), [nca], [r]), "IssuerNotCa", "Corpus NotCA", "CA")
    nbc = inter("Corpus NoBC", r, ca=None)
    bad("intermediate without basicConstraints", secret(make(NAME, nbc), [nbc], [r]), "IssuerNotCa", "Corpus NoBC")
    nku = inter("Corpus NoKU", r, ku=None)
    bad("intermediate without keyUsage", secret(make(NAME, nku), [nku], [r]), "IssuerNotCa", "Corpus NoKU",
        "keyCertSign")
    nks = inter("Corpus NoCertSign", r, ku=_NO_CERT_SIGN)
    bad("intermediate whose keyUsage lacks keyCertSign", secret(make(NAME, nks), [nks], [r]), "IssuerNotCa",
        "Corpus NoCertSign", "keyCertSign")
    rnca = make("Corpus Root NotCA", None, ca=False, ku=_CA_KU, sans=[])
    bad("root in ca.crt with CA:FALSE", secret(make(NAME, rnca), ca=[rnca]), "IssuerNotCa", "Corpus Root NotCA")
    rnks = root("Corpus Root NoCertSign", ku=_NO_CERT_SIGN)
    bad("root whose keyUsage lacks keyCertSign", secret(make(NAME, rnks), ca=[rnks]), "IssuerNotCa",
        "Corpus Root NoCertSign", "keyCertSign")

    # path length
    p0 = inter("Corpus Path0", r, path_len=0)
    below = inter("Corpus Below Path0", p0)
    bad("intermediate below a pathLen 0 intermediate", secret(make(NAME, below), [below, p0], [r]),
        "PathTooLong", "Corpus Path0", "0")
    r0 = root("Corpus Root Path0", path_len=0)
    under = inter("Corpus Under Root0", r0)
    bad("intermediate below a pathLen 0 root", secret(make(NAME, under), [under], [r0]), "PathTooLong",
        "Corpus Root Path0")
    p1 = inter("Corpus Path1", r, path_len=1)
    a = inter("Corpus Path1 A", p1)
    b = inter("Corpus Path1 B", a)
    bad("two intermediates below a pathLen 1 intermediate", secret(make(NAME, b), [b, a, p1], [r]), "PathTooLong",
        "Corpus Path1")

    # validity at every level
    past, future = NOW - 10 * DAY, NOW + 10 * DAY
    bad("leaf expired", secret(make(NAME, r, not_before=past, not_after=NOW - DAY), ca=[r]), "Expired", "expired")
    bad("leaf not yet valid", secret(make(NAME, r, not_before=NOW + DAY, not_after=future), ca=[r]), "NotYetValid",
        "not valid before")
    ei = inter("Corpus Expired Inter", r, not_before=past, not_after=NOW - DAY)
    bad("intermediate expired", secret(make(NAME, ei), [ei], [r]), "Expired", "Corpus Expired Inter", "expired")
    fi = inter("Corpus Future Inter", r, not_before=NOW + DAY, not_after=future)
    bad("intermediate not yet valid", secret(make(NAME, fi), [fi], [r]), "NotYetValid", "Corpus Future Inter")
    er = root("Corpus Expired Root", not_before=past, not_after=NOW - DAY)
    bad("root in ca.crt expired", secret(make(NAME, er), ca=[er]), "Expired", "Corpus Expired Root", "ca.crt")
    fr = root("Corpus Future Root", not_before=NOW + DAY, not_after=future)
    bad("root in ca.crt not yet valid", secret(make(NAME, fr), ca=[fr]), "NotYetValid", "Corpus Future Root")
    ei2 = inter("Corpus Expired Inter 2", r, not_before=past, not_after=NOW - DAY)
    bad("expired intermediate in ca.crt", secret(make(NAME, ei2), ca=[ei2, r]), "Expired", "Corpus Expired Inter 2")

    # extended key usage
    bad("leaf for clients only (EKU clientAuth)", secret(make(NAME, r, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
                                                         ca=[r]), "NotForServers", "serverAuth")
    bad("leaf for code signing (EKU codeSigning)", secret(make(NAME, r, eku=[ExtendedKeyUsageOID.CODE_SIGNING]),
                                                          ca=[r]), "NotForServers", "serverAuth")

    # weak keys and signatures
    bad("leaf RSA 1024", secret(make(NAME, r, key=key_of("rsa1024")), ca=[r]), "WeakKey", "1024", "2048")
    wi = inter("Corpus Weak Inter", r, key=key_of("rsa1024"))
    bad("intermediate RSA 1024", secret(make(NAME, wi), [wi], [r]), "WeakKey", "Corpus Weak Inter", "1024")
    wr = root("Corpus Weak Root", key=key_of("rsa1024"))
    bad("root RSA 1024", secret(make(NAME, wr), ca=[wr]), "WeakKey", "Corpus Weak Root", "1024")
    rsa_r = root("Corpus RSA Root", key=key_of("rsa2048"))
    assert isinstance(rsa_r.key, rsa.RSAPrivateKey)
    bad("leaf signed with SHA-1", secret(sha1_signed(make(NAME, rsa_r), rsa_r.key), ca=[rsa_r]),
        "WeakSignature", "SHA-1")
    si = sha1_signed(inter("Corpus SHA1 Inter", rsa_r, key=key_of("rsa2048")), rsa_r.key)
    bad("intermediate signed with SHA-1", secret(make(NAME, si), [si], [rsa_r]), "WeakSignature",
        "Corpus SHA1 Inter", "SHA-1")
    bad("leaf on secp256k1", secret(make(NAME, r, key=key_of("k256")), ca=[r]), "WeakKey", "secp256k1",
        openssl=True, stricter="TLS 1.3 has no signature scheme for secp256k1; clients cannot use such a key")

    # name constraints
    ncp = inter("Corpus NC Permitted", r, constraints=x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("corp.internal")], excluded_subtrees=None))
    bad("leaf outside the permitted names", secret(make(NAME, ncp), [ncp], [r]), "NameConstraints",
        "Corpus NC Permitted", NAME)
    nce = inter("Corpus NC Excluded", r, constraints=x509.NameConstraints(
        permitted_subtrees=None, excluded_subtrees=[x509.DNSName("example.com")]))
    bad("leaf inside the excluded names", secret(make(NAME, nce), [nce], [r]), "NameConstraints",
        "Corpus NC Excluded")
    nci = inter("Corpus NC IP", r, constraints=x509.NameConstraints(
        permitted_subtrees=[x509.IPAddress(ipaddress.ip_network("192.168.0.0/16"))], excluded_subtrees=None))
    bad("IP outside the permitted network", secret(make(NAME, nci, sans=[IP]), [nci], [r]), "NameConstraints",
        "Corpus NC IP", dns_names=(), ip_addresses=(IP,))

    # order, duplicates, loops, missing links
    leaf = make(NAME, i1)
    bad("intermediate first in tls.crt", {"tls.crt": i1.pem + leaf.pem, "tls.key": leaf.key_pem(), "ca.crt": r.pem},
        "LeafNotFirst", "first", openssl=None)
    leaf = make(NAME, r)
    bad("root first in tls.crt", {"tls.crt": r.pem + leaf.pem, "tls.key": leaf.key_pem(), "ca.crt": r.pem},
        "LeafNotFirst", "first", openssl=None)
    leaf = make(NAME, i1)
    bad("intermediate twice in tls.crt", secret(leaf, [i1, i1], [r]), "DuplicateCertificate", "Corpus Intermediate 1",
        openssl=True, stricter="a repeated certificate is a broken bundle; tls.crt is refused rather than served")
    leaf = make(NAME, r)
    bad("leaf twice in tls.crt", secret(leaf, [leaf], [r]), "DuplicateCertificate", NAME, openssl=True,
        stricter="a repeated certificate is a broken bundle; tls.crt is refused rather than served")
    ka, kb = key_of(), key_of()
    loop_a = make("Corpus Loop A", Node(make("Corpus Loop B", None, ca=True, key=kb).cert, kb), ca=True, key=ka)
    loop_b = make("Corpus Loop B", loop_a, ca=True, key=kb)
    bad("looping chain (A signed by B, B by A)", secret(make(NAME, loop_a), [loop_a, loop_b], [root("Corpus Other")]),
        "UntrustedChain", "Corpus Loop")
    bad("intermediate missing", secret(make(NAME, i1), ca=[r]), "UntrustedChain", "Corpus Intermediate 1")
    bad("ca.crt is another CA", secret(make(NAME, r), ca=[root("Corpus Stranger")]), "UntrustedChain",
        "Corpus Root")
    impostor = root()  # same name, another key
    bad("ca.crt is an impostor with the same name", secret(make(NAME, r), ca=[impostor]), "UntrustedChain",
        "Corpus Root")
    bad("ca.crt holds only the intermediate", secret(make(NAME, i1), [i1], [i1]), "UntrustedChain", "root",
        stricter=None)
    forged = make(NAME, i1, sign_with=key_of())
    bad("leaf signature does not verify", secret(forged, [i1], [r]), "UntrustedChain", "Corpus Intermediate 1")
    ss = make(NAME, None)
    bad("self-signed leaf without ca.crt", secret(ss), "UntrustedChain", "ca.crt")
    bad("leaf without ca.crt, chain to a private root", secret(make(NAME, i1), [i1]), "UntrustedChain", "ca.crt")
    bad("critical extension clients do not know (leaf)", secret(make(NAME, r, unknown_critical=True), ca=[r]),
        "UnknownCriticalExtension", "1.3.6.1.4.1.55555.1")
    uc = inter("Corpus Unknown Critical", r, unknown_critical=True)
    bad("critical extension clients do not know (intermediate)", secret(make(NAME, uc), [uc], [r]),
        "UnknownCriticalExtension", "Corpus Unknown Critical")
    bad("leaf is itself a CA", secret(make(NAME, r, ca=True, sans=[NAME]), ca=[r]), "LeafIsCa", "CA",
        openssl=True, stricter="a CA certificate served as the server's own identity; CA/Browser rules refuse it")

    # names
    bad("SAN misses the declared DNS name", secret(make(NAME, r, sans=["other.example.com"]), ca=[r]),
        "NamesNotCovered", NAME, "other.example.com")
    bad("SAN misses the declared IP", secret(make(NAME, r, sans=[NAME]), ca=[r]), "NamesNotCovered", IP,
        ip_addresses=(IP,))
    bad("wildcard does not cover two labels", secret(make(NAME, r, sans=["*.example.com"]), ca=[r]),
        "NamesNotCovered", "a.db.example.com", dns_names=("a.db.example.com",))
    bad("no subjectAltName at all (CN only)", secret(make(NAME, r, sans=[]), ca=[r]), "NamesNotCovered",
        "subjectAltName", openssl=True, stricter="libpq falls back to the CN; current clients (and RFC 6125) do not")

    # keys (not chain cases: openssl verify does not see the key)
    leaf = make(NAME, r)
    bad("key of another certificate", secret(leaf, ca=[r], key=Node(leaf.cert, key_of()).key_pem()), "KeyMismatch",
        "tls.key", openssl=None)
    bad("RSA key for an EC certificate", secret(leaf, ca=[r], key=Node(leaf.cert, key_of("rsa2048")).key_pem()),
        "KeyMismatch", "RSA", openssl=None)
    bad("EC P-384 key for a P-256 certificate", secret(leaf, ca=[r], key=Node(leaf.cert, key_of("p384")).key_pem()),
        "KeyMismatch", openssl=None)
    encrypted = leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw"))
    bad("encrypted key", secret(leaf, ca=[r], key=encrypted), "KeyUnreadable", "encrypted", openssl=None)
    bad("tls.crt is not PEM", {"tls.crt": b"hello", "tls.key": leaf.key_pem(), "ca.crt": r.pem},
        "CertificateUnreadable", "tls.crt", openssl=None)
    bad("ca.crt is not PEM", {**secret(leaf), "ca.crt": b"junk"}, "CaUnreadable", "ca.crt", openssl=None)
    not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bad("tls.crt block is not a certificate", {**secret(leaf, ca=[r]), "tls.crt": not_der}, "CertificateUnreadable",
        "block 1", "not an X.509 certificate", openssl=None)
    bad("tls.crt truncated", {**secret(leaf, ca=[r]), "tls.crt": leaf.pem[:300] + b"\n-----END CERTIFICATE-----\n"},
        "CertificateUnreadable", "damaged or truncated", openssl=None)
    bad("tls.key block is not a key", secret(leaf, ca=[r], key=b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                                              b"-----END PRIVATE KEY-----\n"),
        "KeyUnreadable", "not a usable private key", openssl=None)
    bad("ca.crt block is not a certificate", {**secret(leaf), "ca.crt": r.pem + not_der}, "CaUnreadable",
        "block 2 of 2", openssl=None)
    return out


@cache
def corpus() -> tuple[Case, ...]:
    return tuple(_good() + _refused())


def openssl_verdict(case: Case) -> tuple[bool, str]:
    """What `openssl verify` says about the case's chain (strict, TLS security level 2, server purpose)."""
    blocks = case.data["tls.crt"].split(b"-----END CERTIFICATE-----")
    pems = [b + b"-----END CERTIFICATE-----\n" for b in blocks if b.strip()]
    with tempfile.TemporaryDirectory() as d:
        leaf, chain, ca = Path(d) / "leaf.pem", Path(d) / "chain.pem", Path(d) / "ca.pem"
        leaf.write_bytes(pems[0].lstrip())
        chain.write_bytes(b"".join(pems[1:]) or pems[0].lstrip())
        ca.write_bytes(case.data.get("ca.crt") or b"")
        cmd = ["openssl", "verify", "-x509_strict", "-auth_level", "2", "-purpose", "sslserver",
               "-untrusted", str(chain)]
        cmd += ["-CAfile", str(ca)] if case.data.get("ca.crt") else ["-no-CAfile", "-no-CApath", "-no-CAstore"]
        checks = [["-verify_hostname", n] for n in case.dns_names] + [["-verify_ip", i] for i in case.ip_addresses]
        outputs = []
        for check in checks or [[]]:  # one run per declared name: openssl checks one at a time
            done = subprocess.run([*cmd, *check, str(leaf)], capture_output=True, text=True, check=False)
            outputs.append((done.stdout + done.stderr).strip())
            if done.returncode != 0:
                return False, "\n".join(outputs)
        return True, "\n".join(outputs)


def cases(pred: Callable[[Case], bool] = lambda c: True) -> list[Case]:
    return [c for c in corpus() if pred(c)]


def psql_verify_full(host: str, hostaddr: str, port: int, user: str, password: str, ca_pem: bytes,
                     directory: Path) -> subprocess.CompletedProcess[str]:
    """libpq itself (Debian's psql): `host` is the name verify-full checks, `hostaddr` where it connects.
    Succeeds with stdout "t" when the session runs over TLS."""
    ca = directory / f"sslrootcert-{os.urandom(4).hex()}.crt"
    ca.write_bytes(ca_pem)
    dsn = (f"host={host} hostaddr={hostaddr} port={port} dbname=postgres user={user} "
           f"sslmode=verify-full sslrootcert={ca}")
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(["psql", dsn, "-Atc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
