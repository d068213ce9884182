"""DatabaseMonitor against a real PostgreSQL 18: the operator's role `curator` is not a superuser,
so the event trigger is unavailable to it (reported, not an error) and the fingerprint alone finds
changes; once a superuser installs the trigger, DDL by any role is recorded with who and when,
drift wakes the managing IndexPolicy, and the repair is linked to the change."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.models.index import IndexPolicySpec
from pgcurator.models.monitor import DatabaseMonitorSpec
from pgcurator.planner.monitor import UNKNOWN_WHO
from pgcurator.planner.monitor_trigger import install_sql
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy
from pgcurator.reconcile.monitor import reconcile_database_monitor
from pgcurator.reconcile.monitor_listen import _LISTENERS, keep_listening, stop_listening
from pgcurator.reconcile.outcome import Event, Outcome
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE

pytestmark = pytest.mark.integration
MONITOR = "DatabaseMonitor/default/mon"
DATABASE = {"secretName": "app-db"}


def monitor_spec(**extra: Any) -> DatabaseMonitorSpec:
    return DatabaseMonitorSpec.model_validate({"database": DATABASE, **extra})


def index_body(index: str = "orders_customer_idx") -> dict[str, Any]:
    return {"kind": "IndexPolicy", "metadata": {"namespace": "default", "name": "orders"},
            "spec": {"database": DATABASE, "table": {"name": "orders"},
                     "indexes": [{"name": index, "columns": [{"column": "customer"}]}]}}


class Harness:
    def __init__(self, pg: EmbeddedPostgres, dbname: str, user: str, password: str) -> None:
        self.params = ConnParams(pg.host, pg.port, dbname, user, password, ssl_mode="disable")
        self.pools = PoolRegistry(max_size=4)
        self.events: list[Event] = []
        self.wakes: list[tuple[str, str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.runtime = False  # whether ctx.wake is set (as inside the operator)
        self.status: dict[str, Any] = {}  # the resource's status as the last run left it

    def ctx(self, conn: Any, resource: str = MONITOR) -> ReconcileContext:
        async def emit(ev: Event) -> None:
            self.events.append(ev)

        def wake(kind: str, namespace: str, name: str) -> bool:
            self.wakes.append((kind, namespace, name))
            return True

        _kind, ns, name = resource.split("/")
        return ReconcileContext(conn=conn, resource=resource, namespace=ns, name=name,
                                body={"status": self.status}, params=self.params,
                                pools=self.pools, emit=emit, wake=wake if self.runtime else None,
                                peers=lambda namespace: [b for b in self.bodies
                                                         if b["metadata"]["namespace"] == namespace])

    @property
    def woken(self) -> list[tuple[str, str, str]]:
        """Resources the monitor woke (the listener waking the monitor itself is left out)."""
        return [w for w in self.wakes if w[0] != "DatabaseMonitor"]

    async def monitor(self, spec: DatabaseMonitorSpec | None = None) -> Outcome:
        async with self.pools.connection(self.params) as conn:
            out = await reconcile_database_monitor(self.ctx(conn), spec or monitor_spec())
        self.status = {**self.status, **out.status}  # merge-patched, as the API server does
        return out


@pytest.fixture
async def curator(pg: EmbeddedPostgres, dbname: str, app_password: str) -> AsyncIterator[Harness]:
    h = Harness(pg, dbname, APP_ROLE, app_password)
    yield h
    stop_listening(MONITOR)
    await h.pools.close()


async def su(pg: EmbeddedPostgres, dbname: str, sql: str) -> None:
    c = await asyncpg.connect(pg.dsn(dbname))
    try:
        await c.execute(sql)
    finally:
        await c.close()


async def as_role(pg: EmbeddedPostgres, dbname: str, role: str, password: str, sql: str,
                  app: str = "psql") -> None:
    c = await asyncpg.connect(pg.dsn(dbname, user=role, password=password), server_settings={"application_name": app})
    try:
        await c.execute(sql)
    finally:
        await c.close()


async def expire(conn: asyncpg.Connection, column: str = "fingerprint_at") -> None:
    """Make the next run find the fingerprint (or statistics) due, without waiting for the interval."""
    await conn.execute(f"UPDATE pgcurator.monitor_state SET {column} = {column} - interval '1 day'")


def cond(out: Outcome, type_: str) -> Any:
    return next(c for c in out.conditions if c.type == type_)


async def make_role(pg: EmbeddedPostgres, dbname: str) -> tuple[str, str]:
    name, password = "dev_" + secrets.token_hex(3), secrets.token_urlsafe(12)
    pg.create_role(name, password)
    await su(pg, dbname, f"GRANT CREATE, USAGE ON SCHEMA public TO {name}")
    return name, password


async def test_without_superuser_the_trigger_is_unavailable_and_the_fingerprint_finds_changes(
        pg: EmbeddedPostgres, dbname: str, curator: Harness, conn: asyncpg.Connection) -> None:
    first = await curator.monitor()
    assert cond(first, "Ready").status and cond(first, "Ready").reason == "Observing"
    assert not cond(first, "Degraded").status
    trigger = cond(first, "EventTrigger")
    assert not trigger.status and trigger.reason == "EventTriggerNeedsSuperuser"
    assert "docs/databasemonitor.md" in trigger.message
    assert first.status["changeDetection"]["eventTrigger"]["state"] == "Unavailable"
    assert any(p["reason"] == "EventTriggerNeedsSuperuser" for p in first.status["privileges"])
    version = first.status["schemaVersion"]
    assert version and first.status["changes"]["total"] == 0

    await conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer int)")
    await su(pg, dbname, f"ALTER DATABASE {dbname} SET work_mem = '8MB'")  # a shared object: no trigger fires
    await expire(conn)
    second = await curator.monitor()
    assert second.status["schemaVersion"] != version
    changes = {(c["command"], c["object"]) for c in second.status["changes"]["last"]}
    assert ("CREATE TABLE", "public.orders") in changes
    assert ("CREATE INDEX", "public.orders_pkey") in changes
    assert ("ALTER DATABASE", dbname) in changes
    assert {c["who"] for c in second.status["changes"]["last"]} == {UNKNOWN_WHO}
    assert second.status["changes"]["fingerprintOnly"] == second.status["changes"]["total"]
    assert any(e.reason == "SchemaChanged" and "public.orders" in e.message for e in curator.events)

    # Nothing changed: the next fingerprint records nothing and keeps the version.
    await expire(conn)
    third = await curator.monitor()
    assert third.status["schemaVersion"] == second.status["schemaVersion"]
    assert third.status["changes"]["total"] == second.status["changes"]["total"]


async def test_a_superuser_installed_trigger_records_who_and_when_for_any_role(
        pg: EmbeddedPostgres, dbname: str, curator: Harness, conn: asyncpg.Connection) -> None:
    await curator.monitor()  # creates the pgcurator schema
    await su(pg, dbname, install_sql())
    role, password = await make_role(pg, dbname)
    out = await curator.monitor()
    assert cond(out, "EventTrigger").status, cond(out, "EventTrigger")
    assert out.status["changeDetection"]["eventTrigger"]["state"] == "Active"

    await as_role(pg, dbname, role, password, "CREATE TABLE notes (id int); CREATE INDEX notes_id ON notes (id)",
                  app="migrate-tool")
    await as_role(pg, dbname, role, password, f"GRANT SELECT ON notes TO {APP_ROLE}")
    out = await curator.monitor()
    last = out.status["changes"]["last"]
    by_command = {c["command"]: c for c in last}
    assert {"CREATE TABLE", "CREATE INDEX", "GRANT"} <= set(by_command), last
    created = by_command["CREATE TABLE"]
    assert created["who"].startswith(role) and "migrate-tool" in created["who"]
    assert created["mechanism"] == "event_trigger" and created["at"] and created["transaction"] > 0
    assert "CREATE TABLE notes" in created["statement"]

    # The fingerprint sees the same changes: confirmed, not recorded twice.
    before = out.status["changes"]["total"]
    await expire(conn)
    out = await curator.monitor()
    extra = [(c["command"], c["object"]) for c in out.status["changes"]["last"][:out.status["changes"]["total"] - before]]
    # Only what no trigger can see: the two event triggers the superuser created.
    assert sorted(extra) == [("CREATE EVENT TRIGGER", "pgcurator_ddl"), ("CREATE EVENT TRIGGER", "pgcurator_drop")]
    assert out.status["changes"]["confirmedByBoth"] >= 3


async def test_the_trigger_never_fails_the_users_ddl(pg: EmbeddedPostgres, dbname: str, curator: Harness,
                                                    conn: asyncpg.Connection) -> None:
    await curator.monitor()
    await su(pg, dbname, install_sql())
    await su(pg, dbname, "REVOKE ALL ON SCHEMA pgcurator FROM PUBLIC; DROP TABLE pgcurator.schema_changes")
    await conn.execute("CREATE TABLE still_works (id int)")  # the insert fails inside; the DDL does not
    assert await conn.fetchval("SELECT to_regclass('still_works') IS NOT NULL")


async def test_an_operator_with_a_superuser_role_installs_the_trigger(pg: EmbeddedPostgres, dbname: str) -> None:
    h = Harness(pg, dbname, pg.superuser, pg.password)
    try:
        out = await h.monitor()
        assert cond(out, "EventTrigger").status
        assert any(e.reason == "EventTriggerInstalled" for e in h.events)
        dry = await h.monitor(monitor_spec(dryRun=True))
        assert dry.status["plan"] == []  # installed already: nothing to plan
        # An older version is replaced.
        await su(pg, dbname, "COMMENT ON FUNCTION pgcurator.capture_ddl() IS 'pgcurator event trigger v1'")
        dry = await h.monitor(monitor_spec(dryRun=True))
        assert dry.status["changeDetection"]["eventTrigger"]["state"] == "Outdated" and dry.status["plan"]
        out = await h.monitor()
        assert out.status["changeDetection"]["eventTrigger"]["state"] == "Active"
        # A statement that may hold a password is not kept, in the table nor on the status.
        await su(pg, dbname, "CREATE EXTENSION IF NOT EXISTS postgres_fdw; CREATE SERVER s FOREIGN DATA WRAPPER "
                             "postgres_fdw; CREATE USER MAPPING FOR postgres SERVER s OPTIONS (password 'hunter2')")
        out = await h.monitor()
        assert "hunter2" not in str(out.status)
        c = await asyncpg.connect(pg.dsn(dbname))
        try:
            kept = await c.fetch("SELECT statement FROM pgcurator.schema_changes WHERE statement LIKE '%hunter2%'")
            assert kept == [] and await c.fetchval(
                "SELECT count(*) FROM pgcurator.schema_changes WHERE command_tag = 'CREATE USER MAPPING'") == 1
        finally:
            await c.close()
    finally:
        await h.pools.close()


async def test_drift_wakes_the_managing_index_policy_and_links_the_repair(
        pg: EmbeddedPostgres, dbname: str, curator: Harness, conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer int)")
    curator.runtime = True
    curator.bodies = [index_body()]
    await curator.monitor()
    await su(pg, dbname, install_sql())
    ip_spec = IndexPolicySpec.model_validate(index_body()["spec"])
    async with curator.pools.connection(curator.params) as c:
        await reconcile_index_policy(curator.ctx(c, "IndexPolicy/default/orders"), ip_spec)
    await curator.monitor()
    curator.wakes.clear()

    # The operator's own DDL wakes nobody; a hand DROP INDEX wakes the IndexPolicy.
    await su(pg, dbname, "DROP INDEX orders_customer_idx")
    out = await curator.monitor()
    assert ("IndexPolicy", "default", "orders") in curator.woken
    drop = next(c for c in out.status["changes"]["last"] if c["command"] == "DROP INDEX")
    assert drop["woke"] == ["IndexPolicy/default/orders"]
    assert any("woke IndexPolicy/default/orders" in e.message for e in curator.events)

    async with curator.pools.connection(curator.params) as c:
        await reconcile_index_policy(curator.ctx(c, "IndexPolicy/default/orders"), ip_spec)  # the repair
    curator.wakes.clear()
    out = await curator.monitor()
    drop = next(c for c in out.status["changes"]["last"] if c["command"] == "DROP INDEX")
    repair = await conn.fetchrow("SELECT resource, step, target FROM pgcurator.history WHERE id = $1",
                                 drop["repairedBy"])
    assert repair["resource"] == "IndexPolicy/default/orders" and repair["target"] == "orders_customer_idx"
    assert curator.woken == []  # the rebuild was pgcurator's own: nobody woken again


async def test_statistics_and_slow_statements(pg: EmbeddedPostgres, dbname: str, curator: Harness,
                                             conn: asyncpg.Connection) -> None:
    await su(pg, dbname, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, kind text, note text)")
    await conn.execute("INSERT INTO events SELECT g, CASE WHEN g % 10 = 0 THEN 'rare' ELSE 'common' END, "
                       "CASE WHEN g % 2 = 0 THEN 'x' END FROM generate_series(1, 20000) g")
    await conn.execute("ANALYZE events")
    out = await curator.monitor()
    stats = out.status["statistics"]
    events = next(t for t in stats["largest"] if t["table"] == "public.events")
    assert events["rows"] > 0 and events["tableBytes"] > 0 and events["indexBytes"] > 0
    assert events["growthBytesPerDay"] is None  # no baseline an hour old yet
    columns = {c["column"]: c for c in stats["columns"] if c["table"] == "public.events"}
    assert columns["note"]["nullFraction"] == pytest.approx(0.5, abs=0.05)
    assert columns["kind"]["distinct"] == 2 and columns["id"]["distinct"] == pytest.approx(20000, rel=0.05)
    assert 0 <= stats["database"]["cacheHitRatio"] <= 1 and stats["database"]["xidAge"] > 0
    assert any(p["reason"] == "NeedsPgReadAllStats" and p["fix"] == f'GRANT pg_read_all_stats TO "{APP_ROLE}"'
               for p in out.status["privileges"])

    for _ in range(30):
        await conn.fetchval("SELECT count(*) FROM events WHERE note IS NULL AND kind = $1", "rare")
    await expire(conn, "statistics_at")
    out = await curator.monitor()
    slow = out.status["slowStatements"]["byTotalTime"]
    mine = [s for s in slow if "FROM events WHERE note IS NULL" in s["query"]]
    assert mine and mine[0]["calls"] == 30, slow
    assert not any("pgcurator" in s["query"] or "pg_catalog." in s["query"] for s in slow), slow


async def test_a_notify_from_the_trigger_wakes_the_listener(pg: EmbeddedPostgres, dbname: str, curator: Harness,
                                                           conn: asyncpg.Connection) -> None:
    await curator.monitor()
    await su(pg, dbname, install_sql())
    woke = asyncio.Event()
    keep_listening(MONITOR, curator.params, woke.set, stale_after=300)
    await asyncio.wait_for(woke.wait(), 30)  # the catch-up wake once connected
    woke.clear()
    await conn.execute("CREATE TABLE ping (id int)")
    await asyncio.wait_for(woke.wait(), 30)

    # The monitor is gone from the runtime (wake answers False): the next notification ends the listener.
    keep_listening(MONITOR, curator.params, lambda: False, stale_after=300)
    await conn.execute("CREATE TABLE ping2 (id int)")
    deadline = asyncio.get_running_loop().time() + 30
    while MONITOR in _LISTENERS:
        assert asyncio.get_running_loop().time() < deadline, "the listener kept running"
        await asyncio.sleep(0.1)


async def test_excluded_schemas_and_dry_run(pg: EmbeddedPostgres, dbname: str, curator: Harness,
                                           conn: asyncpg.Connection) -> None:
    await curator.monitor()
    await su(pg, dbname, install_sql())
    await conn.execute("CREATE SCHEMA audit; CREATE SCHEMA app")
    spec = monitor_spec(schemas={"exclude": ["audit"]})
    await curator.monitor(spec)
    curator.events.clear()
    await conn.execute("CREATE TABLE audit.log (id int); CREATE TABLE app.items (id int)")
    dry = monitor_spec(schemas={"exclude": ["audit"]}, dryRun=True)
    out = await curator.monitor(dry)
    assert cond(out, "Progressing").reason == "DryRun" and curator.events == []  # nothing consumed in dryRun
    out = await curator.monitor(spec)
    objects = {c["object"] for c in out.status["changes"]["last"]}
    assert "app.items" in objects and "audit.log" not in objects
    assert [e for e in curator.events if "audit.log" in e.message] == []
    assert any("app.items" in e.message for e in curator.events)
    await expire(conn)
    out = await curator.monitor(spec)  # the fingerprint does not observe audit either
    assert "audit.log" not in {c["object"] for c in out.status["changes"]["last"]}


@pytest.fixture(scope="module")
def debian_pg(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pgcurator_devenv.debian_postgres import debian_bin_dir

    bin_dir, major = debian_bin_dir()
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg15") / "data", bin_dir=bin_dir, major=major,
                              extra_settings={"shared_preload_libraries": "pg_stat_statements"})
    server.start()
    yield server
    server.stop()


async def test_debian_postgresql_too(debian_pg: EmbeddedPostgres) -> None:
    """The same on Debian's packaged release (15 here): event triggers are superuser only there
    too, and every catalog query of the monitor runs on it."""
    password = secrets.token_urlsafe(12)
    debian_pg.create_role(APP_ROLE, password)
    debian_pg.create_database("shop", owner=APP_ROLE)
    h = Harness(debian_pg, "shop", APP_ROLE, password)
    try:
        c = await asyncpg.connect(debian_pg.dsn("shop", user=APP_ROLE, password=password))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="superuser"):
            await c.execute("CREATE FUNCTION f() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$; "
                            "CREATE EVENT TRIGGER et ON ddl_command_end EXECUTE FUNCTION f()")
        out = await h.monitor()
        assert cond(out, "Ready").status and cond(out, "EventTrigger").reason == "EventTriggerNeedsSuperuser"
        await su(debian_pg, "shop", install_sql() + "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;")
        await c.execute("CREATE TABLE t (id int PRIMARY KEY); CREATE INDEX t_idx ON t (id)")
        await expire(c)
        await expire(c, "statistics_at")
        out = await h.monitor()
        assert cond(out, "EventTrigger").status
        tags = {(ch["command"], ch["mechanism"]) for ch in out.status["changes"]["last"]}
        assert {("CREATE TABLE", "event_trigger"), ("CREATE INDEX", "event_trigger")} <= tags
        assert out.status["statistics"]["database"]["sizeBytes"] > 0 and "slowStatements" in out.status
        await c.close()
    finally:
        await h.pools.close()


async def test_a_detached_partition_and_an_altered_vector_index_wake_their_managers(
        pg: EmbeddedPostgres, dbname: str, curator: Harness, conn: asyncpg.Connection) -> None:
    await su(pg, dbname, "CREATE EXTENSION IF NOT EXISTS vector")
    await conn.execute(
        "CREATE TABLE events (at date NOT NULL, v int) PARTITION BY RANGE (at); "
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); "
        "CREATE TABLE docs (id int PRIMARY KEY, emb vector(3)); "
        "CREATE INDEX docs_emb_hnsw_idx ON docs USING hnsw (emb vector_cosine_ops)")
    curator.runtime = True
    curator.bodies = [
        {"kind": "PartitionPolicy", "metadata": {"namespace": "default", "name": "events"},
         "spec": {"database": DATABASE, "table": {"name": "events"},
                  "range": {"column": "at", "interval": "1 year"}}},
        {"kind": "VectorIndex", "metadata": {"namespace": "default", "name": "docs"},
         "spec": {"database": DATABASE, "table": {"name": "docs"}, "column": "emb", "type": "vector",
                  "dimensions": 3, "metric": "cosine"}},
    ]
    await curator.monitor()
    await su(pg, dbname, install_sql())
    await curator.monitor()
    curator.wakes.clear()
    await su(pg, dbname, "ALTER TABLE events DETACH PARTITION events_2025")
    await curator.monitor()
    assert curator.woken == [("PartitionPolicy", "default", "events")]
    curator.wakes.clear()
    await su(pg, dbname, "ALTER INDEX docs_emb_hnsw_idx SET (ef_construction = 32)")
    await curator.monitor()
    assert curator.woken == [("VectorIndex", "default", "docs")]
    # A change to a partition's own index reaches the partitioned table's manager through the
    # fingerprint's parent links (the partition is attached again first).
    await su(pg, dbname, "ALTER TABLE events ATTACH PARTITION events_2025 FOR VALUES FROM ('2025-01-01') TO "
                         "('2026-01-01'); CREATE INDEX events_2025_v ON events_2025 (v)")
    await expire(conn)
    await curator.monitor()  # the fingerprint learns events_2025's parent
    curator.wakes.clear()
    await su(pg, dbname, "DROP INDEX events_2025_v")
    await curator.monitor()
    assert curator.woken == [("PartitionPolicy", "default", "events")]


async def test_hidden_column_statistics_are_reported_until_the_next_column_run(
        pg: EmbeddedPostgres, dbname: str, curator: Harness, conn: asyncpg.Connection) -> None:
    await su(pg, dbname, "CREATE TABLE payroll (id int, salary int); INSERT INTO payroll SELECT g, g "
                         "FROM generate_series(1, 5000) g; ANALYZE payroll")
    out = await curator.monitor()
    hidden = [p for p in out.status["privileges"] if p["reason"] == "ColumnStatisticsHidden"]
    assert hidden and "public.payroll" in hidden[0]["message"]
    assert hidden[0]["fix"].startswith(f'GRANT pg_read_all_data TO "{APP_ROLE}"')
    await expire(conn, "statistics_at")  # statistics due again, column statistics (6h) not
    out = await curator.monitor()
    assert "columns" not in out.status["statistics"]
    assert [p for p in out.status["privileges"] if p["reason"] == "ColumnStatisticsHidden"] == hidden
