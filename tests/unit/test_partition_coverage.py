"""status.coveredUntil: the end of the adjacent partitions that hold now (or the largest integer
key), never past a hole; and the layout the status shows is a function of the observation alone,
the same one the planner returns."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pgcurator.catalog.partitions import PartitionInfo, TableObservation
from pgcurator.planner.partition import plan_policy, range_layout

from .factories import month, spec, table

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
INT = {"column": "server_timestamp", "interval": None, "width": 1000, "premake": 2}


def ints(*bounds: tuple[str, str]) -> list[tuple[str, str]]:
    return [(f"event_logs_p{lo}", f"FOR VALUES FROM ({lo}) TO ({hi})") for lo, hi in bounds]


def covered(s: object, obs: TableObservation) -> object:
    layout = range_layout(s, obs, NOW)  # type: ignore[arg-type]
    assert layout is not None
    return layout.covered_until


def test_a_hole_in_the_window_ends_the_coverage() -> None:
    # January is missing (dropped by hand, or blocked): February does not count as covered.
    obs = table([month(2026, 11), month(2026, 12), month(2027, 2)])
    assert covered(spec(), obs) == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_stale_partition_past_a_gap_is_not_coverage() -> None:
    obs = table([month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2), month(2030, 5)])
    assert covered(spec(), obs) == datetime(2027, 3, 1, tzinfo=UTC)


def test_now_in_no_partition_is_no_coverage() -> None:
    # Only partitions ahead of now (the current month's is missing): nothing is covered from now on.
    assert covered(spec(), table([month(2026, 12), month(2027, 1)])) is None
    assert covered(spec(), table([month(2025, 1)])) is None
    assert covered(spec(), table()) is None


def test_wall_clock_and_date_columns_compare_in_the_policy_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    days = [(f"event_logs_p{d}", f"FOR VALUES FROM ('2026-11-{d:02d}') TO ('2026-11-{d + 1:02d}')")
            for d in (21, 22, 23, 25)]
    s = spec(range={"interval": "1 day", "timeZone": "Asia/Tokyo", "premake": 3})
    # 10:00 UTC is 19:00 in Tokyo on the 22nd: the run 22, 23 ends before the missing 24th.
    assert covered(s, table(days, column_type="date")) == datetime(2026, 11, 24, tzinfo=tokyo)
    wall = [(n, b.replace("')", " 00:00:00')")) for n, b in days]
    assert covered(s, table(wall, column_type="timestamp without time zone")) == datetime(2026, 11, 24, tzinfo=tokyo)


def test_integer_ranges_are_covered_from_the_largest_key() -> None:
    s = spec(range=INT)
    parts = ints(("0", "1000"), ("1000", "2000"), ("2000", "3000"), ("4000", "5000"))
    assert covered(s, table(parts, column_type="bigint", max_key=2500)) == 3000
    assert covered(s, table(parts, column_type="bigint", max_key=4200)) == 5000
    assert covered(s, table(parts, column_type="bigint", max_key=3500)) is None  # in the DEFAULT, or refused


def test_an_empty_integer_table_is_covered_from_its_lowest_partition() -> None:
    s = spec(range=INT)
    assert covered(s, table(ints(("1000", "2000"), ("2000", "3000")), column_type="bigint")) == 3000
    assert covered(s, table(ints(("1000", "2000"), ("3000", "4000")), column_type="bigint")) == 2000
    assert covered(s, table(column_type="bigint")) is None


def test_unbounded_ends() -> None:
    s = spec(range=INT)
    low = [("event_logs_pmin", "FOR VALUES FROM (MINVALUE) TO (0)"), *ints(("0", "1000"))]
    assert covered(s, table(low, column_type="bigint", max_key=-5)) == 1000
    assert covered(s, table(low, column_type="bigint")) == 1000
    high = [*ints(("0", "1000")), ("event_logs_pmax", "FOR VALUES FROM (1000) TO (MAXVALUE)")]
    assert covered(s, table(high, column_type="bigint", max_key=5)) is None  # no end to report


@pytest.mark.parametrize("obs", [
    table([month(2026, 11), month(2026, 12), month(2027, 2)], default=True, default_rows=0),
    table([month(2025, 1), month(2026, 11), ("odd", "FOR VALUES FROM ('2026-12-01 00:00:00+00', 1) TO "
                                                    "('2027-01-01 00:00:00+00', 2)")]),
    table(),
], ids=["hole", "unparsed", "empty"])
def test_the_layout_is_the_planners_without_planning(obs: TableObservation) -> None:
    s = spec(template={"storageParameters": {"fillfactor": "90"}}, retention={"keep": 3, "action": "drop"})
    _, planned = plan_policy(s, obs, NOW)
    assert planned is not None and range_layout(s, obs, NOW) == planned
    # Each case has something to compare: drift and coverage, an unparsed partition, or nothing at all.
    assert (planned.drift and planned.covered_until) or planned.unparsed or not obs.partitions


def test_list_and_hash_have_no_range_layout() -> None:
    s = spec(range=None, strategy="hash", hash={"column": "id", "modulus": 4})
    obs = table(key="id")
    obs.strategy = "h"
    obs.partitions = [PartitionInfo("public", "event_logs_0", "FOR VALUES WITH (modulus 4, remainder 0)")]
    assert range_layout(s, obs, NOW) is None
    assert plan_policy(s, obs, NOW)[1] is None
