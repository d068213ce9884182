"""One observation per run (issue 14): a run that builds reads the table's shape once and builds
IndexPolicy's reference definitions once; what it built is read back, not observed again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.models.index import IndexPolicySpec
from pgcurator.models.vector import VectorIndexSpec
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy
from pgcurator.reconcile.vector import reconcile_vector_index
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from .counting import Counting
from .index_scenarios import SEED_002, SEED_003, seed_002_policy, seed_003_policy
from .vector_data import make_table

pytestmark = pytest.mark.integration

TABLE_LOOKUP = "greatest(c.reltuples, 0)::bigint AS est_rows"  # catalog.indexes: the table's shape
SCRATCH_TABLE = "CREATE TEMP TABLE pgcurator_shape"  # catalog.indexes.reference_definitions
VECTOR_OBSERVATION = "SELECT extversion FROM"  # catalog.vectors.observe_vector_table


@pytest.fixture
async def counted(pg: EmbeddedPostgres, dbname: str, app_password: str,
                  conn: asyncpg.Connection) -> AsyncIterator[tuple[ReconcileContext, Counting]]:
    pg.psql("CREATE EXTENSION vector", database=dbname)
    params = ConnParams(pg.host, pg.port, dbname, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=4)
    counting = Counting(conn)
    yield ReconcileContext(conn=counting, resource="X/default/reads", namespace="default", name="reads", body={},
                           params=params, pools=pools), counting
    await pools.close()


@pytest.mark.parametrize("seed", ["plain", "partitioned"])
async def test_an_index_policy_run_that_builds_observes_once(counted: tuple[ReconcileContext, Counting],
                                                             seed: str) -> None:
    ctx, counting = counted
    await ctx.conn.execute(SEED_002 if seed == "plain" else SEED_003)
    body = seed_002_policy("sessions") if seed == "plain" else seed_003_policy()
    counting.sent.clear()
    out = await reconcile_index_policy(ctx, IndexPolicySpec.model_validate(body))
    assert out.conditions[0].reason == "Applied", out.conditions
    assert counting.count(TABLE_LOOKUP) == 1
    assert counting.count(SCRATCH_TABLE) == 1
    # ...and the status still shows what the run built.
    assert out.status["validIndexes"] == 2 and out.status["pendingChanges"] == 0
    assert all(i["exists"] and i["valid"] and i["sizeBytes"] > 0 for i in out.status["indexes"])


async def test_a_vector_index_run_that_builds_observes_once(counted: tuple[ReconcileContext, Counting]) -> None:
    ctx, counting = counted
    await make_table(ctx.conn, "items", "vector", 8, 500)
    counting.sent.clear()
    out = await reconcile_vector_index(ctx, VectorIndexSpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "items"}, "column": "embedding", "type": "vector",
        "dimensions": 8, "metric": "l2", "hnsw": {"m": 8, "efConstruction": 32}, "recall": {"enabled": False}}))
    assert out.conditions[0].reason == "Built", out.conditions
    assert counting.count(VECTOR_OBSERVATION) == 1
    assert out.status["index"]["valid"] and out.status["index"]["sizeBytes"] > 0
    assert out.status["build"]["rowsIndexed"] == 500


@pytest.mark.parametrize("mode", ["dryRun", "suspend"])
async def test_dry_run_and_suspend_copy_and_record_nothing(counted: tuple[ReconcileContext, Counting],
                                                           mode: str) -> None:
    ctx, counting = counted
    await ctx.conn.execute(SEED_002)
    body = {**seed_002_policy("sessions"), mode: True, "suggestions": {"enabled": True, "minCalls": 1}}
    counting.sent.clear()
    out = await reconcile_index_policy(ctx, IndexPolicySpec.model_validate(body))
    assert out.status["plan"], out.status
    assert not [s for s in counting.sent if "CREATE TEMP TABLE" in s and "pgcurator_shape" not in s]
    assert not [s for s in counting.sent if "INSERT INTO pgcurator.index_usage" in s]
    assert await ctx.conn.fetchval("SELECT count(*) FROM pgcurator.index_usage") == 0
