"""Per-partition statistics snapshots (seed 000): stored in the metadata schema every run, so
growth can be reported even across statistics resets. The table is db/metadata.py's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..catalog.partitions import TableObservation
from ..models.partition import PartitionPolicySpec
from ..timefmt import k8s_time

# One snapshot per table per this interval: the schedule may run far more often.
SNAPSHOT_EVERY = timedelta(minutes=10)
KEEP_FOR = timedelta(days=60)


async def record_and_summarise(conn: Any, spec: PartitionPolicySpec, obs: TableObservation,
                               resource: str) -> dict[str, Any]:
    t = spec.table
    leaves = [c for p in obs.partitions for c in (p.children or [p])]
    total_rows = sum(p.estimated_rows for p in leaves)
    total_bytes = sum(p.size_bytes for p in leaves)
    last = await conn.fetchval(
        "SELECT max(captured_at) FROM pgcurator.partition_stats WHERE table_schema = $1 AND table_name = $2",
        t.schema_, t.name)
    now = datetime.now(UTC)
    if leaves and (last is None or now - last >= SNAPSHOT_EVERY):
        await conn.executemany(
            "INSERT INTO pgcurator.partition_stats (resource, table_schema, table_name, partition_name, est_rows, "
            "size_bytes) VALUES ($1, $2, $3, $4, $5, $6)",
            [(resource, t.schema_, t.name, p.name, p.estimated_rows, p.size_bytes) for p in leaves])
        await conn.execute("DELETE FROM pgcurator.partition_stats WHERE captured_at < $1", now - KEEP_FOR)
    week_ago = await conn.fetchrow(
        "SELECT captured_at, sum(est_rows) AS rows, sum(size_bytes) AS bytes FROM pgcurator.partition_stats "
        "WHERE table_schema = $1 AND table_name = $2 AND captured_at = (SELECT min(captured_at) FROM "
        "pgcurator.partition_stats WHERE table_schema = $1 AND table_name = $2 AND captured_at >= $3) "
        "GROUP BY captured_at", t.schema_, t.name, now - timedelta(days=7))
    summary: dict[str, Any] = {"totalRows": total_rows, "totalBytes": total_bytes}
    if week_ago is not None:
        days = (now - week_ago["captured_at"]).total_seconds() / 86400
        if days >= 1 / 24:  # at least an hour of history before a rate means anything
            summary["rowsPerDay"] = round((total_rows - int(week_ago["rows"])) / days)
            summary["bytesPerDay"] = round((total_bytes - int(week_ago["bytes"])) / days)
            summary["since"] = k8s_time(week_ago["captured_at"])
    return summary
