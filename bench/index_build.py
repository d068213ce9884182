"""Index builds on a partitioned table, side by side in one run (issue: IndexPolicy, "Measure").

A table with 8 partitions of 500k rows each (defaults; see --help), on whatever machine this
runs on, three ways, with a concurrent writer inserting single rows the whole time:

  (a) plain CREATE INDEX on the parent (one statement; blocks writes for the whole build)
  (b) CREATE INDEX CONCURRENTLY one partition at a time (the operator with parallelism 1)
  (c) the operator's parallel concurrent builds (parallelism N, default 4)

Prints each build's wall time, (b)/(c) and (a)/(c), and the longest write stall seen by the
writer in each case, against the configured lock_timeout.

    .venv/bin/python bench/index_build.py [--partitions 8] [--rows 500000] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.models.common import parse_duration
from pgcurator.models.index import IndexPolicySpec
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.index import reconcile_index_policy
from pgcurator_devenv.postgres import EmbeddedPostgres

LOCK_TIMEOUT = "5s"
INDEX = "idx_articles_user_read_date"


def schema_sql(partitions: int) -> str:
    parts = "".join(
        f"CREATE TABLE articles_p{i} PARTITION OF articles FOR VALUES FROM ({i * 1_000_000_000}) "
        f"TO ({(i + 1) * 1_000_000_000});\n"
        for i in range(partitions)
    )
    return (
        "CREATE TABLE articles (id bigint NOT NULL, user_id bigint NOT NULL, is_read boolean NOT NULL, "
        "published_at timestamp NOT NULL, title text) PARTITION BY RANGE (id);\n" + parts
    )


async def load(conn: asyncpg.Connection, partitions: int, rows: int) -> None:
    for i in range(partitions):
        await conn.execute(
            f"INSERT INTO articles_p{i} SELECT {i * 1_000_000_000} + g, (random() * 100000)::bigint, random() < 0.5, "
            "timestamp '2025-01-01' + random() * interval '365 days', md5(g::text) "
            f"FROM generate_series(1, {rows}) g"
        )
    await conn.execute("VACUUM ANALYZE articles")


class Writer:
    """Inserts one row at a time into a random partition; records every insert's latency."""

    def __init__(self, url: str, partitions: int) -> None:
        self.url, self.partitions = url, partitions
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.url)
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                part = n % self.partitions
                t0 = time.perf_counter()
                try:
                    await conn.execute(
                        "INSERT INTO articles VALUES ($1, 1, false, '2025-06-01', 'w')",
                        part * 1_000_000_000 + 900_000_000 + n)
                except asyncpg.PostgresError as exc:
                    self.errors.append(str(exc))
                self.latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def drop_index(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    for r in await conn.fetch("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid IN "
                              "(SELECT inhrelid FROM pg_inherits WHERE inhparent = 'articles'::regclass)"):
        await conn.execute(f"DROP INDEX IF EXISTS {r[0]}")


def policy(parallelism: int) -> IndexPolicySpec:
    return IndexPolicySpec.model_validate({
        "database": {"secretName": "unused"},
        "table": {"name": "articles"},
        "parallelism": parallelism,
        "analysis": {"enabled": False},
        "indexes": [{"name": INDEX, "columns": [{"column": "user_id"}, {"column": "is_read"},
                                               {"column": "published_at", "order": "desc"}]}],
        "timeouts": {"lockTimeout": LOCK_TIMEOUT, "statementTimeout": "1h"},
    })


async def timed_case(url: str, partitions: int, run: Any) -> tuple[float, float, int, list[str]]:
    writer = Writer(url, partitions)
    writer.start()
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.3)
    await writer.stop()
    return elapsed, max(writer.latencies), len(writer.latencies), writer.errors


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="pgcurator-bench-index-"))
    pg = EmbeddedPostgres(work / "data", extra_settings={"max_connections": 50})
    pg.start()
    try:
        password = secrets.token_urlsafe(12)
        pg.create_role("bench", password)
        pg.create_database("bench", owner="bench")
        url = pg.dsn("bench", user="bench", password=password)
        conn = await asyncpg.connect(url)
        await conn.execute(schema_sql(args.partitions))
        t0 = time.perf_counter()
        await load(conn, args.partitions, args.rows)
        print(f"loaded {args.partitions} partitions x {args.rows} rows in {time.perf_counter() - t0:.1f} s")
        mpw = await conn.fetchval("SHOW max_parallel_maintenance_workers")
        print(f"server: PostgreSQL {await conn.fetchval('SHOW server_version')}, "
              f"max_parallel_maintenance_workers={mpw}, lock_timeout={LOCK_TIMEOUT}")
        params = ConnParams(pg.host, pg.port, "bench", "bench", password, ssl_mode="disable")
        pools = PoolRegistry(max_size=max(args.parallelism + 1, 2))
        results: dict[str, tuple[float, float, int, list[str]]] = {}

        async def plain() -> None:
            c = await asyncpg.connect(url)
            await c.execute(f"CREATE INDEX {INDEX} ON articles (user_id, is_read, published_at DESC)")
            await c.close()

        def operator(parallelism: int) -> Any:
            async def run() -> None:
                async with pools.connection(params) as c:
                    ctx = ReconcileContext(conn=c, resource="IndexPolicy/bench/articles", namespace="bench",
                                           name="articles", body={}, params=params, pools=pools)
                    out = await reconcile_index_policy(ctx, policy(parallelism))
                    rows = out.status.get("partitions", [])
                    bad = [r for r in rows if not r.get("success")]
                    if bad or out.conditions[0].reason != "Applied":
                        raise SystemExit(f"build failed: {out.conditions[0].message}")
            return run

        cases = [("a", "plain CREATE INDEX on the parent", plain),
                 ("b", "CONCURRENTLY, one partition at a time", operator(1)),
                 ("c", f"operator, parallel CONCURRENTLY x{args.parallelism}", operator(args.parallelism))]
        for key, label, run in cases:
            await drop_index(conn)
            results[key] = await timed_case(url, args.partitions, run)
            elapsed, stall, writes, errors = results[key]
            print(f"({key}) {label:<42} {elapsed:7.2f} s   longest write stall {stall * 1000:8.1f} ms "
                  f"over {writes} writes" + (f"   writer errors: {len(errors)}" if errors else ""))
        await pools.close()
        await conn.close()
        a, b, c = results["a"][0], results["b"][0], results["c"][0]
        limit = parse_duration(LOCK_TIMEOUT)
        print()
        print(f"(b)/(c) = {b / c:.2f}x   (target >= 1.6x: {'met' if b / c >= 1.6 else 'NOT met'})")
        print(f"(a)/(c) = {a / c:.2f}x")
        for key in "abc":
            stall = results[key][1]
            verdict = "within" if stall <= limit else "EXCEEDS"
            print(f"longest write stall ({key}) = {stall * 1000:.1f} ms ({verdict} lock_timeout {LOCK_TIMEOUT})")
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)  # 4M rows: do not leave them in /tmp


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per partition")
    parser.add_argument("--parallelism", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
