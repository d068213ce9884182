"""Lock exploration: every lock mode, held by another session on the parent or on a partition (and
on the table of an IndexPolicy), while a reconcile with lockTimeout 200ms runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from . import invariants as inv
from .harness import Harness, resource_name
from .locks import LOCK_MODES, hold_lock, reconcile_under_lock
from .tally import bump, distinct

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
LOCK_TIMEOUT_S = 0.2
TIMEOUTS = {"lockTimeout": "200ms", "lockRetries": 1}
PARTITION_SPEC: dict[str, Any] = {"table": {"schema": "st", "name": "events"},
                                  "range": {"column": "k", "interval": "1 month", "premake": 2},
                                  "timeouts": TIMEOUTS}
INDEX_SPEC: dict[str, Any] = {"table": {"schema": "st", "name": "items"},
                              "indexes": [{"name": "items_k_idx", "columns": [{"column": "k"}]}],
                              "timeouts": TIMEOUTS}


def _mark(mode: str, index: bool = False) -> Any:
    return mode  # every lock mode passes now; a defect found here is pinned with a strict xfail


def check(kind: str, result: Any, watch: Any, h: Harness, mark: int) -> None:
    bump(kind, "lock states explored")
    inv.counted(kind)
    if watch.violations:
        raise inv.Broken("reads respect lockTimeout", "; ".join(watch.violations[:2]), result)
    inv.no_internal_error(kind, result)
    inv.counted(kind)
    if not (result.ready or result.reason == "WaitingForLock"):
        raise inv.Broken("WaitingForLock or success", f"reason {result.reason}", result)

    async def rows() -> list[Any]:
        return await inv.history_since(await h.admin(), resource_name(kind), mark)

    inv.statements_within_lock_timeout(kind, h.run(rows()), LOCK_TIMEOUT_S)


async def _partitioned(h: Harness) -> int:
    await h.reset()
    app = await h.app()
    await app.execute("CREATE TABLE st.events (id bigint, k timestamptz NOT NULL, payload text) "
                      "PARTITION BY RANGE (k)")
    first = await h.apply("PartitionPolicy", {**PARTITION_SPEC, "range": {**PARTITION_SPEC["range"], "premake": 0}},
                          now=NOW)
    assert first.ready, first.describe()
    return await inv.history_mark(await h.admin())


@pytest.mark.parametrize("target", ["parent", "partition"])
@pytest.mark.parametrize("mode", [_mark(m) for m in LOCK_MODES])
def test_partition_policy_never_waits_behind_a_lock(harness: Harness, mode: str, target: str) -> None:
    h = harness
    mark = h.run(_partitioned(h))
    relation = "st.events" if target == "parent" else "st.events_p2026_11"
    distinct("PartitionPolicy", "states explored", {"lock": mode, "on": target})
    blocker = h.run(hold_lock(h, relation, mode))
    result, watch = h.run(reconcile_under_lock(h, "PartitionPolicy", PARTITION_SPEC, blocker, LOCK_TIMEOUT_S,
                                               now=NOW))
    check("PartitionPolicy", result, watch, h, mark)


async def _indexed_table(h: Harness) -> int:
    await h.reset()
    app = await h.app()
    await app.execute("CREATE TABLE st.items (id bigint PRIMARY KEY, k int); "
                      "INSERT INTO st.items SELECT g, g FROM generate_series(1, 100) g")
    return await inv.history_mark(await h.admin())


@pytest.mark.parametrize("mode", [_mark(m, index=True) for m in LOCK_MODES])
def test_index_policy_never_waits_behind_a_lock(harness: Harness, mode: str) -> None:
    h = harness
    mark = h.run(_indexed_table(h))
    distinct("IndexPolicy", "states explored", {"lock": mode, "on": "table"})
    blocker = h.run(hold_lock(h, "st.items", mode))
    result, watch = h.run(reconcile_under_lock(h, "IndexPolicy", INDEX_SPEC, blocker, LOCK_TIMEOUT_S))
    check("IndexPolicy", result, watch, h, mark)


VECTOR_SPEC: dict[str, Any] = {"table": {"schema": "st", "name": "docs"}, "column": "embedding", "type": "vector",
                               "dimensions": 3, "metric": "l2", "hnsw": {"m": 4, "efConstruction": 16},
                               "recall": {"enabled": False}, "timeouts": TIMEOUTS}


async def _vector_table(h: Harness) -> int:
    await h.reset()
    await (await h.admin()).execute("CREATE EXTENSION IF NOT EXISTS vector")
    app = await h.app()
    await app.execute("CREATE TABLE st.docs (id bigint PRIMARY KEY, embedding vector(3)); "
                      "INSERT INTO st.docs SELECT g, ('[' || g % 7 || ',' || g % 5 || ',' || g % 3 || ']')::vector "
                      "FROM generate_series(1, 200) g")
    return await inv.history_mark(await h.admin())


@pytest.mark.parametrize("mode", [_mark(m) for m in LOCK_MODES])
def test_vector_index_never_waits_behind_a_lock(harness: Harness, mode: str) -> None:
    h = harness
    mark = h.run(_vector_table(h))
    distinct("VectorIndex", "states explored", {"lock": mode, "on": "table"})
    blocker = h.run(hold_lock(h, "st.docs", mode))
    result, watch = h.run(reconcile_under_lock(h, "VectorIndex", VECTOR_SPEC, blocker, LOCK_TIMEOUT_S))
    check("VectorIndex", result, watch, h, mark)
