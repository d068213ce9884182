"""Statistics snapshots written into the metadata schema (the tables are db/metadata.py's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import settings


async def record_snapshot(
    conn: Any, schema: str, table: str, rows: list[tuple[str, int, int]], stats_reset: datetime | None
) -> bool:
    """rows: (index, scans, size). Written at most every PGCURATOR_INDEX_SNAPSHOT_SECONDS per table."""
    recent = await conn.fetchval(
        "SELECT max(taken_at) > now() - make_interval(secs => $3) FROM pgcurator.index_usage "
        "WHERE schema_name = $1 AND table_name = $2", schema, table, settings.current().index_snapshot_seconds)
    if recent:
        return False
    await conn.executemany(
        "INSERT INTO pgcurator.index_usage (schema_name, table_name, index_name, scans, size_bytes, stats_reset) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [(schema, table, name, scans, size, stats_reset) for name, scans, size in rows],
    )
    return True
