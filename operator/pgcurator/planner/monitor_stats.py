"""DatabaseMonitor statistics, without I/O: growth per day from snapshots, cache-hit ratios,
slow statements as deltas between snapshots, and what the role lacks (with the GRANT that fixes it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..limits import SHOWN_ITEMS, STATUS_TEXT
from ..sql.quote import ident
from ..timefmt import k8s_time_or_none
from .monitor import redact

# Growth needs a baseline at least this old, or the rate is noise.
MIN_GROWTH_SPAN_SECONDS = 3600.0


def ratio(hit: int | None, read: int | None) -> float | None:
    total = (hit or 0) + (read or 0)
    return round((hit or 0) / total, 4) if total else None


def growth_per_day(baseline: tuple[datetime, int] | None, total: int, now: datetime) -> int | None:
    if baseline is None:
        return None
    span = (now - baseline[0]).total_seconds()
    if span < MIN_GROWTH_SPAN_SECONDS:
        return None
    return round((total - baseline[1]) * 86400 / span)


def table_entry(row: dict[str, Any], growth: int | None) -> dict[str, Any]:
    total = int(row["table_bytes"]) + int(row["index_bytes"]) + int(row["toast_bytes"])
    scans = (row.get("seq_scan") or 0) + (row.get("idx_scan") or 0)
    return {
        "table": f"{row['schema_name']}.{row['table_name']}",
        "rows": int(row["live_rows"] if row.get("live_rows") is not None else row["est_rows"]),
        "deadRows": row.get("dead_rows"),
        "tableBytes": int(row["table_bytes"]), "indexBytes": int(row["index_bytes"]),
        "toastBytes": int(row["toast_bytes"]), "totalBytes": total,
        "growthBytesPerDay": growth,
        "seqScans": row.get("seq_scan"), "indexScans": row.get("idx_scan"),
        "indexScanRatio": round((row.get("idx_scan") or 0) / scans, 4) if scans else None,
        "heapHitRatio": ratio(row.get("heap_hit"), row.get("heap_read")),
        "indexHitRatio": ratio(row.get("idx_hit"), row.get("idx_read")),
        "lastVacuum": k8s_time_or_none(row.get("last_vacuum")), "lastAnalyze": k8s_time_or_none(row.get("last_analyze")),
    }


def column_entry(row: dict[str, Any], est_rows: int) -> dict[str, Any]:
    """pg_stats' n_distinct is negative when it is a fraction of the rows: made absolute here."""
    nd = row.get("n_distinct")
    distinct = None if nd is None else round(-nd * est_rows) if nd < 0 else round(nd)
    return {"table": f"{row['schema_name']}.{row['table_name']}", "column": row["column_name"],
            "nullFraction": None if row.get("null_frac") is None else round(float(row["null_frac"]), 4),
            "distinct": distinct}


def statement_deltas(previous: dict[tuple[int, int], dict[str, Any]], current: list[dict[str, Any]],
                     min_calls: int) -> list[dict[str, Any]]:
    """Work done since the previous snapshot. A statement absent before, or whose counters went
    down (pg_stat_statements_reset, eviction), counts from zero."""
    out = []
    for row in current:
        before = previous.get((int(row["queryid"]), int(row["userid"])))
        calls, total, rows = int(row["calls"]), float(row["total_ms"]), int(row["rows"])
        if before is not None and before["calls"] <= calls and before["total_ms"] <= total:
            calls, total, rows = calls - before["calls"], total - before["total_ms"], rows - before["rows"]
        if calls < min_calls or calls <= 0:
            continue
        out.append({"queryId": str(row["queryid"]), "calls": calls, "totalMs": round(total, 2),
                    "meanMs": round(total / calls, 3), "rows": rows, "query": (redact(row.get("query")) or "")[:STATUS_TEXT]})
    return out


def top_statements(deltas: list[dict[str, Any]], n: int) -> dict[str, list[dict[str, Any]]]:
    return {"byTotalTime": sorted(deltas, key=lambda d: -d["totalMs"])[:n],
            "byMeanTime": sorted(deltas, key=lambda d: -d["meanMs"])[:n]}


@dataclass(frozen=True)
class Missing:
    feature: str
    reason: str  # a typed reason for the status
    message: str
    fix: str


def missing_privileges(abilities: Any, want_trigger: bool, want_statements: bool,
                       unreadable_columns: list[str]) -> list[Missing]:
    """What the role lacks for the features asked for (catalog.monitor_stats.Abilities)."""
    role = ident(abilities.role)
    out: list[Missing] = []
    if want_trigger and not abilities.superuser and not abilities.triggers:
        out.append(Missing(
            "eventTrigger", "EventTriggerNeedsSuperuser",
            f"role {abilities.role} may not create event triggers (superuser only, PostgreSQL "
            f"{abilities.server_version // 10000}); schema changes are found by the fingerprint alone, without who",
            "as a superuser, run the event trigger SQL in docs/databasemonitor.md in this database "
            "(`pgcurator monitor-trigger-sql` prints it)"))
    if want_statements and abilities.pgss_schema is None:
        how = ("CREATE EXTENSION pg_stat_statements (as a superuser, in this database)" if abilities.pgss_available
               else "add pg_stat_statements to shared_preload_libraries, restart, then CREATE EXTENSION "
                    "pg_stat_statements")
        out.append(Missing("slowStatements", "PgStatStatementsMissing",
                           "pg_stat_statements is not installed in this database", how))
    if want_statements and not abilities.read_all_stats and not abilities.superuser:
        out.append(Missing("slowStatements", "NeedsPgReadAllStats",
                           f"role {abilities.role} sees only its own statements in pg_stat_statements",
                           f"GRANT pg_read_all_stats TO {role}"))
    if unreadable_columns:
        shown = ", ".join(unreadable_columns[:SHOWN_ITEMS])
        out.append(Missing("columnStatistics", "ColumnStatisticsHidden",
                           f"pg_stats hides the columns of {len(unreadable_columns)} tables role {abilities.role} "
                           f"may not read (e.g. {shown})",
                           f"GRANT pg_read_all_data TO {role} (or SELECT on those tables)"))
    return out


def trigger_state(abilities: Any, version: str) -> tuple[str, str]:
    """(state, explanation) of the event trigger: Active, Disabled, Outdated, Missing."""
    if not abilities.triggers:
        return "Missing", "no pgcurator event trigger in this database"
    if any(v == "D" for v in abilities.triggers.values()) or abilities.event_triggers_setting == "off":
        return "Disabled", "the pgcurator event trigger is disabled (ALTER EVENT TRIGGER ... ENABLE, or event_triggers=on)"
    if len(abilities.triggers) < 2:
        return "Incomplete", "one of the two pgcurator event triggers (pgcurator_ddl, pgcurator_drop) is missing"
    if abilities.trigger_version != version:
        return "Outdated", f"the installed event trigger is {abilities.trigger_version!r}, this operator ships {version!r}"
    return "Active", "schema changes are recorded with who and when"
