"""Range-partition bounds: alignment in a time zone, naming, literals, parsing observed bounds.

Internally every time bound is an aware datetime (an instant). How it is written into SQL
depends on the column type: timestamptz bounds carry their offset, timestamp bounds are the
wall-clock time in the policy's zone, date bounds are dates. The server's TimeZone setting
therefore never shifts a bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..models.intervals import IntervalUnit

TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}
INT_TYPES = {"smallint", "integer", "bigint"}
INT_LIMITS = {"smallint": (-(2**15), 2**15 - 1), "integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}

# Unbounded ends (MINVALUE / MAXVALUE) are represented as None.
Value = datetime | int
Bound = Value | None

_EPOCH_MONDAY = date(1970, 1, 5)


@dataclass(frozen=True)
class Period:
    lower: Value
    upper: Value


@dataclass(frozen=True)
class TimeGrid:
    """Partitions of `n` units each, aligned in time zone `tz`."""

    n: int
    unit: IntervalUnit
    tz: ZoneInfo

    def _local_midnight(self, d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=self.tz)

    def start_of(self, t: datetime) -> datetime:
        """Start of the period holding instant `t`."""
        if self.unit is IntervalUnit.hour:
            # Hours are aligned on UTC: local wall-clock hours repeat or vanish at DST changes.
            utc = t.astimezone(UTC)
            hours = int(utc.timestamp()) // 3600
            hours -= hours % self.n
            return datetime.fromtimestamp(hours * 3600, UTC).astimezone(self.tz)
        local = t.astimezone(self.tz).date()
        if self.unit is IntervalUnit.day:
            days = (local - date(1970, 1, 1)).days
            return self._local_midnight(date(1970, 1, 1) + timedelta(days=days - days % self.n))
        if self.unit is IntervalUnit.week:
            days = (local - _EPOCH_MONDAY).days
            span = 7 * self.n
            return self._local_midnight(_EPOCH_MONDAY + timedelta(days=days - days % span))
        if self.unit is IntervalUnit.month:
            months = (local.year - 1970) * 12 + local.month - 1
            months -= months % self.n
            return self._local_midnight(date(1970 + months // 12, months % 12 + 1, 1))
        years = local.year - 1970
        years -= years % self.n
        return self._local_midnight(date(1970 + years, 1, 1))

    def shift(self, start: datetime, k: int) -> datetime:
        """The period start `k` periods after (or before, k<0) the aligned `start`."""
        if self.unit is IntervalUnit.hour:
            return (start.astimezone(UTC) + timedelta(hours=self.n * k)).astimezone(self.tz)
        local = start.astimezone(self.tz).date()
        if self.unit in (IntervalUnit.day, IntervalUnit.week):
            days = self.n * k * (7 if self.unit is IntervalUnit.week else 1)
            return self._local_midnight(local + timedelta(days=days))
        months = self.n * k * (12 if self.unit is IntervalUnit.year else 1)
        total = local.year * 12 + local.month - 1 + months
        return self._local_midnight(date(total // 12, total % 12 + 1, 1))

    def period(self, start: datetime) -> Period:
        return Period(start, self.shift(start, 1))

    def suffix(self, start: datetime) -> str:
        local = start.astimezone(self.tz)
        if self.unit is IntervalUnit.year:
            return local.strftime("%Y")
        if self.unit is IntervalUnit.month:
            return local.strftime("%Y_%m")
        if self.unit is IntervalUnit.hour:
            return start.astimezone(UTC).strftime("%Y_%m_%d_%H")
        return local.strftime("%Y_%m_%d")


@dataclass(frozen=True)
class IntGrid:
    width: int

    def start_of(self, v: int) -> int:
        return v - v % self.width

    def shift(self, start: int, k: int) -> int:
        return start + k * self.width

    def period(self, start: int) -> Period:
        return Period(start, start + self.width)

    @staticmethod
    def suffix(start: int) -> str:
        return str(start) if start >= 0 else f"m{-start}"


def render_bound(value: Bound, column_type: str, tz: ZoneInfo) -> str:
    """The SQL text of one bound for a column of `column_type`."""
    if value is None:
        raise ValueError("unbounded values are never planned")
    if isinstance(value, int):
        return str(value)
    local = value.astimezone(tz)
    if column_type == "timestamp with time zone":
        text = local.isoformat(sep=" ")
    elif column_type == "timestamp without time zone":
        text = local.replace(tzinfo=None).isoformat(sep=" ")
    elif column_type == "date":
        if local.time() != datetime.min.time():
            raise ValueError(f"bound {local.isoformat()} is not a whole day; a date column needs day-sized intervals")
        text = local.date().isoformat()
    else:
        raise ValueError(f"column type {column_type!r} cannot hold a time bound")
    return "'" + text + "'"


_BOUND_RE = re.compile(r"^FOR VALUES FROM \((?P<lo>.+)\) TO \((?P<hi>.+)\)$")


def _parse_value(text: str, column_type: str, tz: ZoneInfo) -> Bound:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    if column_type in INT_TYPES:
        return int(text.strip("'"))  # bigint bounds come back quoted
    raw = text.strip("'")
    if raw in ("infinity", "-infinity"):
        return None
    if column_type == "date":
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), tzinfo=tz)
    if column_type == "timestamp without time zone":
        return datetime.fromisoformat(raw).replace(tzinfo=tz)
    # timestamptz, read in a session whose TimeZone is UTC: '2026-11-01 00:00:00+00'
    if re.search(r"[+-]\d\d$", raw):
        raw += ":00"
    parsed = datetime.fromisoformat(raw)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_range_bound(expr: str, column_type: str, tz: ZoneInfo) -> tuple[Bound, Bound] | None:
    """Parse `pg_get_expr(relpartbound)` of a single-column range partition.

    Returns None when the text is not a single-column range bound (e.g. DEFAULT)."""
    m = _BOUND_RE.match(expr.strip())
    if not m:
        return None
    try:
        return _parse_value(m.group("lo"), column_type, tz), _parse_value(m.group("hi"), column_type, tz)
    except ValueError:
        return None  # e.g. a multi-column bound: reported as unmanaged, never touched


def overlaps(a_lo: Bound, a_hi: Bound, b_lo: Bound, b_hi: Bound) -> bool:
    """Half-open ranges [lo, hi) with None as unbounded."""

    def lt(x: Bound, y: Bound, x_is_lower: bool, y_is_lower: bool) -> bool:
        # x < y where None means -inf for lowers and +inf for uppers.
        if x is None:
            return x_is_lower and not (y is None and y_is_lower)
        if y is None:
            return not y_is_lower
        return x < y  # type: ignore[operator]

    return lt(a_lo, b_hi, True, False) and lt(b_lo, a_hi, True, False)


# ---------------------------------------------------------------------------------------------
# Coverage, compared in the column's own terms
#
# Aware datetimes sharing a tzinfo compare by wall clock, others by instant; and a timestamp
# (without time zone) column sees two instants of a repeated wall-clock hour as one value. So
# every comparison goes through `column_key`: the instant (as naive UTC) for timestamptz, the
# wall clock in the policy's zone for timestamp and date, the integer itself otherwise.

Key = datetime | int


def column_key(value: Value, column_type: str, tz: ZoneInfo) -> Key:
    if isinstance(value, int):
        return value
    if column_type == "timestamp with time zone":
        return value.astimezone(UTC).replace(tzinfo=None)
    return value.astimezone(tz).replace(tzinfo=None)


@dataclass(frozen=True)
class Span:
    """[lower, upper) with its keys; None is unbounded (MINVALUE / MAXVALUE)."""

    lower: Bound
    upper: Bound
    lo_key: Key | None
    hi_key: Key | None


def span(lower: Bound, upper: Bound, column_type: str, tz: ZoneInfo) -> Span:
    return Span(lower, upper,
                None if lower is None else column_key(lower, column_type, tz),
                None if upper is None else column_key(upper, column_type, tz))


def uncovered(want: Span, covers: list[Span]) -> list[Span]:
    """The parts of the finite span `want` that no span of `covers` covers, in order."""
    assert want.lo_key is not None and want.hi_key is not None
    gaps: list[Span] = []
    cur, cur_key = want.lower, want.lo_key
    for c in sorted(covers, key=lambda c: (c.lo_key is not None, c.lo_key)):
        if c.hi_key is not None and c.hi_key <= cur_key:  # type: ignore[operator]
            continue
        if c.lo_key is not None and c.lo_key >= want.hi_key:  # type: ignore[operator]
            break
        if c.lo_key is not None and c.lo_key > cur_key:  # type: ignore[operator]
            gaps.append(Span(cur, c.lower, cur_key, c.lo_key))
        if c.hi_key is None or c.hi_key >= want.hi_key:  # type: ignore[operator]
            return gaps
        cur, cur_key = c.upper, c.hi_key
    gaps.append(Span(cur, want.upper, cur_key, want.hi_key))
    return gaps


def clip(want: Span, inside: Span) -> Span | None:
    """The part of `want` within `inside`; None when they do not meet (None keys are unbounded)."""
    lo, lo_key = (want.lower, want.lo_key)
    if inside.lo_key is not None and (lo_key is None or inside.lo_key > lo_key):  # type: ignore[operator]
        lo, lo_key = inside.lower, inside.lo_key
    hi, hi_key = (want.upper, want.hi_key)
    if inside.hi_key is not None and (hi_key is None or inside.hi_key < hi_key):  # type: ignore[operator]
        hi, hi_key = inside.upper, inside.hi_key
    if lo_key is not None and hi_key is not None and lo_key >= hi_key:  # type: ignore[operator]
        return None
    return Span(lo, hi, lo_key, hi_key)


def key_suffix(key: Key) -> str:
    """A name fragment for one bound of a bridging partition (never the form grid names take)."""
    if isinstance(key, int):
        return IntGrid.suffix(key)
    return key.strftime("%Y%m%d%H%M") + (key.strftime("%S") if key.second else "")


def render_range(lower: Bound, upper: Bound, column_type: str, tz: ZoneInfo) -> tuple[str, str, str]:
    """(lo, hi, clause) of a range to create: `lo`/`hi` for predicates such as `col >= lo AND col < hi`,
    the clause for ATTACH. An unbounded end (an integer period reaching past what the column's
    type holds) is MINVALUE / MAXVALUE in the clause and the type's limit in the predicates."""
    limits = INT_LIMITS.get(column_type, (0, 0))
    lo = str(limits[0]) if lower is None else render_bound(lower, column_type, tz)
    hi = str(limits[1] + 1) if upper is None else render_bound(upper, column_type, tz)
    clause = (f"FOR VALUES FROM ({'MINVALUE' if lower is None else lo}) "
              f"TO ({'MAXVALUE' if upper is None else hi})")
    return lo, hi, clause


def clamp_to_type(lower: Value, upper: Value, column_type: str, tz: ZoneInfo) -> Span | None:
    """The period as a span a column of this type can hold: None when it lies wholly outside the
    type's range, an unbounded end where it reaches past it."""
    limits = INT_LIMITS.get(column_type)
    if limits is None or not isinstance(lower, int) or not isinstance(upper, int):
        return span(lower, upper, column_type, tz)
    if lower > limits[1] or upper <= limits[0]:
        return None
    return Span(None if lower < limits[0] else lower, None if upper > limits[1] else upper,
                max(lower, limits[0]), min(upper, limits[1] + 1))
