"""Turn a database Secret's data into connection parameters, the way libpq reads them. Pure; no I/O.

Layouts (docs/database-secrets.md): a `uri` key holding a libpq connection string (URI or
key=value pairs; CloudNativePG's and Crunchy PGO's Secrets have one), else the keys
host/port/dbname/user|username/password (Zalando's Secret has only username/password: the host
comes from spec.database.host). spec.database.host/port/dbname/sslMode override the Secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import SecretProblem
from ..models.common import DatabaseRef
from .conninfo import ConninfoError, Target, check_no_control, parse_conninfo, resolve

# Keys read in the key layout, in the order a message lists them.
LAYOUT_KEYS = ("host", "port", "dbname", "user", "username", "password")


@dataclass(frozen=True)
class ConnParams:
    host: str  # the first host libpq would try; `more_hosts` are the others, in order
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    ssl_mode: str = "prefer"
    ca_pem: str | None = field(default=None, repr=False)
    more_hosts: tuple[tuple[str, int], ...] = ()
    target_session_attrs: str = "any"
    options: str | None = None
    ssl_min_protocol_version: str | None = None
    ssl_max_protocol_version: str | None = None

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.more_hosts)

    @property
    def hosts_display(self) -> str:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.addresses)

    def _redacted(self, text: str) -> str:
        # A password with an unescaped '/' can end up spread over host, port and dbname of a URI
        # libpq still accepts; whatever the pieces, the password itself never shows.
        return text.replace(self.password, "<password>") if len(self.password) >= 4 else text

    @property
    def pool_key(self) -> str:
        """Identifies a pool: the same target and credentials share one pool.

        The password is hashed in, so a rotated password gets a fresh pool, and never
        appears in the key itself."""
        secret = f"{self.password}\0{self.ca_pem or ''}\0{self.options or ''}"
        digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
        tls = f"{self.ssl_min_protocol_version or ''}-{self.ssl_max_protocol_version or ''}"
        return self._redacted(f"{self.user}@{self.hosts_display}/{self.dbname}?sslmode={self.ssl_mode}"
                              f"&target_session_attrs={self.target_session_attrs}&tls={tls}#{digest}")

    @property
    def display(self) -> str:
        """Where we connect, for messages: never the password."""
        return self._redacted(f"{self.user}@{self.hosts_display}/{self.dbname}")


def _decode(data: Mapping[str, str], key: str, secret: str) -> str:
    try:
        text = base64.b64decode(data[key], validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        raise SecretProblem(f"Secret {secret} key {key!r} is not valid base64-encoded UTF-8: "
                            "write it with stringData, or base64-encode it under data") from None
    try:
        check_no_control(text, f"key {key!r}")
    except ConninfoError as exc:
        raise SecretProblem(f"Secret {secret} {exc}") from None
    return text


def _from_keys(data: Mapping[str, str], secret: str) -> tuple[dict[str, str], dict[str, str]]:
    """The key layout: each value taken literally, as libpq takes a keyword's value."""
    present = [k for k in LAYOUT_KEYS if k in data]
    if not present:
        raise SecretProblem(
            f"Secret {secret} has neither a 'uri' key nor the keys host/port/dbname/user/password: add "
            "uri: postgresql://USER:PASSWORD@HOST:5432/DBNAME (percent-encoded), or those keys")
    decoded = {k: _decode(data, k, secret) for k in present}
    values = {k: v for k, v in decoded.items() if k != "username"}
    origin = {k: f"key {k!r}" for k in values}
    if "username" in decoded:
        if "user" in decoded and decoded["user"] != decoded["username"]:
            raise SecretProblem(f"Secret {secret} keys 'user' and 'username' differ: keep one, or make them equal")
        values["user"] = decoded["username"]
        origin["user"] = "key 'user'" if "user" in decoded else "key 'username'"
    if "password" not in values:
        raise SecretProblem(f"Secret {secret} has no 'password' key (missing: password): add it (an empty value "
                            "if the server lets the role in without one)")
    return values, origin


def _layout(data: Mapping[str, str], secret: str) -> tuple[dict[str, str], dict[str, str], str]:
    """(keyword values, where each came from, where a missing keyword would have been written)."""
    if "uri" in data:
        text = _decode(data, "uri", secret)
        try:
            values = parse_conninfo(text, "key 'uri'")
        except ConninfoError as exc:
            raise SecretProblem(f"Secret {secret} {exc}") from None
        return values, {k: "key 'uri'" for k in values}, "key 'uri'"
    values, origin = _from_keys(data, secret)
    return values, origin, "keys " + "/".join(k for k in LAYOUT_KEYS if k in data)


def _apply_spec(values: dict[str, str], origin: dict[str, str], ref: DatabaseRef) -> None:
    """spec.database's fields override the Secret, as later keywords override earlier ones in libpq."""
    for key, value, name in (
        ("host", ref.host, "spec.database.host"),
        ("port", str(ref.port) if ref.port is not None else None, "spec.database.port"),
        ("dbname", ref.dbname, "spec.database.dbname"),
        ("sslmode", ref.ssl_mode.value if ref.ssl_mode else None, "spec.database.sslMode"),
    ):
        if value is not None:
            values[key] = value
            origin[key] = name


def _params(target: Target, ca_pem: str | None) -> ConnParams:
    (host, port), *more = target.addresses
    return ConnParams(
        host=host, port=port, dbname=target.dbname, user=target.user, password=target.password,
        ssl_mode=target.sslmode, ca_pem=ca_pem, more_hosts=tuple(more),
        target_session_attrs=target.target_session_attrs, options=target.options,
        ssl_min_protocol_version=target.ssl_min_protocol_version,
        ssl_max_protocol_version=target.ssl_max_protocol_version,
    )


def params_from_secret(
    secret_name: str, data: Mapping[str, str] | None, ref: DatabaseRef, ca_pem: str | None = None
) -> ConnParams:
    """`data` is the Secret's `.data` (base64 values), as the API returns it; `ca_pem` the CA from
    spec.database.caSecret, already read."""
    values, origin, fallback = _layout(data or {}, secret_name)
    _apply_spec(values, origin, ref)
    try:
        target = resolve(values, lambda key: origin.get(key, fallback), has_ca=ca_pem is not None)
    except ConninfoError as exc:
        raise SecretProblem(f"Secret {secret_name} {exc}") from None
    return _params(target, ca_pem)


def params_from_url(url: str) -> ConnParams:
    """For `pgcurator plan --database-url`: the same rules as a Secret's `uri` key."""
    try:
        check_no_control(url, "--database-url")
        values = parse_conninfo(url, "--database-url")
        target = resolve(values, lambda _key: "--database-url", has_ca=False)
    except ConninfoError as exc:
        raise SecretProblem(str(exc)) from None
    return _params(target, None)


_TLS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def ssl_arg(params: ConnParams) -> ssl.SSLContext | str:
    """asyncpg's `ssl` argument for libpq's sslmode.

    disable/allow/prefer go to asyncpg by name (it never verifies in those modes). From require up,
    pgcurator builds the context itself, so nothing is read from files of the operator's container
    (asyncpg would look for ~/.postgresql/root.crt). As in libpq, `require` with a CA verifies the
    chain like verify-ca; verify-full also checks the host name against each host tried."""
    if params.ssl_mode in ("disable", "allow", "prefer"):
        return params.ssl_mode
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = _TLS[params.ssl_min_protocol_version or "TLSv1.2"]  # libpq's default minimum
    if params.ssl_max_protocol_version:
        ctx.maximum_version = _TLS[params.ssl_max_protocol_version]
    if params.ca_pem is None:  # resolve() refuses verify-ca/verify-full without a CA
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.load_verify_locations(cadata=params.ca_pem)
    ctx.check_hostname = params.ssl_mode == "verify-full"
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def connect_kwargs(params: ConnParams, server_settings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Exactly what asyncpg.connect / asyncpg.create_pool receive for these parameters (the caller
    adds pool sizes and timeouts).

    Every value is given explicitly, so asyncpg reads no PG* environment variable, password file or
    service file of the operator's container. `server_settings` (e.g. the pinned session settings)
    go into the startup packet after the Secret's `options`, so they win over it."""
    several = len(params.addresses) > 1
    settings = {"options": params.options} if params.options else {}
    settings.update(server_settings or {})
    return {
        "host": [h for h, _ in params.addresses] if several else params.host,
        "port": [p for _, p in params.addresses] if several else params.port,
        "user": params.user,
        "password": params.password,
        "database": params.dbname,
        "ssl": ssl_arg(params),
        "target_session_attrs": params.target_session_attrs,
        "server_settings": settings,
    }
