"""Index suggestions from pg_stat_statements, checked with the planner on a scratch copy.

hypopg is not available everywhere (not in the embedded server), so each proposal is checked
for real: inside a transaction that is always rolled back, a sample of the table is copied
into a temporary table, analysed, and every motivating statement is EXPLAINed
(GENERIC_PLAN, so `$1` placeholders need no values) against it before and after building the
proposed index on the copy. Only proposals the planner prefers are reported. Suggestions are
reported, never applied.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

import asyncpg

from ..catalog.indexes import IndexObservation
from ..models.index import IndexPolicySpec
from ..planner.index_suggest import Pattern, covered, patterns_for_table, rewrite_table
from ..sql.quote import ident, qualified
from .context import ReconcileContext

log = logging.getLogger("pgcurator")
SCRATCH = "pgcurator_scratch"
SAMPLE_ROWS = 100_000
# EXPLAIN through dynamic SQL: the `$1` placeholders of a normalised statement stay unbound, so
# GENERIC_PLAN plans for any value (binding NULLs from the client would plan for NULL instead).
# The text given to it is always a single statement deparsed by pglast (rewrite_table).
EXPLAIN_FN = "pgcurator_explain"
EXPLAIN_FN_SQL = f"""
CREATE FUNCTION pg_temp.{EXPLAIN_FN}(q text) RETURNS json LANGUAGE plpgsql AS $fn$
DECLARE r json;
BEGIN
  EXECUTE 'EXPLAIN (FORMAT JSON, GENERIC_PLAN) ' || q INTO r;
  RETURN r;
END
$fn$
"""
MAX_STATEMENTS = 200

_STATEMENTS_SQL = """
SELECT s.queryid, s.query, s.calls, s.mean_exec_time, s.total_exec_time
  FROM pg_stat_statements s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND s.calls >= $1 AND s.query ILIKE '%' || $2 || '%'
 ORDER BY s.total_exec_time DESC
 LIMIT $3
"""


async def suggestions_status(ctx: ReconcileContext, spec: IndexPolicySpec, obs: IndexObservation) -> dict[str, Any]:
    conn = ctx.conn
    t = spec.table
    if not await conn.fetchval("SELECT to_regclass('pg_stat_statements') IS NOT NULL"):
        return {"available": False, "items": [],
                "reason": "pg_stat_statements is not installed in this database (CREATE EXTENSION pg_stat_statements)"}
    rows = await conn.fetch(_STATEMENTS_SQL, spec.suggestions.min_calls, t.name, MAX_STATEMENTS)
    proposals: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    skipped: dict[tuple[str, ...], str] = {}
    for r in rows:
        query = r["query"]
        if "pgcurator" in query:
            continue
        for p in patterns_for_table(query, t.schema_, t.name):
            cols = p.proposal()
            existing = covered(cols, obs.indexes)
            if existing:
                skipped[cols] = existing
                continue
            proposals[cols].append({"queryId": str(r["queryid"]), "query": query[:500], "calls": int(r["calls"]),
                                    "meanMs": round(float(r["mean_exec_time"]), 3),
                                    "totalMs": round(float(r["total_exec_time"]), 1), "_pattern": p})
    ranked = sorted(proposals.items(), key=lambda kv: -sum(s["totalMs"] for s in kv[1]))
    items = await _check_with_planner(conn, spec, ranked[: spec.suggestions.max_suggestions * 2])
    return {
        "available": True,
        "statementsSeen": len(rows),
        "items": items[: spec.suggestions.max_suggestions],
        "alreadyCovered": [{"columns": list(c), "by": n} for c, n in skipped.items()][:20],
    }


async def _check_with_planner(
    conn: Any, spec: IndexPolicySpec, ranked: list[tuple[tuple[str, ...], list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    t = spec.table
    items: list[dict[str, Any]] = []
    if not ranked:
        return items
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute("SET LOCAL statement_timeout = '60s'")
        await conn.execute(
            f"CREATE TEMP TABLE {SCRATCH} ON COMMIT DROP AS SELECT * FROM {qualified(t.schema_, t.name)} "
            f"LIMIT {SAMPLE_ROWS}"
        )
        await conn.execute(f"ANALYZE pg_temp.{SCRATCH}")
        await conn.execute(EXPLAIN_FN_SQL)
        for n, (cols, statements) in enumerate(ranked):
            before = [await _cost(conn, s["query"], spec) for s in statements]
            await conn.execute(f"SAVEPOINT s{n}")
            await conn.execute(
                f"CREATE INDEX pgcurator_suggest_{n} ON pg_temp.{SCRATCH} ({', '.join(ident(c) for c in cols)})"
            )
            after = [await _cost(conn, s["query"], spec) for s in statements]
            await conn.execute(f"ROLLBACK TO SAVEPOINT s{n}")
            pairs = [(b, a) for b, a in zip(before, after, strict=True) if b is not None and a is not None]
            if not pairs:
                continue
            cost_before = sum(b for b, _ in pairs)
            cost_after = sum(a for _, a in pairs)
            if cost_after >= cost_before * 0.9:
                continue  # the planner would not use it, or barely gains: not worth an index
            name = f"idx_{t.name}_{'_'.join(cols)}"[:63]
            items.append({
                "index": name,
                "columns": list(cols),
                "definition": f"CREATE INDEX CONCURRENTLY {ident(name)} ON {qualified(t.schema_, t.name)} "
                              f"({', '.join(ident(c) for c in cols)})",
                "estimatedCostBefore": round(cost_before, 2),
                "estimatedCostAfter": round(cost_after, 2),
                "sampleRows": SAMPLE_ROWS,
                "statements": [{k: v for k, v in s.items() if not k.startswith("_")} for s in statements[:5]],
                "why": _why(statements[0]["_pattern"]),
            })
    finally:
        await tr.rollback()
    return items


async def _cost(conn: Any, query: str, spec: IndexPolicySpec) -> float | None:
    sql = rewrite_table(query, spec.table.schema_, spec.table.name, SCRATCH)
    if sql is None:
        return None
    await conn.execute("SAVEPOINT explain")
    try:
        plan = await conn.fetchval(f"SELECT pg_temp.{EXPLAIN_FN}($1)", sql)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.info("EXPLAIN of a pg_stat_statements entry failed: %s", exc)
        await conn.execute("ROLLBACK TO SAVEPOINT explain")
        return None
    await conn.execute("RELEASE SAVEPOINT explain")
    doc = json.loads(plan) if isinstance(plan, str) else plan
    return float(doc[0]["Plan"]["Total Cost"])


def _why(p: Pattern) -> str:
    parts = []
    if p.equality:
        parts.append("equality on " + ", ".join(dict.fromkeys(p.equality)))
    if p.ranges:
        parts.append("range on " + p.ranges[0])
    if p.sort:
        parts.append("ORDER BY " + ", ".join(p.sort))
    return "; ".join(parts)
