"""What a VectorIndex needs to know about the database: pgvector, the table and column, the
vector indexes on it, and a build in progress."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import PlanError
from ..sql.quote import ident, qualified

VECTOR_AMS = ("hnsw", "ivfflat")


@dataclass(frozen=True)
class VectorColumn:
    name: str
    type_name: str  # as format_type shows it, e.g. halfvec(1536)
    base_type: str  # vector | halfvec | bit | sparsevec | (anything else)
    dimensions: int | None


@dataclass
class ExistingVectorIndex:
    name: str
    valid: bool
    method: str
    opclass: str
    column: str | None
    options: dict[str, str] = field(default_factory=dict)
    predicate: str | None = None
    comment: str | None = None
    size_bytes: int = 0
    tuples: float = -1
    definition: str = ""


@dataclass
class VectorObservation:
    extension_version: str | None = None  # installed in this database
    extension_available: str | None = None  # default_version the server offers
    table_exists: bool = False
    table_oid: int | None = None
    relkind: str | None = None
    column: VectorColumn | None = None
    estimated_rows: int = 0  # rows the index would cover (non-null, matching the predicate)
    indexes: dict[str, ExistingVectorIndex] = field(default_factory=dict)  # only the names we manage
    other_indexes: list[str] = field(default_factory=list)  # other vector indexes on the column
    build_in_progress: bool = False
    max_parallel_workers: int = 2
    avg_nonzero: float | None = None  # sparsevec only, from a sample
    max_nonzero: int | None = None


_INDEXES = """
SELECT c.relname AS name, i.indisvalid AS valid, am.amname AS method, opc.opcname AS opclass,
       a.attname AS column, c.reloptions AS options, pg_get_expr(i.indpred, i.indrelid) AS predicate,
       obj_description(c.oid, 'pg_class') AS comment, pg_relation_size(c.oid) AS size,
       c.reltuples AS tuples, pg_get_indexdef(c.oid) AS definition
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = c.relam
  JOIN pg_catalog.pg_opclass opc ON opc.oid = i.indclass[0]
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE i.indrelid = $1 AND am.amname = ANY($2::text[])
"""

_COLUMN = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type_name, t.typname, a.atttypmod
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
"""


def _options(raw: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw or []:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def index_from_row(r: Any) -> ExistingVectorIndex:
    return ExistingVectorIndex(
        name=r["name"], valid=r["valid"], method=r["method"], opclass=r["opclass"], column=r["column"],
        options=_options(r["options"]), predicate=r["predicate"], comment=r["comment"], size_bytes=r["size"],
        tuples=float(r["tuples"]), definition=r["definition"],
    )


async def vector_indexes(conn: Any, table_oid: int) -> list[ExistingVectorIndex]:
    return [index_from_row(r) for r in await conn.fetch(_INDEXES, table_oid, list(VECTOR_AMS))]


async def read_vector_index(conn: Any, table_oid: int, name: str) -> ExistingVectorIndex | None:
    """One index of the table as it is now (after a build: its size and rows for the status)."""
    return next((i for i in await vector_indexes(conn, table_oid) if i.name == name), None)


async def estimate_rows(conn: Any, schema: str, table: str, column: str, where: str | None) -> int:
    """The planner's estimate of the rows the index covers: cheap on any table size."""
    cond = f"{ident(column)} IS NOT NULL" + (f" AND ({where})" if where else "")
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {qualified(schema, table)} WHERE {cond}")
    doc = json.loads(plan) if isinstance(plan, str) else plan
    return int(doc[0]["Plan"]["Plan Rows"])


async def observe_vector_table(
    conn: Any, schema: str, table: str, column: str, names: list[str], where: str | None = None
) -> VectorObservation:
    obs = VectorObservation()
    obs.extension_version = await conn.fetchval("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'vector'")
    obs.extension_available = await conn.fetchval(
        "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'vector'")
    obs.max_parallel_workers = int(await conn.fetchval("SELECT current_setting('max_parallel_workers')::int"))
    row = await conn.fetchrow(
        "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'm')", schema, table)
    if row is None:
        return obs
    oid = row["oid"]
    obs.table_exists, obs.table_oid, obs.relkind = True, int(oid), row["relkind"]
    col = await conn.fetchrow(_COLUMN, oid, column)
    if col is not None:
        typname, typmod = col["typname"], col["atttypmod"]
        obs.column = VectorColumn(col["attname"], col["type_name"], typname, typmod if typmod > 0 else None)
    managed = set(names)
    for idx in await vector_indexes(conn, oid):
        if idx.name in managed:
            obs.indexes[idx.name] = idx
        elif idx.column == column:
            obs.other_indexes.append(idx.name)
    # A relation of one of our names that is not a vector index of this table blocks the build.
    clash = await conn.fetch(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])", schema, list(managed - set(obs.indexes)))
    if clash:
        raise PlanError(f"{schema}.{clash[0]['relname']} already exists and is not a vector index on "
                        f"{schema}.{table}.{column}: choose another indexName", reason="NameConflict")
    obs.build_in_progress = bool(await conn.fetchval(
        "SELECT count(*) FROM pg_catalog.pg_stat_progress_create_index WHERE relid = $1", oid))
    if obs.column is not None and obs.column.base_type in ("vector", "halfvec", "bit", "sparsevec"):
        obs.estimated_rows = await estimate_rows(conn, schema, table, column, where)
        if obs.column.base_type == "sparsevec":
            stats = await conn.fetchrow(
                f"SELECT avg(n)::float8 AS avg, max(n) AS max FROM (SELECT length(v) - length(replace(v, ':', '')) "
                f"AS n FROM (SELECT {ident(column)}::text AS v FROM {qualified(schema, table)} "
                f"WHERE {ident(column)} IS NOT NULL LIMIT 10000) s) q")
            if stats is not None and stats["avg"] is not None:
                obs.avg_nonzero, obs.max_nonzero = float(stats["avg"]), int(stats["max"])
    return obs
