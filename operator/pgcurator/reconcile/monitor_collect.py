"""DatabaseMonitor, statistics: table, column and database snapshots, slow statements as deltas,
retention, and the Prometheus series that follow them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import metrics
from ..catalog.monitor_stats import Abilities, read_columns, read_database, read_statements, read_tables
from ..db import monitor_store as store
from ..limits import STATUS_COLUMNS
from ..models.common import parse_duration
from ..models.monitor import DatabaseMonitorSpec
from ..planner.monitor import due
from ..planner.monitor_stats import (
    column_entry,
    growth_per_day,
    ratio,
    statement_deltas,
    table_entry,
    top_statements,
)
from ..timefmt import k8s_time
from .context import ReconcileContext
from .monitor_changes import observed_schemas

# pg_stat_statements rows kept per snapshot (by total time): enough for deltas of the top N.
STATEMENT_ROWS = 500
PRUNE_EVERY_SECONDS = 3600.0


async def collect(ctx: ReconcileContext, spec: DatabaseMonitorSpec, state: dict[str, Any], now: datetime,
                  abilities: Abilities, write: bool) -> tuple[dict[str, Any], list[str]]:
    """(status fragment, tables whose column statistics pg_stats hides from the role). The fragment
    is empty when nothing was due: the merge-patched status keeps the previous figures."""
    status: dict[str, Any] = {}
    hidden: list[str] = []
    stats, slow = spec.statistics, spec.slow_statements
    if not (stats.enabled or slow.enabled) or not due(state.get("statistics_at"), parse_duration(stats.interval), now):
        return status, hidden
    conn, resource = ctx.conn, ctx.resource
    if stats.enabled:
        never, only = observed_schemas(spec)
        rows = await read_tables(conn, never, only, stats.tables)
        baseline = await store.growth_baseline(conn, resource)
        tables = [table_entry(r, growth_per_day(baseline.get((r["schema_name"], r["table_name"])),
                                                int(r["table_bytes"]) + int(r["index_bytes"]) + int(r["toast_bytes"]),
                                                now)) for r in rows]
        db = await read_database(conn)
        status["statistics"] = {
            "takenAt": k8s_time(now),
            "tables": len(tables),
            "largest": tables[:stats.status_tables],
            "database": {"sizeBytes": int(db["size_bytes"]), "cacheHitRatio": ratio(db["blks_hit"], db["blks_read"]),
                         "xidAge": db["xid_age"], "commits": db["xact_commit"], "rollbacks": db["xact_rollback"]},
        }
        if write:
            await store.insert_table_stats(conn, resource, rows)
            await store.insert_database_stats(conn, resource, db)
        if stats.columns.largest_tables and due(state.get("columns_at"), parse_duration(stats.columns.interval), now):
            largest = rows[:stats.columns.largest_tables]
            cols = await read_columns(conn, [(r["schema_name"], r["table_name"]) for r in largest])
            est = {(r["schema_name"], r["table_name"]): int(r["est_rows"]) for r in largest}
            status["statistics"]["columns"] = [column_entry(c, est[(c["schema_name"], c["table_name"])])
                                               for c in cols][:STATUS_COLUMNS]
            seen = {(c["schema_name"], c["table_name"]) for c in cols}
            hidden = [f"{r['schema_name']}.{r['table_name']}" for r in largest
                      if (r["schema_name"], r["table_name"]) not in seen and r["last_analyze"] and r["est_rows"] > 0]
            if write:
                await store.insert_column_stats(conn, resource, cols)
                await store.save_state(conn, resource, columns_at=now)
        _publish_metrics(ctx, tables, status["statistics"]["database"])
    if slow.enabled and abilities.pgss_schema is not None:
        current = await read_statements(conn, abilities.pgss_schema, max(STATEMENT_ROWS, 5 * slow.top))
        deltas = statement_deltas(await store.previous_statements(conn, resource), current, slow.min_calls)
        status["slowStatements"] = {"takenAt": k8s_time(now), **top_statements(deltas, slow.top)}
        if write:
            await store.insert_statements(conn, resource, current)
    if write:
        await store.save_state(conn, resource, statistics_at=now)
        if due(state.get("pruned_at"), PRUNE_EVERY_SECONDS, now):
            await store.prune(conn, resource, parse_duration(spec.retention.snapshots),
                              parse_duration(spec.retention.changes))
            await store.save_state(conn, resource, pruned_at=now)
    return status, hidden


def _publish_metrics(ctx: ReconcileContext, tables: list[dict[str, Any]], database: dict[str, Any]) -> None:
    metrics.observe_monitor_statistics(ctx.namespace, ctx.name, tables[:metrics.MONITOR_TABLE_SERIES], database)
