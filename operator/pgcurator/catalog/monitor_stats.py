"""What a DatabaseMonitor reads besides the fingerprint: table, column and database statistics,
pg_stat_statements, the event trigger's state and the role's privileges. Reads only; every
statement is tagged /*pgcurator*/ so the slow-statement report leaves it out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sql.quote import ident

# $1: schemas never observed; $2: observed (empty: all others); $3: how many tables, largest first.
_TABLES_SQL = r"""
SELECT n.nspname AS schema_name, c.relname AS table_name, greatest(c.reltuples, 0)::bigint AS est_rows,
       s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows,
       pg_catalog.pg_table_size(c.oid) - coalesce(pg_catalog.pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)
           AS table_bytes,
       pg_catalog.pg_indexes_size(c.oid) AS index_bytes,
       coalesce(pg_catalog.pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes,
       s.seq_scan, s.idx_scan, io.heap_blks_hit AS heap_hit, io.heap_blks_read AS heap_read,
       io.idx_blks_hit AS idx_hit, io.idx_blks_read AS idx_read,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid
  LEFT JOIN pg_catalog.pg_statio_all_tables io ON io.relid = c.oid
 WHERE c.relkind IN ('r', 'm')
   AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast%'
   AND (cardinality($2::text[]) = 0 OR n.nspname = ANY($2::text[]))
 ORDER BY pg_catalog.pg_total_relation_size(c.oid) DESC, 1, 2
 LIMIT $3 /*pgcurator*/
"""

_COLUMNS_SQL = """
SELECT s.schemaname AS schema_name, s.tablename AS table_name, s.attname AS column_name, s.null_frac,
       s.n_distinct, s.avg_width
  FROM pg_catalog.pg_stats s
  JOIN unnest($1::text[], $2::text[]) AS u(sch, tab) ON u.sch = s.schemaname AND u.tab = s.tablename
 WHERE NOT s.inherited /*pgcurator*/
"""

_DATABASE_SQL = """
SELECT pg_catalog.pg_database_size(d.oid) AS size_bytes, s.blks_hit, s.blks_read, s.xact_commit, s.xact_rollback,
       pg_catalog.age(d.datfrozenxid)::bigint AS xid_age
  FROM pg_catalog.pg_database d LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
 WHERE d.datname = pg_catalog.current_database() /*pgcurator*/
"""

# The operator's statements are left out three ways: tagged ones (this module), any that names
# the pgcurator schema (history and snapshots), and the operator role's catalog reads (every one
# is written with pg_catalog. qualification).
_STATEMENTS_SQL = """
SELECT s.queryid, s.userid, s.calls, s.total_exec_time AS total_ms, s.rows, left(s.query, 2000) AS query
  FROM {schema}.pg_stat_statements s
 WHERE s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
   AND s.queryid IS NOT NULL
   AND s.query NOT LIKE '%/*pgcurator*/%' AND s.query NOT ILIKE '%pgcurator.%'
   AND NOT (s.userid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
            AND s.query ILIKE '%pg\\_catalog.%')
 ORDER BY s.total_exec_time DESC
 LIMIT $1 /*pgcurator*/
"""

_ABILITIES_SQL = """
SELECT r.rolsuper AS superuser, current_user AS role,
       pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS read_all_stats,
       (SELECT e.extnamespace::regnamespace::text FROM pg_catalog.pg_extension e
         WHERE e.extname = 'pg_stat_statements') AS pgss_schema,
       EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'pg_stat_statements') AS pgss_available,
       (SELECT array_agg(e.evtname::text || ':' || e.evtenabled::text) FROM pg_catalog.pg_event_trigger e
         WHERE e.evtfoid = pg_catalog.to_regprocedure('pgcurator.capture_ddl()')) AS triggers,
       pg_catalog.obj_description(pg_catalog.to_regprocedure('pgcurator.capture_ddl()'), 'pg_proc') AS trigger_version,
       pg_catalog.current_setting('server_version_num')::int AS server_version,
       coalesce(pg_catalog.current_setting('event_triggers', true), 'on') AS event_triggers_setting
  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user /*pgcurator*/
"""


@dataclass(frozen=True)
class Abilities:
    role: str
    superuser: bool
    read_all_stats: bool
    pgss_schema: str | None  # where pg_stat_statements is installed in this database, if it is
    pgss_available: bool
    triggers: dict[str, str]  # our event triggers -> evtenabled (O, D, R, A)
    trigger_version: str | None
    server_version: int
    event_triggers_setting: str


async def read_abilities(conn: Any) -> Abilities:
    r = await conn.fetchrow(_ABILITIES_SQL)
    triggers = dict(t.split(":", 1) for t in (r["triggers"] or []))
    return Abilities(r["role"], bool(r["superuser"]), bool(r["read_all_stats"]), r["pgss_schema"],
                     bool(r["pgss_available"]), triggers, r["trigger_version"], int(r["server_version"]),
                     r["event_triggers_setting"])


async def read_tables(conn: Any, never: list[str], only: list[str], limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(_TABLES_SQL, never, only, limit)]


async def read_columns(conn: Any, tables: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if not tables:
        return []
    rows = await conn.fetch(_COLUMNS_SQL, [s for s, _ in tables], [t for _, t in tables])
    return [dict(r) for r in rows]


async def read_database(conn: Any) -> dict[str, Any]:
    return dict(await conn.fetchrow(_DATABASE_SQL))


async def read_statements(conn: Any, schema: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(_STATEMENTS_SQL.format(schema=ident(schema)), limit)
    return [dict(r) for r in rows]
