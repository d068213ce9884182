"""PartitionPolicy through the real API server and the operator process."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator.devenv.controlplane import ControlPlane
from pgcurator.devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from ..integration.scenarios import EVENT_LOGS
from .conftest import apply, condition, put_secret, wait_for

pytestmark = pytest.mark.e2e


def policy(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
        "schedule": {"interval": "2s"},
    }
    body.update(spec)
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy", "metadata": {"name": name},
            "spec": body}


def ready(obj: dict[str, Any]) -> bool:
    c = condition(obj, "Ready")
    return c.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def degraded_with(reason: str) -> Any:
    return lambda obj: condition(obj, "Degraded").get("status") == "True" and condition(obj, "Degraded")["reason"] == reason


@pytest.fixture
def database(pg: EmbeddedPostgres, app_password: str) -> tuple[str, str]:
    name = "e2e_" + secrets.token_hex(4)
    pg.create_database(name, owner=APP_ROLE)
    url = pg.dsn(name, user=APP_ROLE, password=app_password)

    async def setup() -> None:
        c = await asyncpg.connect(url)
        await c.execute(EVENT_LOGS)
        await c.close()

    asyncio.run(setup())
    return name, url


def partitions(url: str) -> list[str]:
    async def q() -> list[str]:
        c = await asyncpg.connect(url)
        try:
            rows = await c.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                 "WHERE i.inhparent = 'event_logs'::regclass ORDER BY 1")
            return [r[0] for r in rows]
        finally:
            await c.close()

    return asyncio.run(q())


def sql(url: str, statement: str) -> None:
    async def run() -> None:
        c = await asyncpg.connect(url)
        await c.execute(statement)
        await c.close()

    asyncio.run(run())


def test_apply_premake_drift_and_retain_on_delete(
    cluster: ControlPlane, namespace: str, database: tuple[str, str], operator_log: Path
) -> None:
    _, url = database
    put_secret(cluster, namespace, "app-db", url)
    apply(cluster, namespace, policy("event-logs"))
    obj = wait_for(cluster, namespace, "event-logs", ready, what="Ready", operator_log=operator_log)
    status = obj["status"]
    assert status["partitionCount"] == 4 and len(status["partitions"]) == 4
    assert status["partitions"][0]["from"] and status["coveredUntil"]
    assert partitions(url) == [p["name"] for p in status["partitions"]]
    # No finalizer for a Retain resource: deleting it never hangs while the operator is down.
    assert not obj["metadata"].get("finalizers")
    # kubectl get shows the state at a glance.
    table = cluster.kubectl("get", "partitionpolicies", "-n", namespace).stdout
    assert "event-logs" in table and "True" in table and "4" in table
    # An Event per DDL step.
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert sum(1 for e in events if e["reason"] == "DDLApplied") >= 4

    # Raise premake: more partitions.
    apply(cluster, namespace, policy("event-logs", range={"column": "server_timestamp", "interval": "1 month",
                                                          "premake": 6}))
    obj = wait_for(cluster, namespace, "event-logs", lambda o: ready(o) and o["status"]["partitionCount"] == 7,
                   what="7 partitions", operator_log=operator_log)
    assert len(partitions(url)) == 7

    # Drift: a partition dropped by hand comes back on the next scheduled run.
    victim = obj["status"]["partitions"][-1]["name"]
    sql(url, f'DROP TABLE "{victim}"')
    obj = wait_for(cluster, namespace, "event-logs", lambda o: o["status"].get("lastRun", {}).get("applied") == 1
                   and victim in partitions(url), what="drift repaired", operator_log=operator_log)
    assert obj["status"]["lastRun"]["changes"][0]["target"] == victim

    # Deleting a Retain resource leaves every partition in place.
    before = partitions(url)
    cluster.kubectl("delete", "partitionpolicy", "event-logs", "-n", namespace, "--timeout=20s")
    assert partitions(url) == before


def test_missing_secret_then_fixed(cluster: ControlPlane, namespace: str, database: tuple[str, str],
                                   operator_log: Path) -> None:
    _, url = database
    apply(cluster, namespace, policy("no-secret"))
    obj = wait_for(cluster, namespace, "no-secret", degraded_with("SecretNotFound"), what="SecretNotFound",
                   operator_log=operator_log)
    assert f"Secret {namespace}/app-db not found" in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    put_secret(cluster, namespace, "app-db", url)
    wait_for(cluster, namespace, "no-secret", ready, what="recovery", operator_log=operator_log)


def test_wrong_password_then_fixed_and_no_password_leaks(
    cluster: ControlPlane, namespace: str, database: tuple[str, str], operator_log: Path, app_password: str
) -> None:
    _, url = database
    wrong = "Wr0ng-" + secrets.token_hex(6)
    put_secret(cluster, namespace, "app-db", url.replace(app_password, wrong))
    apply(cluster, namespace, policy("bad-pw"))
    obj = wait_for(cluster, namespace, "bad-pw", degraded_with("AuthenticationFailed"), what="AuthenticationFailed",
                   operator_log=operator_log)
    assert "password authentication failed" in condition(obj, "Degraded")["message"]
    put_secret(cluster, namespace, "app-db", url)
    obj = wait_for(cluster, namespace, "bad-pw", ready, what="recovery", operator_log=operator_log)
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    for text in (json.dumps(obj), events, operator_log.read_text()):
        assert wrong not in text and app_password not in text


def test_unreachable_database(cluster: ControlPlane, namespace: str, operator_log: Path) -> None:
    put_secret(cluster, namespace, "app-db", "postgresql://app:pw@127.0.0.1:9/app")  # port 9: nothing listens
    apply(cluster, namespace, policy("unreachable"))
    obj = wait_for(cluster, namespace, "unreachable", degraded_with("DatabaseUnreachable"),
                   what="DatabaseUnreachable", operator_log=operator_log)
    assert "127.0.0.1:9" in condition(obj, "Degraded")["message"]


def test_table_problems_are_reported(cluster: ControlPlane, namespace: str, database: tuple[str, str],
                                     operator_log: Path) -> None:
    _, url = database
    sql(url, "CREATE TABLE plain (id bigint, created_at timestamptz)")
    put_secret(cluster, namespace, "app-db", url)
    apply(cluster, namespace, policy("missing", table={"name": "nope"}))
    apply(cluster, namespace, policy("plain", table={"name": "plain"},
                                     range={"column": "created_at", "interval": "1 day"}))
    obj = wait_for(cluster, namespace, "missing", degraded_with("TableNotFound"), operator_log=operator_log)
    assert "public.nope does not exist" in condition(obj, "Degraded")["message"]
    obj = wait_for(cluster, namespace, "plain", degraded_with("TableNotPartitioned"), operator_log=operator_log)


def test_dry_run_shows_plan_and_changes_nothing(cluster: ControlPlane, namespace: str, database: tuple[str, str],
                                                operator_log: Path) -> None:
    _, url = database
    put_secret(cluster, namespace, "app-db", url)
    apply(cluster, namespace, policy("dry", dryRun=True))
    obj = wait_for(cluster, namespace, "dry", lambda o: bool((o.get("status") or {}).get("plan")),
                   what="plan", operator_log=operator_log)
    assert any("ATTACH PARTITION" in s for s in obj["status"]["plan"])
    assert partitions(url) == []


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"range": {"column": "server_timestamp", "interval": "13 fortnights"}}, "spec.range.interval"),
        ({"range": {"column": "server_timestamp", "interval": "11 years"}}, "spec.range.interval"),
        ({"range": {"column": "server_timestamp", "interval": "3661 days"}}, "spec.range.interval"),
        ({"range": {"column": "server_timestamp", "interval": "1 month", "premake": -1}}, "spec.range.premake"),
        ({"range": {"column": "server_timestamp", "interval": "1 month", "width": 10}}, "exactly one of"),
        ({"table": {"name": "x" * 70}}, "spec.table.name"),
        ({"retention": {"keep": 3, "action": "shred"}}, "spec.retention.action"),
    ],
)
def test_schema_rejects_bad_specs(cluster: ControlPlane, namespace: str, spec: dict[str, Any], needle: str) -> None:
    out = apply(cluster, namespace, policy("bad", **spec), check=False)
    assert out.returncode != 0 and needle in out.stderr, out.stderr


def test_delete_policy_uses_a_finalizer_and_removes_only_empty_partitions(
    cluster: ControlPlane, namespace: str, database: tuple[str, str], operator_log: Path
) -> None:
    _, url = database
    put_secret(cluster, namespace, "app-db", url)
    apply(cluster, namespace, policy("deletable", deletionPolicy="Delete"))
    obj = wait_for(cluster, namespace, "deletable", ready, operator_log=operator_log)
    assert obj["metadata"].get("finalizers") == ["pgcurator.io/cleanup"]
    names = partitions(url)
    sql(url, "INSERT INTO event_logs (player_id, event_type) VALUES (1, 'keep me')")
    cluster.kubectl("delete", "partitionpolicy", "deletable", "-n", namespace, "--timeout=60s")
    left = partitions(url)
    assert len(left) == 1 and left[0] in names  # the partition holding a row stays
    # kubectl delete returned, so the finalizer was removed and the resource is gone.
    assert cluster.kubectl("get", "partitionpolicy", "deletable", "-n", namespace, check=False).returncode != 0


def test_convert_shows_progress_and_ends_ready(cluster: ControlPlane, namespace: str, pg: EmbeddedPostgres,
                                               app_password: str, operator_log: Path) -> None:
    name = "e2e_" + secrets.token_hex(4)
    pg.create_database(name, owner=APP_ROLE)
    url = pg.dsn(name, user=APP_ROLE, password=app_password)
    sql(url, "CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL, "
             "payload text, PRIMARY KEY (id, created_at)); "
             "INSERT INTO events (created_at, payload) SELECT timestamptz '2026-06-01' + g * interval '1 minute', "
             "repeat('x', 200) FROM generate_series(1, 300000) g")
    put_secret(cluster, namespace, "app-db", url)
    apply(cluster, namespace, policy("convert", table={"name": "events"},
                                     range={"column": "created_at", "interval": "1 month", "premake": 2},
                                     convert={"enabled": True, "batchMemory": "1Mi"}))
    seen: list[dict[str, Any]] = []

    def progressing(o: dict[str, Any]) -> bool:
        conv = (o.get("status") or {}).get("conversion") or {}
        if conv.get("phase") == "copy" and 0 < conv.get("rowsCopied", 0) < conv.get("rowsTotal", 0):
            seen.append(conv)
        return bool(seen)

    wait_for(cluster, namespace, "convert", progressing, timeout=120, what="copy progress on the status",
             operator_log=operator_log)
    assert "percent" in seen[0] and "rowsPerSecond" in seen[0]
    wait_for(cluster, namespace, "convert", ready, timeout=180, what="Ready after conversion",
             operator_log=operator_log)
    async def check() -> tuple[str, int]:
        c = await asyncpg.connect(url)
        try:
            return (await c.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'events'"),
                    await c.fetchval("SELECT count(*) FROM events"))
        finally:
            await c.close()

    assert asyncio.run(check()) == ("p", 300000)
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "ConversionSwapped" in events and "ConversionStarted" in events
