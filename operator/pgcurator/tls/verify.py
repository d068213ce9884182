"""Would a verify-full client accept this chain? Decided by `cryptography`'s X.509 verifier.

The verdict is the verifier's (path building, signatures, validity at every level, basic
constraints, key usage, path length, name constraints, extended key usage, names), with the
rules libpq's OpenSSL adds or relaxes made explicit:

- only self-signed certificates in ca.crt are trust anchors (OpenSSL without partial-chain
  mode: a client's sslrootcert must hold the root); other ca.crt certificates are intermediates;
- RSA keys below 2048 bits and curves other than P-256/P-384/P-521 are refused anywhere in the
  chain (OpenSSL's default security level refuses the former; TLS 1.3 cannot sign with the latter);
- authorityKeyIdentifier is optional (OpenSSL does not demand it; cert-manager's SelfSigned
  certificates lack it).

When the verifier refuses, `explain` walks the chain to name the first problem in plain words;
it never decides a verdict.
"""

from __future__ import annotations

import ipaddress
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.general_name import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..timefmt import k8s_time

MIN_RSA_BITS = 2048  # OpenSSL security level 2 (Debian's default): 112-bit security
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
WEAK_HASHES = (hashes.SHA1, hashes.MD5)
PROBE_LABEL = "x-pgcurator-probe"  # stands for the `*` of a wildcard name


@dataclass(frozen=True)
class ChainProblem:
    reason: str
    message: str


def name_of(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string() or "(empty subject)"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def key_description(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def _policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    ca = ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
    return ca, ee


@cache
def system_roots() -> tuple[x509.Certificate, ...]:
    """The trust store of `sslrootcert=system` (OpenSSL's default CA file), for Secrets without ca.crt."""
    path = ssl.get_default_verify_paths().cafile
    if not path or not Path(path).is_file():
        return ()
    try:
        with warnings.catch_warnings():  # some distributions' roots have non-positive serials
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except ValueError:
        return ()
    return tuple(c for c in certs if is_self_signed(c))


def verification_subject(name: str) -> DNSName | IPAddress:
    try:
        return IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return DNSName(PROBE_LABEL + name[1:] if name.startswith("*.") else name)


def _probe_name(leaf: x509.Certificate) -> str | None:
    """A name the leaf carries, to verify the chain independently of the declared names."""
    ext = _ext(leaf, x509.SubjectAlternativeName)
    if ext is None:
        return None
    san = ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    names = [*san.get_values_for_type(x509.DNSName), *(str(i) for i in san.get_values_for_type(x509.IPAddress))]
    return names[0] if names else None


def _verify(leaf: x509.Certificate, pool: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate],
            name: str, now: datetime) -> list[x509.Certificate] | str:
    ca_policy, ee_policy = _policies()
    try:
        verifier = (PolicyBuilder().store(Store(list(anchors))).time(now)
                    .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
                    .build_server_verifier(verification_subject(name)))
        return verifier.verify(leaf, list(pool))
    except (VerificationError, ValueError) as exc:
        return str(exc)


def structure_problem(chain: Sequence[x509.Certificate]) -> ChainProblem | None:
    """tls.crt's shape: the leaf first, no certificate twice."""
    seen: set[bytes] = set()
    for cert in chain:
        if der(cert) in seen:
            return ChainProblem("DuplicateCertificate", f"tls.crt holds {name_of(cert)!r} more than once: "
                                "it must hold the leaf, then each intermediate once")
        seen.add(der(cert))
    if len(chain) > 1 and _is_ca(chain[0]) and not all(_is_ca(c) for c in chain[1:]):
        return ChainProblem("LeafNotFirst", f"tls.crt starts with {name_of(chain[0])!r}, a CA certificate: the "
                            "server's own certificate (the leaf) must come first, then its intermediates")
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    ext = _ext(cert, x509.BasicConstraints)
    return ext is not None and bool(ext.value.ca)  # type: ignore[attr-defined]


def verify_chain(chain: Sequence[x509.Certificate], ca_certs: Sequence[x509.Certificate] | None,
                 dns_names: Sequence[str], ip_addresses: Sequence[str],
                 now: datetime) -> tuple[list[x509.Certificate] | None, list[ChainProblem]]:
    """(the verified path leaf..root, []) when a verify-full client accepts the chain for every
    declared name; otherwise (None or the path, problems), the first problem first."""
    first = structure_problem(chain)
    if first is not None:
        return None, [first]
    leaf = chain[0]
    if ca_certs is None:
        anchors: list[x509.Certificate] = list(system_roots())
        pool = list(chain[1:])
    else:
        anchors = [c for c in ca_certs if is_self_signed(c)]
        pool = [*chain[1:], *(c for c in ca_certs if not is_self_signed(c))]
    probe = _probe_name(leaf)
    result = _verify(leaf, pool, anchors, probe or "invalid.", now) if anchors else "no trust anchor"
    if isinstance(result, str):
        return None, [explain(leaf, pool, anchors, ca_certs is None, now, result)]
    path = result
    weak = next((p for p in (_key_problem(c, f"{_role(i, len(path))} {name_of(c)!r}") for i, c in enumerate(path))
                 if p), None)
    if weak is not None:
        return None, [weak]
    missing = [n for n in [*dns_names, *ip_addresses] if isinstance(_verify(leaf, pool, anchors, n, now), str)]
    if missing:
        return path, [names_problem(leaf, missing)]
    return path, []


def names_problem(leaf: x509.Certificate, missing: Sequence[str]) -> ChainProblem:
    have = _probe_names(leaf)
    return ChainProblem("NamesNotCovered", f"the certificate does not cover {', '.join(missing)} "
                        f"(its names: {', '.join(have) or 'none'})")


def _probe_names(leaf: x509.Certificate) -> list[str]:
    ext = _ext(leaf, x509.SubjectAlternativeName)
    if ext is None:
        return []
    san = ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    return [*san.get_values_for_type(x509.DNSName), *(str(i) for i in san.get_values_for_type(x509.IPAddress))]


def _role(index: int, length: int) -> str:
    if index == 0:
        return "the certificate"
    return "the root CA" if index == length - 1 else "the intermediate"


def _key_problem(cert: x509.Certificate, who: str) -> ChainProblem | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return ChainProblem("WeakKey", f"{who} has a {key.key_size}-bit RSA key; clients refuse keys below "
                            f"{MIN_RSA_BITS} bits")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in CURVES:
        return ChainProblem("WeakKey", f"{who} uses the curve {key.curve.name}, which TLS clients cannot use: "
                            "use P-256, P-384 or P-521")
    return None


def _cert_problem(cert: x509.Certificate, index: int, below: int, where: str, role: str,
                  leaf: x509.Certificate, now: datetime) -> ChainProblem | None:
    """The first rule `cert` breaks at position `index` (0 = leaf) with `below` CAs under it."""
    who = f"{role} {name_of(cert)!r}{where}"
    problem = _common_problem(cert, index, who, now)
    if problem is not None:
        return problem
    if index == 0:
        return _leaf_problem(cert, who, _ext(cert, x509.BasicConstraints))
    return _issuer_problem(cert, below, who, leaf)


def _common_problem(cert: x509.Certificate, index: int, who: str, now: datetime) -> ChainProblem | None:
    """Rules for every certificate of the chain: validity, key, signature, critical extensions."""
    if now < cert.not_valid_before_utc:
        return ChainProblem("NotYetValid", f"{who} is not valid before {k8s_time(cert.not_valid_before_utc)}")
    if now >= cert.not_valid_after_utc:
        return ChainProblem("Expired", f"{who} expired at {k8s_time(cert.not_valid_after_utc)}")
    weak = _key_problem(cert, who)
    if weak is not None:
        return weak
    digest = cert.signature_hash_algorithm
    # a root's signature on itself is not checked by clients
    if isinstance(digest, WEAK_HASHES) and not (index > 0 and is_self_signed(cert)):
        algo = "SHA-1" if isinstance(digest, hashes.SHA1) else "MD5"
        return ChainProblem("WeakSignature", f"{who} is signed with {algo}, which clients refuse: reissue it "
                            "with SHA-256 or better")
    unknown = next((e for e in cert.extensions if e.critical and isinstance(e.value, x509.UnrecognizedExtension)),
                   None)
    if unknown is not None:
        return ChainProblem("UnknownCriticalExtension", f"{who} has a critical extension clients do not know "
                            f"({unknown.oid.dotted_string}), so they refuse it")
    return None


def _issuer_problem(cert: x509.Certificate, below: int, who: str, leaf: x509.Certificate) -> ChainProblem | None:
    """Rules for a certificate that issued another: a CA, allowed to sign, this deep, for these names."""
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.value.ca:  # type: ignore[attr-defined]
        state = "has no basicConstraints" if bc is None else "says CA:FALSE"
        return ChainProblem("IssuerNotCa", f"{who} issued a certificate below it but {state}: clients accept "
                            "only CA certificates (basicConstraints CA:TRUE) as issuers")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not ku.value.key_cert_sign:  # type: ignore[attr-defined]
        state = "has no keyUsage" if ku is None else "has a keyUsage without keyCertSign"
        return ChainProblem("IssuerNotCa", f"{who} {state}: a CA certificate needs keyUsage keyCertSign to "
                            "issue certificates")
    path_len = bc.value.path_length  # type: ignore[attr-defined]
    if path_len is not None and below > path_len:
        return ChainProblem("PathTooLong", f"{who} allows {path_len} intermediate CA(s) below it "
                            f"(pathLenConstraint {path_len}), the chain has {below}")
    nc = _ext(cert, x509.NameConstraints)
    outside = _outside_constraints(leaf, nc.value) if nc is not None else []  # type: ignore[arg-type]
    if outside:
        return ChainProblem("NameConstraints", f"{who} may not issue for {', '.join(outside)}: its "
                            "nameConstraints exclude it or do not permit it")
    return None


def _leaf_problem(cert: x509.Certificate, who: str, bc: x509.Extension[x509.ExtensionType] | None) -> ChainProblem | None:
    if bc is not None and bc.value.ca:  # type: ignore[attr-defined]
        return ChainProblem("LeafIsCa", f"{who} is a CA certificate (basicConstraints CA:TRUE); a server needs a "
                            "leaf certificate issued by the CA")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku.value:  # type: ignore[operator]
        return ChainProblem("NotForServers", f"{who} is not for servers: its extendedKeyUsage lacks serverAuth "
                            "(cert-manager: usages must include 'server auth')")
    if not _probe_names(cert):
        return ChainProblem("NamesNotCovered", f"{who} has no subjectAltName: clients match the server's name "
                            "only against subjectAltName DNS/IP entries")
    return None


def _outside_constraints(leaf: x509.Certificate, nc: x509.NameConstraints) -> list[str]:
    names = _probe_names(leaf)
    out = []
    for name in names:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            ip = None
        kinds = x509.IPAddress if ip is not None else x509.DNSName
        permitted = [s for s in nc.permitted_subtrees or [] if isinstance(s, kinds)]
        excluded = [s for s in nc.excluded_subtrees or [] if isinstance(s, kinds)]
        if any(_in_subtree(name, ip, s) for s in excluded) or (permitted and
                                                                not any(_in_subtree(name, ip, s) for s in permitted)):
            out.append(name)
    return out


def _in_subtree(name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, tree: x509.GeneralName) -> bool:
    if ip is not None and isinstance(tree, x509.IPAddress):
        return isinstance(tree.value, ipaddress.IPv4Network | ipaddress.IPv6Network) and ip in tree.value
    base = str(tree.value).lower().lstrip(".")
    name = name.lower().rstrip(".")
    return name == base or name.endswith("." + base)


def _issuers(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> tuple[list[x509.Certificate], bool]:
    """Candidates whose signature on `cert` verifies; and whether any candidate had the issuer's name."""
    named = [c for c in candidates if c.subject == cert.issuer]
    good = []
    for c in named:
        try:
            cert.verify_directly_issued_by(c)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        good.append(c)
    return good, bool(named)


def explain(leaf: x509.Certificate, pool: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate],
            no_ca: bool, now: datetime, verifier_said: str) -> ChainProblem:
    """The first problem, in plain words, of a chain the verifier refused."""
    path = [leaf]
    anchor_ders = {der(a) for a in anchors}
    while True:
        cert, index = path[-1], len(path) - 1
        at_anchor = der(cert) in anchor_ders
        where = (" in ca.crt" if at_anchor and not no_ca else "") if index else ""
        role = "the certificate" if index == 0 else ("the root CA" if at_anchor else "the intermediate")
        problem = _cert_problem(cert, index, max(index - 1, 0), where, role, leaf, now)
        if problem is not None:
            return problem
        if at_anchor:
            break
        found, named = _issuers(cert, [*anchors, *pool])
        fresh = [c for c in found if der(c) not in {der(p) for p in path}]
        if found and not fresh:
            return ChainProblem("UntrustedChain", "the chain loops (" + " -> ".join(repr(name_of(c)) for c in path)
                                + f" -> {name_of(found[0])!r}) without reaching a root "
                                + ("in the system trust store" if no_ca else "in ca.crt"))
        if not found:
            return _no_issuer(cert, named, no_ca, is_self_signed(cert))
        path.append(next((c for c in fresh if der(c) in anchor_ders), fresh[0]))
    said = verifier_said.removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    said = said.split(" (encountered processing")[0]
    return ChainProblem("UntrustedChain", f"a verifying client would refuse the chain ({said})")


def _no_issuer(cert: x509.Certificate, named: bool, no_ca: bool, self_signed: bool) -> ChainProblem:
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer_name = str(issuer[0].value) if issuer else cert.issuer.rfc4514_string()
    if no_ca:
        return ChainProblem("UntrustedChain", f"the Secret has no ca.crt and {name_of(cert)!r} does not lead to a "
                            "root in the system trust store: add ca.crt holding the root CA clients trust "
                            "(their sslrootcert)")
    if self_signed:
        return ChainProblem("UntrustedChain", f"the chain ends at the root {name_of(cert)!r}, which is not in "
                            "ca.crt: ca.crt must hold the root CA clients trust (their sslrootcert)")
    if named:
        return ChainProblem("UntrustedChain", f"the signature on {name_of(cert)!r} does not verify with the key of "
                            f"{issuer_name!r} in tls.crt/ca.crt (another CA with the same name?)")
    return ChainProblem("UntrustedChain", f"the chain stops at {name_of(cert)!r}: neither tls.crt nor ca.crt holds "
                        f"{issuer_name!r}, which issued it; tls.crt must hold the intermediates and ca.crt the "
                        "root CA (self-signed) clients trust")
