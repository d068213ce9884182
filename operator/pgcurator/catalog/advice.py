"""Reads for index advice: the workload (pg_stat_statements), the tables' columns and statistics
(pg_stats), the existing indexes, HypoPG, and the privileges that decide what can be seen.

Every statement carries the /*pgcurator*/ tag, so the advisor never mistakes its own statements
for the application's (and its cost can be measured from pg_stat_statements).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TAG = "/*pgcurator*/"
INSUFFICIENT = "<insufficient privilege>"


TableKey = tuple[str, str]  # (schema, name)


@dataclass(frozen=True)
class ColumnStats:
    type: str  # format_type(atttypid, atttypmod)
    null_frac: float = 0.0
    n_distinct: float = 0.0  # pg_stats: > 0 a count, < 0 minus a fraction of the rows, 0 unknown
    avg_width: int = 0
    mcv: Mapping[str, float] = field(default_factory=dict)  # value text -> frequency


@dataclass(frozen=True)
class TableStats:
    rows: float
    columns: Mapping[str, ColumnStats]


@dataclass(frozen=True)
class ExistingIndex:
    name: str
    table: TableKey
    method: str
    keys: tuple[str, ...]  # pg_get_indexdef(oid, n, true) per key: a column name or an expression
    predicate: str | None = None
    valid: bool = True


@dataclass(frozen=True)
class Statement:
    query: str
    calls: int = 1
    total_ms: float = 0.0
    mean_ms: float = 0.0
    query_id: str | None = None


@dataclass(frozen=True)
class Workload:
    statements: list[Statement]
    hidden: int = 0  # statements of other roles shown as <insufficient privilege>


STATEMENTS_SQL = f"""{TAG}
SELECT s.queryid::text AS queryid, s.query, s.calls, s.mean_exec_time, s.total_exec_time
  FROM pg_stat_statements s
 WHERE s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
   AND s.calls >= $1
 ORDER BY s.total_exec_time DESC
 LIMIT $2
"""

HAS_STATEMENTS_SQL = f"{TAG} SELECT pg_catalog.to_regclass('pg_stat_statements') IS NOT NULL"

HYPOPG_SQL = f"""{TAG}
SELECT (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'hypopg') AS installed,
       EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'hypopg') AS available
"""

READ_ALL_STATS_SQL = f"""{TAG}
SELECT pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS granted, current_user AS role,
       (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS superuser
"""

TABLES_SQL = f"""{TAG}
SELECT n.nspname AS schema, c.relname AS name, c.reltuples,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns,
       array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS types
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcurator') AND n.nspname NOT LIKE 'pg\\_%'
 GROUP BY n.nspname, c.relname, c.reltuples
"""

STATS_SQL = f"""{TAG}
SELECT s.attname::text AS column, s.null_frac, s.avg_width, s.n_distinct,
       s.most_common_vals::text::text[] AS mcv, s.most_common_freqs AS freqs
  FROM pg_catalog.pg_stats s
 WHERE s.schemaname = $1 AND s.tablename = $2 AND NOT s.inherited
"""

INDEXES_SQL = f"""{TAG}
SELECT i.indexrelid::regclass::text AS qualified, ic.relname AS name, n.nspname AS schema, t.relname AS table,
       am.amname AS method, i.indisvalid AS valid, pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
       pg_catalog.pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, true)
               FROM pg_catalog.generate_series(1, i.indnkeyatts) k ORDER BY k) AS keys
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_catalog.pg_am am ON am.oid = ic.relam
 WHERE n.nspname = $1 AND t.relname = $2
"""


async def load_workload(conn: Any, min_calls: int = 1, limit: int = 500) -> Workload | None:
    """The database's statements, heaviest first; None when pg_stat_statements is not installed."""
    if not await conn.fetchval(HAS_STATEMENTS_SQL):
        return None
    rows = await conn.fetch(STATEMENTS_SQL, min_calls, limit)
    hidden = sum(1 for r in rows if r["query"] == INSUFFICIENT)
    out = [Statement(r["query"], int(r["calls"]), float(r["total_exec_time"]), float(r["mean_exec_time"]),
                     r["queryid"])
           for r in rows if r["query"] != INSUFFICIENT and "pgcurator" not in r["query"]]
    return Workload(out, hidden)


async def read_all_stats(conn: Any) -> tuple[bool, str]:
    """Whether this role sees every role's statements (pg_read_all_stats, or superuser), and its name."""
    r = await conn.fetchrow(READ_ALL_STATS_SQL)
    return bool(r["granted"] or r["superuser"]), str(r["role"])


async def hypopg(conn: Any) -> tuple[str | None, bool]:
    """(installed version or None, available to CREATE EXTENSION)."""
    r = await conn.fetchrow(HYPOPG_SQL)
    return r["installed"], bool(r["available"])


async def load_tables(conn: Any) -> tuple[dict[TableKey, dict[str, str]], dict[TableKey, float]]:
    """Every user table's columns (name -> type) and its row estimate (catalog only, cheap)."""
    cols: dict[TableKey, dict[str, str]] = {}
    rows: dict[TableKey, float] = {}
    for r in await conn.fetch(TABLES_SQL):
        key = (r["schema"], r["name"])
        cols[key] = dict(zip(r["columns"], r["types"], strict=True))
        rows[key] = max(float(r["reltuples"]), 0.0)
    return cols, rows


async def load_stats(conn: Any, table: TableKey, types: dict[str, str], rows: float) -> TableStats:
    found = {r["column"]: r for r in await conn.fetch(STATS_SQL, table[0], table[1])}
    columns: dict[str, ColumnStats] = {}
    for name, type_ in types.items():
        r = found.get(name)
        if r is None:
            columns[name] = ColumnStats(type_)
            continue
        mcv = dict(zip(r["mcv"] or (), r["freqs"] or (), strict=False))
        columns[name] = ColumnStats(type_, float(r["null_frac"] or 0), float(r["n_distinct"] or 0),
                                    int(r["avg_width"] or 0), {str(k): float(v) for k, v in mcv.items()})
    return TableStats(rows, columns)


@dataclass(frozen=True)
class IndexRow:
    existing: ExistingIndex
    definition: str


async def load_indexes(conn: Any, tables: Sequence[TableKey]) -> list[IndexRow]:
    out: list[IndexRow] = []
    for schema, name in tables:
        for r in await conn.fetch(INDEXES_SQL, schema, name):
            e = ExistingIndex(r["name"], (r["schema"], r["table"]), r["method"], tuple(r["keys"]),
                              r["predicate"], bool(r["valid"]))
            out.append(IndexRow(e, r["definition"]))
    return out
