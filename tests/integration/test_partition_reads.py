"""One observation per run (issue 14): a PartitionPolicy run that applies steps observes the table
once, plans once, and reads back only the partitions and the DEFAULT partition's rows; the status
it writes is the one a fresh observation gives. coveredUntil stops at a hole."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

import pgcurator.catalog.conversion as conversion_catalog
import pgcurator.reconcile.partition as reconcile_module
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.outcome import Outcome
from pgcurator.reconcile.partition import reconcile_partition_policy

from ..live_table import make_plain_table
from .counting import Counting
from .scenarios import EVENT_LOGS

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
R = "PartitionPolicy/default/reads"
PARTITION_LIST = "i.inhdetachpending"  # catalog.partitions._PARTITIONS_SQL: the partitions, two levels
DB: dict[str, Any] = {"database": {"secretName": "db"}}
EVENTS = {**DB, "table": {"name": "event_logs"}}
DAILY = {**EVENTS, "range": {"column": "server_timestamp", "interval": "1 day", "premake": 3}}

# Each shape: the SQL that sets the table up (with whatever an earlier run would have left), and
# the spec of the run that applies steps.
SHAPES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "range daily, premake, template drift": ([
        EVENT_LOGS,
        "CREATE TABLE event_logs_p2026_11_22 PARTITION OF event_logs "
        "FOR VALUES FROM ('2026-11-22 00:00+00') TO ('2026-11-23 00:00+00')",
    ], {**DAILY, "template": {"storageParameters": {"fillfactor": "90"}}}),
    "range, DEFAULT rows moved": ([
        EVENT_LOGS,
        "CREATE TABLE event_logs_default PARTITION OF event_logs DEFAULT",
        "INSERT INTO event_logs (player_id, event_type, server_timestamp) SELECT g, 'e', "
        "timestamptz '2026-11-22' + (g % 5) * interval '1 day' FROM generate_series(1, 500) g",
        "INSERT INTO event_logs (player_id, event_type, server_timestamp) VALUES (1, 'old', '2019-01-01')",
    ], {**DAILY, "defaultPartition": True, "defaultRows": {"move": True, "batchRows": 100}}),
    "range, retention drops": ([
        EVENT_LOGS,
        *(f"CREATE TABLE event_logs_p2026_11_{d:02d} PARTITION OF event_logs "
          f"FOR VALUES FROM ('2026-11-{d:02d} 00:00+00') TO ('2026-11-{d + 1:02d} 00:00+00')" for d in range(15, 23)),
    ], {**DAILY, "retention": {"keep": 2, "action": "drop"}}),
    "range, subpartitions": ([
        "CREATE TABLE readings (sensor_id bigint NOT NULL, taken_at timestamptz NOT NULL) PARTITION BY RANGE (taken_at)",
    ], {**DB, "table": {"name": "readings"}, "range": {"column": "taken_at", "interval": "1 month", "premake": 1},
        "subpartition": {"strategy": "hash", "hash": {"column": "sensor_id", "modulus": 3}}}),
    "list": ([
        "CREATE TABLE bodies (id bigint, kind text NOT NULL, save_id bigint NOT NULL) PARTITION BY LIST (kind)",
    ], {**DB, "table": {"name": "bodies"}, "strategy": "list", "list": {"column": "kind", "partitions": [
        {"name": "stars", "values": ["star"]}, {"name": "small", "values": ["asteroid", "comet"]}]},
        "subpartition": {"strategy": "hash", "hash": {"column": "save_id", "modulus": 2}, "only": ["stars"]}}),
    "hash": ([
        "CREATE TABLE sessions (id bigint, user_id bigint NOT NULL) PARTITION BY HASH (user_id)",
    ], {**DB, "table": {"name": "sessions"}, "strategy": "hash", "hash": {"column": "user_id", "modulus": 4}}),
    "range, creation blocked (a hole)": ([
        EVENT_LOGS,
        "CREATE TABLE event_logs_p2026_11_24 (LIKE event_logs)",  # someone's table: not created, not adopted
    ], DAILY),
}

# What a run changes of the status. Row estimates and sizes are left out: they are the catalog's
# statistics at the moment of reading, which autovacuum may change between two reads.
COMPARED = ("partitionCount", "coveredUntil", "oldestBound", "newestBound", "partitionsAhead", "defaultRows",
            "defaultRowsRange", "templateDrift", "unmanagedPartitions", "partitionsTruncated")


def shown(status: dict[str, Any]) -> dict[str, Any]:
    out = {k: status.get(k) for k in COMPARED}
    out["partitions"] = [{k: v for k, v in p.items() if k not in ("estimatedRows", "sizeBytes")}
                         for p in status.get("partitions", [])]
    return out


class Counted:
    """Calls of one function, made through a wrapper that counts them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.calls = 0
        real = getattr(module, name)

        def wrapper(*args: Any, **kw: Any) -> Any:
            self.calls += 1
            return real(*args, **kw)

        monkeypatch.setattr(module, name, wrapper)


async def setup(conn: asyncpg.Connection, shape: str) -> PartitionPolicySpec:
    sqls, body = SHAPES[shape]
    for sql in sqls:
        await conn.execute(sql)
    return PartitionPolicySpec.model_validate(body)


def applied(out: Outcome) -> int:
    return int(out.status["lastRun"]["applied"])


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_run_that_applies_observes_and_plans_once(conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
                                                          shape: str) -> None:
    spec = await setup(conn, shape)
    observed = Counted(monkeypatch, reconcile_module, "observe_table")
    planned = Counted(monkeypatch, reconcile_module, "plan_policy")
    counting = Counting(conn)
    out = await reconcile_partition_policy(counting, spec, resource=R, now=NOW)  # type: ignore[arg-type]
    assert applied(out) > 0, out.conditions
    assert (observed.calls, planned.calls) == (1, 1)
    # The partitions are listed twice: by the observation, and read back after the run.
    assert counting.count(PARTITION_LIST) == 2


def what_the_shape_is_for(shape: str, status: dict[str, Any]) -> None:
    """Each shape shows what it is there for, so the comparison covers it."""
    by_name = {p["name"]: p for p in status["partitions"]}
    if shape == "range daily, premake, template drift":
        assert status["templateDrift"] == ["event_logs_p2026_11_22: lacks fillfactor=90"]
        assert status["partitionsAhead"] == 3
    elif shape == "range, DEFAULT rows moved":
        # 100 rows a day for five days: four days moved, the fifth and the 2019 row stay.
        assert sum(status["defaultRowsMoved"].values()) == 400 and status["defaultRows"] == 101
        assert status["defaultRowsRange"]["min"].startswith("2019-01-01")
    elif shape == "range, retention drops":
        assert status["oldestBound"] == "2026-11-20T00:00:00+00:00"
    elif shape == "range, subpartitions":
        assert status["partitionCount"] == 6 and by_name["readings_p2026_11"]["subpartitions"] == 3
    elif shape == "list":
        assert by_name["bodies_stars"]["subpartitions"] == ["bodies_stars_0", "bodies_stars_1"]
    elif shape == "hash":
        assert status["partitionCount"] == 4
    else:
        assert status["coveredUntil"] == "2026-11-24T00:00:00+00:00"


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_the_status_after_a_run_is_what_a_fresh_observation_shows(conn: asyncpg.Connection,
                                                                       shape: str) -> None:
    spec = await setup(conn, shape)
    out = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert applied(out) > 0, out.conditions
    what_the_shape_is_for(shape, out.status)
    dry = spec.model_copy(update={"dry_run": True})
    fresh = await reconcile_partition_policy(conn, dry, resource=R, now=NOW)
    assert shown(out.status) == shown(fresh.status)


async def test_the_status_stops_coverage_at_a_hole(conn: asyncpg.Connection) -> None:
    # The partition for the 24th cannot be created (a table of that name is someone else's): the
    # window is covered until then, not until its end.
    out = await reconcile_partition_policy(conn, await setup(conn, "range, creation blocked (a hole)"), resource=R,
                                           now=NOW)
    assert out.conditions[0].reason == "NameConflict" and not out.conditions[0].status
    assert out.status["newestBound"] == "2026-11-26T00:00:00+00:00"
    assert out.status["coveredUntil"] == "2026-11-24T00:00:00+00:00"


async def test_a_run_that_changes_nothing_reads_nothing_back(conn: asyncpg.Connection, db_url: str) -> None:
    spec = await setup(conn, "range daily, premake, template drift")
    spec = spec.model_copy(update={"timeouts": spec.timeouts.model_copy(update={"lock_timeout": "100ms",
                                                                               "lock_retries": 0})})
    counting = Counting(conn)
    # Another session holds the parent in a mode no ATTACH gets past (and the observation does not
    # need): every step waits out its lockTimeout, rolls back, and nothing changes.
    other = await asyncpg.connect(db_url)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("LOCK TABLE ONLY event_logs IN SHARE MODE")
        out = await reconcile_partition_policy(counting, spec, resource=R, now=NOW)  # type: ignore[arg-type]
        await tx.rollback()
    finally:
        await other.close()
    assert out.conditions[0].reason == "WaitingForLock", out.conditions
    assert out.status["lastRun"]["waitingForLock"] == 3 and applied(out) == 0
    assert counting.count(PARTITION_LIST) == 1
    # An up-to-date run reads nothing back either.
    await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    counting.sent.clear()
    again = await reconcile_partition_policy(counting, spec, resource=R, now=NOW)  # type: ignore[arg-type]
    assert again.conditions[0].reason == "UpToDate" and counting.count(PARTITION_LIST) == 1


async def test_a_conversion_run_reads_its_facts_once(conn: asyncpg.Connection,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    await make_plain_table(conn, 100)
    facts = Counted(monkeypatch, conversion_catalog, "observe_conversion")
    spec = PartitionPolicySpec.model_validate({
        **DB, "table": {"name": "events"}, "range": {"column": "created_at", "interval": "1 month", "premake": 1},
        "convert": {"enabled": True}, "dryRun": True})
    out = await reconcile_partition_policy(conn, spec, resource=R, now=NOW)
    assert out.conditions[0].reason == "DryRun" and out.status["plan"]
    assert facts.calls == 1
