"""PartitionPolicy in states real databases are in: a DEFAULT partition under another name, a
time zone or interval changed on a maintained table, a second reconcile of a table already in
shape, writers racing a DEFAULT-row move or a deletion. Against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.partition import cleanup_partition_policy, reconcile_partition_policy

from .scenarios import EVENT_LOGS, event_logs_policy

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RESOURCE = "PartitionPolicy/default/event-logs"


def policy(**kw: object) -> PartitionPolicySpec:
    return PartitionPolicySpec.model_validate(event_logs_policy(**kw))


def condition(outcome: object, kind: str) -> object:
    return next(c for c in outcome.conditions if c.type == kind)  # type: ignore[attr-defined]


async def test_default_rows_conflict_reason_does_not_depend_on_the_default_partitions_name(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(EVENT_LOGS)
    # An adopted table whose DEFAULT partition is not called <table>_default.
    await conn.execute("CREATE TABLE event_logs_catchall PARTITION OF event_logs DEFAULT")
    await conn.execute("INSERT INTO event_logs (player_id, event_type, server_timestamp) "
                       "VALUES (1, 'x', '2026-12-05')")
    out = await reconcile_partition_policy(
        conn, policy(defaultPartition=True, range={"column": "server_timestamp", "interval": "1 month",
                                                   "premake": 1}), resource=RESOURCE, now=NOW)
    degraded = condition(out, "Degraded")
    assert degraded.status and degraded.reason == "DefaultRowsConflict", out.conditions  # type: ignore[attr-defined]
    assert "event_logs_catchall" in degraded.message  # type: ignore[attr-defined]


class RangeWriter:
    """Inserts rows into [lo, hi) of event_logs, one autocommit INSERT at a time, until stopped;
    remembers every row it was told was committed and every insert that failed."""

    def __init__(self, url: str, lo: datetime, tag: str) -> None:
        self.url, self.lo, self.tag = url, lo, tag
        self.committed: list[int] = []
        self.failures: list[str] = []
        self.stop = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    await conn.execute(
                        "INSERT INTO event_logs (player_id, event_type, server_timestamp) VALUES ($1, $2, $3)",
                        n, self.tag, self.lo + timedelta(minutes=n % 40000))
                    self.committed.append(n)
                except asyncpg.PostgresError as exc:
                    self.failures.append(f"{exc.sqlstate}: {exc}")
                self.started.set()
        finally:
            await conn.close()


async def test_inserts_racing_the_default_row_move_never_fail(conn: asyncpg.Connection, db_url: str) -> None:
    """Rows routed to the DEFAULT partition while the last batch + ATTACH holds it must not be
    re-checked against the DEFAULT's new constraint: writers wait before routing instead."""
    await conn.execute(EVENT_LOGS)
    await conn.execute("CREATE TABLE event_logs_default PARTITION OF event_logs DEFAULT")
    seeded = 0
    for run in range(4):
        month = datetime(2027, 1 + run, 1, tzinfo=UTC)
        # Rows of a month ahead sit in the DEFAULT partition (e.g. written before its partition existed).
        await conn.execute(
            "INSERT INTO event_logs (player_id, event_type, server_timestamp) "
            "SELECT g, 'seed', $1::timestamptz + g * interval '1 minute' FROM generate_series(1, 3000) g", month)
        seeded += 3000
        writer = RangeWriter(db_url, month, f"w{run}")
        task = asyncio.create_task(writer.run())
        await asyncio.wait_for(writer.started.wait(), 60)
        spec = policy(defaultPartition=True, defaultRows={"move": True, "batchRows": 500},
                      range={"column": "server_timestamp", "interval": "1 month", "premake": 2 + run},
                      timeouts={"lockTimeout": "5s", "lockRetries": 3})
        out = await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
        writer.stop.set()
        await task
        assert condition(out, "Ready").status, out.conditions  # type: ignore[attr-defined]
        assert writer.failures == [], f"run {run}: {len(writer.failures)} inserts failed: {writer.failures[:3]}"
        # Every committed row is there exactly once, in the month's own partition.
        rows = await conn.fetch("SELECT player_id, tableoid::regclass::text AS part FROM event_logs "
                                "WHERE event_type = $1", writer.tag)
        assert sorted(r["player_id"] for r in rows) == sorted(writer.committed)
        assert {r["part"] for r in rows} == {f"event_logs_p{month:%Y_%m}"}
    assert await conn.fetchval("SELECT count(*) FROM event_logs WHERE event_type = 'seed'") == seeded
    assert await conn.fetchval("SELECT count(*) FROM event_logs_default") == 0


async def _waiting_on(conn: asyncpg.Connection, table: str, deadline_s: float = 60.0) -> None:
    """Returns once another session waits for a lock on `table` (polls; no fixed sleep)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE NOT granted "
                               "AND relation = $1::regclass)", table):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nobody started waiting for a lock on {table}")


async def _committed_or_waiting(conn: asyncpg.Connection, task: asyncio.Task[str], pid: int) -> None:
    """Returns once `task` (a statement of backend `pid`) has finished or waits for a lock."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while not task.done() and loop.time() < end:
        if await conn.fetchval("SELECT wait_event_type = 'Lock' FROM pg_catalog.pg_stat_activity WHERE pid = $1",
                               pid):
            return
        await asyncio.sleep(0.02)
    assert task.done() or loop.time() < end, "the insert neither finished nor waited for a lock"


async def test_deletion_never_drops_a_row_written_during_cleanup(conn: asyncpg.Connection, db_url: str) -> None:
    """A row committed into a partition while deletion cleanup is under way is never dropped with it."""
    await conn.execute(EVENT_LOGS)
    spec = policy(deletionPolicy="Delete", range={"column": "server_timestamp", "interval": "1 month", "premake": 1},
                  timeouts={"lockTimeout": "30s", "lockRetries": 1})
    assert condition(await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW), "Ready").status  # type: ignore[attr-defined]
    # Another session holds a lock that lets writers in but keeps DDL on the table waiting, so the
    # cleanup stops at its first lock wait.
    blocker = await asyncpg.connect(db_url)
    writer = await asyncpg.connect(db_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE ONLY event_logs IN SHARE UPDATE EXCLUSIVE MODE")
        cleanup_conn = await asyncpg.connect(db_url)
        try:
            cleanup = asyncio.create_task(cleanup_partition_policy(cleanup_conn, spec, RESOURCE))
            await _waiting_on(conn, "event_logs")
            # Written now, into a partition the policy created and that was empty a moment ago.
            insert = asyncio.create_task(writer.execute(
                "INSERT INTO event_logs (player_id, event_type, server_timestamp) VALUES (1, 'late', '2026-12-05')"))
            await _committed_or_waiting(conn, insert, writer.get_server_pid())
            await tx.rollback()
            kept = await cleanup
            try:
                await insert
                committed = True
            except asyncpg.PostgresError:
                committed = False  # it waited behind the cleanup and found no partition: refused, not lost
        finally:
            await cleanup_conn.close()
    finally:
        await blocker.close()
        await writer.close()
    if committed:
        assert await conn.fetchval("SELECT count(*) FROM event_logs WHERE event_type = 'late'") == 1
        assert "event_logs_p2026_12" in kept
    assert await conn.fetchval("SELECT count(*) FROM event_logs") == (1 if committed else 0)


async def test_deletion_drops_empty_created_partitions_and_keeps_the_others(conn: asyncpg.Connection) -> None:
    await conn.execute(EVENT_LOGS)
    await conn.execute("CREATE TABLE event_logs_legacy PARTITION OF event_logs "
                       "FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')")  # not created by the policy
    spec = policy(deletionPolicy="Delete", defaultPartition=True,
                  range={"column": "server_timestamp", "interval": "1 month", "premake": 1})
    await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
    await conn.execute("INSERT INTO event_logs (player_id, event_type, server_timestamp) VALUES (1, 'x', '2026-11-05')")
    kept = await cleanup_partition_policy(conn, spec, RESOURCE)
    assert kept == ["event_logs_p2026_11"]
    left = {r[0] for r in await conn.fetch("SELECT relname FROM pg_catalog.pg_class WHERE relname LIKE 'event_logs_%' "
                                           "AND relkind IN ('r', 'p')")}
    assert left == {"event_logs_p2026_11", "event_logs_legacy"}
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE outcome = 'skipped' "
                               "AND target = 'event_logs_p2026_11'") == 1
