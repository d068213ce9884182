"""What escapes a reconcile outside run_plan becomes a typed Outcome (issue 12 item 3): a lock
timeout is Progressing/WaitingForLock naming the statement, a statement_timeout is Degraded/
StatementTimeout, a cancel by another session is Degraded/QueryCanceled; never InternalError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from pgcurator.backoff import Backoff
from pgcurator.db.params import ConnParams, params_from_url
from pgcurator.db.pools import PoolRegistry
from pgcurator.engine import Engine, KindHandler, Surroundings
from pgcurator.models.common import CommonSpec
from pgcurator.reconcile.outcome import Outcome

pytestmark = pytest.mark.integration


class Spec(CommonSpec):
    pass


def handler(body: Callable[[Any], Awaitable[None]]) -> KindHandler[Spec]:
    async def reconcile(ctx: Any, spec: Spec) -> Outcome:
        await body(ctx.conn)
        return Outcome.ready("Applied", "done")

    return KindHandler(kind="Probe", plural="probes", model=Spec, reconcile=reconcile,
                       schedule_seconds=lambda s: 600.0, table_of=lambda s: "public.t")


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    e = Engine(PoolRegistry(max_size=2))
    yield e
    await e.pools.close()


async def run(engine: Engine, db_url: str, body: Callable[[Any], Awaitable[None]], **timeouts: str) -> Outcome:
    spec = Spec.model_validate({"database": {"secretName": "db"}, "timeouts": timeouts})

    async def params(_: CommonSpec) -> ConnParams:
        return params_from_url(db_url)

    env = Surroundings(resource="Probe/ns/p", namespace="ns", name="p", body={}, params=params)
    return await engine.reconcile(handler(body), spec, env, Backoff(1, 2))


def condition(out: Outcome, type_: str) -> Any:
    return next(c for c in out.conditions if c.type == type_)


async def test_a_read_behind_a_lock_is_waiting_for_lock_naming_the_statement(
        engine: Engine, conn: asyncpg.Connection, db_url: str) -> None:
    await conn.execute("CREATE TABLE t (id int)")
    blocker = await asyncpg.connect(db_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")

            async def read(c: Any) -> None:
                await c.execute("SET lock_timeout = '100ms'")  # as the session setup does for every run
                await c.fetchval("SELECT pg_catalog.pg_total_relation_size($1::text::regclass)", "public.t")

            out = await run(engine, db_url, read, lockTimeout="100ms")
    finally:
        await blocker.close()
    progressing = condition(out, "Progressing")
    assert progressing.status and progressing.reason == "WaitingForLock", out.conditions
    assert not condition(out, "Degraded").status and out.requeue_after
    assert "pg_total_relation_size" in progressing.message and "public.t" in progressing.message
    assert "100ms" in progressing.message


async def test_statement_timeout_is_degraded_statement_timeout(engine: Engine, db_url: str) -> None:
    async def slow(c: Any) -> None:
        await c.execute("SET statement_timeout = '200ms'")
        await c.execute("SELECT pg_catalog.pg_sleep(5)")

    out = await run(engine, db_url, slow, statementTimeout="200ms")
    degraded = condition(out, "Degraded")
    assert degraded.status and degraded.reason == "StatementTimeout", out.conditions
    assert "pg_sleep" in degraded.message and "200ms" in degraded.message


async def test_a_cancel_by_another_session_is_query_canceled(
        engine: Engine, conn: asyncpg.Connection, db_url: str) -> None:
    pid: list[int] = []

    async def slow(c: Any) -> None:
        pid.append(await c.fetchval("SELECT pg_catalog.pg_backend_pid()"))
        await c.execute("SELECT pg_catalog.pg_sleep(60)")

    task = asyncio.create_task(run(engine, db_url, slow))
    deadline = time.monotonic() + 60
    while not await conn.fetchval(  # wait for the state we need: the statement is running
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep(60)%' "
            "AND state = 'active'", pid[0] if pid else 0):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await conn.execute("SELECT pg_catalog.pg_cancel_backend($1)", pid[0])
    out = await task
    degraded = condition(out, "Degraded")
    assert degraded.status and degraded.reason == "QueryCanceled", out.conditions
