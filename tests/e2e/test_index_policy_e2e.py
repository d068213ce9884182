"""IndexPolicy through the real API server and the operator process (seed 003's partitioned articles)."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from ..integration.index_scenarios import SEED_003, SEED_003_MONTHS, seed_003_policy
from .conftest import apply, condition, put_secret, wait_for

pytestmark = pytest.mark.e2e


def resource(name: str, **extra: Any) -> dict[str, Any]:
    spec = seed_003_policy(schedule={"interval": "2s"}, **extra)
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "IndexPolicy", "metadata": {"name": name}, "spec": spec}


def ready(obj: dict[str, Any]) -> bool:
    c = condition(obj, "Ready")
    return c.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def run_sql(url: str, statement: str) -> list[Any]:
    async def run() -> list[Any]:
        c = await asyncpg.connect(url)
        try:
            if ";" in statement:
                await c.execute(statement)
                return []
            return list(await c.fetch(statement))
        finally:
            await c.close()

    return asyncio.run(run())


@pytest.fixture
def articles_db(pg: EmbeddedPostgres, app_password: str) -> str:
    name = "e2e_idx_" + secrets.token_hex(4)
    pg.create_database(name, owner=APP_ROLE)
    url = pg.dsn(name, user=APP_ROLE, password=app_password)
    run_sql(url, SEED_003)
    run_sql(url, "CREATE INDEX articles_feed_dup ON articles (feed_id)")  # redundant with the declared one
    return url


def test_index_policy_builds_per_partition_and_reports(
    cluster: ControlPlane, namespace: str, articles_db: str, operator_log: Path
) -> None:
    put_secret(cluster, namespace, "app-db", articles_db)
    apply(cluster, namespace, resource("articles"))
    obj = wait_for(cluster, namespace, "articles", lambda o: ready(o) and "partitions" in o["status"],
                   what="Ready", operator_log=operator_log, kind="indexpolicy")
    status = obj["status"]
    rows = status["partitions"]
    assert len(rows) == 2 * len(SEED_003_MONTHS)
    assert {r["partition"] for r in rows} == {f"articles_{m}" for m in SEED_003_MONTHS}
    assert all(r["success"] and r["state"] in ("built", "present") for r in rows), rows
    assert status["validIndexes"] == 2 and status["declared"] == 2
    valid = run_sql(articles_db, "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c "
                                 "ON c.oid = i.indexrelid WHERE i.indrelid = 'articles'::regclass ORDER BY 1")
    assert [(r[0], r[1]) for r in valid] == [("articles_feed_dup", True), ("idx_articles_feed_tags", True),
                                             ("idx_articles_user_read_date", True)]
    # The analysis: sizes and scans per index, the redundant hand-made index, when stats were reset.
    analysis = status["analysis"]
    names = {i["name"]: i for i in analysis["indexes"]}
    assert set(names) == {"articles_feed_dup", "idx_articles_feed_tags", "idx_articles_user_read_date"}
    assert all(i["sizeBytes"] > 0 for i in names.values())
    assert names["articles_feed_dup"]["declared"] is False
    assert {"index": "articles_feed_dup", "coveredBy": "idx_articles_feed_tags",
            "reason": "idx_articles_feed_tags has the same keys and more INCLUDE"} in analysis["redundant"]
    assert status["undeclared"] == ["articles_feed_dup"]
    # kubectl get shows the state; an Event per DDL step.
    table = cluster.kubectl("get", "indexpolicies", "-n", namespace).stdout
    assert "articles" in table and "True" in table
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert sum(1 for e in events if e["reason"] == "DDLApplied") >= 2 * len(SEED_003_MONTHS)

    # prune: true removes the undeclared index on the next run.
    apply(cluster, namespace, resource("articles", prune=True))
    wait_for(cluster, namespace, "articles", lambda o: ready(o) and o["status"]["undeclared"] == [],
             what="pruned", operator_log=operator_log, kind="indexpolicy")
    left = run_sql(articles_db, "SELECT count(*) FROM pg_indexes WHERE tablename = 'articles'")
    assert left[0][0] == 2


def test_invalid_predicate_is_refused_by_the_operator(
    cluster: ControlPlane, namespace: str, articles_db: str, operator_log: Path
) -> None:
    put_secret(cluster, namespace, "app-db", articles_db)
    body = resource("bad")
    body["spec"]["indexes"] = [{"name": "x", "columns": [{"column": "user_id"}],
                                "where": "user_id > 0; DROP TABLE articles"}]
    apply(cluster, namespace, body)
    obj = wait_for(cluster, namespace, "bad", lambda o: condition(o, "Degraded").get("reason") == "InvalidSpec",
                   what="InvalidSpec", operator_log=operator_log, kind="indexpolicy")
    assert "';'" in condition(obj, "Degraded")["message"]
    assert run_sql(articles_db, "SELECT to_regclass('articles') IS NOT NULL")[0][0]
