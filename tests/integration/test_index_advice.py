"""Index advice (issue 15) through IndexPolicy `suggestions`, against the embedded PostgreSQL:
one regression test per defect the side-by-side measurement found."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcurator.catalog.advice import Statement
from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.models.index import IndexPolicySpec
from pgcurator.reconcile.advice import AdviceOptions, advise
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy
from pgcurator.reconcile.outcome import Event
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from .counting import Counting

pytestmark = pytest.mark.integration


@pytest.fixture
async def ctx(pg: EmbeddedPostgres, dbname: str, app_password: str,
              conn: asyncpg.Connection) -> AsyncIterator[ReconcileContext]:
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS vector", dbname)
    params = ConnParams(pg.host, pg.port, dbname, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=4)

    async def publish(status: dict[str, Any]) -> None:
        return None

    events: list[Event] = []

    async def emit(ev: Event) -> None:
        events.append(ev)

    yield ReconcileContext(conn=conn, resource="IndexPolicy/default/advice", namespace="default", name="advice",
                           body={"events": events}, params=params, pools=pools, publish_progress=publish, emit=emit)
    await pools.close()


async def suggest(ctx: ReconcileContext, table: str, **spec: Any) -> dict[str, Any]:
    body = {"database": {"secretName": "app-db"}, "table": {"name": table},
            "suggestions": {"enabled": True, "minCalls": 5, **spec}}
    out = await reconcile_index_policy(ctx, IndexPolicySpec.model_validate(body))
    sug: dict[str, Any] = out.status["suggestions"]
    return sug


async def workload(conn: Any, queries: list[tuple[str, Any]], calls: int = 10) -> None:
    for sql, params in queries:
        for i in range(calls):
            await conn.fetch(sql, *(params(i) if callable(params) else params))


def keys(sug: dict[str, Any]) -> list[list[str]]:
    return [i["columns"] for i in sug.get("items", [])]


async def test_a_candidate_that_fails_to_build_is_reported_and_hides_no_other(ctx: ReconcileContext) -> None:
    # `note` is short in most rows, so it may be a key; a few rows hold 6 kB of incompressible
    # text that no B-tree entry can hold: that build fails on the sample. It used to take every
    # other suggestion for the table with it while the policy said Ready.
    conn = ctx.conn
    await conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, channel_id int, note text)")
    await conn.execute("INSERT INTO items SELECT g, g % 2000, 'n' || (g % 3000) FROM generate_series(1, 20000) g")
    await conn.execute("UPDATE items SET note = (SELECT string_agg(md5(random()::text || k), '') "
                       "FROM generate_series(1, 200) k WHERE items.id > 0) WHERE id % 500 = 0")
    await conn.execute("ANALYZE items")
    await workload(conn, [("SELECT id FROM items WHERE note = $1", ("n7",)),
                          ("SELECT id FROM items WHERE channel_id = $1", lambda i: (i,))])
    sug = await suggest(ctx, "items")
    assert ["channel_id"] in keys(sug), sug
    assert [f["definition"] for f in sug["failures"]] == ["CREATE INDEX ON public.items (note)"], sug
    assert "index row" in sug["failures"][0]["error"]
    [ev] = ctx.body["events"]
    assert (ev.type, ev.reason) == ("Warning", "SuggestionsIncomplete") and "public.items (note)" in ev.message


async def test_null_tests_never_make_a_vector_a_btree_key(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute("CREATE TABLE chunks (id bigint PRIMARY KEY, source_id int NOT NULL, "
                       "embedding halfvec(1536), created_at timestamptz NOT NULL DEFAULT now())")
    await conn.execute("INSERT INTO chunks (id, source_id, embedding) SELECT g, g % 3000, "
                       "CASE WHEN g % 50 = 0 THEN NULL ELSE array_fill((g % 7)::real, ARRAY[1536])::halfvec END "
                       "FROM generate_series(1, 30000) g")
    await conn.execute("ANALYZE chunks")
    await workload(conn, [
        ("SELECT id FROM chunks WHERE source_id = $1 AND embedding IS NOT NULL ORDER BY created_at", lambda i: (i,)),
        ("SELECT id FROM chunks WHERE embedding IS NULL ORDER BY id LIMIT 10", ())])
    sug = await suggest(ctx, "chunks")
    assert all("embedding" not in k for k in keys(sug)), sug
    assert sug["failures"] == [], sug
    # the null tests become partial-index predicates instead
    by_keys = {tuple(i["columns"]): i for i in sug["items"]}
    assert by_keys[("source_id", "created_at")]["where"] == "embedding IS NOT NULL", sug
    assert by_keys[("id",)]["where"] == "embedding IS NULL", sug


async def test_the_sample_is_random_not_the_first_rows(ctx: ReconcileContext) -> None:
    # channel_id is 0 in the first 100k rows (physically) and nearly unique after them: a copy of
    # the first rows says an index on it is useless; a random sample says what the table says.
    conn = ctx.conn
    await conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, channel_id int NOT NULL, body text)")
    await conn.execute("INSERT INTO events SELECT g, CASE WHEN g <= 100000 THEN 0 ELSE g END, 'x' "
                       "FROM generate_series(1, 140000) g")
    await conn.execute("ANALYZE events")
    await workload(conn, [("SELECT id, body FROM events WHERE channel_id = $1", lambda i: (100001 + i,))])
    sug = await suggest(ctx, "events")
    assert keys(sug) == [["channel_id"]], sug


async def test_an_index_already_serving_the_statement_is_not_suggested_again(ctx: ReconcileContext) -> None:
    # the UNIQUE index on session_key serves `session_key = $1 AND status = $2`; the "before"
    # cost used to be measured without it, so (session_key, status) looked like a gain.
    conn = ctx.conn
    await conn.execute("CREATE TABLE sessions (id bigint PRIMARY KEY, session_key text NOT NULL UNIQUE, "
                       "status text NOT NULL, channel_id int)")
    await conn.execute("INSERT INTO sessions SELECT g, 'k' || g, CASE WHEN g % 20 = 0 THEN 'active' "
                       "ELSE 'archived' END, g % 500 FROM generate_series(1, 40000) g")
    await conn.execute("ANALYZE sessions")
    await workload(conn, [("SELECT id FROM sessions WHERE session_key = $1 AND status = $2", lambda i: (f"k{i}", "active")),
                          ("SELECT id FROM sessions WHERE channel_id = $1", lambda i: (i,))])
    sug = await suggest(ctx, "sessions")
    assert keys(sug) == [["channel_id"]], sug


async def test_key_order_follows_selectivity_not_the_text(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, customer_id int NOT NULL)")
    await conn.execute("INSERT INTO orders SELECT g, (ARRAY['new','paid','sent'])[1 + g % 3], g % 5000 "
                       "FROM generate_series(1, 40000) g")
    await conn.execute("ANALYZE orders")
    await workload(conn, [("SELECT id FROM orders WHERE status = $1 AND customer_id = $2", lambda i: ("paid", i))])
    sug = await suggest(ctx, "orders")
    assert keys(sug) == [["customer_id", "status"]], sug


async def test_statements_of_another_role_need_pg_read_all_stats_and_the_status_says_so(
        ctx: ReconcileContext, pg: EmbeddedPostgres, dbname: str) -> None:
    conn = ctx.conn
    await conn.execute("CREATE TABLE feeds (id bigint PRIMARY KEY, owner_id int NOT NULL)")
    await conn.execute("INSERT INTO feeds SELECT g, g % 4000 FROM generate_series(1, 40000) g; ANALYZE feeds")
    role, password = "app_" + secrets.token_hex(4), secrets.token_urlsafe(12)
    pg.create_role(role, password)
    pg.psql(f'GRANT SELECT ON feeds TO "{role}"', dbname)
    app = await asyncpg.connect(pg.dsn(dbname, user=role, password=password))
    try:
        await workload(app, [("SELECT id FROM feeds WHERE owner_id = $1", lambda i: (i,))])
    finally:
        await app.close()
    sug = await suggest(ctx, "feeds")
    assert sug["items"] == []
    assert sug["missingPrivileges"][0]["privilege"] == "pg_read_all_stats", sug
    assert sug["missingPrivileges"][0]["grant"] == f'GRANT pg_read_all_stats TO "{APP_ROLE}";'
    pg.psql(f"GRANT pg_read_all_stats TO {APP_ROLE}")
    try:
        sug = await suggest(ctx, "feeds")
        assert keys(sug) == [["owner_id"]] and "missingPrivileges" not in sug, sug
    finally:
        pg.psql(f"REVOKE pg_read_all_stats FROM {APP_ROLE}")


async def test_json_filters_and_selective_constants_give_gin_expression_and_partial_indexes(
        ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute("CREATE TABLE sources (id bigint PRIMARY KEY, status text NOT NULL, metadata jsonb NOT NULL, "
                       "created_at timestamptz NOT NULL)")
    await conn.execute("INSERT INTO sources SELECT g, CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'completed' END, "
                       "jsonb_build_object('channel_name', 'ch' || (g % 800), 'author', 'u' || (g % 900)), "
                       "now() - g * interval '1 minute' FROM generate_series(1, 40000) g")
    await conn.execute("ANALYZE sources")
    await workload(conn, [
        ("SELECT id FROM sources WHERE metadata->>'channel_name' = $1", lambda i: (f"ch{i}",)),
        ("SELECT id FROM sources WHERE metadata @> $1::jsonb", lambda i: (f'{{"author": "u{i}"}}',)),
        ("SELECT id FROM sources WHERE status = 'pending' ORDER BY created_at LIMIT 20", ())])
    sug = await suggest(ctx, "sources", maxSuggestions=10)
    defs = {i["definition"] for i in sug["items"]}
    assert ("CREATE INDEX CONCURRENTLY idx_sources_metadata ON public.sources USING gin (metadata jsonb_path_ops)"
            in defs), sug
    # pg_stat_statements keeps no constants (`metadata->>$1`, `status = $1`): the JSON key and the
    # rare 'pending' are known from the statements as the application sends them.
    texts = tuple(Statement(q, 10, 1.0) for q in (
        "SELECT id FROM sources WHERE metadata->>'channel_name' = $1",
        "SELECT id FROM sources WHERE status = 'pending' ORDER BY created_at LIMIT 20"))
    report = await advise(conn, AdviceOptions(statements=texts, measure=True))
    defs = {s.candidate.definition(s.name) for s in report.suggestions}
    # measured on the sample only where running is harmless: the parameter-free SELECT, not `= $1`
    measured = {s.candidate.where: s.measured_before_ms is not None and s.measured_after_ms is not None
                for s in report.suggestions}
    assert measured == {None: False, "status = 'pending'": True}, report.to_status()
    assert defs == {
        "CREATE INDEX CONCURRENTLY idx_sources_expr ON public.sources ((metadata ->> 'channel_name'))",
        "CREATE INDEX CONCURRENTLY idx_sources_created_at_partial ON public.sources (created_at) "
        "WHERE status = 'pending'"}, report.to_status()


async def test_the_sample_copies_only_the_named_columns_and_never_a_wide_one(ctx: ReconcileContext) -> None:
    conn = ctx.conn
    await conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, owner_id int NOT NULL, body text, "
                       "embedding halfvec(1536), extra text)")
    await conn.execute("INSERT INTO docs SELECT g, g % 3000, repeat('b', 50), "
                       "CASE WHEN g % 9 = 0 THEN NULL ELSE array_fill(1::real, ARRAY[1536])::halfvec END, 'e' "
                       "FROM generate_series(1, 30000) g")
    await conn.execute("ANALYZE docs")
    await workload(conn, [("SELECT id FROM docs WHERE owner_id = $1 AND embedding IS NOT NULL", lambda i: (i,))])
    counting = Counting(conn)
    ctx.conn = counting  # type: ignore[assignment]
    sug = await suggest(ctx, "docs")
    assert keys(sug) == [["owner_id"]], sug
    copies = [s for s in counting.sent if 'CREATE TEMP TABLE "pgcurator_sample' in s]
    assert len(copies) == 1, counting.sent
    select = copies[0].split(" AS SELECT ", 1)[1]
    assert "body" not in select and "extra" not in select, select
    assert "CASE WHEN \"embedding\" IS NOT NULL THEN true END AS \"embedding\"" in select, select
