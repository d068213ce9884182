"""IndexPolicy builds that cannot get their lock within lockTimeout: a wait, retried, never a failure,
and never a statement that waits longer than lockTimeout."""

from __future__ import annotations

import asyncpg
import pytest

from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy

from .test_index_reconcile import ctx, indexdefs, ready, reason, spec

__all__ = ["ctx"]  # the fixture, shared with test_index_reconcile

POLICY = {"database": {"secretName": "db"}, "table": {"name": "items"},
          "indexes": [{"name": "items_k_idx", "columns": [{"column": "k"}]}],
          "timeouts": {"lockTimeout": "200ms", "lockRetries": 1}}


@pytest.mark.parametrize("mode", ["ROW EXCLUSIVE", "SHARE"])
async def test_a_build_behind_a_lock_waits_and_the_next_run_builds(ctx: ReconcileContext, db_url: str,
                                                                    mode: str) -> None:
    # ROW EXCLUSIVE: CREATE INDEX CONCURRENTLY gets its own lock, registers the index and then gives up
    # waiting for the application's transaction, leaving it INVALID (the retry used to fail with 42P07).
    # SHARE: it never gets its lock.
    await ctx.conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, k int); "
                           "INSERT INTO items SELECT g, g FROM generate_series(1, 100) g")
    blocker = await asyncpg.connect(db_url)
    try:
        await blocker.execute(f"BEGIN; LOCK TABLE items IN {mode} MODE")
        out = await reconcile_index_policy(ctx, spec(POLICY))
    finally:
        await blocker.close()
    assert reason(out) == "WaitingForLock", out.conditions
    assert next(c for c in out.conditions if c.type == "Progressing").status
    assert out.requeue_after is not None
    rows = await ctx.conn.fetch("SELECT step, outcome, error, duration_ms FROM pgcurator.history "
                                "WHERE resource = $1", ctx.resource)
    assert rows and all(r["outcome"] in ("ok", "lock_timeout") for r in rows), rows
    assert not any("42P07" in (r["error"] or "") for r in rows), rows
    assert all(r["duration_ms"] < 200 + 1000 for r in rows), rows  # lockTimeout plus timer slack
    again = await reconcile_index_policy(ctx, spec(POLICY))
    assert ready(again), again.conditions
    defs = await indexdefs(ctx.conn, "items")
    assert defs["items_k_idx"][1] is True
    assert all(valid for valid in (v[1] for v in defs.values()))
