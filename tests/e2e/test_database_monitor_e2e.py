"""DatabaseMonitor through the real API server and the operator process: Ready with the event
trigger reported unavailable to the non-superuser role, then (a superuser installed it) a hand
DROP INDEX is recorded with who, posted as an Event, and wakes the IndexPolicy that owns the
index, which rebuilds it long before its own schedule."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator.planner.monitor_trigger import install_sql
from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from .conftest import apply, condition, put_secret, wait_for
from .test_shipping_e2e import capture

pytestmark = pytest.mark.e2e


def run_sql(url: str, statement: str) -> list[Any]:
    async def run() -> list[Any]:
        c = await asyncpg.connect(url)
        try:
            if statement.rstrip().endswith(";"):
                await c.execute(statement)
                return []
            return list(await c.fetch(statement))
        finally:
            await c.close()

    return asyncio.run(run())


def monitor(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "DatabaseMonitor", "metadata": {"name": name},
            "spec": {"database": {"secretName": "app-db"}, **extra}}


def index_policy(name: str) -> dict[str, Any]:
    # A schedule of an hour: a rebuild within the test can only come from the monitor's wake-up.
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "IndexPolicy", "metadata": {"name": name},
            "spec": {"database": {"secretName": "app-db"}, "table": {"name": "orders"}, "schedule": {"interval": "1h"},
                     "analysis": {"enabled": False},
                     "indexes": [{"name": "orders_customer_idx", "columns": [{"column": "customer"}]}]}}


def ready(obj: dict[str, Any]) -> bool:
    c = condition(obj, "Ready")
    return c.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


@pytest.fixture
def shop(pg: EmbeddedPostgres, app_password: str) -> tuple[str, str]:
    name = "e2e_mon_" + secrets.token_hex(4)
    pg.create_database(name, owner=APP_ROLE)
    url = pg.dsn(name, user=APP_ROLE, password=app_password)
    run_sql(url, "CREATE TABLE orders (id bigint PRIMARY KEY, customer int); "
                 "INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, 1000) g;")
    return url, pg.dsn(name)


def test_database_monitor_reports_and_drift_wakes_the_index_policy(
        cluster: ControlPlane, namespace: str, shop: tuple[str, str], operator_log: Path) -> None:
    url, superuser = shop
    put_secret(cluster, namespace, "app-db", url)
    apply(cluster, namespace, monitor("shop"))
    obj = wait_for(cluster, namespace, "shop", lambda o: ready(o) and o["status"].get("schemaVersion"),
                   what="monitor Ready", operator_log=operator_log, kind="databasemonitor")
    trigger = condition(obj, "EventTrigger")
    assert trigger["status"] == "False" and trigger["reason"] == "EventTriggerNeedsSuperuser"
    assert obj["status"]["changeDetection"]["eventTrigger"]["state"] == "Unavailable"
    capture("databasemonitor-trigger-unavailable", obj)  # Healthy: a missing privilege is not an error
    table = cluster.kubectl("get", "databasemonitors", "-n", namespace).stdout
    header = table.splitlines()[0]
    for column in ("SCHEMA-VERSION", "CHANGES", "TRIGGER", "READY", "REASON", "AGE"):
        assert column in header, table
    assert obj["status"]["schemaVersion"] in table

    apply(cluster, namespace, index_policy("orders"))
    wait_for(cluster, namespace, "orders", lambda o: ready(o) and o["status"].get("validIndexes") == 1,
             what="IndexPolicy Ready", operator_log=operator_log, kind="indexpolicy")

    # A superuser installs the trigger; a spec change makes the monitor look again at once.
    run_sql(superuser, install_sql())
    apply(cluster, namespace, monitor("shop", changes={"statusChanges": 20}))
    obj = wait_for(cluster, namespace, "shop",
                   lambda o: ready(o) and condition(o, "EventTrigger").get("status") == "True"
                   and o["status"]["changeDetection"].get("listening") is True,
                   what="trigger active and listening", operator_log=operator_log, kind="databasemonitor")
    capture("databasemonitor-ready", obj)

    dropped = time.monotonic()
    run_sql(superuser, "DROP INDEX orders_customer_idx;")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if run_sql(url, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE c.relname = 'orders_customer_idx' AND i.indisvalid")[0][0]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the IndexPolicy did not rebuild the dropped index: " + operator_log.read_text()[-3000:])
    print(f"hand DROP INDEX -> index valid again in {time.monotonic() - dropped:.2f}s (IndexPolicy schedule: 1h)")

    who = f"IndexPolicy/{namespace}/orders"
    obj = wait_for(cluster, namespace, "shop",
                   lambda o: any(c["command"] == "DROP INDEX" and c.get("repairedBy")
                                 for c in (o["status"].get("changes") or {}).get("last", [])),
                   what="the change linked to its repair", operator_log=operator_log, kind="databasemonitor")
    drop = next(c for c in obj["status"]["changes"]["last"] if c["command"] == "DROP INDEX")
    assert drop["object"] == "public.orders_customer_idx" and drop["woke"] == [who]
    assert drop["who"].startswith("postgres") and drop["mechanism"] == "event_trigger"
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    changed = [e["message"] for e in events if e["reason"] == "SchemaChanged"]
    assert any("DROP INDEX public.orders_customer_idx by postgres" in m and who in m for m in changed), changed
