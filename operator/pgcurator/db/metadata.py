"""The `pgcurator` metadata schema in each managed database: a history of every statement run."""

from __future__ import annotations

from typing import Any

from ..errors import CuratorError
from ..sql.quote import ident

# Serialises concurrent creation by several replicas (CREATE ... IF NOT EXISTS can still
# race on the catalog's unique indexes).
_SETUP_LOCK = 0x70676375  # "pgcu"

SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS pgcurator;
CREATE TABLE IF NOT EXISTS pgcurator.history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource    text NOT NULL,
    step        text NOT NULL,
    target      text NOT NULL,
    statement   text NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms double precision NOT NULL,
    outcome     text NOT NULL,
    error       text,
    operator    text
);
CREATE INDEX IF NOT EXISTS history_resource_started_idx ON pgcurator.history (resource, started_at DESC);
COMMENT ON TABLE pgcurator.history IS 'Every statement pgcurator ran in this database, with its outcome.';
"""

HISTORY_INSERT = """
INSERT INTO pgcurator.history (resource, step, target, statement, started_at, duration_ms, outcome, error, operator)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


# Read from the catalog directly: to_regclass() on a schema the role cannot use raises instead.
_ACCESS_SQL = """
SELECT pg_get_userbyid(n.nspowner) AS owner, current_user AS role, current_database() AS db,
       has_schema_privilege(n.oid, 'USAGE') AND has_schema_privilege(n.oid, 'CREATE') AS schema_ok,
       coalesce(bool_and(has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')), true) AS tables_ok,
       bool_or(c.relname = 'history') AS history_exists
  FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
 WHERE n.nspname = 'pgcurator'
 GROUP BY n.oid, n.nspowner
"""


class MetadataForbidden(CuratorError):
    """The pgcurator schema exists but belongs to a role this one cannot act for (e.g. the
    operator's credentials were changed to another role)."""

    reason = "MetadataSchemaForbidden"
    transient = True  # fixed by a GRANT, without touching the resource


async def ensure_metadata_schema(conn: Any) -> None:
    row = await conn.fetchrow(_ACCESS_SQL)
    if row is not None and not (row["schema_ok"] and row["tables_ok"]):
        role = ident(row["role"])
        raise MetadataForbidden(
            f"role {row['role']} cannot use the pgcurator schema in database {row['db']}, where the operator keeps "
            f"its history (the schema belongs to {row['owner']}). As {row['owner']} or a superuser run: GRANT USAGE, CREATE ON SCHEMA "
            f"pgcurator TO {role}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgcurator TO {role}"
        )
    if row is not None and row["history_exists"]:
        return
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK})")
        await conn.execute(SETUP_SQL)
