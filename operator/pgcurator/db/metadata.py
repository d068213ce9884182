"""The `pgcurator` metadata schema in each managed database: a history of every statement run."""

from __future__ import annotations

from typing import Any

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


async def ensure_metadata_schema(conn: Any) -> None:
    exists = await conn.fetchval("SELECT to_regclass('pgcurator.history') IS NOT NULL")
    if exists:
        return
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK})")
        await conn.execute(SETUP_SQL)
