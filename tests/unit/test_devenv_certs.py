"""The dev environment's one certificate builder: the control plane's PKI verifies as a chain
(Go's verifier needs the key identifiers and a critical CA BasicConstraints), and the TLS tests'
leaves keep their shape (server auth, SANs, no CA constraints)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from pgcurator_devenv.certs import issue, make_ca
from pgcurator_devenv.controlplane import _Pki


def test_control_plane_pki_verifies(tmp_path: Path) -> None:
    pki = _Pki(tmp_path)
    pki.generate()
    ca = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_crt.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_crt.read_bytes())
    verifier = PolicyBuilder().store(Store([ca])).time(dt.datetime.now(dt.UTC)).build_server_verifier(
        x509.DNSName("kubernetes.default.svc"))
    verifier.verify(serving, [])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = admin.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert list(admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0


def test_tls_test_leaves_keep_their_shape() -> None:
    ca = make_ca()
    leaf = issue(ca, ["db.example"], ["127.0.0.1"])
    assert leaf.cert.issuer == ca.cert.subject
    names = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["db.example"]
    assert {e.oid for e in leaf.cert.extensions} == {x509.ExtendedKeyUsage.oid, x509.SubjectAlternativeName.oid}
    leaf.cert.verify_directly_issued_by(ca.cert)
