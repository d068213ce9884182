"""What a partitioned table looks like right now (two levels deep)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from ..sql.quote import ident, qualified


def retention_marker(schema: str, table: str, action: str = "drop") -> str:
    """Comment put on a partition before it is detached for a drop or an archive, so a crash
    between the detach and what follows is finished on the next run."""
    verb = "archive" if action == "archive" else "retention drop"
    return f"pgcurator: detached from {schema}.{table} for {verb}"


def move_marker(schema: str, table: str) -> str:
    """The comment on a partition created detached for a DEFAULT-row move until its ATTACH: a plain
    table of that name without it is someone else's, never filled or adopted."""
    return f"pgcurator: new partition of {schema}.{table}, attached once the DEFAULT partition's rows are in it"


@dataclass
class PartitionInfo:
    schema: str
    name: str
    bound_expr: str
    is_default: bool = False
    detach_pending: bool = False
    estimated_rows: int = 0
    size_bytes: int = 0
    relkind: str = "r"
    strategy: str | None = None  # when this partition is itself partitioned
    key_columns: list[str] = field(default_factory=list)
    children: list[PartitionInfo] = field(default_factory=list)
    reloptions: list[str] = field(default_factory=list)
    tablespace: str | None = None
    index_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    generated: bool = False


@dataclass
class TableObservation:
    schema: str
    name: str
    exists: bool = False
    oid: int | None = None
    relkind: str | None = None  # 'p' partitioned, 'r' plain, ...
    strategy: str | None = None  # 'r' range, 'l' list, 'h' hash
    key_columns: list[str] = field(default_factory=list)
    key_has_expressions: bool = False
    column_types: dict[str, str] = field(default_factory=dict)
    columns: list[ColumnInfo] = field(default_factory=list)
    partitions: list[PartitionInfo] = field(default_factory=list)
    # Rows in the DEFAULT partition (exact, capped at DEFAULT_ROW_CAP), with the key's min and max.
    default_rows: int | None = None
    default_min: Any = None
    default_max: Any = None
    # Rows of the DEFAULT partition inside planned ranges: str(lower bound) -> count (filled by the reconciler).
    default_rows_in: dict[str, int] = field(default_factory=dict)
    # Highest value of an integer partition key, to place integer premake.
    max_key: int | None = None
    # Tables we detached for a retention drop / archive that a crash left half-way.
    pending_drops: list[str] = field(default_factory=list)
    pending_archives: list[str] = field(default_factory=list)
    # Plain tables in the schema named like partitions we would create, with their comment (a move
    # in progress carries move_marker; any other is someone else's table).
    loose_tables: dict[str, str | None] = field(default_factory=dict)
    tablespaces: set[str] = field(default_factory=set)

    @property
    def default_partition(self) -> PartitionInfo | None:
        return next((p for p in self.partitions if p.is_default), None)

    def foreign_table(self, name: str) -> bool:
        """A plain table named `name` exists that we did not create (CREATE TABLE IF NOT EXISTS would
        silently reuse it, and ATTACH adopt it with its rows)."""
        return name in self.loose_tables and self.loose_tables[name] != move_marker(self.schema, self.name)


DEFAULT_ROW_CAP = 1_000_000
# Bytes of a table's name matched to find plain tables named like its shortened leaf names.
LEAF_NAME_HEAD = 8

_TABLE_SQL = """
SELECT c.oid, c.relkind::text,
       pt.partstrat::text AS strategy,
       pt.partexprs IS NOT NULL AS has_exprs,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum), '{}') AS key_columns
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = c.oid
 WHERE n.nspname = $1 AND c.relname = $2
"""

_COLUMNS_SQL = """
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL), a.attgenerated <> ''
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_COLUMNS_BY_NAME_SQL = """
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL), a.attgenerated <> ''
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_PARTITIONS_SQL = """
SELECT n.nspname::text, c.relname::text, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound,
       i.inhdetachpending, greatest(c.reltuples, 0)::bigint AS est_rows,
       pg_catalog.pg_total_relation_size(c.oid) AS size, c.relkind::text, pt.partstrat::text AS strategy,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum), '{}') AS key_columns,
       coalesce(c.reloptions, '{}') AS reloptions, ts.spcname::text AS tablespace,
       coalesce((SELECT array_agg(ic.relname::text ORDER BY ic.relname) FROM pg_catalog.pg_index x
                   JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid), '{}') AS index_names,
       i.inhparent, c.oid
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = c.oid
  LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE i.inhparent = $1 OR i.inhparent IN (SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = $1)
 ORDER BY c.relname
"""

_MARKED_SQL = """
SELECT c.relname::text, pg_catalog.obj_description(c.oid, 'pg_class')
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
   AND pg_catalog.obj_description(c.oid, 'pg_class') = ANY($2::text[])
   -- A detach left pending (DETACH CONCURRENTLY interrupted) too: its FINALIZE and what follows
   -- it run in one run, not the drop or archive only in the next.
   AND (NOT c.relispartition OR EXISTS (SELECT FROM pg_catalog.pg_inherits inh
                                         WHERE inh.inhrelid = c.oid AND inh.inhdetachpending))
"""

_LOOSE_SQL = """
SELECT c.relname::text, pg_catalog.obj_description(c.oid, 'pg_class')
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND (c.relname LIKE $2 OR pg_catalog.strpos(c.relname, $3) > 0 OR c.relname LIKE $4)
"""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _info(r: Any) -> PartitionInfo:
    bound = r["bound"] or ""
    return PartitionInfo(
        schema=r[0],
        name=r[1],
        bound_expr=bound,
        is_default=bound == "DEFAULT",
        detach_pending=bool(r["inhdetachpending"]),
        estimated_rows=int(r["est_rows"]),
        size_bytes=int(r["size"]),
        relkind=r["relkind"],
        strategy=r["strategy"],
        key_columns=list(r["key_columns"]),
        reloptions=list(r["reloptions"]),
        tablespace=r["tablespace"],
        index_names=list(r["index_names"]),
    )


async def observe_table(conn: Any, schema: str, name: str, key_column: str | None = None) -> TableObservation:
    """Read the table, its partitions (two levels) and the numbers the planner and status need."""
    obs = TableObservation(schema=schema, name=name)
    obs.tablespaces = {r[0] for r in await conn.fetch("SELECT spcname::text FROM pg_catalog.pg_tablespace")}
    row = await conn.fetchrow(_TABLE_SQL, schema, name)
    if row is None:
        return obs
    obs.exists = True
    obs.oid = oid = int(row["oid"])
    obs.relkind = row["relkind"]
    obs.strategy = row["strategy"]
    obs.key_has_expressions = bool(row["has_exprs"])
    obs.key_columns = list(row["key_columns"])
    obs.columns = [ColumnInfo(r[0], r[1], bool(r[2])) for r in await conn.fetch(_COLUMNS_SQL, oid)]
    obs.column_types = {c.name: c.type for c in obs.columns}
    if obs.relkind != "p":
        return obs
    obs.partitions = await _read_partitions(conn, oid)
    column = key_column or (obs.key_columns[0] if obs.key_columns else None)
    await _read_default(conn, obs, column)
    if column and obs.column_types.get(column) in ("smallint", "integer", "bigint") and obs.strategy == "r":
        # Served by an index on the key when there is one; statement_timeout bounds it otherwise.
        obs.max_key = await conn.fetchval(f"SELECT max({ident(column)}) FROM {qualified(schema, name)}")
    markers = [retention_marker(schema, name, "drop"), retention_marker(schema, name, "archive")]
    for rel, comment in await conn.fetch(_MARKED_SQL, schema, markers):
        (obs.pending_drops if comment == markers[0] else obs.pending_archives).append(rel)
    like = _like_escape(name) + "\\_%"
    # A long table name is cut in partition names, which then carry a hash of it (fit_identifier).
    tag = "_" + hashlib.sha256(name.encode()).hexdigest()[:8] + "_"
    # A leaf's name is cut from its parent's and carries the hash of that: it keeps at least the
    # table's first 11 bytes (room left by the longest suffix, an integer bridge), so match on fewer.
    head = (_like_escape(name.encode()[:LEAF_NAME_HEAD].decode(errors="ignore")) + "%"
            if len(name.encode()) > LEAF_NAME_HEAD else like)
    obs.loose_tables = {r[0]: r[1] for r in await conn.fetch(_LOOSE_SQL, schema, like, tag, head)}
    return obs


async def table_columns(conn: Any, schema: str, name: str) -> list[ColumnInfo]:
    """The table's columns alone (one query), for a caller that needs nothing else of it."""
    return [ColumnInfo(r[0], r[1], bool(r[2])) for r in await conn.fetch(_COLUMNS_BY_NAME_SQL, schema, name)]


async def reread_partitions(conn: Any, obs: TableObservation, key_column: str | None = None) -> TableObservation:
    """A copy of `obs` with only what a run can change read again: the partitions (two levels,
    one query) and the DEFAULT partition's rows, which a move takes out. The rest (columns, the
    largest key, markers, loose tables) is as observed; `default_rows_in` is left empty, being
    about the ranges of the plan that ran."""
    fresh = replace(obs, partitions=[], default_rows=None, default_min=None, default_max=None, default_rows_in={})
    if obs.oid is None or obs.relkind != "p":
        return fresh
    fresh.partitions = await _read_partitions(conn, obs.oid)
    # Counted whenever a DEFAULT exists: the count is how "it has or had rows" is told, and it
    # costs nothing when the partition is empty (as one created by this run is).
    await _read_default(conn, fresh, key_column or (obs.key_columns[0] if obs.key_columns else None))
    return fresh


async def _read_partitions(conn: Any, oid: int) -> list[PartitionInfo]:
    rows = await conn.fetch(_PARTITIONS_SQL, oid)
    out: list[PartitionInfo] = []
    by_oid: dict[int, PartitionInfo] = {}
    for r in rows:
        if r["inhparent"] == oid:
            by_oid[r["oid"]] = _info(r)
            out.append(by_oid[r["oid"]])
    for r in rows:
        if r["inhparent"] != oid and r["inhparent"] in by_oid:
            by_oid[r["inhparent"]].children.append(_info(r))
    return out


async def _read_default(conn: Any, obs: TableObservation, column: str | None) -> None:
    """The DEFAULT partition's row count (capped) and, when it has rows, the key's min and max."""
    default = obs.default_partition
    if default is None:
        return
    dq = qualified(default.schema, default.name)
    obs.default_rows = int(await conn.fetchval(f"SELECT count(*) FROM (SELECT 1 FROM {dq} LIMIT {DEFAULT_ROW_CAP}) s"))
    if obs.default_rows and column:
        obs.default_min, obs.default_max = await conn.fetchrow(
            f"SELECT min({ident(column)}), max({ident(column)}) FROM {dq}")


async def count_default_rows_in(
    conn: Any, obs: TableObservation, column: str, ranges: list[tuple[str, str, str]]
) -> dict[str, int]:
    """Rows of the DEFAULT partition in each [lo, hi) (SQL literals); keyed by the first element."""
    col = ident(column)
    return await count_default_rows_where(conn, obs, [(key, f"{col} >= {lo} AND {col} < {hi}")
                                                      for key, lo, hi in ranges])


async def count_default_rows_where(conn: Any, obs: TableObservation, preds: list[tuple[str, str]]) -> dict[str, int]:
    """Rows of the DEFAULT partition matching each (key, SQL predicate); keyed by the key, zero counts left out."""
    default = obs.default_partition
    if default is None or not obs.default_rows or not preds:
        return {}
    cases = ", ".join(f"count(*) FILTER (WHERE {pred})" for _, pred in preds)
    row = await conn.fetchrow(f"SELECT {cases} FROM {qualified(default.schema, default.name)}")
    return {key: int(row[i]) for i, (key, _) in enumerate(preds) if row[i]}
