"""Connection strings read the way libpq reads them.

Parsing is libpq's own `PQconninfoParse`, reached through psycopg (its binary wheel bundles libpq,
so the image needs no system library and no compiler). What libpq does after parsing — defaults,
splitting host and port lists, checking sslmode and target_session_attrs (fe-connect.c:
connectOptions2 and PQconnectPoll) — is done here, and tests/unit/test_secret_corpus.py checks
the outcome against Debian's libpq for a corpus of Secrets.

Messages never quote a password, nor any piece of a connection string that failed to parse or
names an impossible host: with an unescaped `@`, `/` or `?` in a password, libpq cuts the URI in
the wrong place and those pieces are pieces of the password.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# Imported here, not lazily, so an image without libpq fails at build (hack/image-install.sh imports
# the app), not at the first Secret.
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
DEFAULT_PORT = 5432
Where = Callable[[str], str]  # keyword -> where it came from, for messages
# Where a whole connection string was written: pieces of it may be pieces of the password.
CONNECTION_STRINGS = ("key 'uri'", "--database-url")

# Keywords that do not change which server, database or role is used, nor how TLS is verified:
# pgcurator sets its own (application_name, timeouts, keepalives) and does not read these.
IGNORED = frozenset({
    "application_name", "fallback_application_name", "connect_timeout", "client_encoding", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "sslcompression",
    "sslsni", "krbsrvname", "gsslib",
})
FOLLOWED = frozenset({
    "host", "port", "dbname", "user", "password", "sslmode", "target_session_attrs", "options", "sslrootcert",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "channel_binding", "gssencmode", "passfile",
})
_CLIENT_CERT = "a client certificate is read from files of the application's pod: authenticate with a password and remove it"
# Keywords libpq knows that pgcurator refuses, with the fix.
REFUSED: dict[str, str] = {
    "hostaddr": "write the server's address in host instead (e.g. host=10.0.0.5)",
    "sslcert": _CLIENT_CERT,
    "sslkey": _CLIENT_CERT,
    "sslpassword": _CLIENT_CERT,
    "sslcertmode": _CLIENT_CERT,
    "sslcrl": "certificate revocation lists are read from files of the application's pod: remove it",
    "sslcrldir": "certificate revocation lists are read from files of the application's pod: remove it",
    "requirepeer": "it only applies to unix sockets, which the operator cannot use: remove it",
    "replication": "pgcurator needs an ordinary connection: remove it",
    "service": "a service file lives in the application's pod: write host, port, dbname and user out instead",
}


class ConninfoError(ValueError):
    """A refusal whose message is safe to show: it names where and what, never a secret value."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.detail = message


@dataclass(frozen=True)
class Target:
    """What libpq would connect with, after its defaults."""

    addresses: tuple[tuple[str, int], ...]
    dbname: str
    user: str
    password: str = field(repr=False)
    sslmode: str = "prefer"
    sslrootcert_given: bool = False
    target_session_attrs: str = "any"
    options: str | None = None
    ssl_min_protocol_version: str | None = None
    ssl_max_protocol_version: str | None = None


_ENCODE_HINT = ("percent-encode special characters of the user name, password and database name "
                "(e.g. p%40ss:w%2Frd for p@ss:w/rd; % itself as %25)")
# libpq's parse errors, by their fixed text; the quoted part libpq appends is never shown.
_PARSE_ERRORS: tuple[tuple[str, str], ...] = (
    ("invalid percent-encoded token", "has a '%' not followed by two hex digits: " + _ENCODE_HINT),
    ("forbidden value %00", "encodes a NUL byte (%00), which libpq refuses: remove it"),
    ("matching \"]\" in IPv6", "opens an IPv6 address with '[' but never closes it: write [2001:db8::1]:5432"),
    ("IPv6 host address may not be empty", "has an empty IPv6 address '[]': write [2001:db8::1]:5432"),
    ("unexpected character", "has something other than ':port' or '/' right after a ']' (IPv6 address): "
                             "write [2001:db8::1]:5432/dbname"),
    ("key/value separator", "has a query parameter without exactly one '=': write ?sslmode=require&"
                            "target_session_attrs=read-write"),
    ("unterminated quoted string", "has a quote that is never closed: write host='db.example' "
                                   "password='it\\'s' (a quote inside a quoted value is backslash-escaped)"),
    ("missing \"=\"", "is neither a postgresql:// URI nor key=value pairs: write postgresql://USER:PASSWORD@"
                      "HOST:5432/DBNAME or host=HOST user=USER password=PASSWORD dbname=DBNAME"),
)
_KEYWORD = re.compile(r'(?:invalid URI query parameter: |invalid connection option )"([a-z_]{1,40})"')
_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")
_PORT = re.compile(r"^\s*\+?[0-9]+\s*$")  # strtol with trailing blanks, as libpq's parse_int_param


def parse_conninfo(text: str, where: str) -> dict[str, str]:
    """A libpq connection string (postgresql:// URI or key=value pairs) -> its keywords, by libpq."""
    if not text.strip():
        raise ConninfoError(where, "is empty: write postgresql://USER:PASSWORD@HOST:5432/DBNAME")
    check_no_control(text, where)
    lowered = text.lstrip().lower()
    if "://" in lowered.split(" ", 1)[0] and not lowered.startswith(("postgresql://", "postgres://")):
        scheme = lowered.split("://", 1)[0]
        hint = " (that is a JDBC URL: use the 'uri' key, not 'jdbc-uri')" if scheme.startswith("jdbc") else ""
        raise ConninfoError(where, f"is not a postgresql:// or postgres:// URI{hint}: write "
                                   "postgresql://USER:PASSWORD@HOST:5432/DBNAME")
    try:
        parsed = conninfo_to_dict(text)
    except ProgrammingError as exc:
        raise ConninfoError(where, _describe_parse_error(str(exc))) from None
    except UnicodeDecodeError:
        raise ConninfoError(where, "percent-encodes bytes that are not UTF-8 text (e.g. a lone %80): "
                                   "encode the UTF-8 bytes of each character (ä is %C3%A4)") from None
    return {k: str(v) for k, v in parsed.items() if v is not None}


def _describe_parse_error(libpq_message: str) -> str:
    known = _KEYWORD.search(libpq_message)
    if known is not None:
        return f"has the parameter {known.group(1)!r}, which libpq does not know: remove it"
    if "invalid URI query parameter" in libpq_message or "invalid connection option" in libpq_message:
        return "has a parameter libpq does not know: remove it (known ones: sslmode, target_session_attrs, ...)"
    for marker, text in _PARSE_ERRORS:
        if marker in libpq_message:
            return text
    return "is not a connection string libpq accepts: write postgresql://USER:PASSWORD@HOST:5432/DBNAME " \
           "and " + _ENCODE_HINT


def check_no_control(value: str, where: str) -> None:
    """A trailing newline (`echo` into a Secret) or other control character is always a mistake."""
    if value.endswith(("\n", "\r")):
        raise ConninfoError(where, "ends with a newline: write the Secret without it "
                                   "(kubectl create secret --from-literal, or printf instead of echo)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConninfoError(where, "contains a control character (a newline, tab or NUL): remove it")


def resolve(values: Mapping[str, str], where: Where, *, has_ca: bool) -> Target:
    """Apply libpq's defaults and checks to parsed keywords. `where(keyword)` says where a keyword
    came from (for messages); `has_ca`: spec.database.caSecret is set."""

    for key in values:
        if key in REFUSED:
            raise ConninfoError(where(key), f"sets {key}, which pgcurator refuses: {REFUSED[key]}")
        if key not in FOLLOWED and key not in IGNORED:
            raise ConninfoError(where(key), f"sets {key}, which pgcurator does not support (it reads the "
                                            "keywords of libpq 15): remove it from the Secret pgcurator reads")
    password = values.get("password", "")
    if not password and values.get("passfile"):
        raise ConninfoError(where("passfile"), "names a passfile but no password: a password file lives in the "
                                               "application's pod; put the password in the Secret")
    # Hosts first: a URI cut at an unescaped '/' or '@' in the password shows up as a bad host or port.
    addresses = split_hosts(values, where)
    user = values.get("user", "")
    if not user:
        raise ConninfoError(where("user"), "names no user, and the operator has no login name to default to as "
                                           "libpq would: add a 'user' (or 'username') key, or write the URI as "
                                           "postgresql://USER:PASSWORD@HOST/DBNAME")
    sslmode = _choice(values, "sslmode", SSL_MODES, "prefer", where)
    attrs = _choice(values, "target_session_attrs", SESSION_ATTRS, "any", where, example="read-write")
    _choice(values, "channel_binding", ("disable", "prefer"), "prefer", where,
            extra=" (asyncpg, pgcurator's driver, cannot do channel binding; 'require' is refused)")
    _choice(values, "gssencmode", ("disable", "prefer"), "prefer", where,
            extra=" (pgcurator's driver has no GSSAPI encryption; 'require' is refused)")
    tls_min = _tls_version(values, "ssl_min_protocol_version", where)
    tls_max = _tls_version(values, "ssl_max_protocol_version", where)
    if tls_min and tls_max and TLS_VERSIONS.index(tls_min) > TLS_VERSIONS.index(tls_max):
        raise ConninfoError(where("ssl_max_protocol_version"), "ssl_max_protocol_version is lower than "
                                                               "ssl_min_protocol_version: e.g. TLSv1.2 to TLSv1.3")
    if (tls_min or tls_max) and sslmode in ("disable", "allow", "prefer"):
        raise ConninfoError(where("sslmode"), f"sets an SSL protocol version with sslmode={sslmode}: pgcurator "
                                              "applies versions only with sslmode=require, verify-ca or verify-full")
    rootcert = bool(values.get("sslrootcert"))
    if rootcert and not has_ca:
        raise ConninfoError(where("sslrootcert"), "sets sslrootcert, a file in the application's pod the operator "
                                                  "cannot read: put that CA certificate in a Secret and set "
                                                  "spec.database.caSecret: {name: db-ca, key: ca.crt}")
    if sslmode in ("verify-ca", "verify-full") and not has_ca:
        raise ConninfoError(where("sslmode"), f"asks for sslmode={sslmode}, which needs the CA certificate: put it "
                                              "in a Secret and set spec.database.caSecret: {name: db-ca, key: ca.crt}")
    if has_ca and sslmode in ("disable", "allow", "prefer"):
        raise ConninfoError(where("sslmode"), f"has sslmode={sslmode} although spec.database.caSecret is set: a CA "
                                              "is used with sslmode=verify-full (names checked), verify-ca or "
                                              "require; set spec.database.sslMode: verify-full")
    options = values.get("options") or None
    return Target(
        addresses=addresses,
        dbname=values.get("dbname") or user,
        user=user,
        password=password,
        sslmode=sslmode,
        sslrootcert_given=rootcert,
        target_session_attrs=attrs,
        options=options,
        ssl_min_protocol_version=tls_min,
        ssl_max_protocol_version=tls_max,
    )


def _choice(values: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str, where: Where,
            extra: str = "", example: str = "") -> str:
    value = values.get(key)
    if value is None:
        return default
    if value not in allowed:
        shown = repr(value) if re.fullmatch(r"[A-Za-z0-9_-]{0,20}", value) else "not a word"
        raise ConninfoError(where(key), f"{key} is {shown}; libpq accepts {', '.join(allowed)}{extra}: write "
                                        f"one of them, e.g. {key}={example or allowed[-1]}")
    return value


def _tls_version(values: Mapping[str, str], key: str, where: Where) -> str | None:
    value = values.get(key)
    if not value:
        return None
    for known in TLS_VERSIONS:
        if value.lower() == known.lower():  # libpq compares case-insensitively
            return known
    raise ConninfoError(where(key), f"{key} is not one of {', '.join(TLS_VERSIONS)}: write e.g. {key}=TLSv1.2")


def split_hosts(values: Mapping[str, str], where: Where) -> tuple[tuple[str, int], ...]:
    """host=h1,h2 port=p1,p2 as connectOptions2 pairs them: one port for all, or one per host."""
    hosts = values.get("host", "").split(",")
    host_where = where("host")
    port_text = values.get("port", "")
    ports = port_text.split(",") if port_text else [""]
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ConninfoError(where("port"), f"lists {len(ports)} ports for {len(hosts)} hosts: give one port "
                                           "for all, or one per host (h1:5432,h2:5433)")
    out: list[tuple[str, int]] = []
    for i, host in enumerate(hosts):
        which = f"host {i + 1} of {len(hosts)}" if len(hosts) > 1 else "the host"
        check_host(host, which, host_where)
        out.append((host, _port(ports[i] if len(ports) > 1 else ports[0], where("port"))))
    return tuple(out)


def check_host(host: str, which: str, where: str) -> None:
    if not host:
        raise ConninfoError(where, f"{which} is missing or empty, so libpq would use a unix socket, which does not "
                                   "exist in the operator's pod: name the server in a 'host' key, in the URI or "
                                   "in spec.database.host, e.g. mycluster-rw.mynamespace")
    if host.startswith(("/", "@")):
        raise ConninfoError(where, f"{which} is a unix socket directory, which does not exist in the operator's "
                                   "pod: name the server's service, e.g. mycluster-rw.mynamespace")
    if host.startswith("[") and host.endswith("]"):
        raise ConninfoError(where, f"{which} is an IPv6 address in brackets, which libpq takes as a host name "
                                   "and cannot resolve: write it without brackets (host=2001:db8::1); brackets "
                                   "belong only in a URI (postgresql://[2001:db8::1]:5432/db)")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        hint = (" (an unescaped '@', '/', '?' or ':' in the password cuts a URI in the wrong place: "
                + _ENCODE_HINT + ")") if "@" in host or where in CONNECTION_STRINGS else ""
        raise ConninfoError(where, f"{which} is neither a host name nor an IP address{hint}")


def _port(text: str, where: str) -> int:
    if not text:
        return DEFAULT_PORT
    number = int(text) if _PORT.match(text) else 0
    if not 0 < number < 65536:
        # In a URI a bad port is usually a piece of a password cut at an unescaped '/': never shown.
        in_uri = where in CONNECTION_STRINGS
        shown = f" {text.strip()!r}" if not in_uri and re.fullmatch(r"\s*[0-9+-]{1,8}\s*", text) else ""
        hint = f" (if the password has a '/', '@' or '?': {_ENCODE_HINT})" if in_uri else ""
        raise ConninfoError(where, f"has an invalid port{shown}: a number from 1 to 65535, e.g. 5432{hint}")
    return number
