"""Invariants checked after every reconcile of the state-space suite.

Each check raises `Broken(invariant, detail)`; the explorer decides whether the failure is a
defect already being fixed elsewhere (known.py) or a new one (the test fails)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from .harness import Result
from .tally import bump

LOCK_MARGIN_S = 2.5  # how much longer than lockTimeout a statement may wait (timer slack on a busy machine)


class Broken(AssertionError):
    def __init__(self, invariant: str, detail: str, result: Result | None = None) -> None:
        self.invariant = invariant
        self.detail = detail
        self.result = result
        super().__init__(f"invariant {invariant!r} broken: {detail}" + (f"\n{result.describe()}" if result else ""))


def counted(kind: str) -> None:
    bump(kind, "invariants checked")


def no_internal_error(kind: str, r: Result) -> None:
    """No unexpected exception: a typed Degraded reason is fine where the state is genuinely bad."""
    counted(kind)
    if not r.status.get("conditions"):
        raise Broken("status written", "the reconcile published no conditions", r)
    if r.reason == "InternalError" or r.tracebacks:
        raise Broken("no InternalError", r.message, r)


def plans_nothing(kind: str, dry: Result) -> None:
    """A dry run right after a Ready run: nothing planned, UpToDate."""
    counted(kind)
    if dry.status.get("plan") or dry.reason != "UpToDate":
        raise Broken("second reconcile plans nothing",
                     f"reason {dry.reason}, plan {dry.status.get('plan')}", dry)


def normalise_history(rows: list[Any]) -> list[str]:
    """Statements as the plan lists them: batch rounds of a move collapse into their statement."""
    out: list[str] = []
    for r in rows:
        stmt = re.sub(r" -- \d+ rows$", "", r["statement"])
        if r["step"] == "move_default_rows" and out and out[-1] == stmt:
            continue
        out.append(stmt)
    return out


async def history_mark(conn: asyncpg.Connection) -> int:
    if not await conn.fetchval("SELECT to_regclass('pgcurator.history') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM pgcurator.history"))


async def history_since(conn: asyncpg.Connection, resource: str, mark: int) -> list[Any]:
    if not await conn.fetchval("SELECT to_regclass('pgcurator.history') IS NOT NULL"):
        return []
    return list(await conn.fetch(
        "SELECT step, target, statement, outcome, duration_ms, error FROM pgcurator.history "
        "WHERE resource = $1 AND id > $2 ORDER BY id", resource, mark))


def dry_plan_equals_run(kind: str, dry: Result, rows: list[Any]) -> None:
    """What a dry run lists is exactly what the next real run executes (when nothing failed)."""
    if any(r["outcome"] != "ok" for r in rows):
        return
    counted(kind)
    planned = list(dry.status.get("plan") or [])
    ran = normalise_history(rows)
    if planned != ran:
        extra = [s for s in ran if s not in planned][:3]
        missing = [s for s in planned if s not in ran][:3]
        raise Broken("dry-run plan equals what runs",
                     f"{len(planned)} planned, {len(ran)} ran; ran but not planned {extra}; planned but not run "
                     f"{missing}", dry)


def dry_plan_starts_conversion(kind: str, dry: Result, rows: list[Any]) -> None:
    """A conversion's dry run lists how it would start; its history row summarises the statements
    that ran ("N statements: first; second; ... ..."): those shown are the plan's, in order."""
    if any(r["outcome"] != "ok" for r in rows) or not rows or rows[0]["step"] != "convert_prepare":
        return
    counted(kind)
    planned = list(dry.status.get("plan") or [])
    text = re.sub(r"^\d+ statements: ", "", rows[0]["statement"]).removesuffix(" ...")
    shown = text.split("; ")
    if shown != planned[:len(shown)]:
        raise Broken("dry-run plan equals what runs",
                     f"the conversion ran {shown[:3]}, its dry run planned {planned[:3]}", dry)


def statements_within_lock_timeout(kind: str, rows: list[Any], lock_timeout_s: float) -> None:
    """Every statement that gave up on a lock did so within lockTimeout (plus timer slack)."""
    for r in rows:
        if r["outcome"] == "lock_timeout":
            counted(kind)
            if r["duration_ms"] / 1000 > lock_timeout_s + LOCK_MARGIN_S:
                raise Broken("every statement respects lockTimeout",
                             f"{r['step']} {r['target']} waited {r['duration_ms']:.0f} ms with lockTimeout "
                             f"{lock_timeout_s * 1000:.0f} ms: {r['statement'][:200]}")


@dataclass(frozen=True)
class Rel:
    relkind: str
    parent: str | None
    bound: str | None
    rows: int


async def relations(conn: asyncpg.Connection, schema: str) -> dict[str, Rel]:
    """Every table of `schema` with where it is attached and how many rows it holds."""
    out: dict[str, Rel] = {}
    recs = await conn.fetch(
        "SELECT c.relname::text AS name, c.relkind::text AS relkind, p.relname::text AS parent, "
        "pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_catalog.pg_class p ON p.oid = i.inhparent "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')", schema)
    for r in recs:
        qn = '"' + schema.replace('"', '""') + '"."' + r["name"].replace('"', '""') + '"'
        rows = 0 if r["relkind"] == "p" else int(await conn.fetchval(f"SELECT count(*) FROM ONLY {qn}"))
        out[r["name"]] = Rel(r["relkind"], r["parent"], r["bound"], rows)
    return out


def untouched(kind: str, before: dict[str, Rel], after: dict[str, Rel], where: str,
              allowed: set[str] | None = None) -> None:
    """Objects the resource does not own keep their shape, attachment and rows."""
    counted(kind)
    for name, rel in before.items():
        if allowed is not None and name in allowed:
            continue
        now = after.get(name)
        if now != rel:
            raise Broken("objects owned by others untouched", f"{where}.{name}: {rel} -> {now}")


async def row_digest(conn: asyncpg.Connection, table: str, where: str = "true") -> tuple[int, int]:
    """Count and checksum of the rows (read in the suite's pinned session: stable text forms)."""
    row = await conn.fetchrow(
        f"SELECT count(*), coalesce(sum(hashtextextended(id::text || '|' || k::text || '|' || "
        f"coalesce(payload, ''), 0)), 0) FROM {table} WHERE {where}")
    return int(row[0]), int(row[1])


def rows_conserved(kind: str, before: tuple[int, int], after: tuple[int, int], what: str) -> None:
    counted(kind)
    if before != after:
        raise Broken("rows conserved", f"{what}: (count, checksum) {before} -> {after}")


def same_plan(kind: str, with_settings: Result, without: Result, settings: dict[str, str]) -> None:
    """A dry run under `ALTER DATABASE ... SET` equals the dry run of the same state without them."""
    counted(kind)
    a = (with_settings.reason, with_settings.status.get("plan"))
    b = (without.reason, without.status.get("plan"))
    if a != b:
        raise Broken("database settings never change the plan",
                     f"with {settings}: {a[0]} {str(a[1])[:300]}; without: {b[0]} {str(b[1])[:300]}", with_settings)


def no_planned_statement_fails(kind: str, r: Result, rows: list[Any]) -> None:
    """With no other session interfering, a statement the planner chose never fails in PostgreSQL:
    a failure means the planner planned something the server refuses."""
    counted(kind)
    failed = [row for row in rows if row["outcome"] == "error"]
    if failed:
        f = failed[0]
        raise Broken("no planned statement fails", f"{f['step']} {f['target']}: {f['error']}: {f['statement'][:300]}",
                     r)
