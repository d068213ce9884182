"""Range PartitionPolicy with a second level: generated specs and states, two runs apart in time.

Specs: a range first level (time keys in several zones, or bigint) with no sub-level, a hash or
range sub-level on another column (id), or a range sub-level on the first level's own column (k)
whose grid nests in the parent's (year/month, 1000/100) or does not (month/week, a day of
Asia/Kolkata in UTC-aligned 6 hours, 1000/300). States: first-level partitions with all, some,
none or only the first of their leaves (what an older planner left), plain (not sub-partitioned)
ones, foreign-named ones, a plain table named like a leaf the policy would create, a DEFAULT with
rows; or a plain table to convert. The second run comes a period or more later (for bigint: after
a row with a higher key)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pydantic
from hypothesis import reject
from hypothesis import strategies as st

from pgcurator.models.partition import PartitionPolicySpec, RangeSpec
from pgcurator.planner.partition import range_name
from pgcurator.sql.quote import fit_identifier

from .harness import Harness
from .partition_states import (
    TIME_ZONES,
    PartitionCase,
    _insert_if_it_fits,
    build,
    grid_of,
    instants,
    key_values,
    literal,
    period_at,
    q,
)

# (first level, same-column sub-level): nesting and non-nesting grids, few leaves per parent.
TIME_PAIRS = [("1 year", "3 months"), ("1 year", "1 month"), ("3 months", "1 month"), ("1 month", "1 week"),
              ("1 month", "10 days"), ("1 week", "2 days"), ("1 day", "6 hours"), ("1 day", "5 hours"),
              ("2 days", "12 hours")]
INT_PAIRS = [(1000, 100), (1000, 300), (100, 7), (10, 3)]
# Roughly one first-level period, to move `now` a period or more between the runs.
APPROX = {"year": timedelta(days=366), "month": timedelta(days=31), "week": timedelta(days=7),
          "day": timedelta(days=1), "hour": timedelta(hours=1)}
SHAPES = ["plain", "all", "some", "none", "first", "hash", "idrange"]


@dataclass
class RangeSubCase:
    base: PartitionCase  # table, key type, spec, now, table state; its parts are laid out here
    sub: str  # none | hash | idrange | same
    shapes: list[tuple[int, str, str, int, tuple[bool, ...]]] = field(default_factory=list)
    # (period offset from now's, naming ours|foreign, shape, rows, which leaves for "some")
    default: str = "absent"  # absent | empty | rows
    loose_leaf: bool = False
    later: timedelta = timedelta(0)  # how much later the second run is (time keys)
    key_jump: int = 0  # periods the highest key moves before the second run (bigint)
    settings: dict[str, str] = field(default_factory=dict)  # never set: the other suites vary them

    def label(self) -> dict[str, Any]:
        return {**self.base.label(), "sub": self.sub, "sh": self.shapes, "d": self.default, "ll": self.loose_leaf,
                "later": str(self.later), "j": self.key_jump}


@st.composite
def range_sub_cases(draw: st.DrawFn) -> RangeSubCase:
    table = draw(st.sampled_from(["events", "Event Logs", "ev_" + "x" * 52]))
    key_type = draw(st.sampled_from(["timestamptz", "timestamptz", "timestamp", "date", "bigint"]))
    # The first of a list is what hypothesis shrinks to and draws most: the subject first.
    sub_kind = draw(st.sampled_from(["same", "same", "same", "hash", "idrange", "none"]))
    premake = draw(st.integers(0, 2))
    tz = draw(st.sampled_from(TIME_ZONES))
    if key_type == "bigint":
        width, sub_width = draw(st.sampled_from(INT_PAIRS))
        first: dict[str, Any] = {"column": "k", "width": width, "premake": premake}
        second: dict[str, Any] = {"column": "k", "width": sub_width, "premake": draw(st.integers(0, 2))}
    else:
        pairs = [p for p in TIME_PAIRS if key_type != "date" or "hour" not in p[1]]
        interval, sub_interval = draw(st.sampled_from(pairs))
        first = {"column": "k", "interval": interval, "timeZone": tz, "premake": premake}
        # Mostly the parent's zone; sometimes another (then no grid nests).
        sub_tz = tz if draw(st.integers(0, 3)) else draw(st.sampled_from(TIME_ZONES))
        second = {"column": "k", "interval": sub_interval, "timeZone": sub_tz, "premake": draw(st.integers(0, 2))}
    spec: dict[str, Any] = {"table": {"schema": "st", "name": table}, "range": first,
                            "timeouts": {"lockTimeout": "2s", "lockRetries": 1}}
    if sub_kind == "hash":
        spec["subpartition"] = {"strategy": "hash", "hash": {"column": "id", "modulus": draw(st.sampled_from([2, 3]))}}
    elif sub_kind == "idrange":
        spec["subpartition"] = {"strategy": "range", "range": {"column": "id", "width": 1000,
                                                               "premake": draw(st.integers(0, 1))}}
    elif sub_kind == "same":
        spec["subpartition"] = {"strategy": "range", "range": second}
    if draw(st.integers(0, 2)) == 0:
        spec["defaultPartition"] = True
        if draw(st.booleans()):
            spec["defaultRows"] = {"move": True, "batchRows": draw(st.sampled_from([1, 1000]))}
    if draw(st.integers(0, 3)) == 0:
        spec["retention"] = {"keep": draw(st.integers(1, 3)), "action": draw(st.sampled_from(["drop", "detach"]))}
    if draw(st.integers(0, 4)) == 0:
        spec["template"] = {"indexes": [{"name": "k_idx", "columns": ["k"]}]}
    try:
        PartitionPolicySpec.model_validate({"database": {"secretName": "x"}, **spec})
    except pydantic.ValidationError:
        reject()
    now = draw(instants(tz if key_type != "bigint" else "UTC"))
    state = draw(st.sampled_from(["partitioned"] * 9 + ["plain"] * 2 + ["absent"]))
    if state == "plain":  # converted online: the first level and its sub-level built beside it, then swapped
        spec["convert"] = {"enabled": True, **({"dropOriginal": True} if draw(st.booleans()) else {})}
    base = PartitionCase(table, key_type, spec, now, state, state_range=first,
                         metadata=draw(st.sampled_from(["current", "current", "absent"])))
    case = RangeSubCase(base, sub_kind)
    if state == "plain":
        base.plain_rows = draw(st.integers(0, 3))
    if state == "partitioned":
        # Shapes that fit the spec most of the time, and now and then one that does not.
        fitting = {"none": ["plain"], "hash": ["hash"], "idrange": ["idrange"],
                   "same": ["all", "some", "none", "first", "first"]}[sub_kind]
        # now and then one partition of a shape the spec does not declare (another team's, an older spec's)
        odd = draw(st.sampled_from([None, None, None, *range(-2, premake + 2)]))
        for k in range(-2, premake + 2):
            what = draw(st.sampled_from(["absent", "ours", "ours", "ours", "foreign"]))
            if what == "absent":
                continue
            shape = draw(st.sampled_from(SHAPES if k == odd else fitting))
            mask = tuple(draw(st.lists(st.booleans(), min_size=16, max_size=16))) if shape == "some" else ()
            case.shapes.append((k, what, shape, draw(st.integers(0, 2)), mask))
        case.default = draw(st.sampled_from(["absent", "empty", "rows"]))
        case.loose_leaf = sub_kind == "same" and draw(st.integers(0, 4)) == 0
    if key_type == "bigint":
        case.key_jump = draw(st.sampled_from([1, 1, 2, 5]))
    else:
        unit = first["interval"].split()[1].rstrip("s")
        n = int(first["interval"].split()[0])
        case.later = draw(st.sampled_from([1, 1, 2])) * n * APPROX[unit] + timedelta(
            minutes=draw(st.sampled_from([0, 1, 90, 600])))
    return case


# --- building ----------------------------------------------------------------------------------


def pieces(sub: dict[str, Any], lo: Any, hi: Any) -> list[tuple[Any, Any, Any, bool]]:
    """(lower, upper, sub-period start, whole?) of the sub-grid's periods over [lo, hi), cut at its
    edges (computed here on the suite's own grid, not with the planner's pieces_within)."""
    g = grid_of(sub)
    out = []
    cur = period_at(sub, lo, 0)[0]
    while cur < hi and len(out) < 400:
        nxt = cur + g.width if isinstance(cur, int) else g.shift(cur, 1)  # type: ignore[union-attr,arg-type]
        out.append((max(cur, lo), min(nxt, hi), cur, cur >= lo and nxt <= hi))
        cur = nxt
    return out


async def _try(app: Any, sql: str) -> bool:
    """Run DDL that may be refused (an empty wall-clock range, an overlap): the state just lacks it."""
    import asyncpg

    try:
        async with app.transaction():
            await app.execute(sql)
        return True
    except asyncpg.PostgresError:
        return False


async def build_range_sub(h: Harness, case: RangeSubCase) -> None:
    b = case.base
    await build(h, dataclasses.replace(b, parts=[], default="absent", loose_table=False))
    if b.table_state == "plain":  # a conversion copies and verifies batches by a key holding both levels' columns
        await (await h.app()).execute(f"ALTER TABLE st.{q(b.table)} ADD PRIMARY KEY (id, k)")
    if b.table_state != "partitioned":
        return
    app = await h.app()
    t, ctype, r = q(b.table), b.column_type, b.spec["range"]
    tz = r.get("timeZone", "UTC")
    rspec = RangeSpec.model_validate(r)
    same = (b.spec.get("subpartition") or {}).get("range") or {}
    sub: dict[str, Any]
    if same.get("column") == "k":
        sub = same
    elif "width" in r:  # a state's own sub-level on k where the spec has none there: halves
        sub = {"column": "k", "width": max(1, int(r["width"]) // 2), "premake": 0}
    else:
        unit = r["interval"].split()[1].rstrip("s")  # a few leaves per parent
        finer = {"year": "3 months", "month": "1 week", "week": "2 days"}.get(
            unit, "1 day" if b.key_type == "date" else "6 hours")
        sub = {"column": "k", "interval": finer, "timeZone": tz, "premake": 0}
    sub_spec = RangeSpec.model_validate(sub)
    sub_tz = sub.get("timeZone", "UTC")
    anchor: Any = b.now if b.key_type != "bigint" else 0
    for i, (k, naming, shape, rows, mask) in enumerate(case.shapes):
        try:
            lo, hi = period_at(r, anchor, k)
        except (OverflowError, ValueError):
            continue
        name = range_name(b.table, rspec, lo) if naming == "ours" else fit_identifier(b.table[:30], f"_old_{i}")
        by = {"plain": "", "hash": " PARTITION BY HASH (id)", "idrange": " PARTITION BY RANGE (id)"}.get(
            shape, " PARTITION BY RANGE (k)")
        if not await _try(app, f"CREATE TABLE st.{q(name)} PARTITION OF st.{t} FOR VALUES FROM "
                               f"({literal(lo, ctype, tz)}) TO ({literal(hi, ctype, tz)}){by}"):
            continue
        if shape == "hash":
            for rem in range(2):
                await app.execute(f"CREATE TABLE st.{q(fit_identifier(name, f'_{rem}'))} PARTITION OF st.{q(name)} "
                                  f"FOR VALUES WITH (modulus 2, remainder {rem})")
        elif shape == "idrange":
            await app.execute(f"CREATE TABLE st.{q(fit_identifier(name, '_p0'))} PARTITION OF st.{q(name)} "
                              "FOR VALUES FROM (0) TO (1000)")
        elif shape in ("all", "some", "first"):
            try:
                leaves = pieces(sub, lo, hi)
            except (OverflowError, ValueError):
                leaves = []
            for j, (plo, phi, start, whole) in enumerate(leaves):
                if (shape == "first" and j >= 2) or (shape == "some" and not mask[j % len(mask)]):
                    continue
                leaf = range_name(name, sub_spec, start) if whole else fit_identifier(name, f"_c{j}")
                await _try(app, f"CREATE TABLE st.{q(leaf)} PARTITION OF st.{q(name)} FOR VALUES FROM "
                                f"({literal(plo, ctype, sub_tz)}) TO ({literal(phi, ctype, sub_tz)})")
        for v in key_values(b, lo, hi, rows, tz):
            await _insert_if_it_fits(app, t, v)
    if case.default != "absent":
        await app.execute(f"CREATE TABLE st.{q(fit_identifier(b.table, '_default'))} PARTITION OF st.{t} DEFAULT")
    if case.default == "rows":  # in the current period, wherever nothing else holds it
        try:
            lo, hi = period_at(r, anchor, 0)
            for v in key_values(b, lo, hi, 2, tz):
                await _insert_if_it_fits(app, t, v)
        except (OverflowError, ValueError):
            pass
    if case.loose_leaf:
        # Someone's plain table named like the leaf the policy would create for now's sub-period.
        try:
            lo, _ = period_at(r, anchor, 0)
            slo, _ = period_at(sub, b.now if b.key_type != "bigint" else 0, 0)
        except (OverflowError, ValueError):
            return
        # Like one detached by hand: the table's columns, one row of its own.
        leaf = range_name(range_name(b.table, rspec, lo), sub_spec, slo)
        if await _try(app, f"CREATE TABLE st.{q(leaf)} (LIKE st.{t} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"):
            for v in key_values(b, slo, period_at(sub, slo, 0)[1], 1, sub.get("timeZone", "UTC")):
                await _try(app, f"INSERT INTO st.{q(leaf)} (id, k) VALUES (1, {v})")
    await h.fresh_pools()


async def raise_highest_key(h: Harness, case: RangeSubCase) -> None:
    """The application writes a row `key_jump` periods past the highest key (if a partition takes it)."""
    app = await h.app()
    t = q(case.base.table)
    if await app.fetchval("SELECT to_regclass($1) IS NULL", f"st.{t}"):
        return
    top = await app.fetchval(f"SELECT max(k) FROM st.{t}") or 0
    await _insert_if_it_fits(app, t, str(int(top) + case.key_jump * int(case.base.spec["range"]["width"])))
