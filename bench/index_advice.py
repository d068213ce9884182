"""Index advice quality, side by side in one run (issue 15, "Measure" 1).

On the seed schemas (bench/advice_workload.py: sessions, knowledge_sources, knowledge_chunks,
articles; 200k-1M skewed rows at --scale 1) the workload built from the seeds' usage examples
runs, then pgcurator's advisor is asked twice: from pg_stat_statements (what IndexPolicy and the
monitor do: constants normalised to $n) and from the statements as the application sends them
(a log's view). Each answer is scored against the seeds' expert indexes, and the workload is
timed with no added index, with pgcurator's indexes and with the expert set.

Matching rule (stated in docs/index-advice.md): same table, same access method, the key columns
of one are a prefix of the other's (at least one key; direction, operator class and INCLUDE are
not compared), and the same partial predicate (the same set of conjuncts; constants compared as
text); a key the predicate fixes by equality (`status` in `(status, last_active_at) WHERE status =
'active'`) is not counted as a key. An expert index counts as recalled when a suggestion matches
it or the advisor reports it already served by an existing index (the UNIQUE constraint's).

    .venv/bin/python bench/index_advice.py [--scale 1.0] [--server embedded|debian]

--server debian runs on Debian's PostgreSQL with HypoPG (hypothetical indexes, no sample copy);
there pgvector is not packaged, so the embedding column is real[] instead of halfvec(1536).
A HypoPG-based peer (Dexter) is a Ruby gem, not packaged by Debian nor on PyPI: not run here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from pglast import ast, parse_sql
from pglast.stream import RawStream

sys.path.insert(0, str(Path(__file__).parent))
from advice_workload import EXPERT, SCHEMA, WORKLOAD, data_sql

from pgcurator.catalog.advice import Statement
from pgcurator.reconcile.advice import AdviceOptions, AdviceReport, advise
from pgcurator_devenv.postgres import EmbeddedPostgres

Shape = tuple[str, str, tuple[str, ...], frozenset[str]]


def _norm(text: str) -> str:
    return text.replace('"', "").replace(" ", "").lower().strip("()")


def shape(definition: str) -> Shape:
    """(table, method, keys, predicate conjuncts) of a CREATE INDEX, normalised for matching."""
    stmt = parse_sql(definition)[0].stmt
    assert isinstance(stmt, ast.IndexStmt)
    conj: list[Any] = []
    if stmt.whereClause is not None:
        w = stmt.whereClause
        conj = list(w.args) if isinstance(w, ast.BoolExpr) and w.boolop == 0 else [w]
    fixed = set()
    for c in conj:
        if isinstance(c, ast.A_Expr) and isinstance(c.lexpr, ast.ColumnRef) and isinstance(c.rexpr, ast.A_Const) \
                and c.name[-1].sval == "=":
            fixed.add(c.lexpr.fields[-1].sval)
    keys = []
    for e in stmt.indexParams:
        k = e.name if e.name is not None else _norm(RawStream()(e.expr))
        if k not in fixed:
            keys.append(k)
    return (stmt.relation.relname, stmt.accessMethod or "btree", tuple(keys),
            frozenset(_norm(RawStream()(c)) for c in conj))


def matches(a: Shape, b: Shape) -> bool:
    n = min(len(a[2]), len(b[2]))
    return a[0] == b[0] and a[1] == b[1] and n >= 1 and a[2][:n] == b[2][:n] and a[3] == b[3]


def score(report: AdviceReport) -> tuple[float, float, list[str]]:
    expert = [shape(e) for e in EXPERT]
    mine = [shape(s.candidate.definition(s.name, concurrently=False, table_sql=s.candidate.table[1]))
            for s in report.suggestions]
    served = [shape(c.definition(concurrently=False, table_sql=c.table[1])) for c, _ in report.served]
    hits = [m for m in mine if any(matches(m, e) for e in expert)]
    recalled = [e for e in expert if any(matches(m, e) for m in mine + served)]
    missed = [d for d, e in zip(EXPERT, expert, strict=True) if e not in recalled]
    return len(hits) / max(len(mine), 1), len(recalled) / len(expert), missed


async def run_workload(conn: asyncpg.Connection, seed: int, scale: float, passes: int = 1) -> float:
    """Server execution time (ms) of the workload, from pg_stat_statements."""
    rng = random.Random(seed)
    await conn.execute("SELECT pg_stat_statements_reset()")
    for _ in range(passes):
        for q in WORKLOAD:
            for _ in range(q.calls):
                async with conn.transaction():
                    await conn.fetch(q.sql, *q.params(rng, scale))
    return float(await conn.fetchval(
        "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
        "WHERE query NOT LIKE '%pgcurator%' AND query NOT LIKE '%pg_stat_statements%' AND toplevel"))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_advice(conn: asyncpg.Connection, options: AdviceOptions) -> tuple[AdviceReport, float, float, float]:
    """The report, its wall time, the backend's CPU seconds (/proc) and the tagged statements' time."""
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    tagged_sql = ("SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
                  "WHERE query LIKE '%pgcurator%'")
    tagged0 = float(await conn.fetchval(tagged_sql))
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    report = await advise(conn, options)
    wall, cpu = time.monotonic() - t0, _cpu_seconds(pid) - cpu0
    tagged = float(await conn.fetchval(tagged_sql)) - tagged0
    return report, wall, cpu, tagged / 1000


async def with_indexes(conn: asyncpg.Connection, definitions: list[str], scale: float) -> float:
    names = []
    for d in definitions:
        stmt = parse_sql(d)[0].stmt
        names.append(stmt.idxname)
        await conn.execute(d.replace("CONCURRENTLY ", ""))
    await conn.execute("ANALYZE")
    await run_workload(conn, 1, scale)  # warm
    ms = await run_workload(conn, 2, scale)
    for n in names:
        await conn.execute(f'DROP INDEX "{n}"')
    return ms


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pgcurator-advice-"))
    debian = args.server == "debian"
    if debian:
        from pgcurator_devenv.debian_postgres import DebianPostgres
        pg: EmbeddedPostgres = DebianPostgres(tmp / "data", extra_settings={
            "shared_preload_libraries": "pg_stat_statements", "max_parallel_workers_per_gather": 0})
    else:
        pg = EmbeddedPostgres(tmp / "data", extra_settings={"max_parallel_workers_per_gather": 0})
    pg.start()
    try:
        pg.psql("CREATE DATABASE advice")
        conn = await asyncpg.connect(pg.dsn("advice"))
        await conn.execute("CREATE EXTENSION pg_stat_statements")
        if debian:
            await conn.execute("CREATE EXTENSION hypopg")
        else:
            await conn.execute("CREATE EXTENSION vector")
        await conn.execute(SCHEMA.replace("VECTOR_TYPE", "real[]" if debian else "halfvec(1536)"))
        t0 = time.monotonic()
        for s in data_sql(args.scale, "real" if debian else "halfvec"):
            await conn.execute(s)
        rows = {r[0]: int(r[1]) for r in await conn.fetch(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN "
            "('sessions', 'knowledge_sources', 'knowledge_chunks', 'articles')")}
        print(f"data: {rows} in {time.monotonic() - t0:.0f} s; server {await conn.fetchval('SHOW server_version')}")
        baseline = await run_workload(conn, 2, args.scale)  # also the observed workload
        observed = [Statement(q.sql, q.calls, 1.0) for q in WORKLOAD]
        results = {}
        for label, opts in (("pg_stat_statements", AdviceOptions()),
                            ("statement texts", AdviceOptions(statements=tuple(observed), measure=True))):
            if label == "pg_stat_statements":
                # a fresh connection: a statement asyncpg prepared before the reset would be stored
                # again with its literals (no parse, so no normalisation), flattering this mode
                app = await asyncpg.connect(pg.dsn("advice"))
                await run_workload(app, 3, args.scale)
                await app.close()
            results[label] = await timed_advice(conn, opts)
        expert_ms = await with_indexes(conn, EXPERT, args.scale)
        print(f"\nworkload: {len(WORKLOAD)} statements x {WORKLOAD[0].calls} calls; without added indexes "
              f"{baseline / 1000:.2f} s, with the expert set {expert_ms / 1000:.2f} s "
              f"({baseline / expert_ms:.1f}x)\n")
        print(f"{'advisor (source)':40} {'prec':>5} {'recall':>6} {'speed-up':>9} {'vs expert':>9} "
              f"{'wall s':>7} {'CPU s':>6} {'CPU s/table':>11} {'tagged s':>8}")
        for label, (report, wall, cpu, tagged) in results.items():
            prec, rec, missed = score(report)
            ms = await with_indexes(conn, [s.candidate.definition(s.name) for s in report.suggestions], args.scale)
            tables = max(len({s.candidate.table for s in report.suggestions}), 1)
            name = f"pgcurator {report.mode} ({label})"
            print(f"{name:40} {prec:5.2f} {rec:6.2f} {baseline / ms:8.1f}x {(baseline / ms) / (baseline / expert_ms):8.2f}x "
                  f"{wall:7.2f} {cpu:6.2f} {cpu / tables:11.3f} {tagged:8.2f}")
            for s in report.suggestions:
                measured = (f"; measured on the sample {s.measured_before_ms:.1f} -> {s.measured_after_ms or 0:.1f} ms"
                            if s.measured_before_ms is not None else "")
                print(f"    + {s.candidate.definition(s.name, concurrently=False)}  (gain {s.gain:.0%}{measured})")
            for d in missed:
                print(f"    - missed: {d}")
            for f in report.failures:
                print(f"    ! {f.candidate.definition(concurrently=False)}: {f.error}")
        print(f"{'Dexter (HypoPG)':40} not run: a Ruby gem, neither packaged by Debian nor on PyPI")
        await conn.close()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--server", choices=("embedded", "debian"), default="embedded")
    asyncio.run(main(p.parse_args()))
