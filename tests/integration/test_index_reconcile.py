"""IndexPolicy against a real PostgreSQL 18: seed 002/003 indexes, INVALID repair, drift swap
under a writer, parallel per-partition builds with one failing partition, prune."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.devenv.postgres import EmbeddedPostgres
from pgcurator.models.index import IndexPolicySpec
from pgcurator.planner.index import child_name, new_name, old_name
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy
from pgcurator.reconcile.outcome import Outcome

from ..conftest import APP_ROLE
from .index_scenarios import SEED_002, SEED_003, SEED_003_MONTHS, seed_002_policy, seed_003_policy

pytestmark = pytest.mark.integration


@pytest.fixture
async def ctx(pg: EmbeddedPostgres, dbname: str, app_password: str,
              conn: asyncpg.Connection) -> AsyncIterator[ReconcileContext]:
    params = ConnParams(pg.host, pg.port, dbname, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=6)
    progress: list[dict[str, Any]] = []

    async def publish(status: dict[str, Any]) -> None:
        progress.append(status)

    c = ReconcileContext(conn=conn, resource="IndexPolicy/default/test", namespace="default", name="test", body={},
                         params=params, pools=pools, publish_progress=publish)
    c.body["progress_log"] = progress
    yield c
    await pools.close()


def spec(body: dict[str, Any]) -> IndexPolicySpec:
    return IndexPolicySpec.model_validate(body)


def reason(out: Outcome) -> str:
    return out.conditions[0].reason


def ready(out: Outcome) -> bool:
    return next(c for c in out.conditions if c.type == "Ready").status


async def indexdefs(conn: asyncpg.Connection, table: str) -> dict[str, tuple[str, bool]]:
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass", table)
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.parametrize("table", ["sessions", "knowledge_sources", "knowledge_chunks"])
async def test_seed_002_indexes_built_and_idempotent(ctx: ReconcileContext, table: str) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    policy = spec(seed_002_policy(table))
    out = await reconcile_index_policy(ctx, policy)
    assert ready(out) and reason(out) == "Applied", out.conditions
    defs = await indexdefs(conn, table)
    for decl in policy.indexes:
        assert defs[decl.name][1], f"{decl.name} not valid"
    if table == "sessions":
        assert defs["idx_sessions_archive_candidates"][0] == (
            "CREATE INDEX idx_sessions_archive_candidates ON public.sessions USING btree (status, last_active_at) "
            "WHERE (status = 'active'::text)")
    if table == "knowledge_sources":
        assert "USING gin (metadata)" in defs["idx_sources_metadata"][0]
    # Built concurrently, outside a transaction, and recorded.
    stmts = [r[0] for r in await conn.fetch("SELECT statement FROM pgcurator.history WHERE step = 'create_index'")]
    assert len(stmts) == 2 and all(s.startswith("CREATE INDEX CONCURRENTLY") for s in stmts)
    again = await reconcile_index_policy(ctx, policy)
    assert reason(again) == "UpToDate" and "lastRun" not in again.status
    assert again.status["pendingChanges"] == 0 and again.status["validIndexes"] == 2


async def test_invalid_index_is_dropped_and_rebuilt(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("INSERT INTO sessions (session_key) VALUES ('k1')")  # a duplicate key
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_sessions_session_key ON sessions (session_key)")
    assert (await indexdefs(conn, "sessions"))["idx_sessions_session_key"][1] is False  # left INVALID
    await conn.execute("DELETE FROM sessions WHERE id = (SELECT max(id) FROM sessions)")
    body = seed_002_policy("sessions")
    body["indexes"] = [{"name": "idx_sessions_session_key", "unique": True, "columns": [{"column": "session_key"}]}]
    out = await reconcile_index_policy(ctx, spec(body))
    assert ready(out), out.conditions
    assert [c["step"] for c in out.status["lastRun"]["changes"]] == ["drop_invalid", "create_index"]
    definition, valid = (await indexdefs(conn, "sessions"))["idx_sessions_session_key"]
    assert valid and definition.startswith("CREATE UNIQUE INDEX")


async def test_leftovers_of_an_interrupted_replacement_are_cleaned(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    name = "idx_sessions_session_key"
    # A crash after the swap left the old index; another after a replacement build started left a stale one.
    await conn.execute(f"CREATE INDEX {name} ON sessions (session_key)")
    await conn.execute(f"CREATE INDEX {old_name(name)} ON sessions (session_key, status)")
    await conn.execute(f"CREATE INDEX {new_name('idx_sessions_archive_candidates')} ON sessions (channel_id)")
    out = await reconcile_index_policy(ctx, spec(seed_002_policy("sessions")))
    assert ready(out), out.conditions
    assert set(await indexdefs(conn, "sessions")) == {
        "sessions_pkey", name, "idx_sessions_archive_candidates"}


async def test_definition_change_swapped_in_while_a_writer_runs(ctx: ReconcileContext, db_url: str) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("INSERT INTO sessions (session_key) SELECT 'x' || g FROM generate_series(1, 200000) g")
    await conn.execute("CREATE INDEX idx_sessions_session_key ON sessions (session_key)")
    body = seed_002_policy("sessions")
    body["indexes"] = [{"name": "idx_sessions_session_key", "columns": [{"column": "session_key"},
                                                                         {"column": "status"}]}]
    stop = asyncio.Event()
    stalls: list[float] = []
    gaps: list[str] = []

    async def writer() -> None:
        w = await asyncpg.connect(db_url)
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                await w.execute("INSERT INTO sessions (session_key) VALUES ('w')")
                stalls.append(time.perf_counter() - t0)
                await asyncio.sleep(0.002)
        finally:
            await w.close()

    async def watcher() -> None:
        w = await asyncpg.connect(db_url)
        try:
            while not stop.is_set():
                if not await w.fetchval("SELECT to_regclass('public.idx_sessions_session_key') IS NOT NULL"):
                    gaps.append("missing")
                await asyncio.sleep(0.005)
        finally:
            await w.close()

    tasks = [asyncio.create_task(writer()), asyncio.create_task(watcher())]
    await asyncio.sleep(0.1)
    out = await reconcile_index_policy(ctx, spec(body))
    stop.set()
    await asyncio.gather(*tasks)
    assert ready(out), out.conditions
    assert [c["step"] for c in out.status["lastRun"]["changes"]] == [
        "create_replacement", "swap_index", "drop_replaced"]
    definition, valid = (await indexdefs(conn, "sessions"))["idx_sessions_session_key"]
    assert valid and "(session_key, status)" in definition
    assert not gaps, "there was a moment with no index of that name"
    assert len(stalls) > 20 and max(stalls) < 2.0, max(stalls)  # never stalled up to lock_timeout
    assert set(await indexdefs(conn, "sessions")) == {"sessions_pkey", "idx_sessions_session_key"}


async def test_seed_003_partitioned_parallel_build(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_003)
    policy = spec(seed_003_policy())
    out = await reconcile_index_policy(ctx, policy)
    assert ready(out), out.conditions
    rows = out.status["partitions"]
    assert len(rows) == 8 and all(r["success"] and r["state"] == "built" for r in rows), rows
    assert {r["partition"] for r in rows} == {f"articles_{m}" for m in SEED_003_MONTHS}
    assert all(r["ms"] > 0 and r["rows"] > 0 for r in rows)
    parent = await indexdefs(conn, "articles")
    assert parent["idx_articles_user_read_date"] == (
        "CREATE INDEX idx_articles_user_read_date ON ONLY public.articles USING btree "
        "(user_id, is_read, published_at DESC)", True)
    assert parent["idx_articles_feed_tags"][1]
    child = await indexdefs(conn, "articles_2025_02")
    assert child[child_name("idx_articles_feed_tags", "articles_2025_02")][1]
    # Every partition was attached, and builds overlapped in time (several connections at once).
    attached = await conn.fetch("SELECT DISTINCT statement FROM pgcurator.history WHERE step = 'attach_index'")
    assert len(attached) == 8
    overlapping = await conn.fetchval(
        "SELECT count(*) FROM pgcurator.history a JOIN pgcurator.history b ON a.id < b.id "
        "WHERE a.step = 'create_index' AND b.step = 'create_index' "
        "AND a.started_at < b.started_at + b.duration_ms * interval '1 ms' "
        "AND b.started_at < a.started_at + a.duration_ms * interval '1 ms'")
    assert overlapping > 0
    again = await reconcile_index_policy(ctx, policy)
    assert reason(again) == "UpToDate"
    assert all(r["state"] == "present" for r in again.status["partitions"])
    # A partition created later gets the index (PostgreSQL attaches a matching one on ATTACH).
    await conn.execute("CREATE TABLE articles_2025_05 PARTITION OF articles FOR VALUES FROM ('2025-05-01') "
                       "TO ('2025-06-01')")
    third = await reconcile_index_policy(ctx, policy)
    assert reason(third) == "UpToDate" and len(third.status["partitions"]) == 10


async def test_partition_added_while_parent_index_incomplete_gets_built(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_003)
    # The parent index exists ON ONLY (invalid until every partition has one), e.g. an earlier run was cut.
    await conn.execute("CREATE INDEX idx_articles_feed_tags ON ONLY articles USING btree (feed_id) INCLUDE (tags)")
    body = seed_003_policy()
    body["indexes"] = body["indexes"][1:]
    out = await reconcile_index_policy(ctx, spec(body))
    assert ready(out), out.conditions
    assert [r["state"] for r in out.status["partitions"]] == ["built"] * 4
    assert (await indexdefs(conn, "articles"))["idx_articles_feed_tags"][1]


async def test_one_failing_partition_does_not_stop_the_others(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_003)
    # Unique (user_id, title, published_at) holds everywhere except in March, where one row is duplicated.
    await conn.execute("INSERT INTO articles (title, user_id, feed_id, published_at) "
                       "SELECT title, user_id, feed_id, published_at FROM articles_2025_03 LIMIT 1")
    body = seed_003_policy()
    body["indexes"] = [{"name": "uq_articles_user_title", "unique": True,
                        "columns": [{"column": "user_id"}, {"column": "title"}, {"column": "published_at"}]}]
    out = await reconcile_index_policy(ctx, spec(body))
    assert reason(out) == "PartitionBuildFailed", out.conditions
    failed = [r for r in out.status["partitions"] if not r["success"]]
    assert [r["partition"] for r in failed] == ["articles_2025_03"]
    assert "23505" in failed[0]["error"]
    built = [r for r in out.status["partitions"] if r["success"]]
    assert sorted(r["partition"] for r in built) == ["articles_2025_01", "articles_2025_02", "articles_2025_04"]
    # The failed concurrent build did not stay behind as an INVALID index.
    assert all(v for _, v in (await indexdefs(conn, "articles_2025_03")).values())
    assert (await indexdefs(conn, "articles"))["uq_articles_user_title"][1] is False
    # Fixed data: the next run builds only that partition and the parent becomes valid.
    await conn.execute("DELETE FROM articles_2025_03 a USING articles_2025_03 b WHERE a.user_id = b.user_id "
                       "AND a.title = b.title AND a.published_at = b.published_at AND a.id > b.id")
    again = await reconcile_index_policy(ctx, spec(body))
    assert ready(again), again.conditions
    assert [r["partition"] for r in again.status["partitions"] if r["state"] == "built"] == ["articles_2025_03"]
    assert (await indexdefs(conn, "articles"))["uq_articles_user_title"][1] is True


async def test_partitioned_definition_change_is_swapped(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_003)
    await conn.execute("CREATE INDEX idx_articles_feed_tags ON articles (feed_id)")  # no INCLUDE yet
    body = seed_003_policy()
    body["indexes"] = body["indexes"][1:]
    out = await reconcile_index_policy(ctx, spec(body))
    assert ready(out), out.conditions
    parent = await indexdefs(conn, "articles")
    assert set(parent) == {"idx_articles_feed_tags"}
    assert parent["idx_articles_feed_tags"][0].endswith("INCLUDE (tags)") and parent["idx_articles_feed_tags"][1]
    assert len(await indexdefs(conn, "articles_2025_01")) == 1


async def test_prune_drops_only_undeclared_non_constraint_indexes(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("CREATE INDEX stray ON sessions (channel_id); "
                       "ALTER TABLE sessions ADD CONSTRAINT sessions_key_uq UNIQUE (session_key, id)")
    body = seed_002_policy("sessions")
    dry = await reconcile_index_policy(ctx, spec({**body, "prune": True, "dryRun": True}))
    assert reason(dry) == "DryRun"
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."stray"' in dry.status["plan"]
    assert "stray" in await indexdefs(conn, "sessions")
    off = await reconcile_index_policy(ctx, spec(body))
    assert ready(off) and "stray" in await indexdefs(conn, "sessions")
    assert off.status["undeclared"] == ["stray"]
    out = await reconcile_index_policy(ctx, spec({**body, "prune": True}))
    assert ready(out), out.conditions
    assert set(await indexdefs(conn, "sessions")) == {
        "sessions_pkey", "sessions_key_uq", "idx_sessions_session_key", "idx_sessions_archive_candidates"}


async def test_spec_postgres_refuses_is_reported_before_any_ddl(ctx: ReconcileContext) -> None:
    from pgcurator.errors import SpecError

    conn = ctx.conn
    await conn.execute(SEED_002)
    body = seed_002_policy("sessions")
    body["indexes"].append({"name": "bad", "columns": [{"column": "no_such_column"}]})
    with pytest.raises(SpecError, match="no_such_column"):
        await reconcile_index_policy(ctx, spec(body))
    assert set(await indexdefs(conn, "sessions")) == {"sessions_pkey"}


async def test_progress_is_published_while_a_build_runs(ctx: ReconcileContext,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import pgcurator.reconcile.context as context_module
    import pgcurator.reconcile.index_build as index_build

    monkeypatch.setattr(index_build, "PROGRESS_POLL_SECONDS", 0.02)
    monkeypatch.setattr(context_module, "PROGRESS_MIN_INTERVAL", 0.0)
    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("INSERT INTO sessions (session_key, status) "
                       "SELECT md5(g::text), 'active' FROM generate_series(1, 400000) g")
    out = await reconcile_index_policy(ctx, spec(seed_002_policy("sessions")))
    assert ready(out), out.conditions
    log = [p["progress"] for p in ctx.body["progress_log"]]
    builds = [b for p in log for b in p["builds"]]
    assert builds, log
    # (the index is not known yet while the build is initializing)
    assert all(b["table"] == "sessions" and b["index"] in ("idx_sessions_session_key",
                                                             "idx_sessions_archive_candidates", None) for b in builds)
    assert any(b["index"] is not None for b in builds)
    assert {b["phase"] for b in builds} & {"building index: scanning table", "building index: sorting live tuples",
                                           "building index: loading tuples in tree", "index validation: scanning index",
                                           "index validation: sorting tuples", "index validation: scanning table",
                                           "waiting for old snapshots", "waiting for writers before build",
                                           "waiting for writers before validation", "initializing"}
    assert all(0 <= b["percent"] <= 100 for b in builds)
    assert log[-1]["jobsTotal"] == 2  # two indexes, one after the other (same table)
    assert out.status["progress"] is None  # cleared when done


async def test_suggestions_from_a_real_pg_stat_statements_workload(
        ctx: ReconcileContext, pg: EmbeddedPostgres, dbname: str) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("INSERT INTO sessions (session_key, channel_id) "
                       "SELECT 'y' || g, g % 5000 FROM generate_series(1, 60000) g")
    await conn.execute("ANALYZE sessions")
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname)
    for i in range(30):  # the application's workload
        await conn.fetch("SELECT id, session_key FROM sessions WHERE channel_id = $1 ORDER BY last_active_at DESC",
                         i)
        await conn.fetch("SELECT id FROM sessions WHERE session_key = $1", f"k{i}")
    body = seed_002_policy("sessions")
    body["suggestions"] = {"enabled": True, "minCalls": 10}
    out = await reconcile_index_policy(ctx, spec(body))
    assert ready(out), out.conditions
    sug = out.status["suggestions"]
    assert sug["available"] is True
    items = sug["items"]
    assert [i["columns"] for i in items] == [["channel_id", "last_active_at"]], sug
    item = items[0]
    assert item["estimatedCostAfter"] < item["estimatedCostBefore"]
    assert item["statements"][0]["calls"] == 30 and "channel_id = $1" in item["statements"][0]["query"]
    assert item["definition"].startswith("CREATE INDEX CONCURRENTLY")
    # session_key is served by the declared index: not proposed again.
    assert {"columns": ["session_key"], "by": "idx_sessions_session_key"} in sug["alreadyCovered"]
    # Reported only: nothing was built.
    assert "idx_sessions_channel_id_last_active_at" not in await indexdefs(conn, "sessions")


async def test_analysis_reports_unused_across_a_stats_reset_duplicates_and_bloat(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("CREATE INDEX dup_key ON sessions (session_key); CREATE INDEX by_status ON sessions (status)")
    await conn.execute("INSERT INTO sessions (session_key) SELECT 'b' || g FROM generate_series(1, 50000) g; "
                       "DELETE FROM sessions WHERE id % 10 <> 0; ANALYZE sessions")  # leaves the btrees bloated
    body = seed_002_policy("sessions")
    body["analysis"] = {"unusedAfter": "1h"}
    first = await reconcile_index_policy(ctx, spec(body))
    analysis = first.status["analysis"]
    assert analysis["unused"] == []  # not observed for a whole window yet
    assert {"index": "dup_key", "of": "idx_sessions_session_key", "reason": "same definition as "
            "idx_sessions_session_key"} in analysis["duplicates"] or {
        "index": "idx_sessions_session_key", "of": "dup_key",
        "reason": "same definition as dup_key"} in analysis["duplicates"]
    rows = {r["name"]: r for r in analysis["indexes"]}
    assert rows["sessions_pkey"]["constraint"] == "sessions_pkey"
    assert rows["dup_key"]["bloat"]["bloatPercent"] > 50, rows["dup_key"]
    # Two hours of history: by_status was scanned, then statistics were reset; dup_key never was.
    await conn.execute(
        "UPDATE pgcurator.index_usage SET taken_at = taken_at - interval '2 hours'; "
        "INSERT INTO pgcurator.index_usage (taken_at, schema_name, table_name, index_name, scans, size_bytes) "
        "VALUES (now() - interval '30 minutes', 'public', 'sessions', 'by_status', 7, 0)")
    second = await reconcile_index_policy(ctx, spec(body))
    analysis = second.status["analysis"]
    assert "dup_key" in analysis["unused"]
    assert "by_status" not in analysis["unused"]  # 7 scans inside the window, though the counter is 0 now
    assert "sessions_pkey" not in analysis["unused"]  # constraint-backing: never reported
    assert analysis["statsReset"] is None or analysis["statsReset"].startswith("20")


async def test_delete_policy_drops_only_indexes_this_resource_built(ctx: ReconcileContext) -> None:
    from pgcurator.reconcile.index import cleanup_index_policy

    conn = ctx.conn
    await conn.execute(SEED_002)
    await conn.execute("CREATE INDEX idx_sessions_session_key ON sessions (session_key)")  # made by hand earlier
    policy = spec({**seed_002_policy("sessions"), "deletionPolicy": "Delete"})
    assert ready(await reconcile_index_policy(ctx, policy))
    await cleanup_index_policy(ctx, policy)
    assert set(await indexdefs(conn, "sessions")) == {"sessions_pkey", "idx_sessions_session_key"}


async def test_prune_on_a_partition_leaves_the_parent_policys_indexes(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute(SEED_003)
    assert ready(await reconcile_index_policy(ctx, spec(seed_003_policy())))
    children = set(await indexdefs(conn, "articles_2025_01"))
    assert len(children) == 2
    # Another policy manages one partition on its own, pruning what it does not declare.
    part = {"database": {"secretName": "app-db"}, "table": {"name": "articles_2025_01"}, "prune": True,
            "indexes": [{"name": "idx_jan_title", "columns": [{"column": "title"}]}]}
    out = await reconcile_index_policy(ctx, spec(part))
    assert ready(out), out.conditions
    assert set(await indexdefs(conn, "articles_2025_01")) == children | {"idx_jan_title"}
    assert reason(await reconcile_index_policy(ctx, spec(part))) == "UpToDate"
