"""What indexes a table (and each of its partitions) has right now, as plain data.

Definitions are compared as PostgreSQL prints them (`pg_get_indexdef`). To get the same
printed form for a *declared* index, `reference_definitions` builds it on an empty temporary
copy of the table's columns inside a transaction that is rolled back: PostgreSQL itself then
normalises expressions, predicates, default opclasses and storage parameters, and a spec
that PostgreSQL would reject (unknown column, wrong opclass, non-immutable function) is
refused before anything touches the real table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg

from ..errors import SpecError
from ..sql.quote import qualified


@dataclass
class IndexInfo:
    oid: int
    schema: str
    name: str
    table: str
    definition: str
    method: str
    valid: bool = True
    unique: bool = False
    primary: bool = False
    constraint: str | None = None  # the PK/UNIQUE/EXCLUDE constraint this index backs
    key_columns: list[str] = field(default_factory=list)
    include_columns: list[str] = field(default_factory=list)
    predicate: str | None = None
    # opclass oids, per-key options (DESC/NULLS FIRST bits) and collations, as PostgreSQL
    # stores them: keys match only when these match too.
    key_options: tuple[str, ...] = ()
    parent_index: str | None = None  # partitioned index this one is attached to
    partitioned: bool = False  # an index on a partitioned table (relkind I)
    tablespace: str | None = None
    size_bytes: int = 0
    scans: int = 0
    last_scan: datetime | None = None
    created_at: datetime | None = None  # from our history, when we built it
    comment: str | None = None

    @property
    def backs_constraint(self) -> bool:
        return self.constraint is not None


@dataclass
class PartitionTable:
    schema: str
    name: str
    relkind: str  # r plain, p partitioned (nested), f foreign
    estimated_rows: int
    indexes: list[IndexInfo] = field(default_factory=list)
    oid: int = 0


@dataclass
class IndexObservation:
    schema: str
    name: str
    exists: bool = False
    relkind: str | None = None
    indexes: list[IndexInfo] = field(default_factory=list)
    partitions: list[PartitionTable] = field(default_factory=list)
    estimated_rows: int = 0
    stats_reset: datetime | None = None
    oid: int = 0

    @property
    def partitioned(self) -> bool:
        return self.relkind == "p"

    def index(self, name: str) -> IndexInfo | None:
        return next((i for i in self.indexes if i.name == name), None)


_TABLE_SQL = """
SELECT c.oid, c.relkind::text, greatest(c.reltuples, 0)::bigint AS est_rows
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'm')
"""

_PARTITIONS_SQL = """
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, greatest(c.reltuples, 0)::bigint
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE i.inhparent = $1 AND NOT i.inhdetachpending
 ORDER BY c.relname
"""

# Indexes of the given tables. Scans of a partitioned index are the sum over its partitions'.
# pg_stat_all_indexes.last_idx_scan exists from PostgreSQL 16 on; before it, no last scan is known.
_LAST_SCAN_16 = """CASE WHEN ic.relkind = 'I' THEN
            (SELECT max(s2.last_idx_scan) FROM pg_catalog.pg_partition_tree(i.indexrelid) d
               JOIN pg_catalog.pg_stat_all_indexes s2 ON s2.indexrelid = d.relid WHERE d.isleaf)
            ELSE s.last_idx_scan END"""
_LAST_SCAN_15 = "NULL::timestamptz"
_INDEXES_SQL = """
SELECT i.indexrelid AS oid, n.nspname::text AS schema, ic.relname::text AS name, t.relname::text AS table,
       i.indrelid AS table_oid,
       pg_get_indexdef(i.indexrelid) AS definition, am.amname::text AS method,
       i.indisvalid AS valid, i.indisunique AS unique, i.indisprimary AS primary,
       (SELECT con.conname::text FROM pg_catalog.pg_constraint con
         WHERE con.conindid = i.indexrelid AND con.contype IN ('p', 'u', 'x') LIMIT 1) AS constraint,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS keys,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
               FROM generate_series(i.indnkeyatts + 1, i.indnatts) k) AS include,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       i.indclass::text AS opclasses, i.indoption::text AS options, i.indcollation::text AS collations,
       (SELECT pc.relname::text FROM pg_catalog.pg_inherits ih JOIN pg_catalog.pg_class pc ON pc.oid = ih.inhparent
         WHERE ih.inhrelid = i.indexrelid LIMIT 1) AS parent_index,
       ic.relkind = 'I' AS partitioned,
       ts.spcname::text AS tablespace,
       pg_catalog.obj_description(i.indexrelid, 'pg_class') AS comment,
       CASE WHEN ic.relkind = 'I' THEN
            coalesce((SELECT sum(pg_relation_size(d.relid)) FROM pg_catalog.pg_partition_tree(i.indexrelid) d
                       WHERE d.isleaf), 0)
            ELSE pg_relation_size(i.indexrelid) END::bigint AS size,
       CASE WHEN ic.relkind = 'I' THEN
            coalesce((SELECT sum(s.idx_scan) FROM pg_catalog.pg_partition_tree(i.indexrelid) d
                       JOIN pg_catalog.pg_stat_all_indexes s ON s.indexrelid = d.relid WHERE d.isleaf), 0)
            ELSE coalesce(s.idx_scan, 0) END::bigint AS scans,
       {last_scan} AS last_scan
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
  JOIN pg_catalog.pg_am am ON am.oid = ic.relam
  LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace
  LEFT JOIN pg_catalog.pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
 WHERE i.indrelid = ANY($1::oid[])
 ORDER BY ic.relname
"""


def _index(r: Any) -> IndexInfo:
    return IndexInfo(
        oid=int(r["oid"]),
        schema=r["schema"],
        name=r["name"],
        table=r["table"],
        definition=r["definition"],
        method=r["method"],
        valid=bool(r["valid"]),
        unique=bool(r["unique"]),
        primary=bool(r["primary"]),
        constraint=r["constraint"],
        key_columns=list(r["keys"]),
        include_columns=list(r["include"]),
        predicate=r["predicate"],
        key_options=(r["opclasses"], r["options"], r["collations"]),
        parent_index=r["parent_index"],
        partitioned=bool(r["partitioned"]),
        tablespace=r["tablespace"],
        size_bytes=int(r["size"] or 0),
        scans=int(r["scans"] or 0),
        last_scan=r["last_scan"],
        comment=r["comment"],
    )


async def observe_indexes(conn: Any, schema: str, name: str) -> IndexObservation:
    obs = IndexObservation(schema=schema, name=name)
    row = await conn.fetchrow(_TABLE_SQL, schema, name)
    if row is None:
        return obs
    obs.exists = True
    obs.oid = int(row["oid"])
    obs.relkind = row["relkind"]
    obs.estimated_rows = int(row["est_rows"])
    if obs.relkind == "p":
        for r in await conn.fetch(_PARTITIONS_SQL, row["oid"]):
            obs.partitions.append(PartitionTable(schema=r[1], name=r[2], relkind=r[3], estimated_rows=int(r[4]),
                                                 oid=int(r[0])))
    await _read_indexes(conn, obs)
    obs.stats_reset = await conn.fetchval(
        "SELECT stats_reset FROM pg_catalog.pg_stat_database WHERE datname = current_database()"
    )
    return obs


async def reread_indexes(conn: Any, obs: IndexObservation) -> IndexObservation:
    """The same table and partitions with their indexes read again (one query): what a run that
    built or dropped indexes left, for its status."""
    fresh = replace(obs, indexes=[], partitions=[replace(p, indexes=[]) for p in obs.partitions])
    if fresh.exists:
        await _read_indexes(conn, fresh)
    return fresh


async def _read_indexes(conn: Any, obs: IndexObservation) -> None:
    by_oid = {p.oid: p for p in obs.partitions}
    last_scan = _LAST_SCAN_16 if conn.get_server_version().major >= 16 else _LAST_SCAN_15
    for r in await conn.fetch(_INDEXES_SQL.format(last_scan=last_scan), [obs.oid, *by_oid]):
        info = _index(r)
        if r["table_oid"] == obs.oid:
            obs.indexes.append(info)
        elif int(r["table_oid"]) in by_oid:
            by_oid[int(r["table_oid"])].indexes.append(info)


async def reference_definitions(
    conn: Any, schema: str, table: str, statements: dict[str, str]
) -> dict[str, str]:
    """`pg_get_indexdef` of each declared index as PostgreSQL would print it.

    `statements` maps a declared index name to its CREATE INDEX statement written against the
    placeholder table `pg_temp.pgcurator_shape` (see planner.index.render_create). Raises
    SpecError naming the index PostgreSQL refuses.
    """
    out: dict[str, str] = {}
    if not statements:
        return out
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(
            f"CREATE TEMP TABLE pgcurator_shape (LIKE {qualified(schema, table)}) ON COMMIT DROP"
        )
        for i, (name, sql) in enumerate(statements.items()):
            await conn.execute(f"SAVEPOINT s{i}")
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                raise SpecError(f"index {name}: PostgreSQL refuses the declared definition: {exc}") from None
            out[name] = await conn.fetchval(
                "SELECT pg_get_indexdef(c.oid) FROM pg_catalog.pg_class c WHERE c.relname = $1 "
                "AND c.relnamespace = pg_my_temp_schema()",
                shape_index_name(i),
            )
    finally:
        await tr.rollback()
    return out


SHAPE_TABLE = "pg_temp.pgcurator_shape"


def shape_index_name(i: int) -> str:
    """Name of the i-th declared index on the scratch table (statements must use it)."""
    return f"pgcurator_shape_i{i}"


_PROGRESS_SQL = """
SELECT p.pid, p.relid::regclass::text AS table,
       CASE WHEN p.index_relid <> 0 THEN p.index_relid::regclass::text END AS index, p.phase,
       p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done, p.lockers_total, p.lockers_done
  FROM pg_catalog.pg_stat_progress_create_index p
 WHERE p.pid = ANY($1::int[])
"""


async def build_progress(conn: Any, pids: list[int]) -> list[dict[str, Any]]:
    """Phase and percent of the CREATE INDEX commands running on the given backends."""
    if not pids:
        return []
    out = []
    for r in await conn.fetch(_PROGRESS_SQL, pids):
        if r["blocks_total"]:
            pct = 100.0 * r["blocks_done"] / r["blocks_total"]
        elif r["tuples_total"]:
            pct = 100.0 * r["tuples_done"] / r["tuples_total"]
        elif r["lockers_total"]:
            pct = 100.0 * r["lockers_done"] / r["lockers_total"]
        else:
            pct = 0.0
        out.append({"table": r["table"], "index": r["index"], "phase": r["phase"], "percent": round(pct, 1)})
    return out
