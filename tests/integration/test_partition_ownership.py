"""One manager per table: two PartitionPolicies declaring one table. The first claims it; the
second is Degraded/ConflictingManager naming the first and runs nothing — no DDL, no conversion
step, no metadata row — until the first is deleted. Every run goes through the operator's own
path (Worker surroundings -> Engine -> the PartitionPolicy handler) with a fake only at the
Kubernetes client, which says which resources exist."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator.db.pools import PoolRegistry
from pgcurator.kinds import PARTITION_POLICY
from pgcurator.kube import FINALIZER
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.conversion_machine import Phase
from pgcurator.reconcile import partition_convert
from pgcurator.reconcile.outcome import Outcome
from pgcurator.runtime import Runtime, Worker

from ..live_table import make_plain_table
from .scenarios import EVENT_LOGS

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
NS = "default"
SECRET = "app-db"
PLURAL = "partitionpolicies"
A, B = "PartitionPolicy/default/a", "PartitionPolicy/default/b"
# Monthly partitions January..October 2026, one row each: a 12-month retention keeps them all, a
# 1-month one would drop January..September.
SEEDED = [f"event_logs_p2026_{m:02d}" for m in range(1, 11)]


class FakeKube:
    """The Kubernetes-client edge: the Secret, the resources that exist, statuses and events."""

    def __init__(self, url: str) -> None:
        self.secret = {"uri": base64.b64encode(url.encode()).decode()}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return dict(self.secret) if name == SECRET else None

    async def get_object(self, group: str, version: str, plural: str, name: str,
                         namespace: str | None = None) -> dict[str, Any] | None:
        return self.objects.get((plural, namespace or "", name))

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        return None

    async def set_finalizer(self, plural: str, body: dict[str, Any], present: bool) -> None:
        return None

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], type_, reason, message))


class Cluster:
    def __init__(self, url: str) -> None:
        self.kube = FakeKube(url)
        self.runtime = Runtime(self.kube, [PARTITION_POLICY], pools=PoolRegistry(max_size=4))  # type: ignore[arg-type]

    def _body(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        delete = spec.get("deletionPolicy") == "Delete"
        return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy",
                "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1,
                             "resourceVersion": "1", "finalizers": [FINALIZER] if delete else []},
                "spec": {"database": {"secretName": SECRET}, **spec}}

    async def run(self, name: str, spec: dict[str, Any]) -> Outcome:
        """One reconcile as the operator runs it (the resource exists from now on), at NOW."""
        body = self._body(name, spec)
        self.kube.objects[(PLURAL, NS, name)] = body
        worker = Worker(self.runtime, PARTITION_POLICY, body)
        env = dataclasses.replace(worker.surroundings(body), now=NOW)
        model = PartitionPolicySpec.model_validate(body["spec"])
        return await self.runtime.engine.reconcile(PARTITION_POLICY, model, env, worker.backoff)

    async def delete(self, name: str, spec: dict[str, Any]) -> None:
        """The resource is deleted: its finalizer runs (deletionPolicy Delete), then it is gone."""
        body = self._body(name, spec)
        body["metadata"]["deletionTimestamp"] = "2026-11-22T10:00:00Z"
        assert await Worker(self.runtime, PARTITION_POLICY, body)._finalize(body)
        self.kube.objects.pop((PLURAL, NS, name), None)

    async def close(self) -> None:
        await self.runtime.pools.close()


@pytest.fixture
async def cluster(db_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(db_url)
    yield c
    await c.close()


def policy(keep: int, premake: int = 2, **extra: Any) -> dict[str, Any]:
    return {"table": {"name": "event_logs"}, "range": {"column": "server_timestamp", "interval": "1 month",
                                                       "premake": premake},
            "retention": {"keep": keep, "action": "drop"}, "timeouts": {"lockTimeout": "2s"}, **extra}


async def seed(conn: asyncpg.Connection) -> None:
    await conn.execute(EVENT_LOGS)
    for m in range(1, 11):
        hi = f"2026-{m + 1:02d}-01" if m < 12 else "2027-01-01"
        await conn.execute(f"CREATE TABLE event_logs_p2026_{m:02d} PARTITION OF event_logs "
                           f"FOR VALUES FROM ('2026-{m:02d}-01 00:00+00') TO ('{hi} 00:00+00')")
        await conn.execute("INSERT INTO event_logs (player_id, event_type, server_timestamp) VALUES (1, 'x', $1)",
                           datetime(2026, m, 15, tzinfo=UTC))


async def partitions(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT c.relname::text, c.oid::int FROM pg_catalog.pg_inherits i "
                            "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
                            "WHERE i.inhparent = 'event_logs'::regclass ORDER BY 1")
    return {r[0]: r[1] for r in rows}


async def recorded(conn: asyncpg.Connection, resource: str) -> dict[str, int]:
    """Metadata rows a resource wrote: history, statistics, claims."""
    out = {}
    for table in ("history", "partition_stats", "owners"):
        out[table] = await conn.fetchval(f"SELECT count(*) FROM pgcurator.{table} WHERE resource = $1", resource)
    return out


async def manager(conn: asyncpg.Connection, table: str = "event_logs") -> str | None:
    got: str | None = await conn.fetchval(
        "SELECT resource FROM pgcurator.owners WHERE object_kind = 'table' AND schema_name = 'public' "
        "AND object_name = $1", table)
    return got


def reason(out: Outcome) -> str:
    return out.conditions[0].reason


def degraded(out: Outcome) -> bool:
    return any(c.type == "Degraded" and c.status for c in out.conditions)


def assert_conflict(out: Outcome, holder: str, claimant: str) -> None:
    assert reason(out) == "ConflictingManager" and degraded(out), out.conditions
    msg = out.conditions[0].message
    assert holder in msg and claimant in msg and "public.event_logs" in msg, msg
    assert out.status.get("plan") == []


async def test_a_second_policy_on_a_table_is_refused_and_drops_nothing(
        cluster: Cluster, conn: asyncpg.Connection) -> None:
    await seed(conn)
    first = await cluster.run("a", policy(keep=12))
    assert reason(first) == "Applied", first.conditions
    kept = await partitions(conn)
    assert set(SEEDED) < set(kept)

    # B would keep one month and premake six: it drops nothing and creates nothing of its own.
    second = await cluster.run("b", policy(keep=1, premake=6))
    assert await partitions(conn) == kept
    assert await conn.fetchval("SELECT count(*) FROM event_logs") == len(SEEDED)
    assert await recorded(conn, B) == {"history": 0, "partition_stats": 0, "owners": 0}
    assert_conflict(second, A, B)
    assert await manager(conn) == A
    assert [(e.type, e.reason) for e in second.events] == [("Warning", "ConflictingManager")]
    # Again: still refused, and the first manager is not disturbed by it.
    assert reason(await cluster.run("b", policy(keep=1, premake=6))) == "ConflictingManager"
    assert reason(await cluster.run("a", policy(keep=12))) == "UpToDate"
    assert await partitions(conn) == kept and await manager(conn) == A


async def test_a_dry_run_or_suspended_claimant_only_checks(cluster: Cluster, conn: asyncpg.Connection) -> None:
    await seed(conn)
    # A dry run claims nothing: a policy that then acts takes the table.
    dry_a = await cluster.run("a", policy(keep=12, dryRun=True))
    assert reason(dry_a) == "DryRun", dry_a.conditions
    assert await manager(conn) is None
    assert reason(await cluster.run("b", policy(keep=12))) == "Applied"
    assert await manager(conn) == B
    kept = await partitions(conn)
    history = await conn.fetchval("SELECT count(*) FROM pgcurator.history")
    for extra in ({"dryRun": True}, {"suspend": True}):
        out = await cluster.run("a", policy(keep=1, premake=6, **extra))
        assert_conflict(out, B, A)
        assert await recorded(conn, A) == {"history": 0, "partition_stats": 0, "owners": 0}
    assert await partitions(conn) == kept
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history") == history


async def test_deleting_the_manager_hands_the_table_over(cluster: Cluster, conn: asyncpg.Connection) -> None:
    await seed(conn)
    assert reason(await cluster.run("a", policy(keep=12))) == "Applied"
    assert reason(await cluster.run("b", policy(keep=1))) == "ConflictingManager"
    # A deleted (deletionPolicy Retain) and created again under the same name: still the manager.
    await cluster.delete("a", policy(keep=12))
    assert reason(await cluster.run("a", policy(keep=12))) == "UpToDate"
    assert reason(await cluster.run("b", policy(keep=1))) == "ConflictingManager"
    premade_by_a = set(await partitions(conn)) - set(SEEDED)

    # A deleted for good (Retain: its claim stays behind): B takes the table over on its next run
    # and applies its own retention.
    await cluster.delete("a", policy(keep=12))
    taken = await cluster.run("b", policy(keep=1))
    assert reason(taken) == "Applied", taken.conditions
    assert await manager(conn) == B
    left = await partitions(conn)
    assert set(left) == {"event_logs_p2026_10"} | premade_by_a

    # A comes back under its old name: now it is the second claimant. Deleted with
    # deletionPolicy Delete, it drops nothing of B's table — not even the empty partitions it once
    # premade itself — and leaves B's claim alone.
    back = await cluster.run("a", policy(keep=12, deletionPolicy="Delete"))
    assert_conflict(back, B, A)
    await cluster.delete("a", policy(keep=12, deletionPolicy="Delete"))
    assert await partitions(conn) == left
    assert await manager(conn) == B
    assert ("a", "Normal", "ManagedElsewhere") in {e[:3] for e in cluster.kube.events}

    # B deleted with deletionPolicy Delete: its empty partitions go, its claim is released, and a
    # new policy on the table is its manager at once.
    await cluster.run("b", policy(keep=1, premake=3, deletionPolicy="Delete"))
    created_by_b = set(await partitions(conn)) - set(left)
    assert created_by_b
    await cluster.delete("b", policy(keep=1, premake=3, deletionPolicy="Delete"))
    assert not created_by_b & set(await partitions(conn))
    assert await manager(conn) is None
    assert reason(await cluster.run("c", policy(keep=12, premake=3))) == "Applied"
    assert await manager(conn) == "PartitionPolicy/default/c"


CONVERT: dict[str, Any] = {
    "table": {"name": "events"}, "range": {"column": "created_at", "interval": "1 month", "premake": 2},
    "convert": {"enabled": True, "batchMemory": "1Mi"}, "timeouts": {"lockTimeout": "2s"},
}
# The same table, declared without convert (it would cancel a conversion in flight) and with
# another grid.
PLAIN_SECOND: dict[str, Any] = {
    "table": {"name": "events"}, "range": {"column": "created_at", "interval": "1 week", "premake": 4},
    "retention": {"keep": 2, "action": "drop"}, "timeouts": {"lockTimeout": "2s"},
}


async def conversion_phase(conn: asyncpg.Connection) -> str | None:
    phase: str | None = await conn.fetchval("SELECT phase FROM pgcurator.conversions WHERE table_name = 'events'")
    return phase


async def test_a_second_policy_leaves_a_conversion_in_flight_alone(
        cluster: Cluster, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_plain_table(conn, 5000)
    before = await conn.fetchrow("SELECT count(*), sum(hashtextextended(t::text, 0)) FROM events t")
    # A slice that ends at once: A's run prepares the conversion and stops before copying a batch.
    monkeypatch.setattr(partition_convert, "SLICE_SECONDS", 0.0)
    out = await cluster.run("a", CONVERT)
    assert reason(out) == "Converting", out.conditions
    assert await conversion_phase(conn) == Phase.COPYING.value
    shadow = await conn.fetchval("SELECT to_regclass('events__pgcurator_new')::oid::int")
    assert shadow is not None

    # B would cancel A's conversion (it declares no convert) and lay its own grid: refused instead.
    for spec in (PLAIN_SECOND, {**CONVERT, "convert": {"enabled": True, "batchMemory": "8Mi"}}):
        second = await cluster.run("b", spec)
        assert await conversion_phase(conn) == Phase.COPYING.value, second.conditions
        assert await conn.fetchval("SELECT to_regclass('events__pgcurator_new')::oid::int") == shadow
        assert await recorded(conn, B) == {"history": 0, "partition_stats": 0, "owners": 0}
        assert reason(second) == "ConflictingManager", second.conditions
        assert A in second.conditions[0].message

    # A finishes; the swap renames the original to events_unpartitioned and the copy to events:
    # the claim stays on the declared name, which is now the partitioned table.
    monkeypatch.undo()
    for _ in range(10):
        out = await cluster.run("a", CONVERT)
        if reason(out) in ("Applied", "UpToDate"):
            break
        assert reason(out) in ("Converting", "Converted"), out.conditions
    assert reason(out) in ("Applied", "UpToDate"), out.conditions
    assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'events'::regclass") == "p"
    assert await conn.fetchrow("SELECT count(*), sum(hashtextextended(t::text, 0)) FROM events t") == before
    assert await manager(conn, "events") == A
    assert await manager(conn, "events_unpartitioned") is None
    parts = await conn.fetchval("SELECT count(*) FROM pg_catalog.pg_inherits WHERE inhparent = 'events'::regclass")
    second = await cluster.run("b", PLAIN_SECOND)
    assert reason(second) == "ConflictingManager", second.conditions
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_catalog.pg_inherits WHERE inhparent = 'events'::regclass") == parts
    assert await recorded(conn, B) == {"history": 0, "partition_stats": 0, "owners": 0}


def resource_yaml(name: str, keep: int, premake: int) -> str:
    return (f"apiVersion: pgcurator.io/v1alpha1\nkind: PartitionPolicy\nmetadata: {{name: {name}}}\n"
            "spec:\n  database: {secretName: app-db}\n  table: {name: event_logs}\n"
            f"  range: {{column: server_timestamp, interval: 1 month, premake: {premake}}}\n"
            f"  retention: {{keep: {keep}, action: drop}}\n")


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "pgcurator.cli", *args],
                                   capture_output=True, text=True, timeout=300)


async def test_plan_and_apply_report_the_conflict(
        cluster: Cluster, conn: asyncpg.Connection, db_url: str, tmp_path: Path) -> None:
    await seed(conn)
    assert reason(await cluster.run("a", policy(keep=12))) == "Applied"
    kept = await partitions(conn)
    f = tmp_path / "b.yaml"
    f.write_text(resource_yaml("b", keep=1, premake=6))
    now = NOW.isoformat()
    plan = await cli("plan", "-f", str(f), "--database-url", db_url, "--now", now)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert ": 0 statements" in plan.stdout and f"-- ConflictingManager: table public.event_logs is managed by {A}" \
        in plan.stdout, plan.stdout
    applied = await cli("apply", "-f", str(f), "--database-url", db_url, "--now", now)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert f"{B}: Ready=False ConflictingManager" in applied.stdout and A in applied.stdout, applied.stdout
    assert await partitions(conn) == kept
    assert await recorded(conn, B) == {"history": 0, "partition_stats": 0, "owners": 0}
    # The operator's own resource of that name is the manager: `apply` of it runs as usual.
    f.write_text(resource_yaml("a", keep=12, premake=2))
    same = await cli("apply", "-f", str(f), "--database-url", db_url, "--now", now)
    assert same.returncode == 0 and f"{A}: Ready=True UpToDate" in same.stdout, same.stdout + same.stderr
