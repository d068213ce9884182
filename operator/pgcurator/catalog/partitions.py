"""What a partitioned table looks like right now."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..sql.quote import ident, qualified


def retention_marker(schema: str, table: str) -> str:
    """Comment put on a partition before it is detached for a drop, so a crash between the
    detach and the drop is finished on the next run instead of leaving the table behind."""
    return f"pgcurator: detached from {schema}.{table} for retention drop"


@dataclass(frozen=True)
class PartitionInfo:
    schema: str
    name: str
    bound_expr: str
    is_default: bool = False
    detach_pending: bool = False
    estimated_rows: int = 0
    size_bytes: int = 0


@dataclass
class TableObservation:
    schema: str
    name: str
    exists: bool = False
    relkind: str | None = None  # 'p' partitioned, 'r' plain, ...
    strategy: str | None = None  # 'r' range, 'l' list, 'h' hash
    key_columns: list[str] = field(default_factory=list)
    key_has_expressions: bool = False
    column_types: dict[str, str] = field(default_factory=dict)
    partitions: list[PartitionInfo] = field(default_factory=list)
    # Rows in the DEFAULT partition (exact, capped at DEFAULT_ROW_CAP).
    default_rows: int | None = None
    # Highest value of an integer partition key, to place integer premake.
    max_key: int | None = None
    # Tables we detached for a retention drop that did not get dropped (a crash in between).
    pending_drops: list[str] = field(default_factory=list)

    @property
    def default_partition(self) -> PartitionInfo | None:
        return next((p for p in self.partitions if p.is_default), None)


DEFAULT_ROW_CAP = 1_000_000

_TABLE_SQL = """
SELECT c.oid, c.relkind::text,
       pt.partstrat::text AS strategy,
       pt.partexprs IS NOT NULL AS has_exprs,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum), '{}') AS key_columns
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
 WHERE n.nspname = $1 AND c.relname = $2
"""

_COLUMNS_SQL = """
SELECT a.attname::text, format_type(a.atttypid, NULL)
  FROM pg_attribute a
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
"""

_PARTITIONS_SQL = """
SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid) AS bound,
       i.inhdetachpending, greatest(c.reltuples, 0)::bigint AS est_rows,
       pg_total_relation_size(c.oid) AS size
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.inhparent = $1
 ORDER BY c.relname
"""

_PENDING_DROPS_SQL = """
SELECT c.relname::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition
   AND obj_description(c.oid, 'pg_class') = $2
"""


async def observe_table(conn: Any, schema: str, name: str, key_column: str | None = None) -> TableObservation:
    """Read the table, its partitions and the numbers the planner and status need."""
    obs = TableObservation(schema=schema, name=name)
    row = await conn.fetchrow(_TABLE_SQL, schema, name)
    if row is None:
        return obs
    obs.exists = True
    obs.relkind = row["relkind"]
    obs.strategy = row["strategy"]
    obs.key_has_expressions = bool(row["has_exprs"])
    obs.key_columns = list(row["key_columns"])
    oid = row["oid"]
    obs.column_types = {r[0]: r[1] for r in await conn.fetch(_COLUMNS_SQL, oid)}
    if obs.relkind != "p":
        return obs
    for r in await conn.fetch(_PARTITIONS_SQL, oid):
        bound = r["bound"] or ""
        obs.partitions.append(
            PartitionInfo(
                schema=r[0],
                name=r[1],
                bound_expr=bound,
                is_default=bound == "DEFAULT",
                detach_pending=bool(r["inhdetachpending"]),
                estimated_rows=int(r["est_rows"]),
                size_bytes=int(r["size"]),
            )
        )
    default = obs.default_partition
    if default is not None:
        obs.default_rows = int(
            await conn.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM {qualified(default.schema, default.name)} "
                f"LIMIT {DEFAULT_ROW_CAP}) s"
            )
        )
    column = key_column or (obs.key_columns[0] if obs.key_columns else None)
    if column and obs.column_types.get(column) in ("smallint", "integer", "bigint"):
        # Served by an index on the key when there is one; statement_timeout bounds it otherwise.
        obs.max_key = await conn.fetchval(f"SELECT max({ident(column)}) FROM {qualified(schema, name)}")
    obs.pending_drops = [r[0] for r in await conn.fetch(_PENDING_DROPS_SQL, schema, retention_marker(schema, name))]
    return obs
