"""Spec parts every pgcurator resource shares."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1); longer names
# would silently alias each other, so they are refused up front.
from ..errors import SpecError
from ..sql.expressions import validate_predicate
from ..sql.quote import MAX_IDENTIFIER_BYTES
from .hints import echo, hint

# Kubernetes object names (DNS-1123 subdomain, as Secrets use).
K8S_NAME_PATTERN = hint(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    "a Kubernetes object name (lower-case letters, digits, '-' and '.', starting and ending with a letter or "
    "digit)",
)

# Every identifier is quoted when it reaches SQL, so quoting alone makes any name safe; these
# characters are refused anyway, because a table really named like that is far more likely a
# mistake or an attack than a real schema: control and format characters (e.g. bidi overrides),
# quotes, dots (which read as schema qualification), semicolons, backslashes, backticks, SQL
# comment markers and dollar quotes.
IDENTIFIER_PATTERN = hint(
    r"^[^\x00-\x1f\x7f\"'.\\;`]+$",
    "a name pgcurator accepts: no control characters, quotes, dots, semicolons, backslashes or backticks (a "
    "schema goes in its own field)",
)
_FORBIDDEN_SEQUENCES = ("--", "/*", "*/", "$$")


def check_identifier(value: str) -> str:
    """Refuse identifiers PostgreSQL would reject or silently truncate, and suspicious ones."""
    if not value:
        raise ValueError("identifier must not be empty")
    if "\x00" in value:
        raise ValueError("identifier must not contain a NUL byte")
    if len(value.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"identifier {echo(value)} is {len(value.encode('utf-8'))} bytes; PostgreSQL allows at most "
            f"{MAX_IDENTIFIER_BYTES}"
        )
    bad = sorted({c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c in '"\'.\\;`'})
    if bad or any(seq in value for seq in _FORBIDDEN_SEQUENCES) or value != value.strip():
        raise ValueError(
            f"identifier {echo(value)} contains characters pgcurator refuses (control or format characters, "
            "quotes, dots, semicolons, backslashes, backticks, comment or dollar-quote markers, or leading/trailing "
            "spaces): rename it (a schema is given in its own field, never as schema.table)"
        )
    return value



def check_predicate(value: str) -> str:
    """One plain SQL expression, parsed (pglast): the one rule for every predicate a spec holds
    (partial-index `where`, template index `where`, VectorIndex `sampleFilter`)."""
    try:
        return validate_predicate(value)
    except SpecError as exc:
        raise ValueError(exc.message) from None  # the error's location already names the field


Predicate = Annotated[str, AfterValidator(check_predicate)]

Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_IDENTIFIER_BYTES,
        pattern=IDENTIFIER_PATTERN,
        description="A PostgreSQL identifier, used as written (it is always quoted, so case matters).",
    ),
    AfterValidator(check_identifier),
]


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in a spec must not be ignored silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SslMode(StrEnum):
    disable = "disable"
    allow = "allow"
    prefer = "prefer"
    require = "require"
    verify_ca = "verify-ca"
    verify_full = "verify-full"


class SecretKeyRef(StrictModel):
    name: str = Field(
        max_length=253,
        pattern=K8S_NAME_PATTERN,
        examples=["pg-ca"],
        description="Name of a Secret in the resource's namespace.",
    )
    key: str = Field(default="ca.crt", max_length=253, description="Key in the Secret holding the value.")


# spec.database.host: host names, IPv4 or IPv6 addresses (without brackets), comma-separated as
# libpq's host keyword; the exact checks are db/conninfo.py's.
DB_HOSTS_PATTERN = hint(
    r"^[A-Za-z0-9_.:%-]+(,[A-Za-z0-9_.:%-]+)*$",
    "a host name or IP address (several comma-separated, without brackets or spaces)",
)


class DatabaseRef(StrictModel):
    """Where to connect: a Secret in the same namespace, read as libpq reads a connection string
    (docs/database-secrets.md)."""

    secret_name: str = Field(
        alias="secretName",
        max_length=253,
        pattern=K8S_NAME_PATTERN,
        examples=["app-db"],
        description=(
            "Secret in the same namespace holding either a `uri` key (a libpq connection string: "
            "postgresql://USER:PASSWORD@HOST:5432/DBNAME, as CloudNativePG and Crunchy PGO write it) or "
            "`host`, `port`, `dbname`, `user` (or `username`) and `password` keys."
        ),
    )
    host: str | None = Field(
        default=None,
        max_length=1000,
        pattern=DB_HOSTS_PATTERN,
        examples=["pg-rw.db.svc"],
        description="Host to connect to, overriding the Secret's (for Secrets that carry only username and "
        "password, such as Zalando's: e.g. acid-main.db-namespace). Several, comma-separated, as libpq's host.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, examples=[5432], description="Port, overriding the Secret's.")
    dbname: str | None = Field(
        default=None,
        max_length=MAX_IDENTIFIER_BYTES,
        examples=["app"],
        description="Database to connect to, overriding the one in the Secret (default, as in libpq: the user name).",
    )
    ssl_mode: SslMode | None = Field(
        default=None,
        alias="sslMode",
        examples=["verify-full"],
        description="libpq sslmode; overrides an sslmode given in the Secret's uri. Default, as in libpq: prefer.",
    )
    ca_secret: SecretKeyRef | None = Field(
        default=None,
        alias="caSecret",
        description="CA certificate for verify-ca / verify-full (default key ca.crt); with sslmode require the "
        "chain is verified too, as libpq does when it has a root certificate.",
    )


class DeletionPolicy(StrEnum):
    Retain = "Retain"
    Delete = "Delete"


DURATION_PATTERN = hint(r"^([0-9]+(ms|s|m|h))+$", "a duration such as '30s', '5m' or '1h30m' (units ms, s, m, h)")


# CEL's duration() reads Go durations, of which DURATION_PATTERN is a subset.
POSITIVE_DURATION = "duration(self) > duration('0s')"
AT_LEAST_1S = "duration(self) >= duration('1s')"


def cel_string(text: str) -> str:
    """`text` as a double-quoted CEL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cel_rule(rule: str, message: str) -> dict[str, Any]:
    """A field's JSON-schema extra carrying one CEL rule into the CRD (crdgen keeps it)."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration such as `90s`, `5m`, `1h30m` into seconds."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h)", text))


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class Timeouts(StrictModel):
    lock_timeout: Duration = Field(
        json_schema_extra=cel_rule(POSITIVE_DURATION, "must be greater than zero"),
        default="5s",
        alias="lockTimeout",
        description="lock_timeout for every statement: how long DDL may queue behind other sessions' locks "
        "(and so how long it can make the application's writes wait behind it).",
    )
    statement_timeout: Duration = Field(
        json_schema_extra=cel_rule(POSITIVE_DURATION, "must be greater than zero"),
        default="30m",
        alias="statementTimeout",
        description="statement_timeout for every statement.",
    )
    lock_retries: int = Field(
        default=5,
        alias="lockRetries",
        ge=0,
        le=100,
        description="Retries, with exponential backoff, when a lock could not be had within lockTimeout.",
    )

    @field_validator("lock_timeout", "statement_timeout")
    @classmethod
    def _positive(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("must be greater than zero")
        return v


class CommonSpec(StrictModel):
    """Fields every pgcurator resource has."""

    database: DatabaseRef = Field(description="Where the managed table lives.")
    suspend: bool = Field(default=False, description="Stop acting on the database; keep observing and reporting.")
    dry_run: bool = Field(
        default=False,
        alias="dryRun",
        description="Plan only: the exact statements that would run appear in status.plan; nothing is executed.",
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.Retain,
        alias="deletionPolicy",
        description="Retain (default): deleting the resource never touches the database. Delete: remove what "
        "this resource created, where that is safe.",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Limits applied to every statement.")


class TableRef(StrictModel):
    schema_: Identifier = Field(default="public", alias="schema", description="Schema of the table.")
    name: Identifier = Field(examples=["event_logs"], description="Table name.")

    @field_validator("schema_", "name")
    @classmethod
    def _ident(cls, v: str) -> str:
        return check_identifier(v)

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.name}"


CRON_EXAMPLE = "0 3 * * *"


class Schedule(StrictModel):
    """When a resource is re-observed, for every kind: an interval, or a cron expression replacing it."""

    interval: Duration = Field(
        json_schema_extra=cel_rule(AT_LEAST_1S, "must be at least 1s"),
        default="1h",
        description="How often the resource is re-observed and its drift repaired, even when the spec has not "
        "changed (e.g. a partition or an index dropped by hand is recreated).",
    )
    cron: str | None = Field(
        default=None,
        max_length=100,
        examples=[CRON_EXAMPLE],
        description=f"Cron expression (5 fields, UTC), e.g. '{CRON_EXAMPLE}'; replaces interval when set.",
    )

    @field_validator("interval")
    @classmethod
    def _min(cls, v: str) -> str:
        if parse_duration(v) < 1:
            raise ValueError("must be at least 1s")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and (len(v.split()) != 5 or not croniter.is_valid(v)):
            raise ValueError(f"{v!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week, "
                             "in UTC)")
        return v


def schedule_seconds(schedule: Schedule, now: datetime | None = None) -> float:
    """Seconds until the next run: the cron expression's next time (UTC) when set, else the interval."""
    if schedule.cron:
        now = now or datetime.now(UTC)
        nxt: datetime = croniter(schedule.cron, now).get_next(datetime)
        return max(1.0, (nxt - now).total_seconds())
    return parse_duration(schedule.interval)
