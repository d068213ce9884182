"""Naming, bounds and the statements that build new children (and their second level)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import PartitionInfo
from ..models.partition import ListPartition, PartitionPolicySpec, RangeSpec, SubpartitionSpec
from ..sql.quote import fit_identifier, ident, literal, qualified
from .ranges import (
    Bound,
    IntGrid,
    Period,
    Span,
    TimeGrid,
    Value,
    clamp_to_type,
    clip,
    key_suffix,
    render_bound,
    render_range,
    span,
)

LIKE_OPTIONS = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING GENERATED INCLUDING COMMENTS"


def default_partition_name(table: str) -> str:
    return fit_identifier(table, "_default")


def grid_of(r: RangeSpec) -> TimeGrid:
    n, unit = r.parsed_interval
    return TimeGrid(n, unit, ZoneInfo(r.time_zone))


def range_name(parent: str, r: RangeSpec, lower: datetime | int) -> str:
    suffix = IntGrid.suffix(lower) if isinstance(lower, int) else grid_of(r).suffix(lower)
    return fit_identifier(parent, "_p" + suffix)


def partition_name(spec: PartitionPolicySpec, lower: datetime | int) -> str:
    return range_name(spec.table.name, spec.rng, lower)


WALL_CLOCK = "timestamp without time zone"


def desired_range_periods(r: RangeSpec, now: datetime, max_key: int | None,
                          column_type: str | None = None) -> list[Period]:
    """The period holding `now` (or the highest integer key) and `premake` after it.

    For a wall-clock column (`timestamp without time zone`) the count is in wall-clock terms: an
    hour that repeats when clocks go back is one empty period there ([01:00, 01:00)), so it is
    skipped and one more period is taken, or the window would end an hour short (a hole)."""
    if r.interval is not None:
        grid = grid_of(r)
        start = grid.start_of(now)
        if column_type != WALL_CLOCK:
            return [grid.period(grid.shift(start, k)) for k in range(r.premake + 1)]
        tz = ZoneInfo(r.time_zone)
        periods: list[Period] = []
        k = 0
        while len(periods) < r.premake + 1:
            p = grid.period(grid.shift(start, k))
            k += 1
            lo, hi = p.lower, p.upper
            assert isinstance(lo, datetime) and isinstance(hi, datetime)
            if lo.astimezone(tz).replace(tzinfo=None) < hi.astimezone(tz).replace(tzinfo=None):
                periods.append(p)
        return periods
    assert r.width is not None
    igrid = IntGrid(r.width)
    istart = igrid.start_of(max_key if max_key is not None else 0)
    return [igrid.period(igrid.shift(istart, k)) for k in range(r.premake + 1)]


def periods_within(r: RangeSpec, since: Value, upper: Bound, now: datetime, max_key: int | None,
                   column_type: str | None = None) -> list[Period]:
    """The sub-grid's periods from the one holding `since` to `upper` (a range sub-level on its
    parent's own column: a row may land anywhere in the parent's range, so `premake` does not
    apply). A parent open at the top (MAXVALUE) gets the usual window."""
    if upper is None:
        return desired_range_periods(r, now, max_key, column_type)
    out: list[Period] = []
    if r.interval is not None:
        assert isinstance(since, datetime) and isinstance(upper, datetime)
        grid = grid_of(r)
        cur = grid.start_of(since)
        while cur < upper:
            out.append(grid.period(cur))
            cur = grid.shift(cur, 1)
        return out
    assert r.width is not None and isinstance(since, int) and isinstance(upper, int)
    igrid = IntGrid(r.width)
    icur = igrid.start_of(since)
    while icur < upper:
        out.append(igrid.period(icur))
        icur = igrid.shift(icur, 1)
    return out


@dataclass(frozen=True)
class Piece:
    """One leaf of a range sub-level on its parent's column: a period of the sub-grid, cut at the
    parent's edges when the two grids do not nest (weeks in months, UTC hours in a half-hour zone)."""

    span: Span
    period_start: Value
    whole: bool

    def name(self, naming: str, r: RangeSpec) -> str:
        if self.whole:
            return range_name(naming, r, self.period_start)
        assert self.span.lo_key is not None and self.span.hi_key is not None
        return fit_identifier(naming, f"_b{key_suffix(self.span.lo_key)}_{key_suffix(self.span.hi_key)}")


def pieces_within(r: RangeSpec, inside: tuple[Bound, Bound], since: Value, now: datetime, max_key: int | None,
                  column_type: str) -> list[Piece]:
    """The sub-level's leaves for the parent range `inside`, from the period holding `since`."""
    tz = ZoneInfo(r.time_zone)
    edge = span(inside[0], inside[1], column_type, tz)
    out: list[Piece] = []
    for period in periods_within(r, since, inside[1], now, max_key, column_type):
        want = clamp_to_type(period.lower, period.upper, column_type, tz)
        cut = None if want is None else clip(want, edge)
        if want is None or cut is None or cut.lo_key >= cut.hi_key:  # type: ignore[operator]
            continue  # outside the type or the parent, or an empty wall-clock hour
        out.append(Piece(cut, period.lower, (cut.lo_key, cut.hi_key) == (want.lo_key, want.hi_key)))
    return out


def in_sub_zone(bounds: tuple[Bound, Bound], column_type: str, parent_tz: ZoneInfo,
                tz: ZoneInfo) -> tuple[Bound, Bound]:
    """A parent's bounds for a same-column sub-level aligned in `tz`: on a wall-clock or date
    column a bound is its wall-clock value in the parent's zone, not that instant seen elsewhere."""
    if column_type == "timestamp with time zone":
        return bounds
    lo, hi = (b.astimezone(parent_tz).replace(tzinfo=tz) if isinstance(b, datetime) else b for b in bounds)
    return lo, hi


def same_column_sub(spec: PartitionPolicySpec, sub: SubpartitionSpec | None) -> RangeSpec | None:
    """The sub-level's range section when it partitions the first level's own range column."""
    if sub is None or sub.range is None or spec.range is None or sub.range.column != spec.range.column:
        return None
    return sub.range


def list_literal(v: str | int) -> str:
    return str(v) if isinstance(v, int) else literal(v)


def list_bound(p: ListPartition) -> str:
    return "FOR VALUES IN (" + ", ".join(list_literal(v) for v in p.values) + ")"


def list_predicate(column: str, p: ListPartition) -> str:
    """Rows of list partition `p`, as a predicate (for the DEFAULT partition's rows of its values)."""
    return f"{ident(column)} IN (" + ", ".join(list_literal(v) for v in p.values) + ")"


def hash_bound(modulus: int, remainder: int) -> str:
    return f"FOR VALUES WITH (modulus {modulus}, remainder {remainder})"


_LIST_VALUE = re.compile(r"'((?:[^']|'')*)'|(-?\d+)|(NULL)")


def parse_list_values(bound_expr: str) -> set[str] | None:
    """`FOR VALUES IN ('a', 'b')` -> {"'a'", "'b'"} in our literal form, for comparisons."""
    m = re.fullmatch(r"FOR VALUES IN \((.*)\)", bound_expr.strip())
    if not m:
        return None
    out = set()
    for sm in _LIST_VALUE.finditer(m.group(1)):
        if sm.group(1) is not None:
            out.add(literal(sm.group(1).replace("''", "'")))
        elif sm.group(2) is not None:
            out.add(sm.group(2))
        else:
            out.add("NULL")
    return out


# ---------------------------------------------------------------------------------------------
# Statements for new children


@dataclass(frozen=True)
class Parent:
    """The parent at one level; `root` is what new tables are created LIKE. Children are named
    after `base` (default: the parent's name): a conversion builds its shadow table's children
    under the names they keep after the swap."""

    schema: str
    name: str
    root: str
    base: str = ""

    @property
    def naming(self) -> str:
        return self.base or self.name


def create_table_sql(parent: Parent, name: str, spec: PartitionPolicySpec, partition_by: str | None) -> str:
    tpl = spec.template
    sql = (f"CREATE TABLE IF NOT EXISTS {qualified(parent.schema, name)} "
           f"(LIKE {qualified(parent.schema, parent.root)} {LIKE_OPTIONS})")
    if partition_by:
        sql += f" PARTITION BY {partition_by}"
    elif tpl.storage_parameters:
        sql += " WITH (" + ", ".join(f"{k} = {v}" for k, v in sorted(tpl.storage_parameters.items())) + ")"
    if tpl.tablespace:
        sql += f" TABLESPACE {ident(tpl.tablespace)}"
    return sql


def template_index_sql(parent: Parent, name: str, spec: PartitionPolicySpec) -> list[str]:
    from ..sql.expressions import validate_predicate

    out = []
    for ix in spec.template.indexes:
        iname = fit_identifier(name, "_" + ix.name)
        cols = ", ".join(ident(c) for c in ix.columns)
        sql = (f"CREATE {'UNIQUE ' if ix.unique else ''}INDEX IF NOT EXISTS {ident(iname)} "
               f"ON {qualified(parent.schema, name)} ({cols})")
        if ix.where:
            sql += f" WHERE {validate_predicate(ix.where)}"
        out.append(sql)
    return out


def sub_partition_by(sub: SubpartitionSpec) -> str:
    if sub.hash is not None:
        return f"HASH ({ident(sub.hash.column)})"
    assert sub.range is not None
    return f"RANGE ({ident(sub.range.column)})"


class NameTaken(Exception):
    """A table to create exists and is not ours: CREATE TABLE IF NOT EXISTS would reuse it and
    ATTACH adopt it with its rows."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def child_statements(
    parent: Parent, name: str, bound: str, spec: PartitionPolicySpec, sub: SubpartitionSpec | None,
    column_types: dict[str, str], now: datetime, attach: bool = True, inside: tuple[Bound, Bound] | None = None,
    taken: Callable[[str], bool] | None = None,
) -> list[str]:
    """Create one child (and, if it is sub-partitioned, its complete second level) and attach it.

    It all runs in one transaction, so no other session sees (or routes a row into) an incomplete
    child, and a crash leaves nothing half-built. A sub-partitioned child is attached before its
    leaves: leaves created LIKE the table and attached to a child that is not attached yet lack
    its identity column, and PostgreSQL 17+ then refuses to DETACH that child (55000), which
    breaks retention. `taken(name)`: that table exists and is someone else's (raises NameTaken)."""
    if taken is not None and taken(name):
        raise NameTaken(name)
    stmts = [create_table_sql(parent, name, spec, sub_partition_by(sub) if sub else None)]
    attach_sql = (f"ALTER TABLE {qualified(parent.schema, parent.name)} ATTACH PARTITION "
                  f"{qualified(parent.schema, name)} {bound}")
    if attach and sub is not None:
        stmts.append(attach_sql)
    if sub is None:
        stmts += template_index_sql(parent, name, spec)
    else:
        me = Parent(parent.schema, name, parent.root)
        if sub.hash is not None:
            for r in range(sub.hash.modulus):
                leaf = fit_identifier(name, f"_{r}")
                stmts += child_statements(me, leaf, hash_bound(sub.hash.modulus, r), spec, None, column_types, now,
                                          taken=taken)
        elif (same := same_column_sub(spec, sub)) is not None and inside is not None:
            # On the first level's own column: leaves for the whole of the new child's range.
            ctype = column_types[same.column]
            tz = ZoneInfo(same.time_zone)
            assert spec.range is not None
            inside = in_sub_zone(inside, ctype, ZoneInfo(spec.range.time_zone), tz)
            since = inside[0] if inside[0] is not None else (now if same.interval is not None else 0)
            for piece in pieces_within(same, inside, since, now, None, ctype):
                _, _, b = render_range(piece.span.lower, piece.span.upper, ctype, tz)
                stmts += child_statements(me, piece.name(name, same), b, spec, None, column_types, now,
                                          taken=taken)
        else:
            assert sub.range is not None
            ctype = column_types[sub.range.column]
            tz = ZoneInfo(sub.range.time_zone)
            for period in desired_range_periods(sub.range, now, None, ctype):
                leaf = range_name(name, sub.range, period.lower)
                b = (f"FOR VALUES FROM ({render_bound(period.lower, ctype, tz)}) "
                     f"TO ({render_bound(period.upper, ctype, tz)})")
                stmts += child_statements(me, leaf, b, spec, None, column_types, now, taken=taken)
    if attach and sub is None:
        stmts.append(attach_sql)
    return stmts


def template_drift(spec: PartitionPolicySpec, p: PartitionInfo) -> str | None:
    """What a leaf partition lacks compared with the template (reported, never changed)."""
    if p.relkind == "p" or p.is_default:
        return None
    tpl = spec.template
    missing = []
    opts = set(p.reloptions)
    for k, v in sorted(tpl.storage_parameters.items()):
        if f"{k}={v}" not in opts:
            missing.append(f"{k}={v}")
    if tpl.tablespace and (p.tablespace or "pg_default") != tpl.tablespace:
        missing.append(f"tablespace {tpl.tablespace}")
    for ix in tpl.indexes:
        if fit_identifier(p.name, "_" + ix.name) not in p.index_names:
            missing.append(f"index {ix.name}")
    return f"{p.name}: lacks {', '.join(missing)}" if missing else None


def sub_for(spec: PartitionPolicySpec, list_name: str | None) -> SubpartitionSpec | None:
    """The second level a first-level child gets (None: it is a plain table)."""
    sub = spec.subpartition
    if sub is None:
        return None
    if sub.only is not None and list_name not in sub.only:
        return None
    return sub
