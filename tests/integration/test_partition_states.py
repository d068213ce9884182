"""PartitionPolicy in states real databases are in: a DEFAULT partition under another name, a
time zone or interval changed on a maintained table, a second reconcile of a table already in
shape, writers racing a DEFAULT-row move or a deletion. Against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.partition import reconcile_partition_policy

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
