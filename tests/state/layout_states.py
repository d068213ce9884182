"""PartitionPolicy with list and hash layouts and a second level: generated states and specs.

Columns: id bigint, region text (list key), k bigint (hash key / sub-level key). States hold some
of the declared partitions, foreign-named ones, ones with other values or another modulus, plain
(not sub-partitioned) children where the spec wants a second level, a DEFAULT with rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from hypothesis import strategies as st

from pgcurator.sql.quote import fit_identifier

from . import invariants as inv
from .harness import Harness, create_metadata, resource_name
from .partition_states import DB_SETTINGS, q
from .tally import bump, distinct

KIND = "PartitionPolicy"
REGIONS = ["eu", "us", "apac", "latam", "O'Hare"]


@dataclass
class LayoutCase:
    strategy: str  # list | hash
    spec: dict[str, Any]
    table_state: str = "partitioned"  # absent | partitioned | other_strategy
    existing: list[tuple[str, str, str]] = field(default_factory=list)  # (name, bound, shape: plain|hash2|range)
    default: str = "absent"  # absent | empty | rows
    metadata: str = "current"
    settings: dict[str, str] = field(default_factory=dict)


@st.composite
def layout_cases(draw: st.DrawFn) -> LayoutCase:
    strategy = draw(st.sampled_from(["list", "hash"]))
    spec: dict[str, Any] = {"table": {"schema": "st", "name": "orders"}, "strategy": strategy,
                            "timeouts": {"lockTimeout": "2s", "lockRetries": 1}}
    if strategy == "list":
        regions = draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=4, unique=True))
        parts = []
        for i, r in enumerate(regions):
            parts.append({"name": f"r{i}", "values": [r]})
        spec["list"] = {"column": "region", "partitions": parts}
        spec["defaultPartition"] = draw(st.booleans())
    else:
        spec["hash"] = {"column": "k", "modulus": draw(st.sampled_from([1, 2, 3, 4]))}
    sub = draw(st.sampled_from([None, "hash", "range"]))
    if sub == "hash":
        spec["subpartition"] = {"strategy": "hash", "hash": {"column": "id", "modulus": draw(st.sampled_from([2, 3]))}}
    elif sub == "range":
        spec["subpartition"] = {"strategy": "range", "range": {"column": "id", "width": 1000,
                                                               "premake": draw(st.integers(0, 2))}}
    if sub and strategy == "list" and draw(st.booleans()):
        spec["subpartition"]["only"] = [spec["list"]["partitions"][0]["name"]]
    case = LayoutCase(strategy, spec, draw(st.sampled_from(["absent", "partitioned", "partitioned", "partitioned",
                                                             "other_strategy"])))
    if case.table_state == "partitioned":
        if strategy == "list":
            for i, p in enumerate(spec["list"]["partitions"]):
                what = draw(st.sampled_from(["absent", "ours", "foreign", "other_values"]))
                if what == "absent":
                    continue
                name = fit_identifier("orders", f"_{p['name']}") if what != "foreign" else f"legacy_{i}"
                values = p["values"] if what != "other_values" else [f"x{i}"]
                bound = "FOR VALUES IN (" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"
                case.existing.append((name, bound, draw(st.sampled_from(["plain", "hash2", "range"]))))
        else:
            modulus = draw(st.sampled_from([spec["hash"]["modulus"], spec["hash"]["modulus"], 2, 4]))
            for r in range(modulus):
                if draw(st.booleans()):
                    name = fit_identifier("orders", f"_{r}") if draw(st.booleans()) else f"legacy_h{r}"
                    case.existing.append((name, f"FOR VALUES WITH (modulus {modulus}, remainder {r})",
                                          draw(st.sampled_from(["plain", "hash2", "range"]))))
        if strategy == "list":
            case.default = draw(st.sampled_from(["absent", "empty", "rows"]))
    keys = draw(st.lists(st.sampled_from(sorted(DB_SETTINGS)), max_size=2, unique=True))
    case.settings = {k: draw(st.sampled_from(DB_SETTINGS[k])) for k in keys}
    case.metadata = draw(st.sampled_from(["absent", "current"]))
    return case


async def build_layout(h: Harness, case: LayoutCase) -> None:
    await h.reset()
    admin = await h.admin()
    app = await h.app()
    if case.metadata == "current":
        await create_metadata(app)
    cols = "(id bigint NOT NULL, region text NOT NULL, k bigint NOT NULL, payload text DEFAULT 'x')"
    if case.table_state == "other_strategy":
        await app.execute(f"CREATE TABLE st.orders {cols} PARTITION BY RANGE (id)")
    elif case.table_state == "partitioned":
        key = "LIST (region)" if case.strategy == "list" else "HASH (k)"
        await app.execute(f"CREATE TABLE st.orders {cols} PARTITION BY {key}")
        for name, bound, shape in case.existing:
            sub = {"plain": "", "hash2": " PARTITION BY HASH (id)", "range": " PARTITION BY RANGE (id)"}[shape]
            await app.execute(f"CREATE TABLE st.{q(name)} PARTITION OF st.orders {bound}{sub}")
            if shape == "hash2":
                for r in range(2):
                    await app.execute(f"CREATE TABLE st.{q(name + f'_s{r}')} PARTITION OF st.{q(name)} "
                                      f"FOR VALUES WITH (modulus 2, remainder {r})")
            elif shape == "range":
                await app.execute(f"CREATE TABLE st.{q(name + '_s0')} PARTITION OF st.{q(name)} "
                                  "FOR VALUES FROM (0) TO (1000)")
        if case.default != "absent":
            await app.execute("CREATE TABLE st.orders_default PARTITION OF st.orders DEFAULT")
        if case.default == "rows":
            await app.execute("INSERT INTO st.orders (id, region, k) VALUES (1, 'eu', 1), (2, 'nowhere', 2)")
        for i, r in enumerate(REGIONS):  # a few rows wherever they fit
            try:
                async with app.transaction():
                    await app.execute("INSERT INTO st.orders (id, region, k) VALUES ($1, $2, $3)", 10 + i, r, i)
            except asyncpg.PostgresError:
                pass
    if case.settings:
        await admin.execute("; ".join(f"ALTER DATABASE {q(h.dbname)} SET {k} = '{v}'"
                                      for k, v in case.settings.items()))
    await h.fresh_pools()


async def probe_layout(conn: asyncpg.Connection, case: LayoutCase) -> list[str]:
    """Every declared value (list) or any key (hash) lands in a partition that is not the DEFAULT."""
    gaps: list[str] = []
    values: list[tuple[str, int]]
    if case.strategy == "list":
        values = [(v, 1) for p in case.spec["list"]["partitions"] for v in p["values"]]
    else:
        values = [("eu", k) for k in range(12)]
    tr = conn.transaction()
    await tr.start()
    try:
        for region, k in values:
            for id_ in (0, 999):  # inside the first sub-range, the only one a state's child may have
                bump(KIND, "gap probes inserted")
                try:
                    async with conn.transaction():
                        where = await conn.fetchval("INSERT INTO st.orders (id, region, k) VALUES ($1, $2, $3) "
                                                    "RETURNING tableoid::regclass::text", id_, region, k)
                    if str(where).endswith("_default"):
                        gaps.append(f"({region!r}, k={k}, id={id_}) falls into the DEFAULT partition")
                except asyncpg.PostgresError as exc:
                    gaps.append(f"({region!r}, k={k}, id={id_}): {exc.sqlstate} {exc}")
    finally:
        await tr.rollback()
    return gaps


async def step_layout(h: Harness, case: LayoutCase) -> None:
    admin = await h.admin()
    spec = case.spec
    distinct(KIND, "specs tried", spec)
    bump(KIND, "reconciles", 3)
    exists = case.table_state != "absent"
    before_rel = await inv.relations(admin, "st")
    digest = await admin.fetchrow("SELECT count(*), coalesce(sum(hashtext(id::text || region || k::text)), 0) "
                                  "FROM st.orders") if exists else None
    dry = await h.apply(KIND, {**spec, "dryRun": True})
    inv.no_internal_error(KIND, dry)
    inv.untouched(KIND, before_rel, await inv.relations(admin, "st"), "st (dry run)")
    mark = await inv.history_mark(admin)
    real = await h.apply(KIND, spec)
    inv.no_internal_error(KIND, real)
    ran = await inv.history_since(admin, resource_name(KIND), mark)
    inv.no_planned_statement_fails(KIND, real, ran)
    if dry.reason in ("DryRun", "UpToDate") and not real.degraded:
        inv.dry_plan_equals_run(KIND, dry, ran)
    allowed = {n for n, r in before_rel.items() if r.bound == "DEFAULT"} | {"orders"}
    inv.untouched(KIND, before_rel, await inv.relations(admin, "st"), "st", allowed)
    if exists:
        after = await admin.fetchrow("SELECT count(*), coalesce(sum(hashtext(id::text || region || k::text)), 0) "
                                     "FROM st.orders")
        inv.rows_conserved(KIND, tuple(digest or ()), tuple(after), "st.orders")  # type: ignore[arg-type]
    if real.ready:
        inv.counted(KIND)
        gaps = await probe_layout(admin, case)
        if gaps:
            raise inv.Broken("every declared value has its partition while Ready", "; ".join(gaps[:4]), real)
        again = await h.apply(KIND, {**spec, "dryRun": True})
        inv.no_internal_error(KIND, again)
        inv.plans_nothing(KIND, again)
