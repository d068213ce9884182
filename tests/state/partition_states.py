"""Generated initial states of a database for a PartitionPolicy, and valid specs for it.

A `PartitionCase` is plain data (so hypothesis can shrink it and a failure prints it); `build`
makes it real. States are laid out on a grid that is usually the spec's own (partitions present,
missing, foreign-named, off-grid, sub-partitioned) and sometimes another one (a spec changed
since the table was made)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pydantic
from hypothesis import reject
from hypothesis import strategies as st

from pgcurator.models.intervals import IntervalUnit
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.ranges import IntGrid, TimeGrid, render_bound

from .harness import Harness, create_metadata

TIME_ZONES = ["UTC", "Pacific/Chatham", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
              "Europe/London", "America/St_Johns"]
KEY_TYPES = {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
             "date": "date", "bigint": "bigint"}
TABLE_NAMES = ["events", "Event Logs", "événements", "ev_" + "x" * 52]
# Database-level defaults another team may have set (ALTER DATABASE ... SET): the operator must plan
# the same under every one of them.
DB_SETTINGS: dict[str, list[str]] = {
    "DateStyle": ["SQL, DMY", "German", "Postgres, MDY", "ISO, YMD"],
    "IntervalStyle": ["sql_standard", "iso_8601", "postgres_verbose"],
    "TimeZone": ["Pacific/Chatham", "America/New_York", "Asia/Kolkata", "UTC"],
    "search_path": ["other, public", "st", '"$user"'],
    "extra_float_digits": ["-15", "3"],
    "standard_conforming_strings": ["off"],
    "default_transaction_isolation": ["serializable", "repeatable read"],
    "bytea_output": ["escape"],
    "lc_monetary": ["C"],
}
METADATA = ["absent", "current", "older", "foreign"]


@dataclass(frozen=True)
class Part:
    """One first-level partition of the initial state."""

    lower: datetime | int
    upper: datetime | int
    naming: str  # ours | foreign | subpartitioned
    rows: int = 0


@dataclass
class PartitionCase:
    table: str
    key_type: str
    spec: dict[str, Any]
    now: datetime
    table_state: str  # absent | plain | partitioned | wrong_key
    state_range: dict[str, Any] = field(default_factory=dict)  # the grid the state was laid on
    parts: list[Part] = field(default_factory=list)
    default: str = "absent"  # absent | empty | rows_in | rows_out
    loose_table: bool = False  # a plain table already named like a partition we would create
    metadata: str = "absent"
    settings: dict[str, str] = field(default_factory=dict)
    plain_rows: int = 0
    # Another PartitionPolicy declaring the same table (its own retention, grid...), run first.
    other_policy: dict[str, Any] | None = None

    @property
    def column_type(self) -> str:
        return KEY_TYPES[self.key_type]

    def model(self) -> PartitionPolicySpec:
        return PartitionPolicySpec.model_validate({"database": {"secretName": "x"}, **self.spec})

    def label(self) -> dict[str, Any]:
        """What makes this state distinct (for the 'states explored' count)."""
        return {"t": self.table, "k": self.key_type, "ts": self.table_state, "r": self.state_range,
                "p": [(str(p.lower), str(p.upper), p.naming, p.rows) for p in self.parts], "d": self.default,
                "l": self.loose_table, "m": self.metadata, "s": self.settings, "n": self.now.isoformat(),
                "o": self.other_policy}


# --- grids -------------------------------------------------------------------------------------


def grid_of(r: dict[str, Any]) -> TimeGrid | IntGrid:
    if "width" in r:
        return IntGrid(int(r["width"]))
    n, unit = r["interval"].split()
    return TimeGrid(int(n), IntervalUnit(unit.rstrip("s")), ZoneInfo(r.get("timeZone", "UTC")))


def period_at(r: dict[str, Any], anchor: datetime | int, k: int) -> tuple[datetime | int, datetime | int]:
    g = grid_of(r)
    if isinstance(g, IntGrid):
        assert isinstance(anchor, int)
        s = g.shift(g.start_of(anchor), k)
        return s, s + g.width
    assert isinstance(anchor, datetime)
    s2 = g.shift(g.start_of(anchor), k)
    return s2, g.shift(s2, 1)


def literal(value: datetime | int, column_type: str, tz: str) -> str:
    if isinstance(value, int):
        return str(value)
    if column_type == "date":  # the day holding the instant, wherever the state's values came from
        return f"'{value.astimezone(ZoneInfo(tz)).date().isoformat()}'"
    return render_bound(value, column_type, ZoneInfo(tz))


# --- strategies --------------------------------------------------------------------------------


def dst_instants(tz: str, year: int) -> list[datetime]:
    """The instants (UTC) at which `tz` changes its offset during `year`."""
    zone = ZoneInfo(tz)
    out = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    step = timedelta(days=1)
    prev = t.astimezone(zone).utcoffset()
    while t.year == year:
        nxt = t + step
        off = nxt.astimezone(zone).utcoffset()
        if off != prev:
            lo, hi = t, nxt  # bisect to the minute
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == prev:
                    lo = mid
                else:
                    hi = mid
            out.append(hi.replace(second=0, microsecond=0))
            prev = off
        t = nxt
    return out


@st.composite
def instants(draw: st.DrawFn, tz: str) -> datetime:
    """Anywhere from 1900 to 2200, with weight on DST changes and period boundaries of `tz`."""
    how = draw(st.sampled_from(["any", "recent", "dst", "boundary"]))
    if how == "any":
        return draw(st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)))
    if how == "recent":
        return draw(st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1), timezones=st.just(UTC)))
    year = draw(st.integers(1970, 2100))
    delta = timedelta(minutes=draw(st.sampled_from([-61, -60, -30, -1, 0, 1, 30, 59, 60, 61, 120])))
    if how == "dst":
        changes = dst_instants(tz, year)
        if changes:
            return draw(st.sampled_from(changes)) + delta
    local = datetime(year, draw(st.integers(1, 12)), 1, tzinfo=ZoneInfo(tz))
    return local.astimezone(UTC) + delta


@st.composite
def range_sections(draw: st.DrawFn, key_type: str, big: bool = False) -> dict[str, Any]:
    premake = draw(st.integers(0, 6)) if not big else draw(st.sampled_from([0, 1, 5, 50, 400]))
    if key_type == "bigint":
        return {"column": "k", "width": draw(st.sampled_from([1, 7, 100, 1000])), "premake": premake}
    units = ["day", "week", "month", "year"] + ([] if key_type == "date" else ["hour"])
    unit = draw(st.sampled_from(units))
    n = draw(st.sampled_from([1, 1, 1, 2, 3, 7] if not big else [1, 13, 500, 9999]))
    return {"column": "k", "interval": f"{n} {unit}{'s' if n > 1 else ''}",
            "timeZone": draw(st.sampled_from(TIME_ZONES)), "premake": premake}


@st.composite
def policy_specs(draw: st.DrawFn, table: str, key_type: str, big: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "table": {"schema": "st", "name": table},
        "range": draw(range_sections(key_type, big)),
        "timeouts": {"lockTimeout": "2s", "lockRetries": 1},
    }
    if draw(st.booleans()):
        spec["defaultPartition"] = True
    if draw(st.booleans()):
        spec["defaultRows"] = {"move": True, "batchRows": draw(st.sampled_from([1, 2, 1000]))}
    if draw(st.integers(0, 2)) == 0:
        keep = draw(st.integers(1, 4) if not big else st.sampled_from([1, 100, 100000]))
        spec["retention"] = {"keep": keep, "action": draw(st.sampled_from(["drop", "detach"]))}
    if draw(st.integers(0, 3)) == 0:
        spec["template"] = {"indexes": [{"name": "k_idx", "columns": ["k"]}]}
    try:  # only specs the model accepts: what it refuses never reaches the planner (test_known_defects pins that)
        PartitionPolicySpec.model_validate({"database": {"secretName": "x"}, **spec})
    except pydantic.ValidationError:
        reject()
    return spec


@st.composite
def partition_cases(draw: st.DrawFn, big: bool = False) -> PartitionCase:
    table = draw(st.sampled_from(TABLE_NAMES))
    key_type = draw(st.sampled_from(list(KEY_TYPES)))
    spec = draw(policy_specs(table, key_type, big))
    r = spec["range"]
    tz = r.get("timeZone", "UTC")
    now = draw(instants(tz))
    case = PartitionCase(table, key_type, spec, now,
                         draw(st.sampled_from(["absent", "plain", "partitioned", "partitioned", "partitioned",
                                               "wrong_key"])))
    case.metadata = draw(st.sampled_from(METADATA))
    names = draw(st.lists(st.sampled_from(sorted(DB_SETTINGS)), max_size=3, unique=True))
    case.settings = {n: draw(st.sampled_from(DB_SETTINGS[n])) for n in names}
    # Mostly alone on its table: a second policy makes the subject's run a refusal (hypothesis
    # draws the small integers far more often than 1 in n, so not integers(0, n) == 0).
    if draw(st.sampled_from([False] * 7 + [True])):
        case.other_policy = draw(policy_specs(table, key_type))
    if case.table_state == "plain":
        case.plain_rows = draw(st.integers(0, 3))
    if case.table_state != "partitioned":
        return case
    # The grid the existing partitions were laid on: the spec's, or one from before a spec change.
    case.state_range = r if draw(st.integers(0, 3)) else draw(range_sections(key_type))
    anchor: datetime | int = now if key_type != "bigint" else draw(st.integers(-5000, 5000))
    premake = int(r["premake"])
    taken: list[tuple[Any, Any]] = []

    def free(lo: Any, hi: Any) -> bool:
        return all(hi <= a or lo >= b for a, b in taken)

    for k in range(-3, min(premake, 8) + 3):
        what = draw(st.sampled_from(["absent", "ours", "ours", "foreign", "sub", "overlap"]))
        if what == "absent":
            continue
        try:
            lo, hi = period_at(case.state_range, anchor, k)
        except (OverflowError, ValueError):
            continue
        if what == "overlap":  # shifted by half a period: on no grid
            if isinstance(lo, int) and isinstance(hi, int):
                half = (hi - lo) // 2
            elif key_type == "date":
                # Whole days in the zone (wall-clock arithmetic): shifted in UTC, bounds a DST change
                # apart could land on one date, an empty range PostgreSQL refuses.
                half = timedelta(days=max(1, ((hi - lo) / 2).days))  # type: ignore[operator,assignment]
            else:
                # in UTC: arithmetic on aware datetimes of one zone is wall-clock arithmetic (wrong across DST)
                lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)  # type: ignore[union-attr]
                half = (hi - lo) / 2  # type: ignore[operator,assignment]
            if not half:
                continue
            lo, hi = lo + half, hi + half  # type: ignore[operator]
            what = "foreign"
        if not free(lo, hi) or lo == hi:
            continue
        taken.append((lo, hi))
        case.parts.append(Part(lo, hi, what, draw(st.integers(0, 2))))
    case.default = draw(st.sampled_from(["absent", "empty", "rows_in", "rows_out"]))
    case.loose_table = draw(st.integers(0, 5)) == 0
    return case


# --- building ----------------------------------------------------------------------------------


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def key_values(case: PartitionCase, lo: Any, hi: Any, n: int, tz: str | None = None) -> list[str]:
    """`n` literals inside [lo, hi) (bounds of a grid in `tz`, by default the spec's)."""
    tz = tz or case.spec["range"].get("timeZone", "UTC")
    out = []
    for i in range(n):
        if isinstance(lo, int):
            v: Any = lo + (i % max(1, hi - lo))
        elif case.key_type == "date":
            v = lo
        else:  # in UTC (see above)
            v = lo.astimezone(UTC) + (hi.astimezone(UTC) - lo.astimezone(UTC)) * (i + 1) / (n + 2)
        out.append(literal(v, case.column_type, tz))
    return out


async def build(h: Harness, case: PartitionCase) -> None:
    """Make the case's state real (as the operator's role, which owns the table, or as a superuser
    for what another role owns)."""
    await h.reset()
    admin = await h.admin()
    app = await h.app()
    t = q(case.table)
    ctype = case.column_type
    cols = f"(id bigint GENERATED BY DEFAULT AS IDENTITY, k {ctype} NOT NULL, payload text DEFAULT 'x')"
    if case.metadata == "current":
        await create_metadata(app)
    elif case.metadata == "older":  # a layout from before a column was added
        await app.execute("CREATE SCHEMA pgcurator; CREATE TABLE pgcurator.history (id bigint GENERATED ALWAYS "
                          "AS IDENTITY PRIMARY KEY, resource text NOT NULL, step text NOT NULL, target text NOT "
                          "NULL, statement text NOT NULL, started_at timestamptz NOT NULL, duration_ms double "
                          "precision NOT NULL, outcome text NOT NULL, error text)")
    elif case.metadata == "foreign":
        await admin.execute("CREATE SCHEMA pgcurator")
    # Another team's table of the same name in another schema: never touched.
    await app.execute(f"CREATE TABLE other.{t} {cols} PARTITION BY RANGE (k); "
                      f"CREATE TABLE other.{q(case.table[:40] + '_keep')} PARTITION OF other.{t} DEFAULT")
    if case.table_state == "plain":
        await app.execute(f"CREATE TABLE st.{t} {cols}")
        tz = case.spec["range"].get("timeZone", "UTC")
        for i in range(case.plain_rows):
            v = case.now + timedelta(days=i) if case.key_type != "bigint" else i
            await app.execute(f"INSERT INTO st.{t} (k) VALUES ({literal(_on_grid(case, v), ctype, tz)})")
    elif case.table_state == "wrong_key":
        await app.execute(f"CREATE TABLE st.{t} {cols} PARTITION BY RANGE (id)")
    elif case.table_state == "partitioned":
        await _build_partitioned(app, case, cols)
    if case.settings:
        sets = "; ".join(f"ALTER DATABASE {q(h.dbname)} SET {k} = '{v}'" for k, v in case.settings.items())
        await admin.execute(sets)
    await h.fresh_pools()


def _on_grid(case: PartitionCase, v: Any) -> Any:
    if case.key_type == "date" and isinstance(v, datetime):
        tz = ZoneInfo(case.spec["range"].get("timeZone", "UTC"))
        local = v.astimezone(tz)
        return datetime(local.year, local.month, local.day, tzinfo=tz)
    return v


async def _build_partitioned(app: asyncpg.Connection, case: PartitionCase, cols: str) -> None:
    from pgcurator.planner.partition import range_name
    from pgcurator.sql.quote import fit_identifier

    t = q(case.table)
    ctype = case.column_type
    sr = case.state_range
    tz = sr.get("timeZone", "UTC")
    await app.execute(f"CREATE TABLE st.{t} {cols} PARTITION BY RANGE (k)")
    rspec = case.model().rng.__class__.model_validate(sr)
    for i, p in enumerate(case.parts):
        if p.naming == "foreign":
            name = fit_identifier(case.table[:30], f"_old_{i}")
        else:
            name = range_name(case.table, rspec, p.lower)
        bound = f"FOR VALUES FROM ({literal(p.lower, ctype, tz)}) TO ({literal(p.upper, ctype, tz)})"
        sql = f"CREATE TABLE st.{q(name)} PARTITION OF st.{t} {bound}"
        if p.naming == "sub":
            sql += " PARTITION BY HASH (id)"
        await app.execute(sql)
        if p.naming == "sub":
            for r in range(2):
                await app.execute(f"CREATE TABLE st.{q(fit_identifier(name, f'_h{r}'))} PARTITION OF st.{q(name)} "
                                  f"FOR VALUES WITH (modulus 2, remainder {r})")
        for v in key_values(case, p.lower, p.upper, p.rows, tz):
            await app.execute(f"INSERT INTO st.{t} (k) VALUES ({v})")
    if case.default != "absent":
        dname = fit_identifier(case.table, "_default")
        await app.execute(f"CREATE TABLE st.{q(dname)} PARTITION OF st.{t} DEFAULT")
        r = case.spec["range"]
        if case.default == "rows_in":  # rows inside the window no partition covers yet
            anchor: Any = case.now if case.key_type != "bigint" else 0
            for k in range(int(r["premake"]) + 1):
                try:
                    lo, hi = period_at(r, anchor, k)
                except (OverflowError, ValueError):
                    continue
                for v in key_values(case, lo, hi, 1):
                    await _insert_if_it_fits(app, t, v)
        elif case.default == "rows_out":  # far outside any window
            far: Any = -10**9 if case.key_type == "bigint" else _on_grid(case, datetime(1800, 6, 1, tzinfo=UTC))
            await _insert_if_it_fits(app, t, literal(far, ctype, tz))
    if case.loose_table:
        # Someone's plain table named exactly like the partition the policy would create for `now`.
        r = case.spec["range"]
        try:
            lo, _ = period_at(r, case.now if case.key_type != "bigint" else 0, 0)
        except (OverflowError, ValueError):
            return
        name = range_name(case.table, case.model().rng, lo)
        if await app.fetchval("SELECT to_regclass($1) IS NULL", f"st.{q(name)}"):
            hi = period_at(r, case.now if case.key_type != "bigint" else 0, 0)[1]
            await app.execute(f"CREATE TABLE st.{q(name)} {cols}")
            for v in key_values(case, lo, hi, 1):
                await app.execute(f"INSERT INTO st.{q(name)} (k) VALUES ({v})")


async def _insert_if_it_fits(app: asyncpg.Connection, t: str, value: str) -> None:
    try:
        async with app.transaction():
            await app.execute(f"INSERT INTO st.{t} (k) VALUES ({value})")
    except asyncpg.PostgresError:
        pass  # a partition holds it already, or none does: the state simply has no such row
