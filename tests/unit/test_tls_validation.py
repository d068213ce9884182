"""Every rule a key pair must pass before it is delivered, and the fingerprint/SAN checks."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from pgcurator.tls.validate import leaf_of_pem, pem_blocks, validate_secret
from pgcurator_devenv.certs import issue, make_ca, new_key, secret_data

NAME = "postgresql.alt-database.svc.cluster.local"


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    return make_ca()


def reasons(v):  # type: ignore[no-untyped-def]
    return [p.reason for p in v.problems]


def test_valid_pair_passes_with_fingerprint_serial_and_material(ca) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME])
    v = validate_secret(secret_data(leaf, ca), dns_names=[NAME])
    assert v.ok and v.material is not None
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    assert v.material.leaf.fingerprint == hashlib.sha256(der).hexdigest()
    assert v.material.leaf.serial == format(leaf.cert.serial_number, "X")
    assert v.material.cert_pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert "PRIVATE KEY" in v.material.key_pem and v.material.ca_pem is not None
    assert "key_pem" not in repr(v.material)  # the key never shows in logs


@pytest.mark.parametrize("pkcs8", [False, True])
@pytest.mark.parametrize("algorithm", ["RSA", "ECDSA"])
def test_key_encodings_cert_manager_writes_are_accepted(ca, algorithm: str, pkcs8: bool) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME], algorithm=algorithm)
    v = validate_secret(secret_data(leaf, ca, key_pem=leaf.key_pem(pkcs8=pkcs8)))
    assert v.ok, v.summary()


@pytest.mark.parametrize("missing", ["tls.crt", "tls.key"])
def test_missing_keys(ca, missing: str) -> None:  # type: ignore[no-untyped-def]
    data = secret_data(issue(ca, [NAME]), ca)
    del data[missing]
    v = validate_secret(data)
    assert reasons(v) == ["SecretIncomplete"] and missing in v.summary() and v.material is None


def test_unparsable_certificate(ca) -> None:  # type: ignore[no-untyped-def]
    data = secret_data(issue(ca, [NAME]), ca)
    data["tls.crt"] = b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n"
    assert reasons(validate_secret(data)) == ["CertificateUnreadable"]
    data["tls.crt"] = b"hello"
    assert reasons(validate_secret(data)) == ["CertificateUnreadable"]


def test_unparsable_and_encrypted_key(ca) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME])
    data = secret_data(leaf, ca, key_pem=b"garbage")
    assert reasons(validate_secret(data)) == ["KeyUnreadable"]
    encrypted = leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw"))
    v = validate_secret(secret_data(leaf, ca, key_pem=encrypted))
    assert reasons(v) == ["KeyUnreadable"] and "encrypted" in v.summary()


def test_key_of_another_certificate_is_a_mismatch(ca) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME])
    other = new_key()
    wrong = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    v = validate_secret(secret_data(leaf, ca, key_pem=wrong))
    assert reasons(v) == ["KeyMismatch"] and v.material is None
    assert v.leaf is not None and v.leaf.serial == format(leaf.cert.serial_number, "X")  # still reported


def test_validity_window(ca) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    future = issue(ca, [NAME], not_before=now + dt.timedelta(days=1))
    assert reasons(validate_secret(secret_data(future, ca), now=now)) == ["NotYetValid"]
    old = issue(ca, [NAME], not_before=now - dt.timedelta(days=10), lifetime=dt.timedelta(days=1))
    assert reasons(validate_secret(secret_data(old, ca), now=now)) == ["Expired"]
    edge = issue(ca, [NAME], not_before=now - dt.timedelta(days=1), lifetime=dt.timedelta(days=1))
    after = edge.cert.not_valid_after_utc + dt.timedelta(seconds=1)  # notAfter itself is valid (RFC 5280)
    assert reasons(validate_secret(secret_data(edge, ca), now=after)) == ["Expired"]


def test_declared_names_must_be_covered(ca) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME, "*.pg.example.com"], ip_addresses=["10.0.0.5"])
    data = secret_data(leaf, ca)
    assert validate_secret(data, dns_names=[NAME, "a.pg.example.com"], ip_addresses=["10.0.0.5"]).ok
    v = validate_secret(data, dns_names=["other.example.com", "a.b.pg.example.com"], ip_addresses=["10.0.0.6"])
    assert reasons(v) == ["NamesNotCovered"]
    assert "other.example.com" in v.summary() and "a.b.pg.example.com" in v.summary() and "10.0.0.6" in v.summary()


@pytest.mark.parametrize(("name", "sans", "covered"), [
    ("db.example.com", ["db.example.com"], True),
    ("DB.Example.com", ["db.example.com"], True),
    ("db.example.com", ["*.example.com"], True),
    ("example.com", ["*.example.com"], False),
    ("a.db.example.com", ["*.example.com"], False),
    ("db.example.com", ["*.other.com", "x.example.com"], False),
    ("*.example.com", ["*.example.com"], True),
    ("*.example.com", ["db.example.com"], False),
])
def test_san_matching(ca, name: str, sans: list[str], covered: bool) -> None:  # type: ignore[no-untyped-def]
    v = validate_secret(secret_data(issue(ca, sans), ca), dns_names=[name])
    assert v.ok is covered, v.summary()
    if not covered:
        assert reasons(v) == ["NamesNotCovered"]


def test_chain_to_ca(ca) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME])
    other_ca = make_ca("another CA")
    v = validate_secret(secret_data(leaf, other_ca))
    assert reasons(v) == ["UntrustedChain"]
    # same subject name, different key: the signature check catches it
    impostor = make_ca("pgcurator test CA")
    assert reasons(validate_secret(secret_data(leaf, impostor))) == ["UntrustedChain"]
    # no ca.crt: a private CA's chain leads to nothing a client trusts
    data = secret_data(leaf, ca)
    del data["ca.crt"]
    v = validate_secret(data)
    assert reasons(v) == ["UntrustedChain"] and "no ca.crt" in v.summary()
    data["ca.crt"] = b"junk"
    assert reasons(validate_secret(data)) == ["CaUnreadable"]


def test_chain_through_intermediate_and_self_signed(ca) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from pgcurator_devenv.certs import Issued

    inter_key = new_key()
    now = dt.datetime.now(dt.UTC)
    inter_cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "inter")]))
        .issuer_name(ca.cert.subject).public_key(inter_key.public_key()).serial_number(7)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    inter = Issued(inter_cert, inter_key)
    leaf = issue(inter, [NAME])
    assert validate_secret(secret_data(leaf, ca, chain=[inter])).ok
    missing = validate_secret(secret_data(leaf, ca))  # intermediate missing
    assert reasons(missing) == ["UntrustedChain"] and "'inter'" in missing.summary()
    selfsigned = issue(None, [NAME])
    assert validate_secret(secret_data(selfsigned, None)).ok  # ca.crt is the certificate itself


def test_several_problems_are_all_reported(ca) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    old = issue(ca, ["x.example.com"], not_before=now - dt.timedelta(days=10), lifetime=dt.timedelta(days=1))
    wrong = issue(ca, [NAME])
    v = validate_secret(secret_data(old, make_ca("x"), key_pem=wrong.key_pem()), dns_names=[NAME], now=now)
    # the key, the first problem of the chain, and the names the certificate lacks
    assert reasons(v) == ["KeyMismatch", "Expired", "NamesNotCovered"]


def test_pem_normalisation_and_leaf_of_file(ca) -> None:  # type: ignore[no-untyped-def]
    leaf = issue(ca, [NAME])
    crlf = b"junk before\r\n" + leaf.cert_pem.replace(b"\n", b"\r\n") + b"trailing"
    blocks = pem_blocks(crlf)
    assert len(blocks) == 1 and "\r" not in blocks[0][1]
    assert leaf_of_pem(crlf).serial == format(leaf.cert.serial_number, "X")
    with pytest.raises(ValueError):
        leaf_of_pem(b"no pem here")


def test_without_ca_crt_the_chain_must_lead_to_the_system_trust_store(ca, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As `sslrootcert=system`: a publicly issued certificate needs no ca.crt; a private one does."""
    from pgcurator.tls import verify

    data = secret_data(issue(ca, [NAME]), ca)
    del data["ca.crt"]
    monkeypatch.setattr(verify, "system_roots", lambda: (ca.cert,))
    v = validate_secret(data, dns_names=[NAME])
    assert v.ok and v.material is not None and v.material.ca_pem is None  # the client check uses the system store
    monkeypatch.setattr(verify, "system_roots", lambda: (make_ca("Some Public Root").cert,))
    v = validate_secret(data, dns_names=[NAME])
    assert reasons(v) == ["UntrustedChain"] and "system trust store" in v.summary()


def test_an_unexplained_refusal_still_reads_plainly(ca) -> None:  # type: ignore[no-untyped-def]
    from pgcurator.tls.verify import explain

    leaf = issue(ca, [NAME])
    p = explain(leaf.cert, [], [ca.cert], False, dt.datetime.now(dt.UTC),
                "validation failed: candidates exhausted: something new (encountered processing <Certificate(...)>)")
    assert p.reason == "UntrustedChain" and p.message == "a verifying client would refuse the chain (something new)"
