"""The runs the crash-point suite interrupts: a table built in schema `st`, the spec of one
PartitionPolicy, rows written concurrently, and which rows the spec removes on purpose.

Every scene is checked against its uninterrupted run (the reference): a crashed trial must end
with exactly the reference's objects, and with every row written except those retention drops."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from pgcurator.kube import FINALIZER
from pgcurator.runtime import Worker

from .harness import KINDS, NAMESPACE, SECRET, Harness, Result, _Capture

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
KIND = "PartitionPolicy"
Row = tuple[int, datetime, str]


def month(y: int, m: int) -> datetime:
    return datetime(y + (m - 1) // 12, (m - 1) % 12 + 1, 1, tzinfo=UTC)


def name(y: int, m: int) -> str:
    return f"ev_p{month(y, m):%Y_%m}"


def bounds(y: int, m: int) -> str:
    return f"FOR VALUES FROM ('{month(y, m):%Y-%m-%d} 00:00:00+00') TO ('{month(y, m + 1):%Y-%m-%d} 00:00:00+00')"


@dataclass
class Scene:
    key: str
    spec: dict[str, Any]
    existing: list[tuple[int, int]]  # monthly partitions created by hand (year, month)
    default: bool  # a DEFAULT partition st.ev_default
    seed: dict[tuple[int, int], int]  # rows per month, inserted before the run
    writes: list[tuple[int, int]]  # months the concurrent writer inserts into, in turn
    dropped: list[tuple[int, int]] = field(default_factory=list)  # months whose rows retention drops
    kept_aside: list[tuple[int, int]] = field(default_factory=list)  # months detached or archived
    delete: bool = False  # the run is the deletion cleanup (deletionPolicy: Delete), after one reconcile
    deleted_after: bool = False  # the policy is deleted (deletionPolicy: Delete) right after the run

    @property
    def probed(self) -> list[tuple[int, int]]:
        """Months tried for a new row before the run and right after a crash: the seeded ones,
        the writer's and the window's, less those the run removes on purpose (a deletion removes
        months: only the writer's)."""
        if self.delete:
            return self.writes
        months = set(self.writes) | set(self.seed) | {(2026, 11), (2026, 12), (2027, 1)}
        return sorted(m for m in months if not self.is_dropped(month(*m)) and not self.is_aside(month(*m)))

    def is_dropped(self, k: datetime) -> bool:
        return any(month(*m) <= k < month(m[0], m[1] + 1) for m in self.dropped)

    def is_aside(self, k: datetime) -> bool:
        return any(month(*m) <= k < month(m[0], m[1] + 1) for m in self.kept_aside)


BASE = {"table": {"schema": "st", "name": "ev"}, "timeouts": {"lockTimeout": "2s", "lockRetries": 2}}
MOVE = {"defaultPartition": True, "defaultRows": {"move": True, "batchRows": 7}}


def scenes() -> list[Scene]:
    monthly = {"column": "k", "interval": "1 month"}
    return [
        # (a) DEFAULT rows of December and January moved into two new partitions; March's stay.
        # The writer keeps adding December rows (routed to the DEFAULT until its partition is
        # attached), never January's: a move interrupted after its last batch meets no new row.
        Scene("move", {**BASE, **MOVE, "range": {**monthly, "premake": 2}}, [(2026, 11)], True,
              {(2026, 11): 10, (2026, 12): 30, (2027, 1): 30, (2027, 3): 5}, [(2026, 12), (2026, 11), (2027, 3)]),
        # (a') the same, the policy deleted right after the run (or its crash): no run resumes a move.
        Scene("move-deleted", {**BASE, **MOVE, "deletionPolicy": "Delete", "range": {**monthly, "premake": 2}},
              [(2026, 11)], True, {(2026, 11): 10, (2026, 12): 30, (2027, 1): 30, (2027, 3): 5},
              [(2026, 12), (2026, 11), (2027, 3)], deleted_after=True),
        # (b) retention of four old months, detached concurrently (no DEFAULT partition).
        *[Scene(f"retention-{action}", {**BASE, "range": {**monthly, "premake": 1}, "retention": {
            "keep": 2, "action": action, **({"archive": {"schema": "archive"}} if action == "archive" else {})}},
            [(2026, m) for m in range(5, 12)], False, {(2026, m): 6 for m in range(5, 12)}, [(2026, 11)],
            dropped=[(2026, m) for m in range(5, 9)] if action == "drop" else [],
            kept_aside=[(2026, m) for m in range(5, 9)] if action != "drop" else [])
          for action in ("drop", "detach", "archive")],
        # (c) deletion: the policy created November (rows), December, January and the DEFAULT (empty).
        Scene("delete", {**BASE, "deletionPolicy": "Delete", "defaultPartition": True,
                         "range": {**monthly, "premake": 2}}, [], False, {(2026, 11): 10}, [(2026, 11)], delete=True),
        # (d) one run: January created (guarded: the DEFAULT holds rows), December's DEFAULT rows
        # moved, three old months dropped by retention (not concurrently: there is a DEFAULT).
        Scene("mixed", {**BASE, **MOVE, "range": {**monthly, "premake": 2}, "retention": {
            "keep": 2, "action": "drop"}}, [(2026, m) for m in range(6, 12)], True,
            {**{(2026, m): 4 for m in range(6, 12)}, (2026, 12): 20, (2027, 4): 3},
            [(2026, 11), (2026, 12), (2027, 4)], dropped=[(2026, m) for m in range(6, 9)]),
    ]


async def build(h: Harness, scene: Scene) -> None:
    """The table as the scene starts (for a deletion, as the policy made it)."""
    c = await h.app()
    await c.execute("CREATE TABLE st.ev (id bigint NOT NULL, k timestamptz NOT NULL, payload text) "
                    "PARTITION BY RANGE (k)")
    for y, m in scene.existing:
        await c.execute(f"CREATE TABLE st.{name(y, m)} PARTITION OF st.ev {bounds(y, m)}")
    if scene.default:
        await c.execute("CREATE TABLE st.ev_default PARTITION OF st.ev DEFAULT")
    if scene.delete:
        made = await h.apply(KIND, scene.spec, now=NOW)
        assert made.ready, made.describe()


async def seed(h: Harness, scene: Scene) -> list[Row]:
    c = await h.app()
    rows: list[Row] = []
    for (y, m), n in sorted(scene.seed.items()):
        rows += [(len(rows) + i + 1, month(y, m).replace(day=1 + i % 27, hour=i % 24), f"seed {i}") for i in range(n)]
    await c.executemany("INSERT INTO st.ev VALUES ($1, $2, $3)", rows)
    return rows


class Writer:
    """Inserts one row at a time into the scene's months, in turn, until stopped; remembers the
    rows it was told were committed and every insert that failed."""

    def __init__(self, h: Harness, months: list[tuple[int, int]]) -> None:
        self.h, self.months = h, months
        self.committed: list[Row] = []
        self.failures: list[str] = []
        self.stop = asyncio.Event()
        self.gate = asyncio.Event()  # cleared: the writer waits (a probe reads a still table)
        self.idle = asyncio.Event()
        self.wrote = asyncio.Event()  # a first row committed
        self.task: asyncio.Task[None] | None = None
        self.gate.set()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        c = await self.h.connect(False)
        try:
            n = 0
            while not self.stop.is_set():
                if not self.gate.is_set():
                    self.idle.set()
                    await self.gate.wait()
                    self.idle.clear()
                    continue
                n += 1
                y, m = self.months[n % len(self.months)]
                row = (1_000_000 + n, month(y, m).replace(day=1 + n % 27, minute=n % 60), f"w{n}")
                try:
                    await c.execute("INSERT INTO st.ev VALUES ($1, $2, $3)", *row)
                    self.committed.append(row)
                    self.wrote.set()
                except asyncpg.PostgresError as exc:
                    self.failures.append(f"{month(y, m):%Y-%m}: {exc.sqlstate} {exc}")
                await asyncio.sleep(0.005)
        finally:
            await c.close()

    async def pause(self) -> None:
        self.idle.clear()
        self.gate.clear()
        await self.idle.wait()

    def resume(self) -> None:
        self.gate.set()

    async def finish(self) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task


async def finalize(h: Harness, scene: Scene) -> tuple[bool, Result]:
    """The deletion of the resource: the runtime's finalizer path (engine.cleanup)."""
    assert h.runtime is not None
    h.generation += 1
    body = {"apiVersion": "pgcurator.io/v1alpha1", "kind": KIND,
            "metadata": {"name": "subject", "namespace": NAMESPACE, "generation": h.generation, "uid": "uid-subject",
                         "resourceVersion": str(h.generation), "deletionTimestamp": "2026-11-22T10:00:00Z",
                         "finalizers": [FINALIZER]},
            "spec": {"database": {"secretName": SECRET}, **scene.spec}, "status": {}}
    capture = _Capture()
    logger = logging.getLogger("pgcurator")
    logger.addHandler(capture)
    before = len(h.kube.events)
    try:
        done = await Worker(h.runtime, KINDS[KIND], body)._finalize(body)
    finally:
        logger.removeHandler(capture)
    events = h.kube.events[before:]
    failed = [e for e in events if e[1] == "CleanupFailed"]
    status = {"ready": "True" if done else "False", "reason": "Deleted" if done else "CleanupFailed",
              "conditions": [{"type": "Ready", "message": failed[0][2] if failed else ""}]}
    return done, Result(KIND, body["spec"], status, 0.0, events, capture.tracebacks)


async def snapshot(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """The objects of st and archive: tables (attachment, bound, comment), constraints, indexes."""
    tables = await conn.fetch(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, p.relname::text, "
        "pg_get_expr(c.relpartbound, c.oid), obj_description(c.oid, 'pg_class'), i.inhdetachpending "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
        "LEFT JOIN pg_class p ON p.oid = i.inhparent WHERE n.nspname IN ('st', 'archive') AND c.relkind IN ('r', 'p') "
        "ORDER BY 1, 2")
    constraints = await conn.fetch(
        "SELECT 'constraint', conrelid::regclass::text, conname::text, convalidated FROM pg_constraint "
        "WHERE connamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('st', 'archive')) ORDER BY 2, 3")
    indexes = await conn.fetch(
        "SELECT 'index', indrelid::regclass::text, indexrelid::regclass::text, indisvalid FROM pg_index "
        "WHERE indrelid IN (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('st', 'archive')) ORDER BY 2, 3")
    return [tuple(r) for r in (*tables, *constraints, *indexes)]


async def rows_of(conn: asyncpg.Connection, where: str) -> Counter[Row]:
    return Counter((r[0], r[1], r[2]) for r in await conn.fetch(f"SELECT id, k, payload FROM {where}"))


async def loose(conn: asyncpg.Connection) -> dict[str, str | None]:
    """Plain tables of st and archive (not the parent, not a partition unless its detach is
    pending: new queries of the parent no longer see it), with their comment."""
    recs = await conn.fetch(
        "SELECT format('%I.%I', n.nspname, c.relname), obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('st', 'archive') "
        "AND c.relkind IN ('r', 'p') AND c.relname <> 'ev' AND (NOT c.relispartition "
        "OR EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid AND i.inhdetachpending))")
    return {r[0]: r[1] for r in recs}
