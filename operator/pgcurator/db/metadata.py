"""The `pgcurator` metadata schema in each managed database, created and upgraded in one place.

Every table of the schema is defined here as a numbered migration. `ensure_metadata` runs before
a reconcile reads or writes any of them: one catalog query when the schema is current; otherwise,
under a transaction-level advisory lock (several replicas may race), every migration above the
recorded version, and the new version, in one transaction."""

from __future__ import annotations

from typing import Any

from ..errors import CuratorError
from ..sql.quote import ident

# Serialises concurrent creation by several replicas (CREATE ... IF NOT EXISTS can still
# race on the catalog's unique indexes).
_SETUP_LOCK = 0x70676375  # "pgcu"

# Each entry upgrades version n-1 to n. Statements are idempotent (IF NOT EXISTS) because
# databases touched by operator versions before the version table existed already hold some.
MIGRATIONS: tuple[str, ...] = (
    # 1: the statement history
    """
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
    """,
    # 2: per-partition statistics snapshots (PartitionPolicy)
    """
    CREATE TABLE IF NOT EXISTS pgcurator.partition_stats (
        captured_at    timestamptz NOT NULL DEFAULT now(),
        resource       text NOT NULL,
        table_schema   text NOT NULL,
        table_name     text NOT NULL,
        partition_name text NOT NULL,
        est_rows       bigint NOT NULL,
        size_bytes     bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS partition_stats_table_idx
        ON pgcurator.partition_stats (table_schema, table_name, captured_at);
    """,
    # 3: index usage snapshots (IndexPolicy): idx_scan history across pg_stat_reset()
    """
    CREATE TABLE IF NOT EXISTS pgcurator.index_usage (
        taken_at    timestamptz NOT NULL DEFAULT now(),
        schema_name text NOT NULL,
        table_name  text NOT NULL,
        index_name  text NOT NULL,
        scans       bigint NOT NULL,
        size_bytes  bigint NOT NULL,
        stats_reset timestamptz
    );
    CREATE INDEX IF NOT EXISTS index_usage_lookup_idx
        ON pgcurator.index_usage (schema_name, table_name, index_name, taken_at);
    COMMENT ON TABLE pgcurator.index_usage IS 'pgcurator IndexPolicy: periodic idx_scan snapshots per index.';
    """,
    # 4: conversions of plain tables (PartitionPolicy convert), one row per table
    """
    CREATE TABLE IF NOT EXISTS pgcurator.conversions (
        table_schema text NOT NULL,
        table_name   text NOT NULL,
        phase        text NOT NULL,
        log_table    text NOT NULL,
        last_key     jsonb,
        rows_copied  bigint NOT NULL DEFAULT 0,
        rows_total   bigint NOT NULL DEFAULT 0,
        batch_rows   integer NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now(),
        swapped_at   timestamptz,
        details      jsonb NOT NULL DEFAULT '{}',
        PRIMARY KEY (table_schema, table_name)
    );
    """,
    # 5: which resource manages which object (one manager per object)
    """
    CREATE TABLE IF NOT EXISTS pgcurator.owners (
        object_kind text NOT NULL,
        schema_name text NOT NULL,
        object_name text NOT NULL,
        resource    text NOT NULL,
        claimed_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (object_kind, schema_name, object_name)
    );
    COMMENT ON TABLE pgcurator.owners IS 'pgcurator: the resource that manages each object it created or adopted.';
    """,
    # 6: DatabaseMonitor: schema changes (event trigger and catalog fingerprint), fingerprint
    # snapshots (one row per schema version), and how far each monitor has processed
    """
    CREATE TABLE IF NOT EXISTS pgcurator.schema_changes (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        changed_at       timestamptz NOT NULL DEFAULT statement_timestamp(),
        detected_at      timestamptz NOT NULL DEFAULT now(),
        mechanism        text NOT NULL,
        command_tag      text,
        object_type      text,
        schema_name      text,
        object_identity  text,
        statement        text,
        session_user_name text,
        application_name text,
        client_addr      text,
        transaction_id   bigint,
        confirmed        boolean NOT NULL DEFAULT false,
        schema_version   text,
        woke             text[],
        woke_after_history_id bigint,
        repaired_by      bigint
    );
    CREATE INDEX IF NOT EXISTS schema_changes_changed_idx ON pgcurator.schema_changes (changed_at);
    COMMENT ON TABLE pgcurator.schema_changes IS
        'pgcurator DatabaseMonitor: every schema change seen, with who and when where the event trigger saw it.';
    CREATE TABLE IF NOT EXISTS pgcurator.schema_snapshots (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        taken_at    timestamptz NOT NULL DEFAULT now(),
        resource    text NOT NULL,
        version     text NOT NULL,
        objects     integer NOT NULL,
        definitions jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS schema_snapshots_resource_idx ON pgcurator.schema_snapshots (resource, id);
    CREATE TABLE IF NOT EXISTS pgcurator.monitor_state (
        resource          text PRIMARY KEY,
        last_change_id    bigint NOT NULL DEFAULT 0,
        fingerprint_at    timestamptz,
        statistics_at     timestamptz,
        columns_at        timestamptz,
        pruned_at         timestamptz,
        schema_version    text
    );
    """,
    # 7: DatabaseMonitor statistics snapshots
    """
    CREATE TABLE IF NOT EXISTS pgcurator.table_stats (
        taken_at      timestamptz NOT NULL DEFAULT now(),
        resource      text NOT NULL,
        schema_name   text NOT NULL,
        table_name    text NOT NULL,
        est_rows      bigint NOT NULL,
        live_rows     bigint,
        dead_rows     bigint,
        table_bytes   bigint NOT NULL,
        index_bytes   bigint NOT NULL,
        toast_bytes   bigint NOT NULL,
        seq_scan      bigint,
        idx_scan      bigint,
        heap_hit      bigint,
        heap_read     bigint,
        idx_hit       bigint,
        idx_read      bigint,
        last_vacuum   timestamptz,
        last_analyze  timestamptz
    );
    CREATE INDEX IF NOT EXISTS table_stats_lookup_idx ON pgcurator.table_stats (resource, schema_name, table_name, taken_at);
    CREATE INDEX IF NOT EXISTS table_stats_taken_idx ON pgcurator.table_stats (taken_at);
    CREATE TABLE IF NOT EXISTS pgcurator.column_stats (
        taken_at    timestamptz NOT NULL DEFAULT now(),
        resource    text NOT NULL,
        schema_name text NOT NULL,
        table_name  text NOT NULL,
        column_name text NOT NULL,
        null_frac   real,
        n_distinct  double precision,
        avg_width   integer
    );
    CREATE INDEX IF NOT EXISTS column_stats_taken_idx ON pgcurator.column_stats (resource, taken_at);
    CREATE TABLE IF NOT EXISTS pgcurator.database_stats (
        taken_at      timestamptz NOT NULL DEFAULT now(),
        resource      text NOT NULL,
        size_bytes    bigint NOT NULL,
        blks_hit      bigint,
        blks_read     bigint,
        xact_commit   bigint,
        xact_rollback bigint,
        xid_age       bigint
    );
    CREATE INDEX IF NOT EXISTS database_stats_taken_idx ON pgcurator.database_stats (resource, taken_at);
    CREATE TABLE IF NOT EXISTS pgcurator.statement_stats (
        taken_at    timestamptz NOT NULL DEFAULT now(),
        resource    text NOT NULL,
        queryid     bigint NOT NULL,
        userid      oid NOT NULL,
        calls       bigint NOT NULL,
        total_ms    double precision NOT NULL,
        rows        bigint NOT NULL,
        query       text
    );
    CREATE INDEX IF NOT EXISTS statement_stats_taken_idx ON pgcurator.statement_stats (resource, taken_at);
    """,
    # 8: a history table made by an operator before the `operator` column existed (no schema_version,
    # so migration 1's CREATE TABLE IF NOT EXISTS left it as it was)
    """
    ALTER TABLE pgcurator.history ADD COLUMN IF NOT EXISTS operator text;
    """,
)
VERSION = len(MIGRATIONS)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS pgcurator.schema_version (
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""

HISTORY_INSERT = """
INSERT INTO pgcurator.history (resource, step, target, statement, started_at, duration_ms, outcome, error, operator)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# Read from the catalog directly: to_regclass() on a schema the role cannot use raises instead.
# `version` is read only when the role may (has_table_privilege guards the sub-select).
_ACCESS_SQL = """
SELECT pg_catalog.pg_get_userbyid(n.nspowner) AS owner, current_user AS role, current_database() AS db,
       pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_schema_privilege(n.oid, 'CREATE')
           AS schema_ok,
       coalesce(bool_and(pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')), true)
           AS tables_ok,
       bool_or(c.relname = 'schema_version') AS versioned
  FROM pg_catalog.pg_namespace n
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
 WHERE n.nspname = 'pgcurator'
 GROUP BY n.oid, n.nspowner
"""


class MetadataForbidden(CuratorError):
    """The pgcurator schema exists but belongs to a role this one cannot act for (e.g. the
    operator's credentials were changed to another role)."""

    reason = "MetadataSchemaForbidden"
    transient = True  # fixed by a GRANT, without touching the resource


class MetadataTooNew(CuratorError):
    """A newer operator upgraded the schema: this one must not write to it."""

    reason = "MetadataSchemaTooNew"
    transient = True


async def _version(conn: Any) -> int:
    v = await conn.fetchval("SELECT max(version) FROM pgcurator.schema_version")
    return int(v or 0)


async def ensure_metadata(conn: Any) -> None:
    """Create or upgrade the metadata schema; a no-op (one query) when it is current."""
    row = await conn.fetchrow(_ACCESS_SQL)
    if row is not None and not (row["schema_ok"] and row["tables_ok"]):
        role = ident(row["role"])
        raise MetadataForbidden(
            f"role {row['role']} cannot use the pgcurator schema in database {row['db']}, where the operator keeps "
            f"its history (the schema belongs to {row['owner']}). As {row['owner']} or a superuser run: GRANT USAGE, CREATE ON SCHEMA "
            f"pgcurator TO {role}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgcurator TO {role}"
        )
    if row is not None and row["versioned"]:
        current = await _version(conn)
        if current == VERSION:
            return
        if current > VERSION:
            raise MetadataTooNew(
                f"the pgcurator schema in database {row['db']} is at version {current}, written by a newer "
                f"operator; this one knows version {VERSION}: upgrade the operator"
            )
    async with conn.transaction():
        await conn.execute(f"SELECT pg_catalog.pg_advisory_xact_lock({_SETUP_LOCK})")
        await conn.execute("CREATE SCHEMA IF NOT EXISTS pgcurator; " + _VERSION_TABLE)
        current = await _version(conn)  # again, under the lock: another replica may have upgraded
        for number, sql in enumerate(MIGRATIONS, start=1):
            if number > current:
                await conn.execute(sql)
        if current < VERSION:
            await conn.execute("INSERT INTO pgcurator.schema_version (version) VALUES ($1)", VERSION)


# The name every caller used before the schema was versioned.
ensure_metadata_schema = ensure_metadata
