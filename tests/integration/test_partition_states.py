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


# Tables already in the declared shape, built by hand (as a team adopting pgcurator would have them),
# with the spec that declares that shape.
_BASE = {"database": {"secretName": "db"}, "timeouts": {"lockTimeout": "5s", "lockRetries": 1}}
IN_SHAPE: dict[str, tuple[str, dict[str, object]]] = {
    "range-monthly-retention": ("""
        CREATE TABLE t (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
        CREATE TABLE t_p2026_09 PARTITION OF t FOR VALUES FROM ('2026-09-01+00') TO ('2026-10-01+00');
        CREATE TABLE t_p2026_10 PARTITION OF t FOR VALUES FROM ('2026-10-01+00') TO ('2026-11-01+00');
        CREATE TABLE t_p2026_11 PARTITION OF t FOR VALUES FROM ('2026-11-01+00') TO ('2026-12-01+00');
        CREATE TABLE t_p2026_12 PARTITION OF t FOR VALUES FROM ('2026-12-01+00') TO ('2027-01-01+00');
        CREATE TABLE t_default PARTITION OF t DEFAULT;
        INSERT INTO t VALUES (1, '2019-05-01');""",
        {"table": {"name": "t"}, "defaultPartition": True, "retention": {"keep": 2, "action": "drop"},
         "range": {"column": "ts", "interval": "1 month", "premake": 1}}),
    "range-daily-tokyo-timestamp": ("""
        CREATE TABLE t (id bigint, ts timestamp NOT NULL) PARTITION BY RANGE (ts);
        CREATE TABLE t_p2026_11_22 PARTITION OF t FOR VALUES FROM ('2026-11-22') TO ('2026-11-23');
        CREATE TABLE t_p2026_11_23 PARTITION OF t FOR VALUES FROM ('2026-11-23') TO ('2026-11-24');""",
        {"table": {"name": "t"}, "retention": {"keep": 1, "action": "detach"},
         "range": {"column": "ts", "interval": "1 day", "timeZone": "Asia/Tokyo", "premake": 1}}),
    "range-only-old-partitions": ("""
        CREATE TABLE t (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
        CREATE TABLE t_p2025_01 PARTITION OF t FOR VALUES FROM ('2025-01-01+00') TO ('2025-02-01+00');
        CREATE TABLE t_p2025_02 PARTITION OF t FOR VALUES FROM ('2025-02-01+00') TO ('2025-03-01+00');""",
        {"table": {"name": "t"}, "retention": {"keep": 1, "action": "drop"},
         "range": {"column": "ts", "interval": "1 month", "premake": 0}}),
    "range-integer": ("""
        CREATE TABLE t (id bigint NOT NULL) PARTITION BY RANGE (id);
        CREATE TABLE t_p0 PARTITION OF t FOR VALUES FROM (0) TO (100);
        CREATE TABLE t_p100 PARTITION OF t FOR VALUES FROM (100) TO (200);
        INSERT INTO t SELECT generate_series(0, 150);""",
        {"table": {"name": "t"}, "retention": {"keep": 1, "action": "drop"},
         "range": {"column": "id", "width": 100, "premake": 1}}),
    "list": ("""
        CREATE TABLE t (k text NOT NULL, v int) PARTITION BY LIST (k);
        CREATE TABLE t_a PARTITION OF t FOR VALUES IN ('a', 'b');
        CREATE TABLE t_c PARTITION OF t FOR VALUES IN ('c');
        CREATE TABLE t_default PARTITION OF t DEFAULT;""",
        {"table": {"name": "t"}, "strategy": "list", "defaultPartition": True,
         "list": {"column": "k", "partitions": [{"name": "a", "values": ["a", "b"]}, {"name": "c", "values": ["c"]}]}}),
    "hash": ("""
        CREATE TABLE t (id bigint NOT NULL) PARTITION BY HASH (id);
        CREATE TABLE t_0 PARTITION OF t FOR VALUES WITH (modulus 2, remainder 0);
        CREATE TABLE t_1 PARTITION OF t FOR VALUES WITH (modulus 2, remainder 1);""",
        {"table": {"name": "t"}, "strategy": "hash", "hash": {"column": "id", "modulus": 2}}),
    "list-then-hash": ("""
        CREATE TABLE t (k text NOT NULL, s bigint NOT NULL) PARTITION BY LIST (k);
        CREATE TABLE t_a PARTITION OF t FOR VALUES IN ('a') PARTITION BY HASH (s);
        CREATE TABLE t_a_0 PARTITION OF t_a FOR VALUES WITH (modulus 2, remainder 0);
        CREATE TABLE t_a_1 PARTITION OF t_a FOR VALUES WITH (modulus 2, remainder 1);
        CREATE TABLE t_b PARTITION OF t FOR VALUES IN ('b');""",
        {"table": {"name": "t"}, "strategy": "list",
         "list": {"column": "k", "partitions": [{"name": "a", "values": ["a"]}, {"name": "b", "values": ["b"]}]},
         "subpartition": {"strategy": "hash", "hash": {"column": "s", "modulus": 2}, "only": ["a"]}}),
    "range-then-range": ("""
        CREATE TABLE t (ts timestamptz NOT NULL, id bigint NOT NULL) PARTITION BY RANGE (ts);
        CREATE TABLE t_p2026 PARTITION OF t FOR VALUES FROM ('2026-01-01+00') TO ('2027-01-01+00')
            PARTITION BY RANGE (id);
        CREATE TABLE t_p2026_p0 PARTITION OF t_p2026 FOR VALUES FROM (0) TO (1000);
        CREATE TABLE t_p2027 PARTITION OF t FOR VALUES FROM ('2027-01-01+00') TO ('2028-01-01+00')
            PARTITION BY RANGE (id);
        CREATE TABLE t_p2027_p0 PARTITION OF t_p2027 FOR VALUES FROM (0) TO (1000);""",
        {"table": {"name": "t"}, "retention": {"keep": 1, "action": "drop"},
         "range": {"column": "ts", "interval": "1 year", "premake": 1},
         "subpartition": {"strategy": "range", "range": {"column": "id", "width": 1000, "premake": 0}}}),
}


async def _ensure_metadata(conn: asyncpg.Connection) -> None:
    from pgcurator.db.metadata import ensure_metadata

    await ensure_metadata(conn)


@pytest.mark.parametrize("layout", sorted(IN_SHAPE))
async def test_a_second_reconcile_plans_nothing(conn: asyncpg.Connection, layout: str) -> None:
    ddl, body = IN_SHAPE[layout]
    await conn.execute(ddl)
    await _ensure_metadata(conn)  # the runtime does this before every reconcile
    spec = PartitionPolicySpec.model_validate({**_BASE, **body})
    first = await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
    assert condition(first, "Ready").status, first.conditions  # type: ignore[attr-defined]
    second = await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
    ready = condition(second, "Ready")
    assert ready.status and ready.reason == "UpToDate", (  # type: ignore[attr-defined]
        f"second run: {ready}; first run did {first.status.get('lastRun')}")
    assert "lastRun" not in second.status


@pytest.mark.parametrize(("before", "after"), [
    ({"interval": "1 month", "timeZone": "UTC"}, {"interval": "1 month", "timeZone": "Asia/Tokyo"}),
    ({"interval": "1 month", "timeZone": "UTC"}, {"interval": "1 month", "timeZone": "America/New_York"}),
    ({"interval": "1 day", "timeZone": "Australia/Lord_Howe"}, {"interval": "1 week", "timeZone": "Asia/Kathmandu"}),
    ({"interval": "1 month", "timeZone": "Europe/London"}, {"interval": "6 hours", "timeZone": "UTC"}),
])
async def test_changing_the_grid_leaves_no_hole_in_the_window(
    conn: asyncpg.Connection, before: dict[str, str], after: dict[str, str],
) -> None:
    await conn.execute(EVENT_LOGS)
    first = policy(range={"column": "server_timestamp", "premake": 3, **before})
    assert condition(await reconcile_partition_policy(conn, first, resource=RESOURCE, now=NOW), "Ready").status  # type: ignore[attr-defined]
    later = NOW + timedelta(days=23)
    second = policy(range={"column": "server_timestamp", "premake": 3, **after})
    out = await reconcile_partition_policy(conn, second, resource=RESOURCE, now=later)
    assert condition(out, "Ready").status, out.conditions  # type: ignore[attr-defined]
    # The window: from the start of the current period on the new grid to the end of the last premade one.
    from pgcurator.planner.partition import desired_range_periods

    periods = desired_range_periods(second.rng, later, None)
    lo, hi = periods[0].lower, periods[-1].upper
    # One row at every hour (and at the window's first instant, which need not be on the hour).
    n = await conn.fetchval(
        "WITH ins AS (INSERT INTO event_logs (player_id, event_type, server_timestamp) "
        "SELECT 1, 'probe', t FROM (SELECT $1::timestamptz AS t UNION ALL SELECT generate_series("
        "date_trunc('hour', $1::timestamptz) + interval '1 hour', $2::timestamptz - interval '1 microsecond', "
        "interval '1 hour')) s RETURNING 1) SELECT count(*) FROM ins", lo, hi)
    assert n > 0
    again = await reconcile_partition_policy(conn, second, resource=RESOURCE, now=later)
    assert condition(again, "Ready").reason == "UpToDate", again.conditions  # type: ignore[attr-defined]


async def test_integer_premake_stops_at_what_the_column_type_holds(conn: asyncpg.Connection) -> None:
    """Premake past a smallint's maximum ends in one partition up to MAXVALUE instead of a bound
    PostgreSQL refuses on every run."""
    await conn.execute("CREATE TABLE s (id smallint NOT NULL) PARTITION BY RANGE (id);"
                       "CREATE TABLE s_p31000 PARTITION OF s FOR VALUES FROM (31000) TO (32000);"
                       "INSERT INTO s VALUES (31999)")
    spec = PartitionPolicySpec.model_validate({**_BASE, "table": {"name": "s"},
                                               "range": {"column": "id", "width": 1000, "premake": 3}})
    out = await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
    assert condition(out, "Ready").status, out.conditions  # type: ignore[attr-defined]
    assert await conn.fetchval("SELECT pg_get_expr(relpartbound, oid) FROM pg_catalog.pg_class "
                               "WHERE relname = 's_p32000'") == "FOR VALUES FROM ('32000') TO (MAXVALUE)"
    await conn.execute("INSERT INTO s VALUES (32767)")
    again = await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
    assert condition(again, "Ready").reason == "UpToDate", again.conditions  # type: ignore[attr-defined]


async def test_catalog_reads_are_not_shadowed_by_the_search_path(conn: asyncpg.Connection, dbname: str) -> None:
    """A database whose search_path puts a schema before pg_catalog, holding tables named like the
    catalogs: the observation still reads the real catalogs."""
    await conn.execute(EVENT_LOGS)
    spec = policy(range={"column": "server_timestamp", "interval": "1 month", "premake": 1})
    await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=NOW)
    await conn.execute("CREATE TABLE public.pg_inherits (inhrelid oid, inhparent oid, inhdetachpending bool)")
    await conn.execute("SET search_path = public, pg_catalog")
    try:
        from pgcurator.catalog.partitions import observe_table

        obs = await observe_table(conn, "public", "event_logs", "server_timestamp")
    finally:
        await conn.execute("RESET search_path")
    assert sorted(p.name for p in obs.partitions) == ["event_logs_p2026_11", "event_logs_p2026_12"]
