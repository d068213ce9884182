"""The index report on an IndexPolicy's status: sizes, scans, unused/duplicate/invalid indexes,
B-tree bloat, and (when enabled) suggestions from pg_stat_statements."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..catalog.index_usage import btree_bloat, load_snapshots
from ..catalog.indexes import IndexObservation
from ..db.snapshots import record_snapshot
from ..models.common import parse_duration
from ..models.index import IndexPolicySpec
from ..planner.index import new_name, old_name
from ..planner.index_analysis import find_overlaps, usage_over_window
from ..timefmt import k8s_time, k8s_time_or_none
from .context import ReconcileContext

log = logging.getLogger("pgcurator")
MAX_LISTED = 50


def _ts(value: datetime | None) -> str | None:
    return k8s_time_or_none(value)


async def analysis_status(ctx: ReconcileContext, spec: IndexPolicySpec, obs: IndexObservation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not obs.exists or spec.dry_run or spec.suspend:
        # dryRun and suspend only plan: no usage snapshot is written, no sample copied; the last
        # report stays on the status (it is merge-patched).
        return out
    conn = ctx.conn
    t = spec.table
    now = datetime.now(UTC)
    if spec.analysis.enabled:
        try:
            out["analysis"] = await _analysis(conn, spec, obs, now)
        except (asyncpg.PostgresError, OSError) as exc:  # the report must never block the indexes themselves
            log.warning("index analysis of %s failed: %s", t.qualified, exc)
            out["analysis"] = {"error": str(exc)}
    if spec.suggestions.enabled:
        from .index_suggest import suggestions_status

        try:
            out["suggestions"] = await suggestions_status(ctx, spec, obs)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("index suggestions for %s failed: %s", t.qualified, exc)
            out["suggestions"] = {"error": str(exc)}
    return out


async def _analysis(conn: Any, spec: IndexPolicySpec, obs: IndexObservation, now: datetime) -> dict[str, Any]:
    t = spec.table
    indexes = obs.indexes
    await record_snapshot(conn, t.schema_, t.name, [(i.name, i.scans, i.size_bytes) for i in indexes],
                          obs.stats_reset)
    snapshots = await load_snapshots(conn, t.schema_, t.name)
    window = timedelta(seconds=parse_duration(spec.analysis.unused_after))
    temporary = {new_name(d.name) for d in spec.indexes} | {old_name(d.name) for d in spec.indexes}
    oids = await conn.fetch(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])",
        t.schema_, [t.name, *[p.name for p in obs.partitions]],
    )
    bloat = await btree_bloat(conn, [r[0] for r in oids])
    # A partitioned index's bloat is the sum over its partitions' indexes.
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for part in obs.partitions:
        for pi in part.indexes:
            if pi.parent_index and pi.name in bloat:
                by_parent.setdefault(pi.parent_index, []).append(bloat[pi.name])

    rows = []
    unused = []
    for info in indexes:
        row: dict[str, Any] = {
            "name": info.name,
            "method": info.method,
            "sizeBytes": info.size_bytes,
            "scans": info.scans,
            "lastScan": _ts(info.last_scan),
            "valid": info.valid,
            "declared": any(d.name == info.name for d in spec.indexes),
        }
        if info.constraint:
            row["constraint"] = info.constraint
        b = bloat.get(info.name) or _sum_bloat(by_parent.get(info.name))
        if b:
            row["bloat"] = b
        usage = usage_over_window(snapshots.get(info.name, []), info.scans, now, window)
        row["scansInWindow"] = usage.scans_in_window
        if usage.unused and not info.backs_constraint and info.name not in temporary:
            unused.append(info.name)
        rows.append(row)
    overlaps = find_overlaps(indexes)
    invalid = [i.name for i in indexes if not i.valid]
    for part in obs.partitions:
        invalid.extend(f"{part.name}.{i.name}" for i in part.indexes if not i.valid)
    return {
        "takenAt": k8s_time(now),
        "statsReset": _ts(obs.stats_reset),
        "unusedWindow": spec.analysis.unused_after,
        "indexes": rows[:MAX_LISTED],
        "totalIndexBytes": sum(i.size_bytes for i in indexes),
        "unused": unused,
        "duplicates": [{"index": o.index, "of": o.other, "reason": o.reason} for o in overlaps if o.kind == "duplicate"],
        "redundant": [{"index": o.index, "coveredBy": o.other, "reason": o.reason}
                      for o in overlaps if o.kind == "redundant"],
        "invalid": invalid[:MAX_LISTED],
    }


def _sum_bloat(parts: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not parts:
        return None
    pages = sum(p["pages"] for p in parts)
    expected = sum(p["expectedPages"] for p in parts)
    extra = sum(p["bloatBytes"] for p in parts)
    return {"pages": pages, "expectedPages": expected, "bloatBytes": extra,
            "bloatPercent": round(100.0 * extra / (pages * 8192), 1) if pages else 0.0}


