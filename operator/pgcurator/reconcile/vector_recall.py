"""Recall of a vector index, measured: k-NN queries sampled from the table's rows, exact answers
with index scans disabled, the same queries through the index at several ef_search / probes
values, recall@k and latency per value, and the smallest value that meets the target."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import asyncpg

from ..db.executor import run_plan
from ..models.pgvector import OPERATORS
from ..models.vector import VectorIndexSpec
from ..planner.vector_recall import percentile, recall_at_k, recommend, search_parameter, search_values
from ..sql.quote import ident, literal, qualified
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from .context import ReconcileContext
from .outcome import Event, step_event


def recall_config_hash(spec: VectorIndexSpec, index_definition: str) -> str:
    """Changes when the index or the measurement settings change: then recall is measured again."""
    r = spec.recall
    doc = [index_definition, r.k, r.queries, r.target_recall, r.search_values, r.sample_filter,
           r.apply.model_dump() if r.apply else None]
    return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:16]


def _conditions(spec: VectorIndexSpec, extra: str | None) -> str:
    cond = f"{ident(spec.column)} IS NOT NULL"
    if spec.where:
        cond += f" AND ({spec.where})"
    if extra:
        cond += f" AND ({extra})"
    return cond


async def sample_queries(conn: Any, spec: VectorIndexSpec, rows: int) -> tuple[list[str], list[Any]]:
    """Query vectors drawn from the table's own rows (text form, sent back as parameters), with the
    row's ctid so that the row itself is left out of both answers (it is always its own nearest
    neighbour and would inflate recall by up to 1/k)."""
    t = spec.table
    n = spec.recall.queries
    tbl, col, cond = qualified(t.schema_, t.name), ident(spec.column), _conditions(spec, None)
    recs: list[Any] = []
    if rows > 50 * n:
        pct = min(100.0, 100.0 * 4 * n / max(rows, 1))
        recs = await conn.fetch(f"SELECT ctid, {col}::text AS v FROM {tbl} TABLESAMPLE BERNOULLI ({pct:.6f}) "
                                f"WHERE {cond} LIMIT {int(n)}")
    if len(recs) < n:
        recs = await conn.fetch(f"SELECT ctid, {col}::text AS v FROM {tbl} WHERE {cond} ORDER BY random() "
                                f"LIMIT {int(n)}")
    return [r["v"] for r in recs], [r["ctid"] for r in recs]


def knn_sql(spec: VectorIndexSpec, extra_filter: str | None = None) -> str:
    """k+1 nearest: one more than k, in case the query's own row is among them (then left out)."""
    t = spec.table
    op = OPERATORS[spec.metric.value]
    typ = f"{spec.type.value}({int(spec.dimensions)})"
    return (f"SELECT ctid FROM {qualified(t.schema_, t.name)} WHERE {_conditions(spec, extra_filter)} "
            f"ORDER BY {ident(spec.column)} {op} $1::text::{typ} LIMIT {int(spec.recall.k) + 1}")


def _top_k(ctids: list[Any], k: int, exclude: Any = None) -> list[Any]:
    return [c for c in ctids if exclude is None or c != exclude][:k]


async def exact_neighbours(conn: Any, spec: VectorIndexSpec, queries: list[str],
                           extra_filter: str | None = None, exclude: list[Any] | None = None) -> list[list[Any]]:
    """Ground truth: the same query with every index path disabled (a sequential scan + sort).
    `exclude[i]` (a ctid) is left out of query i's answer."""
    sql = knn_sql(spec, extra_filter)
    k = spec.recall.k
    out = []
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
                           "SET LOCAL enable_indexonlyscan = off")
        for i, q in enumerate(queries):
            recs = await conn.fetch(sql, q)
            out.append(_top_k([r["ctid"] for r in recs], k, exclude[i] if exclude else None))
    return out


async def index_neighbours(conn: Any, spec: VectorIndexSpec, index_name: str, queries: list[str], value: int,
                           extra_filter: str | None = None, iterative: str | None = None,
                           exclude: list[Any] | None = None) -> tuple[list[list[Any]], list[float], bool]:
    """The queries through the index at one search value: results, latencies (ms), and whether the
    plan used the index."""
    sql = knn_sql(spec, extra_filter)
    param = search_parameter(spec.method.value)
    prefix = "hnsw" if spec.method.value == "hnsw" else "ivfflat"
    k = spec.recall.k
    async with conn.transaction():
        await conn.execute(f"SET LOCAL {param} = {int(value)}; SET LOCAL enable_seqscan = off")
        await conn.execute(f"SET LOCAL {prefix}.iterative_scan = {literal(iterative or 'off')}")
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, queries[0])
        used = f'"{index_name}"' in (plan if isinstance(plan, str) else json.dumps(plan))
        results, latencies = [], []
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            recs = await conn.fetch(sql, q)
            latencies.append((time.perf_counter() - t0) * 1000)
            results.append(_top_k([r["ctid"] for r in recs], k, exclude[i] if exclude else None))
    return results, latencies, used


async def _sweep(conn: Any, spec: VectorIndexSpec, index_name: str, queries: list[str], values: list[int],
                 exact: list[list[Any]], extra_filter: str | None = None, iterative: str | None = None,
                 exclude: list[Any] | None = None) -> tuple[list[dict[str, Any]], bool]:
    rows: list[dict[str, Any]] = []
    used_all = True
    for v in values:
        approx, lat, used = await index_neighbours(conn, spec, index_name, queries, v, extra_filter, iterative,
                                                   exclude)
        used_all = used_all and used
        row: dict[str, Any] = {"value": v, "recall": round(recall_at_k(exact, approx, spec.recall.k), 4),
                               "p50Ms": round(percentile(lat, 50), 3), "p95Ms": round(percentile(lat, 95), 3)}
        if iterative is not None:
            row["iterativeScan"] = iterative
        rows.append(row)
    return rows, used_all


async def measure_recall(ctx: ReconcileContext, spec: VectorIndexSpec, index_name: str, lists: int | None,
                         rows: int) -> dict[str, Any]:
    r = spec.recall
    conn = ctx.conn
    param = search_parameter(spec.method.value)
    values = search_values(spec.method.value, r.search_values, lists)
    queries, own = await sample_queries(conn, spec, rows)
    out: dict[str, Any] = {"k": r.k, "queries": len(queries), "targetRecall": r.target_recall, "parameter": param,
                           "measuredAt": k8s_time(), "excludesQueryRow": True}
    events: list[Event] = []
    if not queries:
        out.update(results=[], met=False, recommended=None, summary="no rows to sample queries from")
        out["_events"] = events
        return out
    t0 = time.perf_counter()
    exact = await exact_neighbours(conn, spec, queries, exclude=own)
    results, used = await _sweep(conn, spec, index_name, queries, values, exact, exclude=own)
    out["results"] = results
    out["indexUsed"] = used
    best = recommend([(x["value"], x["recall"]) for x in results], r.target_recall)
    out["recommended"] = best
    out["met"] = best is not None
    top = max(results, key=lambda x: x["recall"])
    if best is not None:
        row = next(x for x in results if x["value"] == best)
        out["summary"] = (f"recall@{r.k} {row['recall']:.3f} at {param}={best} (p95 {row['p95Ms']:.1f} ms), "
                          f"target {r.target_recall}")
    else:
        out["summary"] = (f"recall@{r.k} at most {top['recall']:.3f} (at {param}={top['value']}), below the target "
                          f"{r.target_recall}: raise the search values, m or ef_construction (HNSW) or lists/probes")
        events.append(Event("Warning", "RecallBelowTarget", out["summary"]))
    if not used:
        events.append(Event("Warning", "IndexNotUsed",
                            f"the planner did not use {index_name} for the k-NN query even with sequential scans "
                            "disabled; the figures describe another plan"))
    if r.sample_filter:
        exact_f = await exact_neighbours(conn, spec, queries, r.sample_filter, exclude=own)
        filtered: list[dict[str, Any]] = []
        for mode in ("off", "relaxed_order"):
            rows_f, _ = await _sweep(conn, spec, index_name, queries, values, exact_f, r.sample_filter, mode, own)
            filtered.extend(rows_f)
        out["filtered"] = {"filter": r.sample_filter, "results": filtered,
                           "iterativeScanParameter": ("hnsw" if spec.method.value == "hnsw" else "ivfflat")
                           + ".iterative_scan"}
        ok_f = [x for x in filtered if x["iterativeScan"] == "relaxed_order"]
        best_f = recommend([(x["value"], x["recall"]) for x in ok_f], r.target_recall)
        out["filtered"]["recommended"] = best_f
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if best is not None and r.apply is not None:
        applied = await apply_recommendation(ctx, spec, param, best)
        out["applied"] = applied
        if applied.get("error"):
            events.append(Event("Warning", "ApplyFailed", f"could not set {param}={best}: {applied['error']}"))
    out["_events"] = events
    return out


async def apply_recommendation(ctx: ReconcileContext, spec: VectorIndexSpec, param: str,
                               value: int) -> dict[str, Any]:
    """ALTER ROLE ... IN DATABASE ... SET / ALTER DATABASE ... SET the recommended value."""
    assert spec.recall.apply is not None
    db = await ctx.conn.fetchval("SELECT current_database()")
    stmts: list[str] = []
    if spec.recall.apply.role:
        stmts.append(f"ALTER ROLE {ident(spec.recall.apply.role)} IN DATABASE {ident(db)} SET {param} = {int(value)}")
    if spec.recall.apply.database:
        stmts.append(f"ALTER DATABASE {ident(db)} SET {param} = {int(value)}")
    step = Step("apply_search_setting", param, tuple(stmts), description="recommended search setting")
    try:
        run = await run_plan(ctx.conn, Plan([step]), resource=ctx.resource, timeouts=spec.timeouts)
    except asyncpg.PostgresError as exc:  # pragma: no cover - run_plan reports errors itself
        return {"value": value, "error": str(exc)}
    sr = run.steps[0]
    await ctx.event(step_event(sr))
    out: dict[str, Any] = {"value": value, "statements": list(stmts)}
    if sr.outcome != "ok":
        out["error"] = sr.error
    return out
