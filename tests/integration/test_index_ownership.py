"""One manager per index (issue 12 item 7): IndexPolicies and a VectorIndex on one table, one of
them pruning, never drop or rebuild each other's indexes; a second claim on a name is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from pgcurator.db.ownership import ConflictingManager
from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.devenv.postgres import EmbeddedPostgres
from pgcurator.models.index import IndexPolicySpec
from pgcurator.models.vector import VectorIndexSpec
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import cleanup_index_policy, reconcile_index_policy
from pgcurator.reconcile.outcome import Outcome
from pgcurator.reconcile.vector import reconcile_vector_index

from ..conftest import APP_ROLE

pytestmark = pytest.mark.integration

SEED = """
CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, author text NOT NULL, embedding vector(8));
INSERT INTO docs SELECT g, 'title ' || g, 'author ' || (g % 40),
       ('[' || array_to_string(ARRAY(SELECT round(random()::numeric, 4) FROM generate_series(1, 8)), ',') || ']')::vector
  FROM generate_series(1, 2000) g;
ANALYZE docs;
"""
HNSW = "docs_embedding_hnsw_idx"
DECLARED = {"idx_docs_title", "idx_docs_author", HNSW}


def policy(*indexes: tuple[str, str], prune: bool = False, **extra: Any) -> IndexPolicySpec:
    return IndexPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "docs"}, "prune": prune,
        "indexes": [{"name": name, "columns": [{"column": col}]} for name, col in indexes],
        "analysis": {"enabled": False}, **extra,
    })


def vector(**kw: Any) -> VectorIndexSpec:
    return VectorIndexSpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "docs"}, "column": "embedding", "type": "vector",
        "dimensions": 8, "metric": "l2", "hnsw": {"m": 8, "efConstruction": 32}, "recall": {"enabled": False},
        **kw,
    })


Run = Callable[[], Awaitable[Outcome]]


@pytest.fixture
async def base(pg: EmbeddedPostgres, dbname: str, app_password: str,
               conn: asyncpg.Connection) -> AsyncIterator[ReconcileContext]:
    pg.psql("CREATE EXTENSION vector", database=dbname)  # untrusted extension: a superuser installs it
    params = ConnParams(pg.host, pg.port, dbname, APP_ROLE, app_password, ssl_mode="disable")
    pools = PoolRegistry(max_size=4)
    await conn.execute(SEED)
    yield ReconcileContext(conn=conn, resource="", namespace="default", name="", body={}, params=params, pools=pools)
    await pools.close()


def as_resource(base: ReconcileContext, resource: str) -> ReconcileContext:
    return dataclasses.replace(base, resource=resource, name=resource.rsplit("/", 1)[-1], body={})


async def oids(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT c.relname, c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "WHERE i.indrelid = 'docs'::regclass")
    return {r[0]: int(r[1]) for r in rows}


def reason(out: Outcome) -> str:
    return out.conditions[0].reason


async def test_resources_on_one_table_keep_each_others_indexes(base: ReconcileContext) -> None:
    conn = base.conn
    # An index nobody manages that matches B's declaration: adopted (claimed), not rebuilt.
    await conn.execute("CREATE INDEX idx_docs_author ON docs (author); CREATE INDEX stray ON docs (title, id)")
    adopted = (await oids(conn))["idx_docs_author"]
    a = as_resource(base, "IndexPolicy/default/a")
    b = as_resource(base, "IndexPolicy/default/b")
    v = as_resource(base, "VectorIndex/default/v")
    runs: dict[str, Run] = {
        "a": lambda: reconcile_index_policy(a, policy(("idx_docs_title", "title"), prune=True)),
        "b": lambda: reconcile_index_policy(b, policy(("idx_docs_author", "author"))),
        "v": lambda: reconcile_vector_index(v, vector()),
    }
    declared_by = {"a": "idx_docs_title", "b": "idx_docs_author", "v": HNSW}
    seen: set[str] = set()
    # First round: B adopts before A first prunes (A would drop an index nobody claimed yet).
    for name in ("b", "a", "v"):
        out = await runs[name]()
        assert out.conditions[0].status, (name, out.conditions)
        seen.add(declared_by[name])
        assert seen <= set(await oids(conn)), name
    first = await oids(conn)
    assert "stray" not in first  # prune still drops what nobody manages
    assert first["idx_docs_author"] == adopted
    owners = dict(await conn.fetch("SELECT object_name, resource FROM pgcurator.owners WHERE object_kind = 'index'"))
    assert owners == {"idx_docs_title": a.resource, "idx_docs_author": b.resource, HNSW: v.resource}
    for order in (("v", "a", "b"), ("b", "v", "a"), ("a", "a", "v", "b", "a")):
        for name in order:
            out = await runs[name]()
            assert reason(out) == "UpToDate", (name, out.conditions)
            now = await oids(conn)
            assert DECLARED <= set(now), (order, name, set(now))
            assert {k: now[k] for k in first} == first, f"rebuilt after {name} in {order}"

    # B's replacement was interrupted (a crash left its _pgc_new build): A's prune leaves it to B.
    await conn.execute("CREATE INDEX idx_docs_author_pgc_new ON docs (author, id)")
    assert reason(await runs["a"]()) == "UpToDate"
    assert "idx_docs_author_pgc_new" in await oids(conn)
    # B changes its definition: the swap keeps B as the manager of idx_docs_author.
    out = await reconcile_index_policy(b, policy(("idx_docs_author", "author"), ("idx_docs_b2", "id")))
    assert reason(out) == "Applied", out.conditions
    swapped = await reconcile_index_policy(b, IndexPolicySpec.model_validate({
        **policy().model_dump(by_alias=True, exclude={"indexes"}),
        "indexes": [{"name": "idx_docs_author", "columns": [{"column": "author"}, {"column": "id"}]}]}))
    assert reason(swapped) == "Applied", swapped.conditions
    assert [c["step"] for c in swapped.status["lastRun"]["changes"]][-2:] == ["swap_index", "drop_replaced"]
    owners = dict(await conn.fetch("SELECT object_name, resource FROM pgcurator.owners WHERE object_kind = 'index'"))
    assert owners == {"idx_docs_title": a.resource, "idx_docs_author": b.resource, HNSW: v.resource}
    # idx_docs_b2, no longer declared by B, was given up: A's prune now drops it, and only it.
    out = await runs["a"]()
    assert reason(out) == "Applied" and [c["target"] for c in out.status["lastRun"]["changes"]] == ["idx_docs_b2"]
    assert {"idx_docs_author", "idx_docs_b2"} & set(await oids(conn)) == {"idx_docs_author"}


async def test_a_second_claim_on_an_index_is_refused_naming_the_manager(base: ReconcileContext) -> None:
    conn = base.conn
    a = as_resource(base, "IndexPolicy/default/a")
    v = as_resource(base, "VectorIndex/default/v")
    c = as_resource(base, "IndexPolicy/default/c")
    assert (await reconcile_index_policy(a, policy(("idx_docs_title", "title")))).conditions[0].status
    assert (await reconcile_vector_index(v, vector())).conditions[0].status
    before = await oids(conn)

    # Another IndexPolicy declares A's index (differently) and V's: both left alone, its own one built.
    out = await reconcile_index_policy(c, policy(("idx_docs_title", "author"), (HNSW, "title"),
                                                 ("idx_docs_c", "author"), prune=True))
    assert reason(out) == "ConflictingManager", out.conditions
    assert "Degraded" == out.conditions[2].type and out.conditions[2].status
    assert a.resource in out.conditions[0].message and v.resource in out.conditions[0].message
    assert {c["index"] for c in out.status["conflicts"]} == {"idx_docs_title", HNSW}
    after = await oids(conn)
    assert {k: after[k] for k in before} == before and "idx_docs_c" in after
    # The same in dryRun: reported, nothing recorded.
    d = as_resource(base, "IndexPolicy/default/d")
    dry = await reconcile_index_policy(d, policy(("idx_docs_title", "author"), dryRun=True))
    assert reason(dry) == "ConflictingManager" and a.resource in dry.conditions[0].message
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.owners WHERE resource = $1", d.resource) == 0
    # The first manager stays Ready.
    assert reason(await reconcile_index_policy(a, policy(("idx_docs_title", "title")))) == "UpToDate"

    # A VectorIndex naming A's index: refused, nothing built.
    w = as_resource(base, "VectorIndex/default/w")
    with pytest.raises(ConflictingManager, match="IndexPolicy/default/a") as err:
        await reconcile_vector_index(w, vector(indexName="idx_docs_title"))
    assert err.value.reason == "ConflictingManager"
    assert (await oids(conn))["idx_docs_title"] == before["idx_docs_title"]

    # A deleted manager (Retain: its claim stays) is taken over when the runtime says it is gone.
    async def alive(resource: str) -> bool:
        return resource != a.resource

    c2 = as_resource(base, "IndexPolicy/default/c")
    c2.alive = alive  # type: ignore[attr-defined]
    out = await reconcile_index_policy(c2, policy(("idx_docs_title", "title"), ("idx_docs_c", "author")))
    assert reason(out) == "UpToDate", out.conditions
    assert (await oids(conn))["idx_docs_title"] == before["idx_docs_title"]  # adopted as it is
    owner = await conn.fetchval("SELECT resource FROM pgcurator.owners WHERE object_name = 'idx_docs_title'")
    assert owner == c.resource


async def test_delete_drops_only_what_the_resource_still_manages(base: ReconcileContext) -> None:
    conn = base.conn
    a = as_resource(base, "IndexPolicy/default/a")
    b = as_resource(base, "IndexPolicy/default/b")
    assert (await reconcile_index_policy(a, policy(("idx_docs_title", "title")))).conditions[0].status
    # A gives idx_docs_title up (no longer declared); B takes it over.
    assert (await reconcile_index_policy(a, policy(("idx_docs_a2", "author")))).conditions[0].status
    assert (await reconcile_index_policy(b, policy(("idx_docs_title", "title")))).conditions[0].status
    # A is deleted with deletionPolicy Delete, its old spec still naming idx_docs_title.
    await cleanup_index_policy(a, policy(("idx_docs_title", "title"), ("idx_docs_a2", "author")))
    left = await oids(conn)
    assert "idx_docs_title" in left and "idx_docs_a2" not in left
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.owners WHERE resource = $1", a.resource) == 0
