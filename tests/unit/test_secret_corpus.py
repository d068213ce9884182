"""The Secret corpus: for each Secret layout and connection string, pgcurator's reading equals
libpq's own (hosts, ports, database, user, sslmode, target_session_attrs), or pgcurator refuses
with a message naming the key and the fix — never accepting what libpq refuses, never reading it
differently, never quoting the password.

The reference is Debian's libpq.so.5 through ctypes (tests/libpq.py); pgcurator parses with the
libpq bundled in psycopg's wheel plus db/conninfo.py, so two libpq builds are compared.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgcurator.db.params import ConnParams, params_from_secret
from pgcurator.errors import SecretProblem
from pgcurator.models.common import DatabaseRef

from .. import libpq
from ..figures import record

CA_PEM = "-----BEGIN CERTIFICATE-----\nnot parsed here\n-----END CERTIFICATE-----\n"
ACTIONS = ("e.g.", "write", "set ", "add ", "remove", "use ", "put ", "give ", "keep ", "name the", "encode")


def go_escape(text: str, keep: str) -> str:
    """Go's net/url escaping (as CloudNativePG and Crunchy PGO build their `uri`): unreserved
    characters and `keep` stay, every other byte becomes %XX."""
    out = []
    for byte in text.encode():
        c = chr(byte)
        out.append(c if c.isascii() and (c.isalnum() or c in "-_.~" + keep) else f"%{byte:02X}")
    return "".join(out)


def go_uri(user: str, password: str, host: str, dbname: str) -> str:
    """url.URL{Scheme: "postgresql", User: url.UserPassword(u, p), Host: h, Path: d}.String()"""
    userinfo = go_escape(user, "$&+,;=") + ":" + go_escape(password, "$&+,;=")
    return f"postgresql://{userinfo}@{host}/{go_escape(dbname, '$&+,/:;=@')}"


def cnpg_app(cluster: str, ns: str, password: str, user: str = "app", db: str = "app") -> dict[str, str]:
    """CloudNativePG's <cluster>-app Secret, key for key (pkg/specs/secrets.go, CreateSecret)."""
    host = f"{cluster}-rw"
    return {
        "username": user, "user": user, "password": password, "dbname": db, "host": host, "port": "5432",
        "pgpass": f"{host}:5432:{db}:{user}:{password}\n",
        "uri": go_uri(user, password, f"{host}.{ns}:5432", db),
        "jdbc-uri": f"jdbc:postgresql://{host}.{ns}:5432/{db}?password={go_escape(password, '')}&user={user}",
        "fqdn-uri": go_uri(user, password, f"{host}.{ns}.svc.cluster.local:5432", db),
        "fqdn-jdbc-uri": f"jdbc:postgresql://{host}.{ns}.svc.cluster.local:5432/{db}?user={user}",
    }


def pgo_user(cluster: str, ns: str, user: str, password: str, db: str | None,
             pgbouncer: bool = False) -> dict[str, str]:
    """Crunchy PGO v5's <cluster>-pguser-<user> Secret: dbname/uri only when the user has databases."""
    host = f"{cluster}-primary.{ns}.svc"
    data = {"host": host, "port": "5432", "user": user, "password": password,
            "verifier": "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"}
    if db is not None:
        data |= {"dbname": db, "uri": go_uri(user, password, f"{host}:5432", db),
                 "jdbc-uri": f"jdbc:postgresql://{host}:5432/{db}?password={go_escape(password, '')}&user={user}"}
    if pgbouncer:
        bouncer = f"{cluster}-pgbouncer.{ns}.svc"
        data |= {"pgbouncer-host": bouncer, "pgbouncer-port": "5432",
                 "pgbouncer-uri": go_uri(user, password, f"{bouncer}:5432", db or user)}
    return data


@dataclass
class Case:
    name: str
    data: dict[str, str]  # the Secret's values, before base64
    spec: dict[str, Any] = field(default_factory=dict)  # spec.database besides secretName
    ca: bool = False  # spec.database.caSecret is set


def uri(name: str, text: str, **kw: Any) -> Case:
    return Case(name, {"uri": text}, **kw)


def keys(name: str, **data: str) -> Case:
    return Case(name, data)


CNPG_PW = "W3kQ9vT2sLm8Xn4pRz7YbC1dHf6Gj0Ke5Ua2Vi9OoP3qSt8Uw4Xy7Za1Bc6De0Fg"
PGO_PW = "p4$s:w/rd?x@y#z%&+;=!*()[]"

CORPUS: list[Case] = [
    # CloudNativePG
    Case("cnpg-app", cnpg_app("pg-main", "shop", CNPG_PW)),
    Case("cnpg-app-keys-only", {k: v for k, v in cnpg_app("pg-main", "shop", CNPG_PW).items() if "uri" not in k}),
    Case("cnpg-app-special-password", cnpg_app("pg-main", "shop", "a:b@c/d?e#f%g h", user="owner", db="orders")),
    Case("cnpg-superuser-dbname-from-spec", cnpg_app("pg-main", "shop", CNPG_PW, user="postgres", db="*"),
         spec={"dbname": "shop"}),
    Case("cnpg-user-supplied-basic-auth", {"username": "app", "password": "pw"}, spec={"host": "pg-main-rw.shop"}),
    Case("cnpg-app-sslmode-from-spec", cnpg_app("pg-main", "shop", CNPG_PW), spec={"sslMode": "require"}),
    Case("cnpg-app-verify-full-with-ca", cnpg_app("pg-main", "shop", CNPG_PW), spec={"sslMode": "verify-full"},
         ca=True),
    # Crunchy PGO
    Case("pgo-user-with-database", pgo_user("hippo", "postgres-operator", "rhino", PGO_PW, "zoo")),
    Case("pgo-user-without-database", pgo_user("hippo", "postgres-operator", "rhino", PGO_PW, None)),
    Case("pgo-with-pgbouncer-keys", pgo_user("hippo", "pgo", "rhino", PGO_PW, "zoo", pgbouncer=True)),
    Case("pgo-unicode-password", pgo_user("hippo", "pgo", "rhino", "pässwörd€", "zoo")),
    # Zalando: username/password only; the host (and database) come from the spec
    Case("zalando-without-host", {"username": "zalando", "password": "pw"}),
    Case("zalando-host-and-db-from-spec", {"username": "foo_user", "password": "pw"},
         spec={"host": "acid-minimal-cluster.default", "dbname": "foo"}),
    Case("zalando-host-only", {"username": "foo_user", "password": "pw"}, spec={"host": "acid-minimal-cluster"}),
    # percent-encoding
    uri("pw-at-encoded", "postgresql://app:Q7%40xz@db.example/app"),
    uri("pw-colon-encoded", "postgresql://app:Q7%3Axz@db.example/app"),
    uri("pw-slash-encoded", "postgresql://app:Q7%2Fxz@db.example/app"),
    uri("pw-question-encoded", "postgresql://app:Q7%3Fxz@db.example/app"),
    uri("pw-hash-encoded", "postgresql://app:Q7%23xz@db.example/app"),
    uri("pw-percent-encoded", "postgresql://app:100%25@db.example/app"),
    uri("pw-lowercase-hex", "postgresql://app:a%2fb@db.example/app"),
    uri("user-at-encoded", "postgresql://app%40tenant:pw@db.example/app"),
    uri("dbname-space", "postgresql://app:pw@db.example/my%20db"),
    uri("dbname-slash", "postgresql://app:pw@db.example/a%2Fb"),
    uri("pw-at-unescaped", "postgresql://app:Q7@xz@db.example/app"),
    uri("pw-slash-unescaped", "postgresql://app:Q7/xz@db.example/app"),
    uri("pw-question-unescaped", "postgresql://app:Q7?xz@db.example/app"),
    uri("pw-hash-unescaped", "postgresql://app:Q7#xz@db.example/app"),
    uri("pw-colon-unescaped", "postgresql://app:Q7:xz@db.example/app"),
    uri("bad-percent", "postgresql://app:Q7%zzxz@db.example/app"),
    uri("percent-nul", "postgresql://app:Q7%00xz@db.example/app"),
    # IPv6
    uri("ipv6-loopback", "postgresql://app:pw@[::1]/app"),
    uri("ipv6-with-port", "postgresql://app:pw@[2001:db8::5]:6432/app"),
    uri("ipv6-zone", "postgresql://app:pw@[fe80::1%25eth0]:5432/app"),
    uri("ipv6-unclosed", "postgresql://app:pw@[::1/app"),
    uri("ipv6-empty", "postgresql://app:pw@[]/app"),
    keys("host-key-ipv6", host="::1", user="app", password="pw"),
    keys("host-key-ipv6-brackets", host="[::1]", user="app", password="pw"),
    # several hosts
    uri("multi-host-read-write", "postgresql://app:pw@pg-0.pg:5432,pg-1.pg:5433/app?target_session_attrs=read-write"),
    uri("multi-host-default-port", "postgresql://app:pw@pg-0.pg,pg-1.pg/app"),
    uri("multi-host-one-port", "postgresql://app:pw@pg-0.pg,pg-1.pg:5433/app"),
    uri("multi-host-query", "postgresql:///app?host=pg-0.pg,pg-1.pg&port=5432,5433&user=app&password=pw"),
    uri("multi-host-empty-entry", "postgresql://app:pw@pg-0.pg,,pg-1.pg/app"),
    keys("multi-host-keys-one-port", host="pg-0.pg,pg-1.pg", port="6432", user="app", password="pw"),
    keys("multi-host-keys-port-mismatch", host="a,b,c", port="5432,5433", user="app", password="pw"),
    uri("tsa-primary", "postgresql://app:pw@a,b/app?target_session_attrs=primary"),
    uri("tsa-prefer-standby", "postgresql://app:pw@a,b/app?target_session_attrs=prefer-standby"),
    uri("tsa-read-only", "postgresql://app:pw@a,b/app?target_session_attrs=read-only"),
    uri("tsa-invalid", "postgresql://app:pw@a,b/app?target_session_attrs=master"),
    # sslmode
    *[uri(f"sslmode-{m}", f"postgresql://app:pw@db.example/app?sslmode={m}")
      for m in ("disable", "allow", "prefer", "require")],
    uri("sslmode-verify-ca-with-ca", "postgresql://app:pw@db.example/app?sslmode=verify-ca", ca=True),
    uri("sslmode-verify-full-with-ca", "postgresql://app:pw@db.example/app?sslmode=verify-full", ca=True),
    uri("sslmode-require-with-ca", "postgresql://app:pw@db.example/app?sslmode=require", ca=True),
    uri("sslmode-verify-full-without-ca", "postgresql://app:pw@db.example/app?sslmode=verify-full"),
    uri("sslmode-verify-ca-without-ca", "postgresql://app:pw@db.example/app?sslmode=verify-ca"),
    uri("sslmode-invalid", "postgresql://app:pw@db.example/app?sslmode=verify_full"),
    uri("sslmode-uppercase", "postgresql://app:pw@db.example/app?sslmode=REQUIRE"),
    uri("sslmode-empty", "postgresql://app:pw@db.example/app?sslmode="),
    uri("sslmode-spec-overrides-uri", "postgresql://app:pw@db.example/app?sslmode=disable"),
    uri("jdbc-style-ssl-true", "postgresql://app:pw@db.example/app?ssl=true"),
    uri("requiressl", "postgresql://app:pw@db.example/app?requiressl=1"),
    uri("sslrootcert-without-ca", "postgresql://app:pw@db.example/app?sslmode=verify-full&sslrootcert=/etc/ca.crt"),
    uri("sslrootcert-with-ca", "postgresql://app:pw@db.example/app?sslmode=verify-full&sslrootcert=/etc/ca.crt",
        ca=True),
    uri("tls-min-version", "postgresql://app:pw@db.example/app?sslmode=require&ssl_min_protocol_version=TLSv1.3"),
    uri("tls-version-invalid", "postgresql://app:pw@db.example/app?sslmode=require&ssl_min_protocol_version=SSLv3"),
    # other query parameters
    uri("application-name", "postgresql://app:pw@db.example/app?application_name=web&connect_timeout=5"),
    uri("options", "postgresql://app:pw@db.example/app?options=-c%20statement_timeout%3D5s"),
    uri("keepalives", "postgresql://app:pw@db.example/app?keepalives=1&keepalives_idle=30"),
    uri("gssencmode-disable", "postgresql://app:pw@db.example/app?gssencmode=disable"),
    uri("channel-binding-prefer", "postgresql://app:pw@db.example/app?channel_binding=prefer"),
    uri("channel-binding-require", "postgresql://app:pw@db.example/app?channel_binding=require"),
    uri("unknown-parameter", "postgresql://app:pw@db.example/app?foo=bar"),
    uri("newer-libpq-parameter", "postgresql://app:pw@db.example/app?load_balance_hosts=random"),
    uri("client-certificate", "postgresql://app:pw@db.example/app?sslcert=/c.crt&sslkey=/c.key"),
    uri("hostaddr", "postgresql://app:pw@db.example/app?hostaddr=10.0.0.5"),
    uri("service", "postgresql://app:pw@db.example/app?service=prod"),
    uri("passfile-without-password", "postgresql://app@db.example/app?passfile=/home/app/.pgpass"),
    uri("passfile-with-password", "postgresql://app:pw@db.example/app?passfile=/home/app/.pgpass"),
    # unix sockets
    uri("socket-encoded-path", "postgresql://app:pw@%2Fvar%2Frun%2Fpostgresql/app"),
    uri("socket-query-host", "postgresql:///app?host=/tmp&user=app&password=pw"),
    uri("no-host", "postgresql://app:pw@/app"),
    keys("socket-host-key", host="/var/run/postgresql", user="app", password="pw"),
    # passwords
    uri("empty-password", "postgresql://app:@db.example/app"),
    uri("no-password", "postgresql://app@db.example/app"),
    keys("empty-password-key", host="db.example", user="app", password=""),
    # schemes
    uri("scheme-postgres", "postgres://app:pw@db.example:5433/app"),
    uri("scheme-postgresql", "postgresql://app:pw@db.example:5433/app"),
    uri("scheme-uppercase", "POSTGRESQL://app:pw@db.example/app"),
    uri("scheme-mysql", "mysql://app:pw@db.example/app"),
    uri("scheme-jdbc", "jdbc:postgresql://db.example:5432/app?user=app&password=pw"),
    # key=value connection strings in `uri`
    uri("kv-basic", "host=db.example port=5433 dbname=app user=app password=pw sslmode=require"),
    uri("kv-quoted-password", r"host=db.example user=app password='a b\'c'"),
    uri("kv-multi-host", "host=a,b port=5432,5433 user=app password=pw target_session_attrs=read-write"),
    uri("kv-unterminated-quote", "host=db.example user=app password='abc"),
    uri("kv-unknown-keyword", "host=db.example user=app colour=blue"),
    # missing parts and defaults
    uri("no-user", "postgresql://db.example/app"),
    uri("no-dbname", "postgresql://app:pw@db.example"),
    uri("empty-port", "postgresql://app:pw@db.example:/app"),
    uri("port-zero", "postgresql://app:pw@db.example:0/app"),
    uri("port-too-big", "postgresql://app:pw@db.example:65536/app"),
    keys("port-key-blanks", host="db.example", port=" 5433 ", user="app", password="pw"),
    keys("port-key-text", host="db.example", port="five", user="app", password="pw"),
    keys("empty-user-key", host="db.example", user="", password="pw"),
    keys("username-key-only", host="db.example", username="app", password="pw"),
    uri("trailing-newline", "postgresql://app:pw@db.example/app\n"),
    Case("spec-host-and-port-override", {"uri": "postgresql://app:pw@old.example:5432/app"},
         spec={"host": "new.example", "port": 6432}),
]
CORPUS_BY_NAME = {c.name: c for c in CORPUS}
# the case whose spec overrides the uri's sslmode
CORPUS_BY_NAME["sslmode-spec-overrides-uri"].spec = {"sslMode": "require"}

# Layout keys libpq knows by another name (or not at all) in the key layout.
_KEY_LAYOUT = {"host": "host", "port": "port", "dbname": "dbname", "user": "user", "username": "user",
               "password": "password"}
_SPEC = {"host": "host", "port": "port", "dbname": "dbname", "sslMode": "sslmode"}


def libpq_settings(case: Case) -> tuple[list[tuple[str, str]], bool]:
    """The Secret as libpq would be handed it: the `uri` as a connection string (psql "$uri"),
    else each key as its keyword; spec.database's fields as later keywords, which override."""
    if "uri" in case.data:
        settings, expand = [("dbname", case.data["uri"])], True
    else:
        ordered = sorted(case.data.items(), key=lambda kv: kv[0] == "user")  # `user` over `username`
        settings = [(_KEY_LAYOUT[k], v) for k, v in ordered if k in _KEY_LAYOUT]
        expand = False
    settings += [(_SPEC[k], str(v)) for k, v in case.spec.items()]
    return settings, expand


def pgcurator_reading(case: Case) -> ConnParams:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in case.data.items()}
    ref = DatabaseRef.model_validate({"secretName": "app-db", **case.spec,
                                      **({"caSecret": {"name": "db-ca"}} if case.ca else {})})
    return params_from_secret("ns/app-db", data, ref, CA_PEM if case.ca else None)


def secrets_of(case: Case, reading: libpq.Reading) -> Iterator[str]:
    """Values no message may contain."""
    for value in (case.data.get("password"), reading.password, case.data.get("uri")):
        if value and len(value) >= 3:
            yield value


@pytest.fixture(scope="module")
def readings() -> dict[str, libpq.Reading]:
    """libpq's reading of every case."""
    try:
        libpq.load()
    except OSError as exc:
        pytest.fail(f"libpq.so.5 is the reference for these tests: {libpq.SETUP_HINT} ({exc})")
    return dict(zip([c.name for c in CORPUS], libpq.read_many([libpq_settings(c) for c in CORPUS]), strict=True))


def test_corpus_is_large_and_names_are_unique() -> None:
    assert len(CORPUS) >= 60 and len(CORPUS_BY_NAME) == len(CORPUS)


def test_every_secret_reads_as_libpq_reads_it_or_is_refused_with_a_message(
        readings: dict[str, libpq.Reading]) -> None:
    matching = refused = both_refuse = 0
    problems: list[str] = []
    for case in CORPUS:
        theirs = readings[case.name]
        try:
            ours = pgcurator_reading(case)
        except SecretProblem as exc:
            msg = exc.message
            leaked = [s for s in secrets_of(case, theirs) if s in msg or s in repr(exc)]
            if leaked or not msg.startswith("Secret ns/app-db ") or not any(a in msg for a in ACTIONS) \
                    or not any(k in msg for k in ("key '", "keys ", "spec.database.")):
                problems.append(f"{case.name}: message does not name the key and the fix, or leaks: {msg}")
            if theirs.refused:
                matching += 1  # libpq refuses it too
                both_refuse += 1
            else:
                refused += 1
            continue
        if theirs.refused:
            problems.append(f"{case.name}: libpq refuses ({theirs.error.strip()}) but pgcurator accepts")
            continue
        got = (tuple(h for h, _ in ours.addresses), tuple(p for _, p in ours.addresses), ours.dbname,
               ours.user, ours.password, ours.ssl_mode, ours.target_session_attrs)
        want = (theirs.hosts, theirs.ports, theirs.dbname, theirs.user, theirs.password, theirs.sslmode,
                theirs.target_session_attrs)
        if got != want:
            problems.append(f"{case.name}: pgcurator {got[:4]}/{got[5:]} != libpq {want[:4]}/{want[5:]}"
                            + (" (passwords differ)" if got[4] != want[4] else ""))
            continue
        for text in (repr(ours), ours.display, ours.pool_key):
            if ours.password and ours.password in text:
                problems.append(f"{case.name}: the password shows in {text[:40]}...")
        matching += 1
    record("Secrets matching libpq", f"{matching}/{matching + len(problems)} ({matching - both_refuse} read "
                                     f"alike, {both_refuse} refused by both)")
    record("Secrets refused with a message", f"{refused} (libpq would try them)")
    assert not problems, "\n".join(problems)
    assert matching + refused == len(CORPUS)


# pgcurator refuses these although libpq would try to connect (the reasons are in the messages);
# every other case must read exactly as libpq reads it, or be refused by libpq too.
EXPECTED_REFUSALS = {
    "zalando-without-host", "pw-at-unescaped", "host-key-ipv6-brackets", "scheme-uppercase", "scheme-mysql",
    "multi-host-empty-entry", "sslmode-verify-full-without-ca", "sslmode-verify-ca-without-ca",
    "sslrootcert-without-ca", "channel-binding-require", "client-certificate", "hostaddr",
    "passfile-without-password", "socket-encoded-path", "socket-query-host", "no-host", "socket-host-key",
    "no-user", "empty-user-key", "trailing-newline",
}


def test_refusals_are_the_expected_ones(readings: dict[str, libpq.Reading]) -> None:
    """Pins which cases pgcurator refuses where libpq would try, so a change is deliberate."""
    got = set()
    for case in CORPUS:
        try:
            pgcurator_reading(case)
        except SecretProblem:
            if not readings[case.name].refused:
                got.add(case.name)
    assert got == EXPECTED_REFUSALS
