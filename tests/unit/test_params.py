"""Secrets -> connection parameters, in every layout, read as libpq reads them, without leaking
the password. (The corpus checked against libpq itself is tests/unit/test_secret_corpus.py.)"""

from __future__ import annotations

import base64
import ssl
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgcurator.db.params import connect_kwargs, params_from_secret, params_from_url
from pgcurator.errors import SecretProblem
from pgcurator.models.common import DatabaseRef

REF = DatabaseRef.model_validate({"secretName": "app"})
CA_REF = DatabaseRef.model_validate({"secretName": "app", "caSecret": {"name": "db-ca"}})
CA_PEM = "-----BEGIN CERTIFICATE-----\nnot parsed here\n-----END CERTIFICATE-----\n"


def b64(**kv: str) -> dict[str, str]:
    return {k.replace("_", "-"): base64.b64encode(v.encode()).decode() for k, v in kv.items()}


def refusal(data: dict[str, str], ref: DatabaseRef = REF, ca_pem: str | None = None) -> str:
    with pytest.raises(SecretProblem) as err:
        params_from_secret("ns/app", data, ref, ca_pem)
    assert err.value.reason == "SecretInvalid"
    return err.value.message


def test_uri_layout() -> None:
    p = params_from_secret("ns/app", b64(uri="postgresql://app:s%40cret@db.example:6432/appdb?sslmode=require"), REF)
    assert (p.host, p.port, p.dbname, p.user, p.password, p.ssl_mode) == (
        "db.example", 6432, "appdb", "app", "s@cret", "require")


def test_cloudnativepg_app_secret_layout() -> None:
    data = b64(host="cluster-rw", port="5432", dbname="app", user="app", username="app", password="pw",
               uri="postgresql://app:pw@cluster-rw.ns:5432/app")
    # `uri` wins: its host is namespace-qualified, so it resolves from the operator's namespace too
    p = params_from_secret("ns/app", data, REF)
    assert (p.host, p.port, p.dbname, p.user) == ("cluster-rw.ns", 5432, "app", "app")
    del data["uri"]
    p = params_from_secret("ns/app", data, REF)
    assert (p.host, p.port, p.dbname, p.user) == ("cluster-rw", 5432, "app", "app")


def test_username_key_and_overrides() -> None:
    ref = DatabaseRef.model_validate({"secretName": "app", "dbname": "other", "sslMode": "disable"})
    p = params_from_secret("ns/app", b64(host="h", username="u", password="pw"), ref)
    assert (p.user, p.dbname, p.ssl_mode, p.port) == ("u", "other", "disable", 5432)


def test_zalando_secret_takes_host_and_dbname_from_the_spec() -> None:
    data = b64(username="app_owner", password="pw")
    msg = refusal(data)
    assert "unix socket" in msg and "spec.database.host" in msg
    ref = DatabaseRef.model_validate({"secretName": "app", "host": "acid-main.db", "port": 5433, "dbname": "shop"})
    p = params_from_secret("ns/app", data, ref)
    assert (p.addresses, p.dbname, p.user) == ((("acid-main.db", 5433),), "shop", "app_owner")


def test_missing_dbname_defaults_to_the_user_as_in_libpq() -> None:
    """Was: the database defaulted to `postgres`; libpq (and psql) use the user name."""
    p = params_from_secret("ns/app", b64(uri="postgresql://alice:pw@h"), REF)
    assert p.dbname == "alice"
    p = params_from_secret("ns/app", b64(host="h", user="bob", password="pw"), REF)
    assert p.dbname == "bob"


def test_unescaped_password_is_refused_with_the_fix_not_as_an_invalid_port() -> None:
    """Was: 'has an invalid port' for a '/' in the password, and a silent wrong parse for '@'."""
    for uri in ("postgresql://app:se/cret@h/db", "postgresql://app:se@cret@h/db", "postgresql://app:5O%@h/db"):
        msg = refusal(b64(uri=uri))
        assert "percent-encode" in msg and "key 'uri'" in msg, msg
        for piece in ("se/cret", "se@cret", "cret@h", "5O%"):
            assert piece not in msg


def test_invalid_sslmode_is_refused() -> None:
    """Was: accepted, and later reported as 'connection ... was lost'."""
    msg = refusal(b64(uri="postgresql://u:pw@h/db?sslmode=verify_full"))
    assert "sslmode" in msg and "verify-full" in msg and "key 'uri'" in msg


def test_sslrootcert_in_the_uri_needs_the_ca_secret() -> None:
    """Was: silently ignored."""
    uri = "postgresql://u:pw@h/db?sslmode=verify-full&sslrootcert=/etc/ssl/ca.crt"
    msg = refusal(b64(uri=uri))
    assert "sslrootcert" in msg and "spec.database.caSecret" in msg
    p = params_from_secret("ns/app", b64(uri=uri), CA_REF, CA_PEM)
    assert (p.ssl_mode, p.ca_pem) == ("verify-full", CA_PEM)


def test_verify_full_without_a_ca_names_the_ca_secret_not_a_file() -> None:
    """Was: accepted, then asyncpg looked for ~/.postgresql/root.crt inside the operator's container."""
    msg = refusal(b64(uri="postgresql://u:pw@h/db?sslmode=verify-full"))
    assert "spec.database.caSecret" in msg and "root.crt" not in msg


def test_bracketed_ipv6_host_key_is_refused_with_the_fix_and_uri_brackets_work() -> None:
    """Was: '[::1]' in the host key was passed on and failed to resolve."""
    msg = refusal(b64(host="[::1]", user="u", password="pw"))
    assert "key 'host'" in msg and "without brackets" in msg
    assert params_from_secret("ns/app", b64(host="::1", user="u", password="pw"), REF).host == "::1"
    p = params_from_secret("ns/app", b64(uri="postgresql://u:pw@[2001:db8::7]:6543/db"), REF)
    assert (p.host, p.port, p.display) == ("2001:db8::7", 6543, "u@[2001:db8::7]:6543/db")


def test_multi_host_uri_keeps_every_host_and_target_session_attrs() -> None:
    uri = "postgresql://app:pw@pg-0.pg:5432,pg-1.pg:5433/app?target_session_attrs=read-write"
    p = params_from_secret("ns/app", b64(uri=uri), REF)
    assert p.addresses == (("pg-0.pg", 5432), ("pg-1.pg", 5433))
    kw = connect_kwargs(p)
    assert (kw["host"], kw["port"], kw["target_session_attrs"]) == (["pg-0.pg", "pg-1.pg"], [5432, 5433], "read-write")
    assert "pg-1.pg:5433" in p.display and "pg-1.pg:5433" in p.pool_key


def test_connect_kwargs_build_tls_without_reading_files() -> None:
    plain = connect_kwargs(params_from_secret("ns/app", b64(uri="postgresql://u:pw@h/db"), REF))
    assert plain["ssl"] == "prefer" and plain["host"] == "h" and plain["port"] == 5432
    assert plain["password"] == "pw" and plain["server_settings"] == {}
    req = connect_kwargs(params_from_secret("ns/app", b64(uri="postgresql://u:pw@h/db?sslmode=require"), REF))["ssl"]
    assert isinstance(req, ssl.SSLContext) and req.verify_mode == ssl.CERT_NONE
    assert req.minimum_version == ssl.TLSVersion.TLSv1_2


def test_options_are_sent_and_ignored_keywords_are_ignored() -> None:
    uri = "postgresql://u:pw@h/db?options=-c%20search_path%3Dapp&application_name=web&connect_timeout=3"
    kw = connect_kwargs(params_from_secret("ns/app", b64(uri=uri), REF))
    assert kw["server_settings"] == {"options": "-c search_path=app"}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "neither a 'uri' key"),
        (b64(host="h", user="u"), "missing: password"),
        (b64(host="h", password="pw"), "'user' (or 'username') key"),
        (b64(uri="mysql://x@y/z"), "not a postgresql://"),
        (b64(uri="jdbc:postgresql://h/db"), "jdbc-uri"),
        (b64(host="h", user="u", password="pw", port="99999"), "invalid port '99999'"),
        ({"uri": "%%%not-base64"}, "not valid base64"),
        (b64(uri="postgresql://u:pw@h/db\n"), "ends with a newline"),
        (b64(host="h", user="u", password="pw\n"), "key 'password': ends with a newline"),
        (b64(uri="postgresql://u:pw@h/db?foo=1"), "'foo', which libpq does not know"),
        (b64(uri="postgresql://u:pw@h/db?sslcert=/c.crt"), "client certificate"),
        (b64(uri="postgresql://u:pw@h/db?hostaddr=10.0.0.1"), "hostaddr"),
        (b64(uri="postgresql://u:pw@%2Fvar%2Frun%2Fpostgresql/db"), "unix socket"),
        (b64(host="h1,h2,h3", port="5432,5433", user="u", password="pw"), "2 ports for 3 hosts"),
        (b64(uri="postgresql://u:pw@h/db?target_session_attrs=master"), "target_session_attrs"),
        (b64(uri="postgresql://u:pw@h/db?channel_binding=require"), "channel binding"),
        (b64(host="h", user="u", username="v", password="pw"), "'user' and 'username' differ"),
    ],
)
def test_bad_secrets_refused(data: dict[str, str], needle: str) -> None:
    assert needle in refusal(data)


def test_ca_secret_with_a_non_verifying_sslmode_is_refused() -> None:
    msg = refusal(b64(uri="postgresql://u:pw@h/db"), CA_REF, CA_PEM)
    assert "sslmode=prefer" in msg and "spec.database.sslMode: verify-full" in msg


def test_cli_url_follows_the_same_rules() -> None:
    assert params_from_url("postgres://u:pw@h:6000").addresses == (("h", 6000),)
    with pytest.raises(SecretProblem, match="--database-url"):
        params_from_url("postgresql://u:pw@h/db?sslmode=bogus")


def test_a_password_spread_over_host_port_and_dbname_does_not_show() -> None:
    """libpq reads 'u:123/x@h/db' (no '@' before the first '/') as host u, port 123, dbname x@h/db."""
    p = params_from_secret("ns/app", b64(uri="postgresql://u:1234/x@h/db?user=app&password=1234/x"), REF)
    assert (p.host, p.port, p.dbname, p.password) == ("u", 1234, "x@h/db", "1234/x")
    assert "1234/x" not in p.display and "1234/x" not in p.pool_key


def test_password_never_in_repr_key_or_display() -> None:
    p = params_from_secret("ns/app", b64(uri="postgresql://app:hunter2secret@h/db"), REF)
    for text in (repr(p), p.pool_key, p.display):
        assert "hunter2secret" not in text
    q = params_from_secret("ns/app", b64(uri="postgresql://app:other@h/db"), REF)
    assert p.pool_key != q.pool_key


# "Q7" in the middle keeps a generated password from being a word of a fixed message ("option").
_PIECES = st.text(alphabet=string.printable.strip() + "äß€", min_size=2, max_size=12)
PASSWORDS = st.tuples(_PIECES, _PIECES).map(lambda ab: f"{ab[0]}Q7{ab[1]}")


# Query parameters that are refused, or not: a refusal for another reason must not show the password either.
EXTRAS = st.sampled_from(["", "?sslmode=bogus", "?target_session_attrs=master", "?foo=1", "?sslrootcert=/ca",
                          "?sslmode=verify-full", "?hostaddr=10.0.0.1", "?application_name=x"])


@settings(max_examples=500, deadline=None)
@given(password=PASSWORDS, escaped=st.booleans(), layout=st.sampled_from(["uri", "keys", "kv"]), extra=EXTRAS)
def test_no_message_or_repr_contains_the_password(password: str, escaped: bool, layout: str, extra: str) -> None:
    """For any password, written correctly or not: accepted with exactly that password, or refused
    with a message that does not contain it; never in a repr, key or display."""
    from urllib.parse import quote

    if layout == "uri":
        written = quote(password, safe="") if escaped else password
        data = b64(uri=f"postgresql://app:{written}@db.example:5432/app{extra}")
    elif layout == "kv":
        written = password.replace("\\", "\\\\").replace("'", "\\'") if escaped else password
        data = b64(uri=f"host=db.example user=app password='{written}' dbname=app")
    else:
        data = b64(host="db.example", user="app", password=password, port="nope" if not escaped else "5432")
    try:
        p = params_from_secret("ns/app", data, REF)
    except SecretProblem as exc:
        assert password not in exc.message and password not in repr(exc)
        return
    for text in (repr(p), p.pool_key, p.display, str(connect_kwargs(p)["host"])):
        assert password not in text
    if escaped and not extra:
        assert p.password == password and p.host == "db.example"


def _ca_pem() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(("mode", "check_hostname"), [("verify-full", True), ("verify-ca", False), ("require", False)])
def test_a_ca_makes_verifying_contexts_as_libpq_does(mode: str, check_hostname: bool) -> None:
    """verify-full checks names; verify-ca and (with a CA, as in libpq) require check the chain."""
    ca = _ca_pem()
    uri = f"postgresql://u:pw@db.example/app?sslmode={mode}&ssl_min_protocol_version=TLSv1.3"
    ctx = connect_kwargs(params_from_secret("ns/app", b64(uri=uri), CA_REF, ca))["ssl"]
    assert isinstance(ctx, ssl.SSLContext)
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, check_hostname)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and len(ctx.get_ca_certs()) == 1
