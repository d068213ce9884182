"""Planner checks of index candidates: hypothetical indexes (HypoPG) or a small random sample.

Both run inside one transaction that is always rolled back. Every candidate is checked on its
own, under a savepoint: a candidate that fails (a key too wide for a B-tree, an operator class
that does not exist) is recorded as a failure and the others go on. Costs are the planner's
generic-plan costs (PREPARE with plan_cache_mode=force_generic_plan, so `$1` placeholders need
no values; works on every supported server), "before" with the indexes that exist counted.

- HypoPG: hypopg_create_index() on the real table; the real statistics, no copy at all.
- Sample: a temporary copy of a random sample (TABLESAMPLE, REPEATABLE so runs agree) of only
  the columns the workload names; wide columns (TOASTed vectors) are copied as their nullness
  only, never detoasted. The existing indexes are rebuilt on the copy, then each candidate is
  built for real on it, which is also how a key too wide to build is found.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

import asyncpg
from pglast import ast, parse_sql
from pglast.stream import RawStream

from ..catalog.advice import TAG, IndexRow, Statement, TableKey, TableStats
from ..planner.advice import WIDE_BYTES, Candidate
from ..planner.advice_parse import (
    measurable,
    parameter_count,
    referenced_columns,
    rewrite_table,
    single_statement,
)
from ..sql.quote import ident, qualified

log = logging.getLogger("pgcurator")
SCRATCH = "pgcurator_sample"
VECTOR_TYPES = ("vector", "halfvec", "sparsevec")
BERNOULLI_UP_TO = 10_000_000  # rows; above, block sampling (SYSTEM) keeps the read small
_names = count()


@dataclass
class Failure:
    candidate: Candidate
    error: str


def _index_names(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        for k, v in plan.items():
            if k == "Index Name" and isinstance(v, str):
                yield v
            else:
                yield from _index_names(v)
    elif isinstance(plan, list):
        for v in plan:
            yield from _index_names(v)


class Explainer:
    """Generic-plan EXPLAIN of one statement text, each under its own savepoint."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def plan(self, sql: str) -> Any | None:
        name = f"pgcurator_p{next(_names)}"
        params = parameter_count(sql)
        await self.conn.execute("SAVEPOINT pgcurator_explain")
        try:
            await self.conn.execute(f"{TAG} PREPARE {name} AS {sql}")
            try:
                args = f"({', '.join(['NULL'] * params)})" if params else ""
                raw = await self.conn.fetchval(f"{TAG} EXPLAIN (FORMAT JSON) EXECUTE {name}{args}")
            finally:
                await self.conn.execute(f"DEALLOCATE {name}")
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("EXPLAIN of a workload statement failed: %s", exc)
            await self.conn.execute("ROLLBACK TO SAVEPOINT pgcurator_explain")
            return None
        await self.conn.execute("RELEASE SAVEPOINT pgcurator_explain")
        return json.loads(raw) if isinstance(raw, str) else raw

    async def cost(self, sql: str | None) -> tuple[float | None, set[str]]:
        if sql is None:
            return None, set()
        doc = await self.plan(sql)
        if doc is None:
            return None, set()
        return float(doc[0]["Plan"]["Total Cost"]), set(_index_names(doc))


class TableCheck:
    """Costs of a table's statements without and with candidates. Subclasses say how an index
    comes to exist for the planner and how statements are pointed at the table."""

    def __init__(self, conn: Any, table: TableKey, known: Mapping[TableKey, Any]) -> None:
        self.conn, self.table, self.known = conn, table, known
        self.explain = Explainer(conn)

    def sql(self, query: str) -> str | None:
        return single_statement(query)

    async def create(self, c: Candidate, n: int) -> str:
        raise NotImplementedError

    async def drop(self, handle: str) -> None:
        raise NotImplementedError

    async def costs(self, statements: Sequence[Statement]) -> list[tuple[float | None, set[str]]]:
        return [await self.explain.cost(self.sql(s.query)) for s in statements]

    async def measure(self, statements: Sequence[Statement]) -> list[float | None]:
        """Execution time (ms) of each statement, where running it is allowed; None elsewhere."""
        return [None for _ in statements]

    async def measured_with(self, c: Candidate, n: int, statements: Sequence[Statement]) -> list[float | None]:
        await self.conn.execute(f"SAVEPOINT pgcurator_m{n}")
        try:
            await self.create(c, n)
            return await self.measure(statements)
        except (asyncpg.PostgresError, asyncpg.InterfaceError):
            return [None for _ in statements]
        finally:
            await self.conn.execute(f"ROLLBACK TO SAVEPOINT pgcurator_m{n}")

    async def with_candidate(self, c: Candidate, n: int,
                             statements: Sequence[Statement]) -> list[float | None] | Failure:
        await self.conn.execute(f"SAVEPOINT pgcurator_c{n}")
        try:
            await self.create(c, n)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.conn.execute(f"ROLLBACK TO SAVEPOINT pgcurator_c{n}")
            return Failure(c, f"{type(exc).__name__}: {exc}")
        try:
            return [cost for cost, _ in await self.costs(statements)]
        finally:
            await self.conn.execute(f"ROLLBACK TO SAVEPOINT pgcurator_c{n}")

    async def used_together(self, chosen: Sequence[tuple[int, Candidate]],
                            statements: Sequence[Statement]) -> set[int]:
        """Which of the chosen candidates the planner uses when all exist at once."""
        await self.conn.execute("SAVEPOINT pgcurator_all")
        try:
            handles: dict[str, int] = {}
            for n, c in chosen:
                try:
                    await self.conn.execute(f"SAVEPOINT pgcurator_one{n}")
                    handles[await self.create(c, n)] = n
                    await self.conn.execute(f"RELEASE SAVEPOINT pgcurator_one{n}")
                except (asyncpg.PostgresError, asyncpg.InterfaceError):
                    await self.conn.execute(f"ROLLBACK TO SAVEPOINT pgcurator_one{n}")
            used: set[int] = set()
            for _, names in await self.costs(statements):
                for name in names:
                    for h, n in handles.items():
                        if h in name:
                            used.add(n)
            return used
        finally:
            await self.conn.execute("ROLLBACK TO SAVEPOINT pgcurator_all")


class HypoCheck(TableCheck):
    async def create(self, c: Candidate, n: int) -> str:
        oid = await self.conn.fetchval(f"{TAG} SELECT indexrelid FROM hypopg_create_index($1)",
                                       c.definition(concurrently=False))
        return f"<{oid}>"


class SampleCheck(TableCheck):
    def __init__(self, conn: Any, table: TableKey, known: Mapping[TableKey, Any]) -> None:
        super().__init__(conn, table, known)
        self.scratch = f"{SCRATCH}_{next(_names)}"
        self.sample_rows = 0
        self.copied: set[str] = set()

    def sql(self, query: str) -> str | None:
        return rewrite_table(query, self.table, self.scratch, self.known)

    async def measure(self, statements: Sequence[Statement]) -> list[float | None]:
        """Runs only what `measurable` allows (one parameter-free SELECT of this table), and only
        on the copy: EXPLAIN ANALYZE's execution time."""
        out: list[float | None] = []
        for st in statements:
            sql = self.sql(st.query) if measurable(st.query) else None
            if sql is None or f"pg_temp.{self.scratch}" not in sql:  # only ever the copy
                out.append(None)
                continue
            await self.conn.execute("SAVEPOINT pgcurator_run")
            try:
                raw = await self.conn.fetchval(f"{TAG} EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
                doc = json.loads(raw) if isinstance(raw, str) else raw
                out.append(float(doc[0]["Execution Time"]))
                await self.conn.execute("RELEASE SAVEPOINT pgcurator_run")
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.conn.execute("ROLLBACK TO SAVEPOINT pgcurator_run")
                out.append(None)
        return out

    async def create(self, c: Candidate, n: int) -> str:
        name = f"pgcurator_cand_{n}"
        await self.conn.execute(f"{TAG} " + c.definition(name, concurrently=False,
                                                        table_sql=f"pg_temp.{ident(self.scratch)}"))
        return name

    async def copy(self, stats: TableStats, statements: Sequence[Statement], candidates: Sequence[Candidate],
                   existing: Sequence[IndexRow], target_rows: int) -> None:
        """The sample: only the columns the statements name (all for `*`), wide ones as nullness."""
        wanted: set[str] = set()
        for st in statements:
            cols = referenced_columns(st.query, self.table, self.known)
            wanted |= set(stats.columns) if cols is None else cols
        keys = {k for c in candidates for k in c.key_columns()}
        exprs: list[str] = []
        for col in sorted(wanted):
            s = stats.columns[col]
            if col not in keys and (s.avg_width > WIDE_BYTES or s.type.split("(")[0] in VECTOR_TYPES):
                # only whether it is NULL survives: enough for IS [NOT] NULL tests, and nothing is detoasted
                exprs.append(f"CASE WHEN {ident(col)} IS NOT NULL THEN true END AS {ident(col)}")
            else:
                exprs.append(ident(col))
                self.copied.add(col)
        if not exprs:
            exprs = ["1 AS pgcurator_none"]
        pct = min(100.0, 100.0 * target_rows / max(stats.rows, 1.0))
        method = "BERNOULLI" if stats.rows <= BERNOULLI_UP_TO else "SYSTEM"
        sample = f" TABLESAMPLE {method} ({pct:.6f}) REPEATABLE (15)" if pct < 100 else ""
        await self.conn.execute(
            f"{TAG} CREATE TEMP TABLE {ident(self.scratch)} ON COMMIT DROP AS "
            f"SELECT {', '.join(exprs)} FROM {qualified(*self.table)}{sample}")
        self.sample_rows = int(await self.conn.fetchval(f"{TAG} SELECT count(*) FROM pg_temp.{ident(self.scratch)}"))
        await self.conn.execute(f"{TAG} ANALYZE pg_temp.{ident(self.scratch)}")
        for row in existing:  # "before" counts the indexes that exist
            sql = self._on_scratch(row.definition)
            if sql is None:
                continue
            await self.conn.execute("SAVEPOINT pgcurator_existing")
            try:
                await self.conn.execute(f"{TAG} {sql}")
                await self.conn.execute("RELEASE SAVEPOINT pgcurator_existing")
            except asyncpg.PostgresError:
                await self.conn.execute("ROLLBACK TO SAVEPOINT pgcurator_existing")

    def _on_scratch(self, definition: str) -> str | None:
        """An existing index's definition pointed at the copy, when the copy has all its columns."""
        stmt = parse_sql(definition)[0].stmt
        if not isinstance(stmt, ast.IndexStmt):
            return None
        for n in _walk(stmt):
            if isinstance(n, ast.ColumnRef):
                name = getattr((n.fields or (None,))[-1], "sval", None)
                if name not in self.copied:
                    return None
            if isinstance(n, ast.IndexElem) and n.name is not None and n.name not in self.copied:
                return None
        stmt.idxname = None
        stmt.unique = False
        stmt.concurrent = False
        stmt.relation = ast.RangeVar(relname=self.scratch, schemaname="pg_temp", inh=True, relpersistence="t")
        return RawStream()(stmt)


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for s in getattr(type(node), "__slots__", {}):
            v = getattr(node, s, None)
            if isinstance(v, (ast.Node, list, tuple)):
                yield from _walk(v)
