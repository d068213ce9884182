"""Index usage snapshots read back from the pgcurator metadata schema, and a B-tree bloat estimate.

Snapshots keep idx_scan history across `pg_stat_reset()` so "unused for a week" means what
it says even when statistics were reset meanwhile."""

from __future__ import annotations

from datetime import datetime
from typing import Any


async def load_snapshots(conn: Any, schema: str, table: str) -> dict[str, list[tuple[datetime, int]]]:
    out: dict[str, list[tuple[datetime, int]]] = {}
    for r in await conn.fetch(
        "SELECT index_name, taken_at, scans FROM pgcurator.index_usage WHERE schema_name = $1 AND table_name = $2 "
        "ORDER BY taken_at", schema, table):
        out.setdefault(r[0], []).append((r[1], int(r[2])))
    return out


# Expected B-tree size from tuple count and average key width (pg_stats), as the well-known
# estimation queries do: leaf tuples of 8-byte header + 4-byte line pointer + MAXALIGNed data,
# pages filled to the fillfactor (90 by default). Only for indexes on plain columns with stats.
_BLOAT_SQL = """
WITH idx AS (
  SELECT ic.oid, ic.relname::text AS name, ic.relpages::bigint AS pages, greatest(ic.reltuples, 0) AS tuples,
         coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(ic.reloptions) o
                    WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor,
         i.indrelid, i.indkey
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
   WHERE i.indrelid = ANY($1::oid[]) AND am.amname = 'btree' AND ic.relkind = 'i' AND i.indexprs IS NULL
), width AS (
  SELECT idx.oid, sum(s.avg_width) AS w, count(s.avg_width) AS have, count(*) AS need
    FROM idx CROSS JOIN LATERAL unnest(idx.indkey::int2[]) AS k(attnum)
    JOIN pg_attribute a ON a.attrelid = idx.indrelid AND a.attnum = k.attnum
    JOIN pg_class t ON t.oid = idx.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
    LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
   GROUP BY idx.oid
)
SELECT idx.name, idx.pages,
       ceil(idx.tuples * (12 + 8 * ceil(width.w / 8.0)) / ((8192 - 24 - 16) * idx.fillfactor / 100.0)) + 1
         AS expected_pages
  FROM idx JOIN width ON width.oid = idx.oid
 WHERE width.have = width.need AND idx.pages >= 10
"""


async def btree_bloat(conn: Any, table_oids: list[int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch(_BLOAT_SQL, table_oids):
        pages, expected = int(r["pages"]), int(r["expected_pages"] or 0)
        extra = max(0, pages - expected)
        out[r["name"]] = {"pages": pages, "expectedPages": expected, "bloatBytes": extra * 8192,
                          "bloatPercent": round(100.0 * extra / pages, 1) if pages else 0.0}
    return out
