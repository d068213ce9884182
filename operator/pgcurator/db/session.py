"""What every session of the operator runs under: settings pinned so the database's own defaults
(`ALTER DATABASE … SET`, `ALTER ROLE … SET`, postgresql.conf) never change the catalog text we
parse or compare, and the resource's limits on every statement, reads included."""

from __future__ import annotations

from typing import Any

from ..models.common import Timeouts, parse_duration
from ..sql.quote import literal

# Sent in the startup packet, so they are also what RESET ALL (the pool's release) returns to.
# Each one changes text or values we read back:
#   DateStyle/IntervalStyle/TimeZone: bounds and intervals in pg_get_expr() and ::text casts;
#   search_path: how pg_get_indexdef()/pg_get_expr() qualify names (PostgreSQL's default);
#   extra_float_digits: float text; bytea_output: bytea text;
#   default_tablespace/default_table_access_method: where and how CREATE TABLE/INDEX puts things
#   we did not ask to place; check_function_bodies: irrelevant to us, keep the default;
#   idle_in_transaction_session_timeout: a crashed run never leaves a transaction holding locks.
PINNED_SETTINGS: dict[str, str] = {
    "application_name": "pgcurator",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "search_path": '"$user", public',
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "default_tablespace": "",
    "default_table_access_method": "heap",
    "standard_conforming_strings": "on",
    "row_security": "on",
    "default_transaction_read_only": "off",
    "idle_in_transaction_session_timeout": "600000",
}


def limit_statements(timeouts: Timeouts) -> str:
    lock_ms = int(parse_duration(timeouts.lock_timeout) * 1000)
    stmt_ms = int(parse_duration(timeouts.statement_timeout) * 1000)
    return (f"SET lock_timeout = {literal(f'{lock_ms}ms')}; "
            f"SET statement_timeout = {literal(f'{stmt_ms}ms')}")


def pin_statements() -> str:
    # set_config() takes the value as the startup packet does: `SET search_path = '"$user", public'`
    # would set one schema of that literal name.
    calls = ", ".join(f"pg_catalog.set_config({literal(name)}, {literal(value)}, false)"
                      for name, value in PINNED_SETTINGS.items() if name != "application_name")
    return f"SELECT {calls}"


async def prepare_session(conn: Any, timeouts: Timeouts | None, *, pin: bool = True) -> None:
    """Set the resource's limits and (`pin`, for connections not opened by our pools, e.g. a
    test's own) the pinned settings, in one round trip. Session-level SET: it lasts until the
    pool's RESET ALL on release, which returns to the pinned startup values."""
    parts = [pin_statements()] if pin else []
    if timeouts is not None:
        parts.append(limit_statements(timeouts))
    if parts:
        await conn.execute("; ".join(parts))
