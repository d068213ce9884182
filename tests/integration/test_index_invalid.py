"""IndexPolicy on a partitioned table whose declared index exists INVALID: repaired when it can be,
never reported Ready while INVALID."""

from __future__ import annotations

import asyncpg

from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy

from .test_index_reconcile import ctx, indexdefs, ready, reason, spec

__all__ = ["ctx"]  # the fixture, shared with test_index_reconcile

POLICY = {"database": {"secretName": "db"}, "table": {"name": "events"},
          "indexes": [{"name": "events_k_idx", "columns": [{"column": "k"}]}]}


async def _valid(conn: asyncpg.Connection) -> bool | None:
    return await conn.fetchval(
        "SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'events_k_idx'")


async def test_an_invalid_index_with_no_partitions_is_recreated_valid(ctx: ReconcileContext) -> None:
    # Made ON ONLY the parent (INVALID until every partition has one attached), then the only partition
    # detached: no ATTACH can validate it any more.
    await ctx.conn.execute(
        "CREATE TABLE events (id bigint, k int) PARTITION BY RANGE (k); "
        "CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (10); "
        "CREATE INDEX events_k_idx ON ONLY events (k); "
        "ALTER TABLE events DETACH PARTITION events_0")
    assert await _valid(ctx.conn) is False
    out = await reconcile_index_policy(ctx, spec(POLICY))
    assert ready(out) and reason(out) == "Applied", out.conditions
    assert await _valid(ctx.conn) is True
    assert out.status["validIndexes"] == 1
    # A partition added later gets the index from PostgreSQL itself.
    await ctx.conn.execute("CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (10) TO (20)")
    again = await reconcile_index_policy(ctx, spec(POLICY))
    assert ready(again) and reason(again) == "UpToDate", again.conditions
    assert all(valid for _, valid in (await indexdefs(ctx.conn, "events_1")).values())


async def test_an_invalid_index_that_cannot_be_repaired_is_not_ready(ctx: ReconcileContext) -> None:
    # A nested partitioned partition is not indexed by pgcurator, so the parent index stays INVALID.
    await ctx.conn.execute(
        "CREATE TABLE events (id bigint, k int) PARTITION BY RANGE (k); "
        "CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (10) PARTITION BY RANGE (k); "
        "CREATE TABLE events_0a PARTITION OF events_0 FOR VALUES FROM (0) TO (10); "
        "CREATE INDEX events_k_idx ON ONLY events (k)")
    for _ in range(2):
        out = await reconcile_index_policy(ctx, spec(POLICY))
        assert not ready(out), out.conditions
        assert reason(out) == "IndexInvalid", out.conditions
        assert out.requeue_after is not None
    assert await _valid(ctx.conn) is False
    dry = await reconcile_index_policy(ctx, spec({**POLICY, "dryRun": True}))
    assert not ready(dry) and reason(dry) == "IndexInvalid", dry.conditions
