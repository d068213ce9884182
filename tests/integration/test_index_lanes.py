"""Parallel per-partition builds never outlive their run (issue 12 item 8)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.devenv.postgres import EmbeddedPostgres
from pgcurator.models.index import IndexPolicySpec
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy

from ..conftest import APP_ROLE

pytestmark = pytest.mark.integration

PARTITIONS = ["builds_a", "builds_b", "builds_c"]
SEED = """
CREATE TABLE builds (id bigint NOT NULL, bucket int NOT NULL, payload text) PARTITION BY LIST (bucket);
CREATE TABLE builds_a PARTITION OF builds FOR VALUES IN (0);
CREATE TABLE builds_b PARTITION OF builds FOR VALUES IN (1);
CREATE TABLE builds_c PARTITION OF builds FOR VALUES IN (2);
INSERT INTO builds SELECT g, g % 3, md5(g::text) FROM generate_series(1, 60000) g;
ANALYZE builds;
"""
ACTIVE_BUILDS = """
SELECT pid FROM pg_catalog.pg_stat_activity
 WHERE datname = current_database() AND state = 'active' AND query ILIKE 'CREATE INDEX%'
"""


class FailingBuild:
    """A pooled connection that raises an unexpected exception instead of running its CREATE INDEX,
    once every other lane's build is running on the server."""

    def __init__(self, conn: Any, observer: asyncpg.Connection, others: int) -> None:
        self._conn = conn
        self._observer = observer
        self._others = others

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        if sql.startswith("CREATE INDEX CONCURRENTLY"):
            deadline = time.monotonic() + 120
            while len(await self._observer.fetch(ACTIVE_BUILDS)) < self._others:
                assert time.monotonic() < deadline, "the other lanes never started building"
                await asyncio.sleep(0.02)
            raise RuntimeError("injected: a bug in one lane")
        return await self._conn.execute(sql, *args, **kw)


@pytest.fixture
async def ctx(pg: EmbeddedPostgres, dbname: str, app_password: str,
              conn: asyncpg.Connection) -> AsyncIterator[ReconcileContext]:
    params = ConnParams(pg.host, pg.port, dbname, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=6)
    yield ReconcileContext(conn=conn, resource="IndexPolicy/default/builds", namespace="default", name="builds",
                           body={}, params=params, pools=pools)
    await pools.close()


def policy() -> IndexPolicySpec:
    return IndexPolicySpec.model_validate({
        "database": {"secretName": "app-db"},
        "table": {"name": "builds"},
        "parallelism": 3,
        "indexes": [{"name": "idx_builds_payload", "columns": [{"column": "payload"}]}],
        # long enough that a lane left behind would still be waiting when the test looks
        "timeouts": {"lockTimeout": "10m", "lockRetries": 0},
    })


async def test_a_failing_lane_stops_the_others_before_the_run_returns(ctx: ReconcileContext, db_url: str) -> None:
    conn = ctx.conn
    await conn.execute(SEED)
    observer = await asyncpg.connect(db_url)
    # An open snapshot: every concurrent build waits for it ("waiting for old snapshots") until it
    # ends, so the other lanes are certainly still building when the third one fails.
    holder = await asyncpg.connect(db_url)
    snapshot = holder.transaction(isolation="repeatable_read")
    await snapshot.start()
    await holder.fetchval("SELECT 1")
    handed = 0
    plain = ctx.connection

    @asynccontextmanager
    async def connection() -> AsyncIterator[Any]:
        nonlocal handed
        async with plain() as c:
            handed += 1
            yield FailingBuild(c, observer, len(PARTITIONS) - 1) if handed == len(PARTITIONS) else c

    ctx.connection = connection  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await reconcile_index_policy(ctx, policy())
        # The state when the run returned: no build of it is left running on the server.
        deadline = time.monotonic() + 3
        while running := await observer.fetch(ACTIVE_BUILDS):
            assert time.monotonic() < deadline, f"builds still running after the run returned: {running}"
            await asyncio.sleep(0.02)
        # The table lock is free, and no INVALID index is left that the history does not account for.
        invalid = {r[0] for r in await observer.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid")}
        recorded = {r[0] for r in await observer.fetch("SELECT target FROM pgcurator.history")}
        assert invalid <= recorded, (invalid, recorded)
        assert invalid == {"idx_builds_payload"}  # the parent ON ONLY, valid once every partition is attached
        cancelled = await observer.fetch(
            "SELECT target FROM pgcurator.history WHERE outcome = 'cancelled' ORDER BY target")
        assert len(cancelled) == len(PARTITIONS) - 1, cancelled
        for part in PARTITIONS:  # the half-built partition indexes were dropped, not left INVALID
            assert await observer.fetchval(
                "SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass", part) == 0
    finally:
        await snapshot.rollback()
        await holder.close()
    ctx.connection = plain  # type: ignore[method-assign]
    out = await reconcile_index_policy(ctx, policy())
    assert out.conditions[0].status, out.conditions
    assert all(r["state"] == "built" for r in out.status["partitions"]), out.status["partitions"]
    await observer.close()
