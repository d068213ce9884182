"""Partition intervals: the grammar ('1 month'), unit lengths, and how two range levels on one
column relate."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

from .hints import hint

if TYPE_CHECKING:
    from .partition import RangeSpec

# One partition spans at most about ten years (hours: up to 9999). Written per unit so the CRD's
# pattern refuses the same values the model does.
_MAX_N = {
    "hour": r"[1-9][0-9]{0,3}",                                            # 1 .. 9999
    "day": r"[1-9][0-9]{0,2}|[1-2][0-9]{3}|3[0-5][0-9]{2}|36[0-5][0-9]|3660",  # 1 .. 3660
    "week": r"[1-9][0-9]?|[1-4][0-9]{2}|5[01][0-9]|52[0-2]",               # 1 .. 522
    "month": r"[1-9][0-9]?|1[01][0-9]|120",                                # 1 .. 120
    "year": r"[1-9]|10",                                                   # 1 .. 10
}
INTERVAL_PATTERN = hint(
    "^(" + "|".join(f"({n}) {u}s?" for u, n in _MAX_N.items()) + ")$",
    "an interval such as '1 month' or '7 days': '<n> hour|day|week|month|year', at most about ten years "
    "(9999 hours, 3660 days, 522 weeks, 120 months, 10 years)",
)
# Days one unit may span at most: bounds how far premake and retention reach.
_UNIT_DAYS = {"hour": 1 / 24, "day": 1, "week": 7, "month": 31, "year": 366}

class IntervalUnit(StrEnum):
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"
    year = "year"


def parse_interval(text: str) -> tuple[int, IntervalUnit]:
    """`1 month` -> (1, month). Anything else, e.g. `13 fortnights` or `11 years`, is refused."""
    if not re.fullmatch(INTERVAL_PATTERN, text.strip()):
        raise ValueError(
            f"interval {text!r} is not understood: use '<n> hour|day|week|month|year' of at most about ten "
            "years (9999 hours, 3660 days, 522 weeks, 120 months, 10 years), e.g. '1 month' or '7 days'"
        )
    n, unit = text.split()
    return int(n), IntervalUnit(unit.removesuffix("s"))


# Shortest and longest length of each unit in hours (clock changes, month lengths, leap years).
_UNIT_HOURS = {IntervalUnit.hour: (1, 1), IntervalUnit.day: (23, 25), IntervalUnit.week: (167, 169),
               IntervalUnit.month: (672, 745), IntervalUnit.year: (8760, 8785)}


def leaves_per_parent(first: RangeSpec, second: RangeSpec) -> int:
    """A range sub-level on the first level's own column splits each first-level partition into
    shorter periods (all of them: a row may land anywhere in its range); at most this many."""
    example = ("e.g. range.interval '1 year' with subpartition.range.interval '1 month', or range.width "
               "1000000 with subpartition.range.width 100000")
    if first.width is not None or second.width is not None:
        if first.width is None or second.width is None:
            raise ValueError("subpartition.range on the first level's column: give both levels an interval, or "
                             f"both a width; {example}")
        if second.width >= first.width:
            raise ValueError(f"subpartition.range.width {second.width} is not smaller than range.width "
                             f"{first.width}: on the same column each partition is split into narrower ones; {example}")
        return -(-first.width // second.width) + 1
    (n1, u1), (n2, u2) = first.parsed_interval, second.parsed_interval
    if n2 * _UNIT_HOURS[u2][1] >= n1 * _UNIT_HOURS[u1][0]:
        raise ValueError(f"subpartition.range.interval {second.interval!r} is not shorter than range.interval "
                         f"{first.interval!r}: on the same column each partition is split into shorter periods; "
                         f"{example}")
    return -(-(n1 * _UNIT_HOURS[u1][1]) // (n2 * _UNIT_HOURS[u2][0])) + 1


def interval_days(text: str) -> float:
    n, unit = parse_interval(text)
    return n * _UNIT_DAYS[unit.value]
