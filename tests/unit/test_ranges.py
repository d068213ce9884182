"""Bounds math: alignment, DST, leap years, rendering per column type, parsing catalog text."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pgcurator.models.intervals import IntervalUnit, parse_interval
from pgcurator.planner.ranges import IntGrid, TimeGrid, overlaps, parse_range_bound, render_bound

TOKYO = ZoneInfo("Asia/Tokyo")
BERLIN = ZoneInfo("Europe/Berlin")


def grid(text: str, tz: ZoneInfo) -> TimeGrid:
    n, unit = parse_interval(text)
    return TimeGrid(n, unit, tz)


def test_month_start_and_shift_across_year_end() -> None:
    g = grid("1 month", ZoneInfo("UTC"))
    start = g.start_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert start == datetime(2026, 12, 1, tzinfo=ZoneInfo("UTC"))
    assert g.shift(start, 1) == datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC"))
    assert g.shift(start, -12) == datetime(2025, 12, 1, tzinfo=ZoneInfo("UTC"))


def test_month_end_of_january_to_february_in_leap_year() -> None:
    g = grid("1 month", ZoneInfo("UTC"))
    start = g.start_of(datetime(2028, 1, 31, 12, tzinfo=UTC))
    assert g.period(g.shift(start, 1)).upper == datetime(2028, 3, 1, tzinfo=ZoneInfo("UTC"))


def test_daily_partitions_cover_feb_29_in_leap_year_only() -> None:
    g = grid("1 day", ZoneInfo("UTC"))
    assert g.shift(g.start_of(datetime(2028, 2, 28, tzinfo=UTC)), 1).day == 29
    assert g.shift(g.start_of(datetime(2027, 2, 28, tzinfo=UTC)), 1).month == 3


def test_time_zone_alignment_is_local_midnight() -> None:
    g = grid("1 month", TOKYO)
    # 2026-10-31 16:00 UTC is already November 1st in Tokyo.
    start = g.start_of(datetime(2026, 10, 31, 16, 0, tzinfo=UTC))
    assert start == datetime(2026, 11, 1, tzinfo=TOKYO)
    assert start.astimezone(UTC) == datetime(2026, 10, 31, 15, 0, tzinfo=UTC)


def test_dst_change_does_not_shift_daily_bounds() -> None:
    g = grid("1 day", BERLIN)
    # Europe/Berlin leaves summer time on 2026-10-25: that day is 25 hours long.
    start = g.start_of(datetime(2026, 10, 25, 12, tzinfo=BERLIN))
    nxt = g.shift(start, 1)
    assert (start.hour, nxt.hour) == (0, 0)
    # Python subtracts same-zone datetimes on the wall clock; compare instants.
    assert nxt.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=25)


def test_weeks_start_on_monday() -> None:
    g = grid("1 week", ZoneInfo("UTC"))
    start = g.start_of(datetime(2026, 11, 22, tzinfo=UTC))  # a Sunday
    assert start.weekday() == 0 and start.day == 16


def test_multi_unit_intervals_align_to_a_fixed_anchor() -> None:
    g = grid("3 months", ZoneInfo("UTC"))
    assert g.start_of(datetime(2026, 5, 15, tzinfo=UTC)).month == 4
    assert g.start_of(datetime(2026, 12, 15, tzinfo=UTC)).month == 10


def test_render_bound_per_column_type_ignores_server_zone() -> None:
    start = datetime(2026, 11, 1, tzinfo=TOKYO)
    assert render_bound(start, "timestamp with time zone", TOKYO) == "'2026-11-01 00:00:00+09:00'"
    assert render_bound(start, "timestamp without time zone", TOKYO) == "'2026-11-01 00:00:00'"
    assert render_bound(start, "date", TOKYO) == "'2026-11-01'"
    assert render_bound(1000, "bigint", TOKYO) == "1000"


def test_date_column_refuses_sub_day_bounds() -> None:
    with pytest.raises(ValueError, match="whole day"):
        render_bound(datetime(2026, 11, 1, 13, tzinfo=UTC), "date", ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("expr", "ctype", "expected"),
    [
        ("FOR VALUES FROM ('2026-10-31 15:00:00+00') TO ('2026-11-30 15:00:00+00')", "timestamp with time zone",
         (datetime(2026, 11, 1, tzinfo=TOKYO), datetime(2026, 12, 1, tzinfo=TOKYO))),
        ("FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')", "date",
         (datetime(2026, 11, 1, tzinfo=TOKYO), datetime(2026, 12, 1, tzinfo=TOKYO))),
        ("FOR VALUES FROM ('2026-11-01 00:00:00') TO ('2026-12-01 00:00:00')", "timestamp without time zone",
         (datetime(2026, 11, 1, tzinfo=TOKYO), datetime(2026, 12, 1, tzinfo=TOKYO))),
        ("FOR VALUES FROM (MINVALUE) TO ('2020-01-01')", "date", (None, datetime(2020, 1, 1, tzinfo=TOKYO))),
        ("FOR VALUES FROM (0) TO (1000)", "integer", (0, 1000)),
        ("DEFAULT", "integer", None),
    ],
)
def test_parse_catalog_bounds(expr: str, ctype: str, expected: object) -> None:
    assert parse_range_bound(expr, ctype, TOKYO) == expected


def test_int_grid_handles_negative_values() -> None:
    g = IntGrid(1000)
    assert g.start_of(-1) == -1000
    assert IntGrid.suffix(-1000) == "m1000"


def test_overlap_half_open_and_unbounded() -> None:
    assert not overlaps(0, 10, 10, 20)
    assert overlaps(0, 11, 10, 20)
    assert overlaps(None, 5, 0, 1)
    assert overlaps(0, None, 100, 200)
    assert not overlaps(None, 0, 0, None)


@pytest.mark.parametrize("bad", ["13 fortnights", "0 days", "1 decade", "month", "-1 day", "1 day; DROP TABLE x"])
def test_bad_intervals_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not understood"):
        parse_interval(bad)


def test_interval_units_parse() -> None:
    assert parse_interval("7 days") == (7, IntervalUnit.day)
    assert parse_interval("1 month") == (1, IntervalUnit.month)
