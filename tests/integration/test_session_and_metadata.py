"""Every statement of a run under the resource's limits, catalog text independent of the database's
own defaults, and the metadata schema created and upgraded in one versioned place (issue 12,
items 1 and 3)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from pgcurator.db import ownership
from pgcurator.db.metadata import VERSION, MetadataTooNew, ensure_metadata
from pgcurator.db.params import params_from_url
from pgcurator.db.pools import PoolRegistry
from pgcurator.db.session import prepare_session
from pgcurator.devenv.postgres import EmbeddedPostgres
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.partition import reconcile_partition_policy

from .scenarios import EVENT_LOGS, event_logs_policy

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RESOURCE = "PartitionPolicy/default/event-logs"


def policy(**kw: object) -> PartitionPolicySpec:
    return PartitionPolicySpec.model_validate(event_logs_policy(**kw))


def reason(outcome: object) -> str:
    return str(outcome.conditions[0].reason)  # type: ignore[attr-defined]


async def test_first_contact_with_a_table_already_in_shape(conn: asyncpg.Connection) -> None:
    """Item 1: partitions already cover the window and the pgcurator schema does not exist: the
    first run plans nothing and must still report Ready (the statistics snapshot needs the schema)."""
    await conn.execute(EVENT_LOGS)
    for lo, hi in (("2026-11", "2026-12"), ("2026-12", "2027-01"), ("2027-01", "2027-02"), ("2027-02", "2027-03")):
        name = "event_logs_p" + lo.replace("-", "_")
        await conn.execute(f"CREATE TABLE {name} PARTITION OF event_logs "
                           f"FOR VALUES FROM ('{lo}-01 00:00+00') TO ('{hi}-01 00:00+00')")
    assert await conn.fetchval("SELECT to_regnamespace('pgcurator') IS NULL")
    out = await reconcile_partition_policy(conn, policy(), resource=RESOURCE, now=NOW)
    assert reason(out) == "UpToDate", out.conditions
    assert await conn.fetchval("SELECT max(version) FROM pgcurator.schema_version") == VERSION


async def test_reads_respect_lock_timeout(conn: asyncpg.Connection, db_url: str) -> None:
    """Item 3: another session holds ACCESS EXCLUSIVE on the parent. Every statement of the run,
    the catalog reads included, gives up after lockTimeout instead of waiting for the holder: the
    holder keeps its lock until the run has returned (or 60 s), so waiting would fail the test."""
    await conn.execute(EVENT_LOGS)
    await conn.execute("CREATE TABLE event_logs_p2026_11 PARTITION OF event_logs "
                       "FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00')")
    await ensure_metadata(conn)
    spec = policy(timeouts={"lockTimeout": "200ms", "lockRetries": 0})
    holder = await asyncpg.connect(db_url)
    pools = PoolRegistry(max_size=2)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE event_logs IN ACCESS EXCLUSIVE MODE")

        async def run() -> object:
            async with pools.connection(params_from_url(db_url), spec.timeouts) as pooled:
                return await reconcile_partition_policy(pooled, spec, resource=RESOURCE, now=NOW)

        with pytest.raises(asyncpg.LockNotAvailableError):
            await asyncio.wait_for(run(), timeout=60)
        await tx.rollback()
    finally:
        await holder.close()
        await pools.close()


async def test_database_defaults_never_change_the_plan(pg: EmbeddedPostgres, dbname: str, db_url: str,
                                                       conn: asyncpg.Connection) -> None:
    """`ALTER DATABASE … SET` of output styles, zone and search path: the pooled session pins its
    own, so the same table gets the same partitions and the second run plans nothing."""
    admin = await asyncpg.connect(pg.dsn(dbname))
    try:
        for setting in ("DateStyle = 'SQL, DMY'", "IntervalStyle = 'iso_8601'", "TimeZone = 'Pacific/Chatham'",
                        "search_path = 'nowhere'", "extra_float_digits = -15", "bytea_output = 'escape'"):
            await admin.execute(f"ALTER DATABASE {dbname} SET {setting}")
    finally:
        await admin.close()
    await conn.execute(EVENT_LOGS)
    pools = PoolRegistry(max_size=2)
    try:
        async with pools.connection(params_from_url(db_url), policy().timeouts) as pooled:
            assert await pooled.fetchval("SHOW DateStyle") == "ISO, MDY"
            assert await pooled.fetchval("SELECT current_schemas(false)") == ["public"]
            first = await reconcile_partition_policy(pooled, policy(), resource=RESOURCE, now=NOW)
            assert reason(first) == "Applied", first.conditions
            assert first.status["coveredUntil"] == "2027-03-01T00:00:00+00:00"
            second = await reconcile_partition_policy(pooled, policy(dryRun=True), resource=RESOURCE, now=NOW)
            assert reason(second) == "UpToDate" and second.status["plan"] == [], second.status.get("plan")
    finally:
        await pools.close()
    bounds = await conn.fetch(
        "SELECT pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'public.event_logs'::regclass ORDER BY 1")
    assert bounds[0]["b"] == "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"


async def test_pinning_an_outside_connection(conn: asyncpg.Connection) -> None:
    """A connection not opened by our pools (a test's, `pgcurator apply` with a caller's session)
    gets the same settings; search_path a list, not one schema named '"$user", public'."""
    await conn.execute("SET DateStyle = 'German'; SET search_path = nowhere")
    await prepare_session(conn, policy().timeouts)
    assert await conn.fetchval("SHOW DateStyle") == "ISO, MDY"
    assert await conn.fetchval("SELECT current_schemas(false)") == ["public"]
    assert await conn.fetchval("SHOW lock_timeout") == "500ms"


async def test_metadata_upgrades_from_before_versions_and_refuses_newer(conn: asyncpg.Connection) -> None:
    # What operators before the version table left behind: the history table only.
    await conn.execute("CREATE SCHEMA pgcurator; CREATE TABLE pgcurator.history (id bigint GENERATED ALWAYS AS "
                       "IDENTITY PRIMARY KEY, resource text NOT NULL, step text NOT NULL, target text NOT NULL, "
                       "statement text NOT NULL, started_at timestamptz NOT NULL, duration_ms double precision "
                       "NOT NULL, outcome text NOT NULL, error text, operator text)")
    await conn.execute("INSERT INTO pgcurator.history (resource, step, target, statement, started_at, duration_ms, "
                       "outcome) VALUES ('r', 's', 't', 'x', now(), 1, 'ok')")
    await ensure_metadata(conn)
    tables = {r[0] for r in await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'pgcurator'::regnamespace AND relkind = 'r'")}
    assert {"history", "partition_stats", "index_usage", "conversions", "owners", "schema_version"} <= tables
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history") == 1  # nothing lost
    await ensure_metadata(conn)  # current: a no-op
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.schema_version") == 1
    await conn.execute("INSERT INTO pgcurator.schema_version (version) VALUES ($1)", VERSION + 1)
    with pytest.raises(MetadataTooNew):
        await ensure_metadata(conn)


async def test_concurrent_first_runs_create_the_schema_once(db_url: str) -> None:
    conns = [await asyncpg.connect(db_url) for _ in range(4)]
    try:
        await asyncio.gather(*(ensure_metadata(c) for c in conns))
        assert await conns[0].fetchval("SELECT count(*) FROM pgcurator.schema_version") == 1
    finally:
        for c in conns:
            await c.close()


async def test_one_manager_per_object(conn: asyncpg.Connection) -> None:
    await ensure_metadata(conn)
    await ownership.claim(conn, "index", "public", "i1", "IndexPolicy/ns/a")
    await ownership.claim(conn, "index", "public", "i1", "IndexPolicy/ns/a")  # again: fine
    with pytest.raises(ownership.ConflictingManager) as err:
        await ownership.claim(conn, "index", "public", "i1", "VectorIndex/ns/b")
    assert err.value.reason == "ConflictingManager" and "IndexPolicy/ns/a" in err.value.message

    async def gone(resource: str) -> bool:
        return resource != "IndexPolicy/ns/a"

    await ownership.claim(conn, "index", "public", "i1", "VectorIndex/ns/b", alive=gone)  # a was deleted
    assert await ownership.owner_of(conn, "index", "public", "i1") == "VectorIndex/ns/b"
    assert await ownership.owners_in(conn, "index", "public") == {"i1": "VectorIndex/ns/b"}
    await ownership.release_all(conn, "VectorIndex/ns/b")
    assert await ownership.owner_of(conn, "index", "public", "i1") is None
