"""Turn a database Secret's data into connection parameters. Pure; no I/O."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import SecretProblem
from ..models.common import DatabaseRef


@dataclass(frozen=True)
class ConnParams:
    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    ssl_mode: str = "prefer"
    ca_pem: str | None = field(default=None, repr=False)

    @property
    def pool_key(self) -> str:
        """Identifies a pool: the same target and credentials share one pool.

        The password is hashed in, so a rotated password gets a fresh pool, and never
        appears in the key itself."""
        digest = hashlib.sha256(f"{self.password}\0{self.ca_pem or ''}".encode()).hexdigest()[:12]
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}?sslmode={self.ssl_mode}#{digest}"

    @property
    def display(self) -> str:
        """Where we connect, for messages: never the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def _decode(data: dict[str, str], key: str, secret: str) -> str:
    try:
        return base64.b64decode(data[key], validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SecretProblem(f"Secret {secret} key {key!r} is not valid base64-encoded UTF-8") from exc


def params_from_secret(
    secret_name: str, data: dict[str, str] | None, ref: DatabaseRef, ca_pem: str | None = None
) -> ConnParams:
    """`data` is the Secret's `.data` (base64 values), as the API returns it."""
    data = data or {}
    if "uri" in data:
        uri = _decode(data, "uri", secret_name)
        parts = urlsplit(uri)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise SecretProblem(
                f"Secret {secret_name} key 'uri' is not a postgresql://user:password@host:port/dbname URI"
            )
        query = parse_qs(parts.query)
        try:
            port = parts.port or 5432
        except ValueError as exc:
            raise SecretProblem(f"Secret {secret_name} key 'uri' has an invalid port") from exc
        values = {
            "host": parts.hostname,
            "port": str(port),
            "dbname": unquote(parts.path.lstrip("/")) or "postgres",
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "sslmode": query.get("sslmode", ["prefer"])[0],
        }
    else:
        missing = [k for k in ("host", "password") if k not in data]
        if "user" not in data and "username" not in data:
            missing.insert(1, "user (or username)")
        if missing:
            raise SecretProblem(
                f"Secret {secret_name} has neither a 'uri' key nor the keys host/port/dbname/user/password "
                f"(missing: {', '.join(missing)})"
            )
        values = {
            "host": _decode(data, "host", secret_name),
            "port": _decode(data, "port", secret_name) if "port" in data else "5432",
            "dbname": _decode(data, "dbname", secret_name) if "dbname" in data else "postgres",
            "user": _decode(data, "user" if "user" in data else "username", secret_name),
            "password": _decode(data, "password", secret_name),
            "sslmode": "prefer",
        }
    if not values["user"]:
        raise SecretProblem(f"Secret {secret_name} names no user")
    try:
        port_number = int(values["port"])
        if not 0 < port_number < 65536:
            raise ValueError
    except ValueError as exc:
        raise SecretProblem(f"Secret {secret_name} has an invalid port {values['port'][:10]!r}") from exc
    return ConnParams(
        host=values["host"],
        port=port_number,
        dbname=ref.dbname or values["dbname"],
        user=values["user"],
        password=values["password"],
        ssl_mode=(ref.ssl_mode.value if ref.ssl_mode else values["sslmode"]),
        ca_pem=ca_pem,
    )


def params_from_url(url: str) -> ConnParams:
    """For `pgcurator plan --database-url`: the same parsing as a Secret's `uri` key."""
    encoded = base64.b64encode(url.encode()).decode()
    return params_from_secret("--database-url", {"uri": encoded}, DatabaseRef.model_validate({"secretName": "cli"}))
