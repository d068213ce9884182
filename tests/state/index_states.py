"""Generated states and specs for IndexPolicy and VectorIndex, and one explored step of each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from hypothesis import strategies as st

from . import invariants as inv
from .harness import Harness, Result, create_metadata, resource_name
from .partition_states import DB_SETTINGS, q
from .tally import bump, distinct

# Declarations an IndexPolicy may carry (all valid); the state may hold the same names with
# another definition.
DECLS: dict[str, dict[str, Any]] = {
    "items_k_idx": {"columns": [{"column": "k"}]},
    "items_k_desc_idx": {"columns": [{"column": "k", "order": "desc", "nulls": "last"}]},
    "items_partial_idx": {"columns": [{"column": "k"}], "where": "k > 10"},
    "items_lower_idx": {"columns": [{"expression": "lower(payload)"}]},
    "items_incl_idx": {"columns": [{"column": "k"}], "include": ["payload"]},
    "items_brin_idx": {"columns": [{"column": "id"}], "method": "brin"},
}
OTHER_DEFINITION = "(payload)"  # what a differently defined index of the same name is built on


@dataclass
class IndexCase:
    table_state: str  # absent | plain | partitioned
    declared: list[str]
    existing: dict[str, str] = field(default_factory=dict)  # name -> same | different | invalid
    other_resource: str | None = None  # an index another IndexPolicy declares on the same table
    prune: bool = False
    parallelism: int = 1
    metadata: str = "absent"
    settings: dict[str, str] = field(default_factory=dict)
    partitions: int = 2
    detach_one: bool = False

    def spec(self) -> dict[str, Any]:
        return {"table": {"schema": "st", "name": "items"},
                "indexes": [{"name": n, **DECLS[n]} for n in self.declared],
                "prune": self.prune, "parallelism": self.parallelism,
                "timeouts": {"lockTimeout": "2s", "lockRetries": 1}}


@st.composite
def index_cases(draw: st.DrawFn) -> IndexCase:
    names = sorted(DECLS)
    declared = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    case = IndexCase(draw(st.sampled_from(["absent", "plain", "plain", "partitioned", "partitioned"])), declared)
    for n in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        case.existing[n] = draw(st.sampled_from(["same", "different", "invalid"]))
    free = [n for n in names if n not in declared]
    if free and draw(st.booleans()):
        case.other_resource = draw(st.sampled_from(free))
    case.prune = draw(st.booleans())
    case.parallelism = draw(st.integers(1, 2))
    case.metadata = draw(st.sampled_from(["absent", "current"]))
    keys = draw(st.lists(st.sampled_from(sorted(DB_SETTINGS)), max_size=2, unique=True))
    case.settings = {k: draw(st.sampled_from(DB_SETTINGS[k])) for k in keys}
    case.partitions = draw(st.integers(0, 3))
    case.detach_one = draw(st.booleans())
    return case


def _index_sql(name: str, how: str) -> str:
    decl = DECLS[name]
    if how == "different":
        return f"CREATE INDEX {q(name)} ON st.items {OTHER_DEFINITION}"
    cols = []
    for c in decl["columns"]:
        col = c.get("expression") or q(c["column"])
        if "expression" in c:
            col = f"({col})"
        if c.get("order"):
            col += f" {c['order'].upper()} NULLS {c['nulls'].upper()}"
        cols.append(col)
    sql = f"CREATE INDEX {q(name)} ON st.items USING {decl.get('method', 'btree')} ({', '.join(cols)})"
    if decl.get("include"):
        sql += " INCLUDE (" + ", ".join(q(c) for c in decl["include"]) + ")"
    if decl.get("where"):
        sql += f" WHERE {decl['where']}"
    return sql


async def build_index_case(h: Harness, case: IndexCase) -> None:
    await h.reset()
    admin = await h.admin()
    app = await h.app()
    if case.metadata == "current":
        await create_metadata(app)
    cols = "(id bigint NOT NULL, k int, payload text)"
    # Another team's table of the same name elsewhere, with an index of a declared name.
    await app.execute(f"CREATE TABLE other.items {cols}; CREATE INDEX items_k_idx ON other.items (payload)")
    if case.table_state != "absent":
        part = " PARTITION BY RANGE (id)" if case.table_state == "partitioned" else ""
        await app.execute(f"CREATE TABLE st.items {cols}{part}")
        if part:
            for i in range(case.partitions):
                await app.execute(f"CREATE TABLE st.items_{i} PARTITION OF st.items FOR VALUES FROM ({i * 100}) "
                                  f"TO ({i * 100 + 100})")
            rows = case.partitions * 100
        else:
            rows = 300
        if rows:
            await app.execute(f"INSERT INTO st.items SELECT g, g % 50, 'P' || g FROM generate_series(0, {rows - 1}) g")
        for name, how in case.existing.items():
            if how == "invalid" and part:  # ON ONLY: invalid until every partition has its index attached
                await app.execute(_index_sql(name, how).replace(" ON st.items ", " ON ONLY st.items "))
                continue
            await app.execute(_index_sql(name, how))
            if how == "invalid":  # what a failed CREATE INDEX CONCURRENTLY leaves behind
                await admin.execute("UPDATE pg_catalog.pg_index SET indisvalid = false WHERE indexrelid = $1::regclass",
                                    f"st.{q(name)}")
        if part and case.partitions and case.detach_one and "invalid" in case.existing.values():
            # an ON ONLY index stays invalid once the partition it waited for is gone
            await app.execute(f"ALTER TABLE st.items DETACH PARTITION st.items_{case.partitions - 1}")
    if case.settings:
        await admin.execute("; ".join(f"ALTER DATABASE {q(h.dbname)} SET {k} = '{v}'"
                                      for k, v in case.settings.items()))
    await h.fresh_pools()


async def index_defs(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[str, bool]]:
    return {r[0]: (r[1], r[2]) for r in await conn.fetch(
        "SELECT c.relname::text, pg_get_indexdef(c.oid), x.indisvalid FROM pg_catalog.pg_index x "
        "JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1", schema)}


async def step_index(h: Harness, case: IndexCase) -> tuple[Result, Result]:
    """Another resource (if any), then dry run, real run, dry run again, with the invariants."""
    kind = "IndexPolicy"
    admin = await h.admin()
    if case.other_resource is not None and case.table_state != "absent":
        other = await h.apply(kind, {"table": {"schema": "st", "name": "items"},
                                     "indexes": [{"name": case.other_resource, **DECLS[case.other_resource]}],
                                     "timeouts": {"lockTimeout": "2s"}}, name="other-policy")
        inv.no_internal_error(kind, other)
    spec = case.spec()
    distinct(kind, "specs tried", spec)
    bump(kind, "reconciles", 3)
    other_before = await index_defs(admin, "other")
    mine_before = await index_defs(admin, "st")
    digest = (await inv.row_digest(admin, "st.items") if case.table_state != "absent" else None)
    dry = await h.apply(kind, {**spec, "dryRun": True})
    inv.no_internal_error(kind, dry)
    inv.counted(kind)
    if await index_defs(admin, "st") != mine_before:
        raise inv.Broken("a dry run changes nothing", "indexes changed during a dry run", dry)
    mark = await inv.history_mark(admin)
    real = await h.apply(kind, spec)
    inv.no_internal_error(kind, real)
    ran = await inv.history_since(admin, resource_name(kind), mark)
    inv.statements_within_lock_timeout(kind, ran, 2.0)
    if dry.reason in ("DryRun", "UpToDate") and not real.degraded and all(r["outcome"] == "ok" for r in ran):
        inv.counted(kind)
        # Partition builds run in parallel lanes: the order may differ, the statements may not.
        if Counter(dry.status.get("plan") or []) != Counter(inv.normalise_history(ran)):
            raise inv.Broken("dry-run plan equals what runs",
                             f"planned {dry.status.get('plan')}, ran {inv.normalise_history(ran)}", dry)
    inv.counted(kind)
    if await index_defs(admin, "other") != other_before:
        raise inv.Broken("objects owned by others untouched", "an index of other.items changed", real)
    if case.other_resource is not None and case.table_state != "absent":
        inv.counted(kind)
        if case.other_resource not in await index_defs(admin, "st"):
            raise inv.Broken("objects owned by others untouched",
                             f"{case.other_resource}, declared by another IndexPolicy, is gone", real)
    if digest is not None:
        inv.rows_conserved(kind, digest, await inv.row_digest(admin, "st.items"), "st.items")
    again = real
    if real.ready:
        again = await h.apply(kind, {**spec, "dryRun": True})
        inv.no_internal_error(kind, again)
        inv.plans_nothing(kind, again)
        inv.counted(kind)
        defs = await index_defs(admin, "st")
        bad = [n for n in case.declared if n not in defs or not defs[n][1]]
        if bad:
            raise inv.Broken("Ready means every declared index exists and is valid", f"missing or invalid: {bad}", real)
    return real, again
