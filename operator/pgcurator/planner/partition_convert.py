"""Pure parts of converting a plain table into a partitioned one: what is refused, and the
statements that build the partitioned shadow table (children already named as they will be
after the swap)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import TableObservation
from ..errors import PlanError
from ..models.partition import PartitionPolicySpec
from ..sql.quote import fit_identifier, ident, qualified
from .partition import (
    LIKE_OPTIONS,
    Parent,
    _grid,
    _sub_for,
    child_statements,
    default_partition_name,
    desired_range_periods,
    hash_bound,
    list_bound,
    range_name,
)
from .ranges import IntGrid, Period, render_bound

MAX_PARTITIONS = 5000


@dataclass
class PlainTable:
    """What the conversion needs to know about the plain table, beyond TableObservation."""

    primary_key: list[str] = field(default_factory=list)
    unique_indexes: dict[str, list[str]] = field(default_factory=dict)  # name -> columns
    inbound_fks: list[str] = field(default_factory=list)  # "other_table.constraint"
    dependent_views: list[str] = field(default_factory=list)
    user_triggers: list[str] = field(default_factory=list)
    rls: bool = False
    inheritance: bool = False
    outbound_fks: list[tuple[str, str]] = field(default_factory=list)  # (name, definition)
    grants: list[str] = field(default_factory=list)  # "GRANT ... ON ... TO ..." tails: (privilege, grantee)
    min_key: object = None
    max_key: object = None
    unlisted_rows: int = 0  # rows whose list key is in no list partition


def shadow_name(table: str) -> str:
    return fit_identifier(table, "__pgcurator_new")


def original_name(table: str) -> str:
    return fit_identifier(table, "_unpartitioned")


def partition_keys(spec: PartitionPolicySpec) -> list[str]:
    keys = [spec.key_column]
    sub = spec.subpartition
    if sub is not None:
        keys.append((sub.hash or sub.range).column)  # type: ignore[union-attr]
    return keys


def refusals(spec: PartitionPolicySpec, obs: TableObservation, plain: PlainTable) -> list[str]:
    """Everything that makes an online conversion unsafe, each saying what to change."""
    t = spec.table.qualified
    out = []
    keys = partition_keys(spec)
    missing_cols = [k for k in keys if k not in obs.column_types]
    if missing_cols:
        return [f"partition key column(s) {missing_cols} do not exist in {t}"]
    if not plain.primary_key:
        out.append(f"{t} has no primary key: batches are copied and verified by key; add a primary key that "
                   f"includes {', '.join(keys)}")
    elif not set(keys) <= set(plain.primary_key):
        out.append(f"the primary key of {t} ({', '.join(plain.primary_key)}) does not include the partition key "
                   f"({', '.join(keys)}); PostgreSQL requires it on a partitioned table: extend the primary key")
    for name, cols in plain.unique_indexes.items():
        if not set(keys) <= set(cols):
            out.append(f"unique index {name} ({', '.join(cols)}) does not include the partition key; "
                       "extend it or replace it")
    if plain.inbound_fks:
        out.append(f"foreign keys point at {t} ({', '.join(plain.inbound_fks)}): they would keep pointing at the "
                   "old table after the swap; drop them for the conversion and recreate them afterwards")
    if plain.dependent_views:
        out.append(f"views depend on {t} ({', '.join(plain.dependent_views)}): they would keep reading the old "
                   "table; drop and recreate them around the conversion")
    if plain.user_triggers:
        out.append(f"{t} has triggers ({', '.join(plain.user_triggers)}) that the partitioned table would not "
                   "have; drop them for the conversion and recreate them afterwards")
    if plain.rls:
        out.append(f"{t} uses row-level security; its policies are not carried over: disable it for the conversion")
    if plain.inheritance:
        out.append(f"{t} takes part in table inheritance; it cannot be converted")
    if plain.unlisted_rows:
        out.append(f"{plain.unlisted_rows} rows have {spec.key_column} values in no list partition: add them to "
                   "list.partitions or set defaultPartition: true")
    return out


def _range_periods(spec: PartitionPolicySpec, plain: PlainTable, now: datetime) -> list[Period]:
    """Every period from the oldest row to now (or the highest key) plus premake: no row is left out."""
    r = spec.rng
    ahead = desired_range_periods(r, now, plain.max_key if isinstance(plain.max_key, int) else None)
    if plain.min_key is None:
        return ahead
    periods: list[Period] = []
    if r.interval is not None:
        grid = _grid(r)
        lo = plain.min_key
        if not isinstance(lo, datetime):
            lo = datetime(lo.year, lo.month, lo.day, tzinfo=ZoneInfo(r.time_zone))  # type: ignore[attr-defined]
        elif lo.tzinfo is None:
            lo = lo.replace(tzinfo=ZoneInfo(r.time_zone))
        start = grid.start_of(lo)
        last = ahead[-1].lower
        assert isinstance(last, datetime)
        hi = plain.max_key
        if isinstance(hi, datetime):
            hi_start = grid.start_of(hi if hi.tzinfo else hi.replace(tzinfo=ZoneInfo(r.time_zone)))
            last = max(last, hi_start)
        while start <= last:
            periods.append(grid.period(start))
            start = grid.shift(start, 1)
            if len(periods) > MAX_PARTITIONS:
                break
    else:
        assert r.width is not None and isinstance(plain.min_key, int)
        g = IntGrid(r.width)
        start_i = g.start_of(plain.min_key)
        last_i = ahead[-1].lower
        assert isinstance(last_i, int)
        while start_i <= last_i:
            periods.append(g.period(start_i))
            start_i = g.shift(start_i, 1)
            if len(periods) > MAX_PARTITIONS:
                break
    if len(periods) > MAX_PARTITIONS:
        raise PlanError(f"converting would create more than {MAX_PARTITIONS} partitions (from {plain.min_key}); "
                        "use a wider interval", reason="ConversionRefused")
    return periods


def shadow_statements(spec: PartitionPolicySpec, obs: TableObservation, plain: PlainTable,
                      now: datetime) -> list[str]:
    """One transaction that creates the complete partitioned shadow, empty, with the table's
    columns, defaults, constraints, indexes, outbound foreign keys and grants."""
    t = spec.table
    shadow = shadow_name(t.name)
    sq = qualified(t.schema_, shadow)
    by = {"range": "RANGE", "list": "LIST", "hash": "HASH"}[spec.strategy]
    stmts = [f"CREATE TABLE {sq} (LIKE {qualified(t.schema_, t.name)} INCLUDING ALL) "
             f"PARTITION BY {by} ({ident(spec.key_column)})"]
    parent = Parent(t.schema_, shadow, shadow, base=t.name)
    if spec.range is not None:
        tz = ZoneInfo(spec.range.time_zone)
        ctype = obs.column_types[spec.key_column]
        for p in _range_periods(spec, plain, now):
            name = range_name(t.name, spec.range, p.lower)
            bound = (f"FOR VALUES FROM ({render_bound(p.lower, ctype, tz)}) TO ({render_bound(p.upper, ctype, tz)})")
            stmts += child_statements(parent, name, bound, spec, spec.subpartition, obs.column_types, now)
    elif spec.list is not None:
        for lp in spec.list.partitions:
            name = fit_identifier(t.name, "_" + lp.name)
            stmts += child_statements(parent, name, list_bound(lp), spec, _sub_for(spec, lp.name), obs.column_types,
                                      now)
    elif spec.hash is not None:
        for rem in range(spec.hash.modulus):
            name = fit_identifier(t.name, f"_{rem}")
            stmts += child_statements(parent, name, hash_bound(spec.hash.modulus, rem), spec, spec.subpartition,
                                      obs.column_types, now)
    if spec.default_partition:
        dname = default_partition_name(t.name)
        stmts += [f"CREATE TABLE {qualified(t.schema_, dname)} (LIKE {sq} {LIKE_OPTIONS})",
                  f"ALTER TABLE {sq} ATTACH PARTITION {qualified(t.schema_, dname)} DEFAULT"]
    for name, definition in plain.outbound_fks:
        # Added while the shadow is empty: no validation scan; copied rows are checked as they arrive.
        stmts.append(f"ALTER TABLE {sq} ADD CONSTRAINT {ident(name)} {definition}")
    stmts += [g.replace("{table}", sq) for g in plain.grants]
    return stmts
