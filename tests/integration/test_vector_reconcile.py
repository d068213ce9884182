"""VectorIndex against a real PostgreSQL 18 + pgvector 0.8.6: HNSW and IVFFlat on vector and
halfvec, a partial index, a parameter change swapped in under queries, INVALID repair, recall
checked against an independent exact computation, the spill NOTICE, and bad input."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.errors import PlanError
from pgcurator.models.vector import VectorIndexSpec
from pgcurator.planner.vector import index_names
from pgcurator.planner.vector_memory import hnsw_element_bytes
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.outcome import Event, Outcome
from pgcurator.reconcile.vector import reconcile_vector_index
from pgcurator.reconcile.vector_recall import exact_neighbours, index_neighbours
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from .vector_data import cosine_distance, make_table, text

pytestmark = pytest.mark.integration

ROWS = 3000
DIMS = 32


@pytest.fixture
def vector_db(pg: EmbeddedPostgres, dbname: str) -> str:
    pg.psql("CREATE EXTENSION vector", database=dbname)  # untrusted extension: a superuser installs it
    return dbname


@pytest.fixture
async def ctx(pg: EmbeddedPostgres, vector_db: str, app_password: str,
              conn: asyncpg.Connection) -> AsyncIterator[ReconcileContext]:
    params = ConnParams(pg.host, pg.port, vector_db, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=6)
    progress: list[dict[str, Any]] = []
    events: list[Event] = []

    async def publish(status: dict[str, Any]) -> None:
        progress.append(json.loads(json.dumps(status)))

    async def emit(ev: Event) -> None:
        events.append(ev)

    c = ReconcileContext(conn=conn, resource="VectorIndex/default/test", namespace="default", name="test",
                         body={}, params=params, pools=pools, emit=emit, publish_progress=publish)
    c.body["_progress"] = progress
    c.body["_events"] = events
    yield c
    await pools.close()


def vspec(table: str = "items", **kw: Any) -> VectorIndexSpec:
    body: dict[str, Any] = {"database": {"secretName": "db"}, "table": {"name": table}, "column": "embedding",
                            "type": "vector", "dimensions": DIMS, "metric": "cosine",
                            "hnsw": {"m": 8, "efConstruction": 32},
                            "recall": {"queries": 30, "searchValues": [5, 10, 20, 40, 80]}}
    body.update(kw)
    return VectorIndexSpec.model_validate(body)


def cond(out: Outcome, type_: str) -> Any:
    return next((c for c in out.conditions if c.type == type_), None)


def carry(ctx: ReconcileContext, out: Outcome) -> None:
    """What the runtime does between runs: the published status is the next run's body."""
    ctx.body["status"] = json.loads(json.dumps(out.status))


async def index_info(conn: asyncpg.Connection, table: str) -> dict[str, tuple[str, bool]]:
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "WHERE i.indrelid = $1::regclass AND am.amname IN ('hnsw', 'ivfflat')", table)
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.parametrize("type_", ["vector", "halfvec"])
async def test_hnsw_build_progress_recall_and_applied_setting(ctx: ReconcileContext, vector_db: str,
                                                              type_: str) -> None:
    await make_table(ctx.conn, "items", type_, DIMS, ROWS)
    s = vspec(type=type_, hnsw={"m": 16, "efConstruction": 64},
              recall={"queries": 30, "searchValues": [5, 10, 20, 40, 80],
                                  "sampleFilter": "category = 'a'", "apply": {"database": True}})
    out = await reconcile_vector_index(ctx, s)
    ready = cond(out, "Ready")
    assert ready.status, out.conditions
    assert ready.reason == "Built"
    name = index_names(s).target
    defs = await index_info(ctx.conn, "items")
    assert list(defs) == [name] and defs[name][1]
    assert f"USING hnsw (embedding {type_}_cosine_ops) WITH (m='16', ef_construction='64')" in defs[name][0]

    st = out.status
    b = st["build"]
    assert b["outcome"] == "ok" and b["inMemory"] is True and b["durationSeconds"] > 0
    assert b["memoryEstimateBytes"] == ROWS * hnsw_element_bytes(type_, DIMS, 16)
    assert b["maintenanceWorkMemBytes"] >= b["memoryEstimateBytes"]
    assert b["sizeBytes"] == st["index"]["sizeBytes"] > 0
    assert cond(out, "BuildInMemory").status is True
    # progress was published from pg_stat_progress_create_index while the build ran
    phases = [p["build"]["phase"] for p in ctx.body["_progress"] if "phase" in p.get("build", {})]
    assert phases and all(isinstance(x, str) and x for x in phases)

    r = st["recall"]
    assert r["parameter"] == "hnsw.ef_search" and r["k"] == 10 and r["queries"] == 30 and r["excludesQueryRow"]
    assert [x["value"] for x in r["results"]] == [5, 10, 20, 40, 80]
    assert r["indexUsed"] is True
    assert all(x["p95Ms"] >= x["p50Ms"] > 0 for x in r["results"])
    assert r["results"][-1]["recall"] >= r["results"][0]["recall"]
    assert r["met"] and r["recommended"] is not None, r["results"]
    assert st["recommendedSearch"] == f"hnsw.ef_search={r['recommended']}"
    best = next(x for x in r["results"] if x["value"] == r["recommended"])
    assert best["recall"] >= 0.95
    # filtered queries, iterative scan off and relaxed_order
    f = r["filtered"]
    assert {x["iterativeScan"] for x in f["results"]} == {"off", "relaxed_order"}
    # the recommended value was applied to the database
    setting = await ctx.conn.fetchval(
        "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = $1 AND s.setrole = 0", vector_db)
    assert setting == f"hnsw.ef_search={r['recommended']}"

    # Independent check: exact neighbours computed here in Python, compared with the operator's
    # ground truth (index scans disabled) and with the index at the recommended ef_search.
    rows = await ctx.conn.fetch("SELECT ctid, embedding::text AS e FROM items ORDER BY id")
    data = [(row["ctid"], json.loads(row["e"])) for row in rows]
    picked = [data[i] for i in range(7, ROWS, ROWS // 40)]
    queries, own = [text(v) for _, v in picked], [c for c, _ in picked]
    truth = []
    for qc, qv in picked:  # the query's own row is left out, as the operator does
        ranked = sorted((d for d in data if d[0] != qc), key=lambda d: cosine_distance(qv, d[1]))
        truth.append([c for c, _ in ranked[:10]])
    exact = await exact_neighbours(ctx.conn, s, queries, exclude=own)
    same = sum(len(set(a) & set(b)) for a, b in zip(exact, truth, strict=True)) / (10 * len(queries))
    assert same >= 0.99  # only ties (halfvec rounding) may differ
    approx, _, used = await index_neighbours(ctx.conn, s, index_names(s).target, queries, r["recommended"],
                                             exclude=own)
    assert used
    independent = sum(len(set(a) & set(b)) for a, b in zip(approx, truth, strict=True)) / (10 * len(queries))
    assert abs(independent - best["recall"]) <= 0.05, (independent, best["recall"])

    # A second run with nothing to do plans nothing and keeps the measurement.
    carry(ctx, out)
    again = await reconcile_vector_index(ctx, s)
    assert cond(again, "Ready").reason == "UpToDate"
    assert again.status["recall"]["measuredAt"] == r["measuredAt"]
    assert "lastRun" not in again.status


@pytest.mark.parametrize("type_", ["vector", "halfvec"])
async def test_ivfflat_partial_index_exhaustive_probes_are_exact(ctx: ReconcileContext, type_: str) -> None:
    await make_table(ctx.conn, "docs", type_, DIMS, ROWS, nulls=200)
    s = vspec("docs", type=type_, metric="l2", method="ivfflat", hnsw=None, ivfflat={"lists": "auto"},
              where="embedding IS NOT NULL", recall={"queries": 20})
    out = await reconcile_vector_index(ctx, s)
    assert cond(out, "Ready").status, out.conditions
    name = index_names(s).target
    definition, valid = (await index_info(ctx.conn, "docs"))[name]
    lists = out.status["estimatedRows"] // 1000  # auto: the planner's estimate of ~3000 rows / 1000
    assert 2 <= lists <= 3
    assert valid and "USING ivfflat" in definition and f"lists='{lists}'" in definition
    assert definition.endswith("WHERE (embedding IS NOT NULL)")
    assert out.status["index"]["predicate"] == "(embedding IS NOT NULL)"
    r = out.status["recall"]
    assert r["parameter"] == "ivfflat.probes"
    assert [x["value"] for x in r["results"]] == list(range(1, lists + 1))
    # probing every list is an exhaustive search: recall 1.0 (the operator's exact answer agrees)
    assert r["results"][-1]["recall"] == 1.0
    # the partial index is adopted on the next run, not rebuilt
    carry(ctx, out)
    assert (await reconcile_vector_index(ctx, s)).status.get("lastRun") is None


async def test_parameter_change_is_swapped_in_while_queries_run(ctx: ReconcileContext, db_url: str) -> None:
    vecs = await make_table(ctx.conn, "items", "vector", DIMS, ROWS)
    s1 = vspec(recall={"enabled": False})
    assert cond(await reconcile_vector_index(ctx, s1), "Ready").status
    name = index_names(s1).target
    q = text(vecs[11])
    plans: list[str] = []
    stop = asyncio.Event()

    async def reader() -> None:
        c = await asyncpg.connect(db_url)
        try:
            while not stop.is_set():
                plan = await c.fetchval(
                    f"EXPLAIN (FORMAT JSON) SELECT id FROM items ORDER BY embedding <=> '{q}'::vector({DIMS}) LIMIT 10")
                plans.append(plan)
                await asyncio.sleep(0.01)
        finally:
            await c.close()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.2)
    s2 = vspec(hnsw={"m": 12, "efConstruction": 40}, recall={"enabled": False})
    out = await reconcile_vector_index(ctx, s2)
    await asyncio.sleep(0.2)
    stop.set()
    await task
    assert cond(out, "Ready").status, out.conditions
    assert out.status["lastRun"]["action"] == "replace"
    assert "m 8 -> 12" in out.status["lastRun"]["reasons"]
    defs = await index_info(ctx.conn, "items")
    assert list(defs) == [name] and "m='12', ef_construction='40'" in defs[name][0]
    # every plan taken during the build and the swap used an index: never a sequential scan
    assert len(plans) >= 20
    assert all('"Index Scan"' in p and "Seq Scan" not in p for p in plans)
    used = {json.loads(p)[0]["Plan"]["Plans"][0]["Index Name"] for p in plans}
    assert name in used


async def test_invalid_leftover_is_dropped_and_rebuilt(ctx: ReconcileContext) -> None:
    await make_table(ctx.conn, "items", "vector", DIMS, ROWS)
    s = vspec(recall={"enabled": False})
    name = index_names(s).target
    # an interrupted concurrent build leaves an INVALID index behind
    await ctx.conn.execute("SET statement_timeout = '30ms'")
    with pytest.raises(asyncpg.QueryCanceledError):
        await ctx.conn.execute(f"CREATE INDEX CONCURRENTLY \"{name}\" ON items "
                               f"USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32)")
    await ctx.conn.execute("RESET statement_timeout")
    assert (await index_info(ctx.conn, "items"))[name][1] is False
    out = await reconcile_vector_index(ctx, s)
    assert cond(out, "Ready").status, out.conditions
    assert out.status["lastRun"]["action"] == "rebuild_invalid"
    assert (await index_info(ctx.conn, "items"))[name][1] is True
    assert out.status["index"]["valid"] is True


async def test_a_drop_that_cannot_get_its_lock_waits_instead_of_degrading(ctx: ReconcileContext,
                                                                            db_url: str) -> None:
    # Lock timeouts of the steps around a build (here the drop of a replaced index) are a wait, retried,
    # exactly like a build's: Progressing/WaitingForLock, never Degraded.
    await make_table(ctx.conn, "items", "vector", DIMS, 200)
    s = vspec(recall={"enabled": False}, timeouts={"lockTimeout": "200ms", "lockRetries": 0})
    names = index_names(s)
    assert cond(await reconcile_vector_index(ctx, s), "Ready").status
    await ctx.conn.execute(f'CREATE INDEX "{names.old}" ON items USING hnsw (embedding vector_cosine_ops)')
    blocker = await asyncpg.connect(db_url)
    try:
        await blocker.execute("BEGIN; LOCK TABLE items IN SHARE UPDATE EXCLUSIVE MODE")
        out = await reconcile_vector_index(ctx, s)
    finally:
        await blocker.close()
    assert cond(out, "Progressing").status and not cond(out, "Degraded").status, out.conditions
    assert cond(out, "Progressing").reason == "WaitingForLock"
    assert out.requeue_after is not None
    assert names.old in await index_info(ctx.conn, "items")
    assert cond(await reconcile_vector_index(ctx, s), "Ready").status
    assert names.old not in await index_info(ctx.conn, "items")


async def test_small_budget_spill_notice_reported(ctx: ReconcileContext) -> None:
    await make_table(ctx.conn, "items", "vector", DIMS, ROWS)
    s = vspec(hnsw={"m": 16, "efConstruction": 32}, build={"memoryBudget": "1Mi"}, recall={"enabled": False})
    out = await reconcile_vector_index(ctx, s)
    assert cond(out, "Ready").status
    b = out.status["build"]
    assert b["predictedInMemory"] is False and b["inMemory"] is False
    assert b["maintenanceWorkMemBytes"] == 1024 * 1024
    spill = cond(out, "BuildInMemory")
    assert spill.status is False and spill.reason == "GraphExceededMemory"
    assert any(e.reason == "BuildSpilled" and e.type == "Warning" for e in ctx.body["_events"])
    # The NOTICE's tuple count measures the real per-element size: the estimate is within 3% of it.
    measured = b["measuredBytesPerElement"]
    assert abs(b["estimatedBytesPerElement"] - measured) / measured <= 0.03, b
    assert (await index_info(ctx.conn, "items"))[index_names(s).target][1]


async def test_dry_run_plans_and_changes_nothing(ctx: ReconcileContext) -> None:
    await make_table(ctx.conn, "items", "vector", DIMS, 200)
    out = await reconcile_vector_index(ctx, vspec(dryRun=True))
    assert cond(out, "Progressing").reason == "DryRun"
    assert any(x.startswith("CREATE INDEX CONCURRENTLY") for x in out.status["plan"])
    assert any(x.startswith("SET maintenance_work_mem") for x in out.status["plan"])
    assert await index_info(ctx.conn, "items") == {}


@pytest.mark.parametrize(
    ("ddl", "spec_kw", "reason", "needle"),
    [
        (f"CREATE TABLE items (id int, embedding vector({DIMS * 2}))", {}, "DimensionMismatch",
         f"vector({DIMS * 2}), the spec says {DIMS} dimensions"),
        ("CREATE TABLE items (id int, embedding text)", {}, "WrongColumnType", "not a pgvector type"),
        (f"CREATE TABLE items (id int, embedding halfvec({DIMS}))", {}, "WrongColumnType", "is halfvec"),
        ("CREATE TABLE other (id int)", {}, "TableNotFound", "public.items does not exist"),
        (f"CREATE TABLE items (id int, emb vector({DIMS}))", {}, "ColumnNotFound", "column embedding"),
    ],
)
async def test_bad_tables_are_refused_before_any_build(ctx: ReconcileContext, ddl: str, spec_kw: dict[str, Any],
                                                       reason: str, needle: str) -> None:
    await ctx.conn.execute(ddl)
    with pytest.raises(PlanError, match=re.escape(needle)) as err:
        await reconcile_vector_index(ctx, vspec(**spec_kw))
    assert err.value.reason == reason
    # nothing ran (the metadata schema is set up before every run; its history stays empty)
    assert await ctx.conn.fetchval("SELECT count(*) FROM pgcurator.history") == 0


async def test_missing_extension_the_role_may_not_create(pg: EmbeddedPostgres, dbname: str, app_password: str,
                                                         conn: asyncpg.Connection) -> None:
    params = ConnParams(pg.host, pg.port, dbname, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=2)
    c = ReconcileContext(conn=conn, resource="VectorIndex/default/t", namespace="default", name="t", body={},
                         params=params, pools=pools)
    try:
        with pytest.raises(PlanError) as err:
            await reconcile_vector_index(c, vspec())
    finally:
        await pools.close()
    assert err.value.reason == "ExtensionMissing"
    assert "CREATE EXTENSION vector" in err.value.message and dbname in err.value.message
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0


async def test_old_pgvector_is_reported_not_used(pg: EmbeddedPostgres, ctx: ReconcileContext, vector_db: str) -> None:
    await make_table(ctx.conn, "items", "vector", DIMS, 100)
    # Stand in for an old installation: the catalog says 0.8.3 (this wheel ships only 0.8.6's script).
    pg.psql("UPDATE pg_extension SET extversion = '0.8.3' WHERE extname = 'vector'", database=vector_db)
    with pytest.raises(PlanError, match="ALTER EXTENSION vector UPDATE") as err:
        await reconcile_vector_index(ctx, vspec())
    assert err.value.reason == "PgvectorTooOld"
    assert await index_info(ctx.conn, "items") == {}


@pytest.fixture
def small_shm_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A server whose processes may not grow a file beyond 32 MiB (RLIMIT_FSIZE, inherited from
    us at start): its dynamic shared memory segments (files in /dev/shm) cannot either, as in a
    container with a small /dev/shm. WAL segments (16 MiB) and the small tables still fit."""
    server = EmbeddedPostgres(tmp_path / "data")
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 2**20, old[1]))
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
    yield server
    server.stop()


async def test_parallel_build_without_enough_shared_memory_retries_with_fewer_workers(
        small_shm_server: EmbeddedPostgres) -> None:
    pg = small_shm_server
    password = secrets.token_urlsafe(12)
    pg.create_role(APP_ROLE, password)
    pg.create_database("shm", owner=APP_ROLE)
    pg.psql("CREATE EXTENSION vector", database="shm")
    # let PostgreSQL plan workers for a small table (the operator asks for them from 10k rows)
    pg.psql("ALTER DATABASE shm SET min_parallel_table_scan_size = 0", database="shm")
    conn = await asyncpg.connect(pg.dsn("shm", user=APP_ROLE, password=password))
    pools = PoolRegistry(max_size=4)
    events: list[Event] = []

    async def emit(ev: Event) -> None:
        events.append(ev)

    ctx = ReconcileContext(conn=conn, resource="VectorIndex/default/shm", namespace="default", name="shm", body={},
                           params=ConnParams(pg.host, pg.port, "shm", APP_ROLE, password, ssl_mode="disable"),
                           pools=pools, emit=emit)
    try:
        await make_table(conn, "items", "vector", DIMS, 12000)
        s = vspec(build={"maxParallelWorkers": 2}, recall={"enabled": False})
        out = await reconcile_vector_index(ctx, s)
        b = out.status["build"]
        assert cond(out, "Ready").status, out.conditions
        # 64 MiB of maintenance_work_mem: pgvector asks for a ~61 MiB segment, refused by the server
        assert [a["workers"] for a in b["attempts"]] == [2, 1, 0]
        assert [a["outcome"] for a in b["attempts"]] == ["error", "error", "ok"]
        assert "could not resize shared memory segment" in b["attempts"][0]["error"]
        assert "/dev/shm" in b["sharedMemoryProblem"]
        warnings = [e for e in events if e.reason == "SharedMemoryTooSmall"]
        assert len(warnings) == 2 and "Retrying with 1 workers" in warnings[0].message
        assert (await index_info(conn, "items"))[index_names(s).target][1]
    finally:
        await pools.close()
        await conn.close()
