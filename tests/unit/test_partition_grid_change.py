"""A range policy whose interval or time zone changes on a maintained table: what is planned
plus what exists covers the whole window, with no gap and no overlap, and planning again after
applying the plan finds nothing to do. Property-based over grids, zones and times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcurator.catalog.partitions import PartitionInfo, TableObservation
from pgcurator.models.intervals import IntervalUnit
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.partition import plan_policy
from pgcurator.planner.ranges import Span, TimeGrid, parse_range_bound, render_bound, span, uncovered

from .factories import spec, table
from .plan_sim import apply

ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/Santiago"]
UNITS = {"hour": [1, 2, 6], "day": [1, 2, 7], "week": [1, 2], "month": [1, 3], "year": [1]}
TYPES = ["timestamp with time zone", "timestamp without time zone", "date"]


@st.composite
def grids(draw: st.DrawFn, column_type: str) -> tuple[str, str]:
    units = [u for u in UNITS if not (column_type == "date" and u == "hour")]
    unit = draw(st.sampled_from(units))
    return f"{draw(st.sampled_from(UNITS[unit]))} {unit}", draw(st.sampled_from(ZONES))


def _existing(interval: str, zone: str, column_type: str, around: datetime, count: int,
              holes: set[int]) -> list[tuple[str, str]]:
    n, unit = interval.split()
    grid = TimeGrid(int(n), IntervalUnit(unit), ZoneInfo(zone))
    tz = ZoneInfo(zone)
    start = grid.shift(grid.start_of(around), -2)
    out = []
    for k in range(count):
        lo, hi = grid.shift(start, k), grid.shift(start, k + 1)
        if k in holes:
            continue
        rlo, rhi = render_bound(lo, column_type, tz), render_bound(hi, column_type, tz)
        if rlo >= rhi:  # a repeated wall-clock hour: nobody can create that partition either
            continue
        out.append((f"event_logs_old{k}", f"FOR VALUES FROM ({rlo}) TO ({rhi})"))
    return out


def _spans(obs_parts: list[PartitionInfo], column_type: str, zone: str) -> list[tuple[str, Span]]:
    tz = ZoneInfo(zone)
    out = []
    for p in obs_parts:
        b = parse_range_bound(p.bound_expr, column_type, tz)
        assert b is not None, p.bound_expr
        out.append((p.name, span(b[0], b[1], column_type, tz)))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changed_grid_leaves_no_gap_and_no_overlap(data: st.DataObject) -> None:
    column_type = data.draw(st.sampled_from(TYPES))
    old_interval, old_zone = data.draw(grids(column_type))
    new_interval, new_zone = data.draw(grids(column_type))
    now = data.draw(st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2199, 1, 1),
                                 timezones=st.just(UTC)))
    count = data.draw(st.integers(0, 8))
    holes = data.draw(st.sets(st.integers(0, 7), max_size=3))
    premake = data.draw(st.integers(0, 6))
    existing = _existing(old_interval, old_zone, column_type, now, count, holes)
    s = spec(range={"interval": new_interval, "timeZone": new_zone, "premake": premake})
    obs = table(existing, column_type=column_type)
    plan, _ = plan_policy(s, obs, now)
    after = apply(obs, plan)

    spans = _spans(after.partitions, column_type, new_zone)
    ordered = sorted(spans, key=lambda x: x[1].lo_key)  # type: ignore[arg-type, return-value]
    for (a, sa), (b, sb) in itertools.pairwise(ordered):
        assert sa.hi_key <= sb.lo_key, f"{a} and {b} overlap"  # type: ignore[operator]
    n, unit = new_interval.split()
    grid = TimeGrid(int(n), IntervalUnit(unit), ZoneInfo(new_zone))
    lo = grid.start_of(now)
    hi = grid.shift(lo, premake + 1)
    window = span(lo, hi, column_type, ZoneInfo(new_zone))
    gaps = uncovered(window, [sp for _, sp in spans])
    assert not gaps, f"window {window.lo_key}..{window.hi_key} has gaps {[(g.lo_key, g.hi_key) for g in gaps]}"
    again, _ = plan_policy(s, after, now)
    assert again.empty, f"a second plan is not empty: {[st.target for st in again.steps]}"
    # Nothing planned is empty for the column (PostgreSQL refuses an empty range).
    for _, sp in spans:
        assert sp.lo_key < sp.hi_key  # type: ignore[operator]


def test_time_zone_change_bridges_exactly_the_hole() -> None:
    # Maintained monthly in UTC up to 2027-03-01; now Asia/Tokyo, a month later.
    existing = [(f"event_logs_p{y}_{m:02d}", f"FOR VALUES FROM ('{y}-{m:02d}-01 00:00:00+00') TO "
                 f"('{y + m // 12}-{m % 12 + 1:02d}-01 00:00:00+00')") for y, m in
                [(2026, 11), (2026, 12), (2027, 1), (2027, 2)]]
    s = spec(range={"timeZone": "Asia/Tokyo", "premake": 3})
    plan, _ = plan_policy(s, table(existing), datetime(2026, 12, 15, tzinfo=UTC))
    bridges = [st for st in plan.steps if st.kind == "create_partition"]
    assert [b.target for b in bridges] == ["event_logs_b202703010000_202703311500"]
    assert bridges[0].statements[-1].endswith(
        "FOR VALUES FROM ('2027-03-01 09:00:00+09:00') TO ('2027-04-01 00:00:00+09:00')")


def _years_of_months() -> tuple[PartitionPolicySpec, datetime, TableObservation]:
    """Yearly partitions split into months on the same column, as the first run lays them out."""
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 year", "premake": 1},
        "subpartition": {"strategy": "range", "range": {"column": "server_timestamp", "interval": "1 month",
                                                        "premake": 2}}})
    now = datetime(2026, 11, 22, tzinfo=UTC)
    return s, now, apply(table([]), plan_policy(s, table([]), now)[0])


def test_range_sub_level_on_the_same_column_covers_each_parents_range() -> None:
    _, now, obs = _years_of_months()
    assert _leaf_gaps(obs.partitions, "timestamp with time zone", "UTC", now) == []


# Sub-grids that may sit under each parent grid on the same column (strictly finer; nesting or not).
SUB_UNDER = {"1 year": ["1 month", "3 month", "1 week", "1 day"], "3 month": ["1 month", "1 week", "2 day"],
             "1 month": ["1 week", "1 day", "6 hour"], "1 week": ["1 day", "2 day", "6 hour"],
             "1 day": ["6 hour", "1 hour"]}


def _leaf_gaps(obs_parts: list[PartitionInfo], column_type: str, zone: str, since: datetime) -> list[str]:
    """Parents whose range from `since` on is not wholly covered by their leaves, and overlaps."""
    tz = ZoneInfo(zone)
    problems = []
    for parent in obs_parts:
        b = parse_range_bound(parent.bound_expr, column_type, tz)
        assert b is not None
        lo, hi = b
        if hi <= since:  # type: ignore[operator]
            continue
        own = span(max(lo, since), hi, column_type, tz)  # type: ignore[type-var]
        leaves = [span(*lb, column_type, tz) for c in parent.children
                  if (lb := parse_range_bound(c.bound_expr, column_type, tz)) is not None]
        if own.lo_key < own.hi_key and uncovered(own, leaves):  # type: ignore[operator]
            problems.append(f"{parent.name}: part of {parent.bound_expr} has no leaf")
        for a, c in itertools.combinations(leaves, 2):
            if a.lo_key < c.hi_key and c.lo_key < a.hi_key:  # type: ignore[operator]
                problems.append(f"{parent.name}: leaves overlap")
    return problems


@given(parent=st.sampled_from(sorted(SUB_UNDER)), data=st.data(), zone=st.sampled_from(ZONES),
       column_type=st.sampled_from(TYPES[:2]),
       now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       later=st.floats(min_value=0.1, max_value=3.0))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_range_sub_level_on_the_parents_column_leaves_no_part_of_a_parent_without_a_leaf(
        parent: str, data: st.DataObject, zone: str, column_type: str, now: datetime, later: float) -> None:
    sub = data.draw(st.sampled_from(SUB_UNDER[parent]))
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": parent, "premake": 1, "timeZone": zone},
        "subpartition": {"strategy": "range", "range": {"column": "server_timestamp", "interval": sub,
                                                        "premake": 1, "timeZone": zone}}})
    obs = table([], column_type=column_type)
    n, unit = parent.split()
    step = TimeGrid(int(n), IntervalUnit(unit), ZoneInfo(zone))
    for when in (now, step.shift(step.start_of(now), 1) + (now - step.start_of(now)) * later):
        plan, _ = plan_policy(s, obs, when)
        obs = apply(obs, plan)
        assert _leaf_gaps(obs.partitions, column_type, zone, when) == []
        names = [p.name for p in obs.partitions] + [c.name for p in obs.partitions for c in p.children]
        assert len(names) == len(set(names)), "two tables would get one name"
        again, _ = plan_policy(s, obs, when)
        assert again.steps == [], [st.target for st in again.steps]


def test_an_older_layout_with_too_few_leaves_is_completed_from_now() -> None:
    # What the earlier planner left: next year's parent with leaves for its first two months only.
    s, now, obs = _years_of_months()
    y2027 = next(p for p in obs.partitions if p.name == "event_logs_p2027")
    y2027.children = [c for c in y2027.children if c.name.endswith(("2027_01", "2027_02"))]
    assert len(y2027.children) == 2
    plan, _ = plan_policy(s, obs, now)
    made = sorted(st.target for st in plan.steps if st.kind == "create_partition")
    assert made == [f"event_logs_p2027_p2027_{m:02d}" for m in range(3, 13)]
    assert _leaf_gaps(apply(obs, plan).partitions, "timestamp with time zone", "UTC", now) == []


@pytest.mark.parametrize(("first", "second", "why"), [
    ({"interval": "1 month"}, {"interval": "1 month"}, "is not shorter than range.interval"),
    ({"interval": "1 month"}, {"interval": "30 days"}, "is not shorter than range.interval"),
    ({"interval": "1 day"}, {"interval": "24 hours"}, "is not shorter than range.interval"),
    ({"interval": "1 month"}, {"width": 10}, "an interval, or both a width"),
    ({"width": 1000}, {"width": 1000}, "is not smaller than range.width"),
    ({"interval": "10 years", "premake": 1}, {"interval": "1 hour"}, "more than the 20000 one run creates"),
])
def test_a_same_column_sub_level_must_split_its_parent(first: dict[str, object], second: dict[str, object],
                                                         why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        PartitionPolicySpec.model_validate({
            "database": {"secretName": "db"}, "table": {"name": "event_logs"},
            "range": {"column": "server_timestamp", **first},
            "subpartition": {"strategy": "range", "range": {"column": "server_timestamp", **second}}})
    assert "e.g." in str(info.value) or "lower the premake" in str(info.value)


def test_a_sub_level_on_another_column_ignores_the_first_levels_highest_key() -> None:
    # Found by the planner property test: the first level's highest key (k) was handed to a range
    # sub-level on another column (s), whose window then moved on every run (never UpToDate).
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "k", "width": 10, "premake": 0},
        "subpartition": {"strategy": "range", "range": {"column": "s", "width": 10, "premake": 0}}})
    obs = table([], column_type="bigint", key="k", max_key=55)
    obs.column_types.update({"k": "bigint", "s": "bigint"})
    now = datetime(2026, 11, 22, tzinfo=UTC)
    obs = apply(obs, plan_policy(s, obs, now)[0])
    again, _ = plan_policy(s, obs, now)
    assert again.steps == [], [st.target for st in again.steps]


def _leaf_bounds(obs_parts: list[PartitionInfo], parent: str) -> list[str]:
    p = next(p for p in obs_parts if p.name == parent)
    return sorted(c.bound_expr for c in p.children)


@pytest.mark.parametrize("column_type", ["timestamp without time zone", "date"])
def test_a_sub_level_in_another_zone_splits_a_wall_clock_parent_at_its_own_bounds(column_type: str) -> None:
    # Found by the state-space suite: on a wall-clock (or date) column the parent's bounds were read as
    # instants of the first level's zone and cut in the sub-level's, so years of UTC split in quarters of
    # Pacific/Chatham started at 12:45 (the parent's midnight there) and [00:00, 12:45) had no leaf.
    sub_interval = "1 month" if column_type == "date" else "3 months"
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 year", "premake": 0, "timeZone": "UTC"},
        "subpartition": {"strategy": "range", "range": {"column": "server_timestamp", "interval": sub_interval,
                                                        "timeZone": "Pacific/Chatham"}}})
    now = datetime(2026, 11, 22, tzinfo=UTC)
    obs = apply(table([], column_type=column_type), plan_policy(s, table([], column_type=column_type), now)[0])
    leaves = _leaf_bounds(obs.partitions, "event_logs_p2026")
    midnight = "" if column_type == "date" else " 00:00:00"
    assert leaves[0].startswith(f"FOR VALUES FROM ('2026-01-01{midnight}')"), leaves
    assert leaves[-1].endswith(f"TO ('2027-01-01{midnight}')"), leaves
    # A later run completing a parent that has no leaves yet stops at the parent's end too.
    nxt = datetime(2027, 5, 10, tzinfo=UTC)
    obs.partitions = [p for p in obs.partitions if p.name != "event_logs_p2026"]
    obs.partitions.append(PartitionInfo("public", "event_logs_p2027",
                                        f"FOR VALUES FROM ('2027-01-01{midnight}') TO ('2028-01-01{midnight}')",
                                        relkind="p", strategy="r", key_columns=["server_timestamp"]))
    plan, _ = plan_policy(s, obs, nxt)
    leaves = _leaf_bounds(apply(obs, plan).partitions, "event_logs_p2027")
    assert leaves and leaves[-1].endswith(f"TO ('2028-01-01{midnight}')"), leaves


def test_a_leaf_name_taken_by_someone_elses_table_is_not_adopted() -> None:
    # Found by the state-space suite: a plain table named like a leaf of a new (or existing) parent was
    # reused by CREATE TABLE IF NOT EXISTS and ATTACHed with its rows, as the first level refuses to.
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 year", "premake": 0},
        "subpartition": {"strategy": "range", "range": {"column": "server_timestamp", "interval": "3 months"}}})
    now = datetime(2026, 11, 22, tzinfo=UTC)
    theirs = "event_logs_p2026_p2026_10"
    for existing in ([], [("event_logs_p2026", "FOR VALUES FROM ('2026-01-01 00:00:00+00') TO "
                                                "('2027-01-01 00:00:00+00')")]):
        obs = table(existing, loose_tables={theirs: None})
        for p in obs.partitions:
            p.relkind, p.strategy, p.key_columns = "p", "r", ["server_timestamp"]
        plan, _ = plan_policy(s, obs, now)
        assert not any(theirs in sql for st in plan.steps for sql in st.statements), plan.statements()
        assert [b.reason for b in plan.blocked] == ["NameConflict"], plan.blocked


def test_a_parent_retention_removes_gets_no_new_leaves_in_the_same_plan() -> None:
    # Found by the state-space suite: retention dropped an old parent and the sub-level planning then
    # completed that parent's leaves (ATTACH to a table dropped a step earlier: the run failed).
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 year", "premake": 0},
        "retention": {"keep": 1, "action": "drop"},
        "subpartition": {"strategy": "range", "range": {"column": "id", "width": 1000, "premake": 1}}})
    obs = table([("event_logs_p1998", "FOR VALUES FROM ('1998-01-01 00:00:00+00') TO ('1999-01-01 00:00:00+00')")])
    old = obs.partitions[0]
    old.relkind, old.strategy, old.key_columns = "p", "r", ["id"]
    old.children = [PartitionInfo("public", "event_logs_p1998_p0", "FOR VALUES FROM ('0') TO ('1000')")]
    plan, _ = plan_policy(s, obs, datetime(2000, 1, 1, tzinfo=UTC))
    kinds = [(st.kind, st.target) for st in plan.steps]
    assert ("drop_partition", "event_logs_p1998") in kinds, kinds
    assert not any("event_logs_p1998" in st.target for st in plan.steps if st.kind == "create_partition"), kinds
