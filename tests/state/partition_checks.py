"""One explored step for a PartitionPolicy: dry run, real run, second dry run, and every invariant.

The window a Ready policy promises is computed by PostgreSQL itself (interval arithmetic in the
policy's time zone), never by the planner under test."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from . import invariants as inv
from .harness import Harness, Result, resource_name
from .partition_states import PartitionCase, q
from .tally import bump, distinct

KIND = "PartitionPolicy"
RESOURCE = resource_name(KIND)
OTHER = "other-policy"
# A run that stops at these never got to the table (the metadata schema is not usable): it
# manages nothing, so the subject is not a second manager.
NOT_MANAGING = {"MetadataSchemaForbidden", "MetadataSchemaTooNew"}


def _window_exprs(case_key: str, r: dict[str, Any]) -> list[str]:
    """SQL expressions (of $1, the instant `now`) for probe points of the declared window."""
    if "width" in r:
        return []
    n, unit = r["interval"].split()
    tz = r.get("timeZone", "UTC").replace("'", "''")
    iv = f"interval '{n} {unit}'"
    out = []
    p1 = int(r["premake"]) + 1
    if n == "1":
        # The whole current period and the window's last instant (PostgreSQL's date_trunc in the
        # policy's zone; hours are aligned on UTC, as the README says).
        unit1 = unit.rstrip("s")
        if case_key == "timestamptz":
            start = ("date_trunc('hour', $1::timestamptz, 'UTC')" if unit1 == "hour"
                     else f"date_trunc('{unit1}', $1::timestamptz, '{tz}')")
            out += [start, f"({start} + {p1} * {iv} - interval '1 microsecond')"]
        elif case_key == "timestamp":
            start = (f"(date_trunc('hour', $1::timestamptz, 'UTC') AT TIME ZONE '{tz}')" if unit1 == "hour"
                     else f"date_trunc('{unit1}', $1::timestamptz AT TIME ZONE '{tz}')")
            out += [start, f"({start} + {p1} * {iv} - interval '1 microsecond')"]
        else:
            start = f"date_trunc('{unit1}', $1::timestamptz AT TIME ZONE '{tz}')::date"
            out += [start, f"({start} + {p1} * {iv} - interval '1 day')::date"]
    for k in range(int(r["premake"]) + 1):
        if case_key == "timestamptz":
            out.append(f"($1::timestamptz + {k} * {iv})")
        elif case_key == "timestamp":
            out.append(f"(($1::timestamptz AT TIME ZONE '{tz}') + {k} * {iv})")
        else:
            out.append(f"((($1::timestamptz AT TIME ZONE '{tz}')::date) + {k} * {iv})::date")
    return out


_BOUND = re.compile(r"(?:FROM|TO) \(([^()]+)\)")


def _at(key_type: str, tz: str) -> str:
    """$1 (an instant) as a value of the key column, in the policy's zone."""
    z = tz.replace("'", "''")
    return {"timestamptz": "$1::timestamptz", "timestamp": f"($1::timestamptz AT TIME ZONE '{z}')",
            "date": f"($1::timestamptz AT TIME ZONE '{z}')::date"}[key_type]


async def probe_gaps(conn: asyncpg.Connection, table: str, key_type: str, r: dict[str, Any],
                     now: datetime, covered: str | None = None, sub: dict[str, Any] | None = None) -> list[str]:
    """Insert a row at `now`, at every period of the window and at every bound of the partition
    tree (first level and leaves) from the window's start to `covered` (the status's coveredUntil),
    each in a savepoint of a transaction that is rolled back. A row that finds no partition, or
    falls into the DEFAULT partition, is a gap.

    `sub`: the spec's second level. On the first level's own column it promises leaves from `now`
    on (the part of the current period before it may be an older layout's), so probes start there;
    on another column (id) each point is probed with ids that reach every hash remainder / the
    first sub-range."""
    t = f"st.{q(table)}"
    ctype = {"timestamptz": "timestamptz", "timestamp": "timestamp", "date": "date", "bigint": "bigint"}[key_type]
    tz = r.get("timeZone", "UTC")
    gaps: list[str] = []
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(f"SET LOCAL TimeZone = '{tz}'")
        if "width" in r:
            anchor = await conn.fetchval(f"SELECT max(k) FROM {t}") or 0
            w = int(r["width"])
            probes = [str(anchor + k * w) for k in range(int(r["premake"]) + 1)]
            lo_hi = (anchor, anchor + int(r["premake"]) * w)
            values = [await conn.fetchval(f"SELECT {p}::bigint") for p in probes]
        else:
            values = [await conn.fetchval(f"SELECT {e}", now) for e in _window_exprs(key_type, r)]
            lo_hi = (min(values), max(values))
        same_column = sub is not None and sub.get("range", {}).get("column") == r["column"]
        if same_column:
            # now as the sub-level sees it (a wall-clock or date column: in the sub-level's zone)
            sub_tz = sub["range"].get("timeZone", tz)  # type: ignore[index]
            since = lo_hi[0] if "width" in r else max(lo_hi[0], await conn.fetchval(
                f"SELECT {_at(key_type, sub_tz)}", now))  # never before the first level's current period
            if since > lo_hi[1]:
                # In its own zone the sub-level's now is past the whole window (a wall-clock or date
                # column, e.g. Chatham's next morning): it promises nothing inside the window yet.
                values, lo_hi = [], (since, since)
            else:
                values = [v for v in values if v >= since] + [since]
                lo_hi = (since, lo_hi[1])
        open_top = False
        if covered is not None:
            try:
                async with conn.transaction():
                    until = await conn.fetchval(f"SELECT $1::text::{ctype}", covered)
                if until > lo_hi[1]:  # coverage past the window: its bounds too, up to the end (excluded)
                    lo_hi, open_top = (lo_hi[0], until), True
            except asyncpg.PostgresError:
                pass
        bounds = await conn.fetch(
            "SELECT pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_catalog.pg_partition_tree($1::regclass) p "
            "JOIN pg_catalog.pg_class c ON c.oid = p.relid WHERE p.level > 0 "
            "AND pg_catalog.pg_get_partkeydef(p.parentrelid) = 'RANGE (k)'", t)
        for b in bounds:
            for m in _BOUND.finditer(b["b"] or ""):
                if m.group(1) in ("MAXVALUE", "MINVALUE"):
                    continue
                try:
                    async with conn.transaction():
                        v = await conn.fetchval(f"SELECT {m.group(1)}::{ctype}")
                except asyncpg.PostgresError:
                    continue
                if lo_hi[0] <= v and (v < lo_hi[1] or (v == lo_hi[1] and not open_top)):
                    values.append(v)
        default = await conn.fetchval(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON "
            "c.oid = i.inhrelid WHERE i.inhparent = $1::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'",
            t)
        ids: list[int | None] = [None]
        if sub is not None and not same_column:
            ids = list(range(1, 9)) if "hash" in sub else [1, 999]
        for v in sorted(set(values)):
            for id_ in ids:
                bump(KIND, "gap probes inserted")
                try:
                    async with conn.transaction():
                        where = await (
                            conn.fetchval(f"INSERT INTO {t} (k) VALUES ($1) RETURNING tableoid::regclass::text", v)
                            if id_ is None else
                            conn.fetchval(f"INSERT INTO {t} (id, k) VALUES ($2, $1) RETURNING tableoid::regclass::text",
                                          v, id_))
                    if default is not None and where == default:
                        gaps.append(f"{v} falls into the DEFAULT partition")
                except asyncpg.UniqueViolationError:
                    pass  # a row with this (id, k) is there already: routed to a partition all the same
                except asyncpg.PostgresError as exc:
                    gaps.append(f"{v}{'' if id_ is None else f' (id {id_})'}: {exc.sqlstate} {exc}")
    finally:
        await tr.rollback()
    return gaps


def conserve_where(case_key: str, r: dict[str, Any], retention: dict[str, Any] | None) -> str:
    """Rows retention may legitimately remove are left out of the conservation check."""
    if retention is None:
        return "true"
    keep = int(retention["keep"])
    if "width" in r:
        w = int(r["width"])
        return f"k >= (SELECT coalesce(max(k), 0) FROM {{t}}) - {keep * w}"
    n, unit = r["interval"].split()
    tz = r.get("timeZone", "UTC").replace("'", "''")
    since = f"($1::timestamptz - {keep} * interval '{n} {unit}')"
    if case_key == "timestamptz":
        return f"k >= {since}"
    return f"k >= ({since} AT TIME ZONE '{tz}')"


@dataclass
class Step:
    dry: Result
    real: Result
    again: Result | None


async def _digest(conn: asyncpg.Connection, case: PartitionCase, spec: dict[str, Any], now: datetime
                  ) -> tuple[int, int] | None:
    t = f"st.{q(case.table)}"
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", t)
    if not exists:
        return None
    where = conserve_where(case.key_type, spec["range"], spec.get("retention")).replace("{t}", t)
    sql = (f"SELECT count(*), coalesce(sum(hashtextextended(id::text || '|' || k::text || '|' || "
           f"coalesce(payload, ''), 0)), 0) FROM {t} WHERE {where}")
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        try:
            async with conn.transaction():
                row = await (conn.fetchrow(sql, now) if "$1" in sql else conn.fetchrow(sql))
        except asyncpg.DatetimeFieldOverflowError:  # `keep` reaches before 4713 BC: retention removes nothing
            row = await conn.fetchrow(sql.split(" WHERE ")[0])
    finally:
        await tr.rollback()
    return int(row[0]), int(row[1])


async def reconcile_and_check(h: Harness, case: PartitionCase, spec: dict[str, Any], now: datetime) -> Step:
    """Another PartitionPolicy on the table (if any), then dry run, real run, dry run again; every
    invariant in between."""
    admin = await h.admin()
    other: Result | None = None
    if case.other_policy is not None:
        other = await h.apply(KIND, case.other_policy, now=now, name=OTHER)
        inv.no_internal_error(KIND, other)
    distinct(KIND, "specs tried", spec)
    bump(KIND, "reconciles", 3)
    st_before = await inv.relations(admin, "st")
    other_before = await inv.relations(admin, "other")
    rows_before = await _digest(admin, case, spec, now)

    dry = await h.apply(KIND, {**spec, "dryRun": True}, now=now)
    inv.no_internal_error(KIND, dry)
    inv.untouched(KIND, st_before, await inv.relations(admin, "st"), "st (dry run)")

    mark = await inv.history_mark(admin)
    real = await h.apply(KIND, spec, now=now)
    inv.no_internal_error(KIND, real)
    ran = await inv.history_since(admin, RESOURCE, mark)
    inv.statements_within_lock_timeout(KIND, ran, 2.0)
    inv.no_planned_statement_fails(KIND, real, ran)
    if dry.reason in ("DryRun", "UpToDate") and not real.degraded:
        if "conversion would start" in dry.message:
            inv.dry_plan_starts_conversion(KIND, dry, ran)
        elif dry.message.startswith("dryRun: would "):
            pass  # a conversion under way: its dry run names the next transition (copying rows is no plan)
        else:
            inv.dry_plan_equals_run(KIND, dry, ran)
    inv.untouched(KIND, other_before, await inv.relations(admin, "other"), "other")
    if other is not None and other.reason not in NOT_MANAGING:
        # One manager per table: the second policy on it runs nothing and says who manages it.
        inv.counted(KIND)
        bump(KIND, "second policy on a managed table")
        if ran or real.reason != "ConflictingManager" or dry.reason != "ConflictingManager":
            raise inv.Broken("objects owned by others untouched",
                             f"st.{case.table} is managed by {OTHER} ({other.reason}); the second policy said "
                             f"{dry.reason}/{real.reason} and ran {inv.normalise_history(ran)[:5]}", real)
        inv.untouched(KIND, st_before, await inv.relations(admin, "st"), f"st (managed by {OTHER})")
    # Partitions that are not the resource's to change keep their shape. Retention may remove old
    # ones, and a DEFAULT partition's rows may be moved out.
    if spec.get("retention") is None:
        allowed = {n for n, rel in st_before.items() if rel.bound == "DEFAULT"}
        allowed |= {case.table}
        if (spec.get("convert") or {}).get("dropOriginal"):  # the conversion's own leftover, to drop
            from pgcurator.catalog.conversion import original_name

            allowed.add(original_name(case.table))
        inv.untouched(KIND, st_before, await inv.relations(admin, "st"), "st", allowed)
    rows_after = await _digest(admin, case, spec, now)
    if rows_before is not None:
        assert rows_after is not None
        inv.rows_conserved(KIND, rows_before, rows_after, f"st.{case.table}")

    again: Result | None = None
    if real.ready:
        gaps = await probe_gaps(admin, case.table, case.key_type, spec["range"], now, real.status.get("coveredUntil"),
                                spec.get("subpartition"))
        inv.counted(KIND)
        if gaps:
            raise inv.Broken("no gap inside the window while Ready", "; ".join(gaps[:5]), real)
        again = await h.apply(KIND, {**spec, "dryRun": True}, now=now)
        inv.no_internal_error(KIND, again)
        inv.plans_nothing(KIND, again)
        if _layout(real.status) != _layout(again.status):
            # The run read back only what it changed and did not plan again (issue 14).
            raise inv.Broken("the status after a run is what a fresh observation shows",
                             f"after the run {_layout(real.status)}; observed afresh {_layout(again.status)}", real)
    return Step(dry, real, again)


# What a run changes of the status; row estimates and sizes are statistics of the moment of reading.
_LAYOUT = ("partitionCount", "coveredUntil", "oldestBound", "newestBound", "partitionsAhead", "defaultRows",
           "defaultRowsRange", "templateDrift", "unmanagedPartitions", "partitionsTruncated")


def _layout(status: dict[str, Any]) -> dict[str, Any]:
    out = {k: status.get(k) for k in _LAYOUT}
    out["partitions"] = [{k: v for k, v in p.items() if k not in ("estimatedRows", "sizeBytes")}
                         for p in status.get("partitions") or []]
    return out
