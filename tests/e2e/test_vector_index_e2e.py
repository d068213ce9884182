"""VectorIndex through the real API server and the operator process: seed 002's knowledge_chunks
(halfvec(1536), HNSW halfvec_cosine_ops m=16 ef_construction=64, WHERE embedding IS NOT NULL)."""

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
from ..integration.vector_data import make_table
from .conftest import apply, condition, put_secret, wait_for

pytestmark = pytest.mark.e2e

ROWS = 1000


def resource(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "knowledge_chunks"},
        "column": "embedding",
        "type": "halfvec",
        "dimensions": 1536,
        "metric": "cosine",
        "method": "hnsw",
        "hnsw": {"m": 16, "efConstruction": 64},
        "where": "embedding IS NOT NULL",
        "indexName": "idx_chunks_embedding",
        "build": {"memoryBudget": "256Mi"},
        "recall": {"queries": 20, "targetRecall": 0.9},
    }
    body.update(spec)
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "VectorIndex", "metadata": {"name": name}, "spec": body}


@pytest.fixture
def database(pg: EmbeddedPostgres, app_password: str) -> str:
    name = "e2e_vec_" + secrets.token_hex(4)
    pg.create_database(name, owner=APP_ROLE)
    pg.psql("CREATE EXTENSION vector", database=name)
    url = pg.dsn(name, user=APP_ROLE, password=app_password)

    async def setup() -> None:
        c = await asyncpg.connect(url)
        try:
            await make_table(c, "knowledge_chunks", "halfvec", 1536, ROWS, nulls=50)
        finally:
            await c.close()

    asyncio.run(setup())
    return url


def test_vector_index_ready_with_measured_recall(cluster: ControlPlane, namespace: str, database: str,
                                                 operator_log: Path) -> None:
    put_secret(cluster, namespace, "app-db", database)
    apply(cluster, namespace, resource("chunks"))

    def done(obj: dict[str, Any]) -> bool:
        st = obj.get("status") or {}
        return (condition(obj, "Ready").get("status") == "True"
                and st.get("observedGeneration") == obj["metadata"]["generation"] and bool(st.get("recall")))

    obj = wait_for(cluster, namespace, "chunks", done, timeout=120, what="Ready with recall",
                   operator_log=operator_log, kind="vectorindex")
    st = obj["status"]
    assert st["index"]["name"] == "idx_chunks_embedding" and st["index"]["valid"]
    assert st["index"]["opclass"] == "halfvec_cosine_ops"
    assert st["index"]["predicate"] == "(embedding IS NOT NULL)"
    assert st["build"]["outcome"] == "ok" and st["build"]["inMemory"] is True
    assert st["build"]["memoryBudget"] == "256.0MiB"
    r = st["recall"]
    assert r["parameter"] == "hnsw.ef_search" and len(r["results"]) == 6
    assert r["met"] and st["recommendedSearch"].startswith("hnsw.ef_search=")
    assert condition(obj, "RecallTargetMet")["status"] == "True"
    assert condition(obj, "BuildInMemory")["status"] == "True"
    table = cluster.kubectl("get", "vectorindexes", "-n", namespace).stdout
    assert "chunks" in table and "hnsw" in table and "hnsw.ef_search=" in table and "True" in table
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    reasons = {e["reason"] for e in events}
    assert {"BuildStarted", "DDLApplied"} <= reasons


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"hnsw": {"m": 16, "efConstruction": 20}}, "efConstruction must be at least 2*m"),
        ({"hnsw": {"m": 1, "efConstruction": 64}}, "spec.hnsw.m"),
        ({"method": "ivfflat", "type": "sparsevec", "hnsw": None}, "ivfflat cannot index sparsevec"),
    ],
)
def test_schema_rejects_bad_specs(cluster: ControlPlane, namespace: str, spec: dict[str, Any], needle: str) -> None:
    obj = resource("bad", **spec)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    out = apply(cluster, namespace, obj, check=False)
    assert out.returncode != 0 and needle in out.stderr, out.stderr


def test_wrong_dimension_is_reported_and_nothing_built(cluster: ControlPlane, namespace: str, database: str,
                                                       operator_log: Path) -> None:
    put_secret(cluster, namespace, "app-db", database)
    apply(cluster, namespace, resource("wrong-dims", dimensions=768, indexName="idx_wrong"))
    obj = wait_for(cluster, namespace, "wrong-dims",
                   lambda o: condition(o, "Degraded").get("reason") == "DimensionMismatch",
                   what="DimensionMismatch", operator_log=operator_log, kind="vectorindex")
    assert "halfvec(1536), the spec says 768" in condition(obj, "Degraded")["message"]
