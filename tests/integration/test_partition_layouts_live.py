"""Seed 001's two tables built and maintained on a real server; DEFAULT rows moved; archive to a
second tablespace; template storage parameters and indexes."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.partition import reconcile_partition_policy
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from .scenarios import EVENT_LOGS

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
R = "PartitionPolicy/default/x"

CELESTIAL_SQL = """
CREATE TABLE celestial_bodies (
    id bigint GENERATED ALWAYS AS IDENTITY,
    save_id bigint NOT NULL,
    body_type text NOT NULL,
    name text,
    PRIMARY KEY (id, body_type, save_id)
) PARTITION BY LIST (body_type);
"""

CELESTIAL: dict[str, Any] = {
    "database": {"secretName": "db"},
    "table": {"name": "celestial_bodies"},
    "strategy": "list",
    "list": {"column": "body_type", "partitions": [
        {"name": "stars", "values": ["star"]},
        {"name": "planets", "values": ["planet"]},
        {"name": "moons", "values": ["moon"]},
        {"name": "small", "values": ["asteroid", "comet", "dust_cloud"]},
        {"name": "special", "values": ["black_hole"]},
    ]},
    "subpartition": {"strategy": "hash", "hash": {"column": "save_id", "modulus": 4}, "only": ["planets"]},
}


def ok(out: Any) -> bool:
    return any(c.type == "Ready" and c.status for c in out.conditions)


async def tree(conn: asyncpg.Connection, root: str) -> dict[str, str]:
    rows = await conn.fetch("SELECT relid::regclass::text, parentrelid::regclass::text FROM pg_partition_tree($1) "
                            "WHERE parentrelid IS NOT NULL", root)
    return {r[0]: r[1] for r in rows}


async def test_seed_001_celestial_bodies_built_exactly_and_repaired(conn: asyncpg.Connection) -> None:
    await conn.execute(CELESTIAL_SQL)
    spec = PartitionPolicySpec.model_validate(CELESTIAL)
    assert ok(await reconcile_partition_policy(conn, spec, resource=R, now=NOW))
    t = await tree(conn, "celestial_bodies")
    assert {k for k, v in t.items() if v == "celestial_bodies"} == {
        "celestial_bodies_stars", "celestial_bodies_planets", "celestial_bodies_moons", "celestial_bodies_small",
        "celestial_bodies_special"}
    assert sorted(k for k, v in t.items() if v == "celestial_bodies_planets") == [
        f"celestial_bodies_planets_{r}" for r in range(4)]
    await conn.execute("INSERT INTO celestial_bodies (save_id, body_type) SELECT g, 'planet' FROM generate_series(1, 400) g")
    await conn.execute("INSERT INTO celestial_bodies (save_id, body_type) VALUES (1, 'comet'), (2, 'black_hole')")
    counts = await conn.fetch("SELECT tableoid::regclass::text, count(*) FROM celestial_bodies GROUP BY 1")
    assert sum(c for n, c in counts if n.startswith("celestial_bodies_planets_")) == 400
    assert len([n for n, _ in counts if n.startswith("celestial_bodies_planets_")]) == 4
    # A hash child dropped by hand is recreated, and the next run has nothing to do.
    await conn.execute("ALTER TABLE celestial_bodies_planets DETACH PARTITION celestial_bodies_planets_3")
    await conn.execute("DROP TABLE celestial_bodies_planets_3")
    out = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert ok(out) and [c["target"] for c in out.status["lastRun"]["changes"]] == ["celestial_bodies_planets_3"]
    again = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert again.conditions[0].reason == "UpToDate"


async def test_seed_001_event_logs_with_template(conn: asyncpg.Connection) -> None:
    await conn.execute(EVENT_LOGS)
    spec = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
        "retention": {"keep": 12, "action": "drop"},
        "template": {"storageParameters": {"autovacuum_vacuum_scale_factor": "0.01",
                                           "autovacuum_analyze_scale_factor": "0.005"},
                     "indexes": [{"name": "recent_logins", "columns": ["player_id"],
                                  "where": "event_type = 'login'"}]}})
    out = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert ok(out), out.conditions
    opts = await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'event_logs_p2026_12'")
    assert set(opts) == {"autovacuum_vacuum_scale_factor=0.01", "autovacuum_analyze_scale_factor=0.005"}
    idx = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'event_logs_p2026_12_recent_logins'")
    assert idx.endswith("WHERE (event_type = 'login'::text)")
    # A partition made by hand without the template is reported as drift, not changed.
    await conn.execute("CREATE TABLE event_logs_p2027_03 PARTITION OF event_logs "
                       "FOR VALUES FROM ('2027-03-01 00:00+00') TO ('2027-04-01 00:00+00')")
    out = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert any(d.startswith("event_logs_p2027_03: lacks") for d in out.status["templateDrift"])
    assert out.status["statistics"]["totalRows"] == 0 and "totalBytes" in out.status["statistics"]


async def test_default_rows_reported_then_moved_without_loss(conn: asyncpg.Connection) -> None:
    await conn.execute(EVENT_LOGS)
    base: dict[str, Any] = {"database": {"secretName": "db"}, "table": {"name": "event_logs"},
                            "range": {"column": "server_timestamp", "interval": "1 month", "premake": 0},
                            "defaultPartition": True}
    assert ok(await reconcile_partition_policy(conn, PartitionPolicySpec.model_validate(base), resource=R, now=NOW))
    # 25,000 rows for December and January land in the DEFAULT partition, plus 10 far outside any range.
    await conn.execute("INSERT INTO event_logs (player_id, event_type, server_timestamp) SELECT g, 'e', "
                       "timestamptz '2026-12-01' + (g % 60) * interval '1 day' FROM generate_series(1, 25000) g")
    await conn.execute("INSERT INTO event_logs (player_id, event_type, server_timestamp) SELECT g, 'old', "
                       "timestamptz '2019-01-01' FROM generate_series(1, 10) g")
    before = await conn.fetchrow("SELECT count(*), sum(id), sum(player_id) FROM event_logs")
    ahead = {**base, "range": {**base["range"], "premake": 2}}
    out = await reconcile_partition_policy(conn, PartitionPolicySpec.model_validate(ahead), resource=R, now=NOW)
    degraded = next(c for c in out.conditions if c.type == "Degraded")
    assert degraded.status and degraded.reason == "DefaultRowsConflict"
    assert "rows in event_logs_default fall in ['2026-12-01" in degraded.message
    assert out.status["defaultRows"] == 25010 and out.status["defaultRowsRange"]["min"].startswith("2019-01-01")
    moving = {**ahead, "defaultRows": {"move": True, "batchRows": 4000}}
    out = await reconcile_partition_policy(conn, PartitionPolicySpec.model_validate(moving), resource=R, now=NOW)
    assert ok(out), out.conditions
    after = await conn.fetchrow("SELECT count(*), sum(id), sum(player_id) FROM event_logs")
    assert tuple(after) == tuple(before)
    assert await conn.fetchval("SELECT count(*) FROM event_logs_default") == 10
    moved = out.status["defaultRowsMoved"]
    assert set(moved) == {"event_logs_p2026_12", "event_logs_p2027_01"} and sum(moved.values()) == 25000
    batches = await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'move_default_rows'")
    assert batches >= 25000 // 4000


async def test_archive_to_second_tablespace(conn: asyncpg.Connection, pg: EmbeddedPostgres) -> None:
    # Outside pytest's private tmp tree: the server runs as its own user and must reach it.
    location = Path(tempfile.mkdtemp(prefix="pgcurator-ts-"))
    os.chmod(location, 0o700)
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("pgcurator-pg")
        os.chown(location, pw.pw_uid, pw.pw_gid)
    ts = "cold_" + os.urandom(3).hex()
    pg.psql(f"CREATE TABLESPACE {ts} LOCATION '{location}'; GRANT CREATE ON TABLESPACE {ts} TO {APP_ROLE};")
    await conn.execute(EVENT_LOGS)
    spec_now = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 1}})
    await reconcile_partition_policy(conn, spec_now, resource=R, now=datetime(2026, 1, 10, tzinfo=UTC))
    await conn.execute("INSERT INTO event_logs (player_id, event_type, server_timestamp) "
                       "SELECT g, 'x', '2026-01-15' FROM generate_series(1, 100) g")
    spec = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 1},
        "retention": {"keep": 3, "action": "archive", "archive": {"schema": "archive", "tablespace": ts}}})
    out = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert ok(out), out.conditions
    row = await conn.fetchrow("SELECT n.nspname::text, t.spcname::text FROM pg_class c JOIN pg_namespace n ON "
                              "n.oid = c.relnamespace LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace "
                              "WHERE c.relname = 'event_logs_p2026_01'")
    assert tuple(row) == ("archive", ts)
    assert await conn.fetchval("SELECT count(*) FROM archive.event_logs_p2026_01") == 100
    assert "event_logs_p2026_01" not in {r[0] for r in await conn.fetch(
        "SELECT relid::regclass::text FROM pg_partition_tree('event_logs')")}
    bad = PartitionPolicySpec.model_validate({**spec.model_dump(by_alias=True), "retention": {
        "keep": 3, "action": "archive", "archive": {"schema": "archive", "tablespace": "no_such_ts"}}})
    with pytest.raises(Exception, match="archive tablespace 'no_such_ts' does not exist"):
        await reconcile_partition_policy(conn, bad, resource=R, now=NOW)
