"""State space of the partition planner: for ANY spec the model accepts, any `now` from 1900 to
2200 (DST transitions of several zones included) and generated observations (no, some, all
partitions; foreign ones; a DEFAULT partition with rows), planning returns steps or a PlanError
with a message — never another exception. What it plans never overlaps what exists, and
planning again after applying it finds nothing to do."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgcurator.catalog.partitions import ColumnInfo, PartitionInfo, TableObservation
from pgcurator.errors import PlanError
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.partition import desired_range_periods, plan_policy
from pgcurator.planner.partition_range import parse_parts
from pgcurator.planner.ranges import clamp_to_type, render_range, span, uncovered

from ..figures import FULL, record
from .plan_sim import apply

ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago"]
UNITS = ["hour", "day", "week", "month", "year"]
TIME_TYPES = ["timestamp with time zone", "timestamp without time zone", "date"]
INT_TYPES = ["smallint", "integer", "bigint"]
INT_LIMITS = {"smallint": (-(2**15), 2**15 - 1), "integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
EXAMPLES = 3000 if FULL else 400
TRIED = {"specs": 0, "plans": 0, "refused": 0, "plan errors": 0}


def _transitions() -> list[datetime]:
    """Instants around every UTC-offset change of the zones in a few years (1901 .. 2199)."""
    out: list[datetime] = []
    for zone in ZONES[1:]:
        tz = ZoneInfo(zone)
        for year in (1950, 1986, 2000, 2026, 2100, 2199):
            t = datetime(year, 1, 1, tzinfo=UTC)
            prev = t.astimezone(tz).utcoffset()
            while t.year == year:
                nxt = t + timedelta(minutes=30)
                off = nxt.astimezone(tz).utcoffset()
                if off != prev:
                    out += [nxt - timedelta(hours=1), nxt - timedelta(microseconds=1), nxt,
                            nxt + timedelta(minutes=30), nxt + timedelta(hours=1)]
                    prev = off
                t = nxt
    return out


TRANSITIONS = _transitions()

nows = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(TRANSITIONS),
)
names = st.one_of(st.sampled_from(["a", "b", "stars", "x" * 52, "y" * 63, "é" * 31]),
                  st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=63))


@st.composite
def range_sections(draw: st.DrawFn, column: str, column_type: str) -> dict[str, Any]:
    body: dict[str, Any] = {"column": column, "premake": draw(st.one_of(st.integers(0, 6), st.integers(0, 1000)))}
    if column_type in INT_TYPES:
        body["width"] = draw(st.one_of(st.integers(1, 1000), st.integers(1, 10**19)))
    else:
        n = draw(st.one_of(st.integers(1, 3), st.integers(1, 9999)))
        body["interval"] = f"{n} {draw(st.sampled_from(UNITS))}{draw(st.sampled_from(['', 's']))}"
        body["timeZone"] = draw(st.sampled_from(ZONES))
    return body


@st.composite
def specs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    """A spec body (often valid, sometimes not: the model decides) and the table's column types."""
    strategy = draw(st.sampled_from(["range", "list", "hash"]))
    ktype = draw(st.sampled_from(TIME_TYPES + INT_TYPES)) if strategy == "range" else "text"
    stype = draw(st.sampled_from(TIME_TYPES + INT_TYPES))
    types = {"k": ktype, "s": stype, "id": "bigint"}
    body: dict[str, Any] = {"database": {"secretName": "db"},
                            "table": {"name": draw(st.sampled_from(["t", "event_logs", "t" * 63]))},
                            "strategy": strategy}
    if strategy == "range":
        body["range"] = draw(range_sections("k", ktype))
        if draw(st.booleans()):
            body["retention"] = {"keep": draw(st.one_of(st.integers(1, 30), st.integers(1, 100000))),
                                 "action": draw(st.sampled_from(["drop", "detach", "archive"])),
                                 "archive": {"schema": "arch"}}
    elif strategy == "list":
        parts = draw(st.lists(names, min_size=1, max_size=4, unique=True))
        body["list"] = {"column": "k", "partitions": [{"name": n, "values": [f"v{i}"]} for i, n in enumerate(parts)]}
    else:
        types["k"] = "bigint"
        body["hash"] = {"column": "k", "modulus": draw(st.one_of(st.integers(1, 8), st.integers(1, 1024)))}
    if strategy != "hash":
        body["defaultPartition"] = draw(st.booleans())
        body["defaultRows"] = {"move": draw(st.booleans()), "batchRows": draw(st.integers(1, 1000000))}
    if draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            types["s"] = "bigint"
            body["subpartition"] = {"strategy": "hash",
                                    "hash": {"column": "s", "modulus": draw(st.one_of(st.integers(1, 4),
                                                                                      st.integers(1, 1024)))}}
        else:
            body["subpartition"] = {"strategy": "range", "range": draw(range_sections("s", stype))}
    if draw(st.integers(0, 3)) == 0:
        body["template"] = {"indexes": [{"name": draw(names), "columns": ["id"]}]}
    return body, types


def observation(draw: st.DrawFn, spec: PartitionPolicySpec, types: dict[str, str], now: datetime) -> TableObservation:
    strat = {"range": "r", "list": "l", "hash": "h"}[spec.strategy]
    obs = TableObservation(
        schema="public", name=spec.table.name, exists=True, relkind="p", strategy=strat, key_columns=["k"],
        column_types=dict(types), columns=[ColumnInfo(c, t) for c, t in types.items()])
    if spec.range is not None and types["k"] in INT_TYPES:
        obs.max_key = draw(st.one_of(st.none(), st.integers(-(2**31), 2**31), st.integers(-(2**63), 2**63 - 1)))
    if draw(st.booleans()) and spec.range is not None:
        # A partition made by someone else, before the policy: wide, unbounded, or at an odd place.
        lo = draw(st.sampled_from(["MINVALUE", "'2020-06-15 10:30:00+00'", "'1950-01-01'", "0", "-5"]))
        hi = draw(st.sampled_from(["MAXVALUE", "'2021-01-01 00:00:00+00'", "'2100-01-01'", "1000", "7"]))
        obs.partitions.append(PartitionInfo("public", "legacy", f"FOR VALUES FROM ({lo}) TO ({hi})"))
    shape = draw(st.sampled_from(["none", "some", "all"]))
    if shape != "none":
        # What the policy itself built at some other time, with some partitions gone since.
        then = now + timedelta(days=draw(st.integers(-400, 400)))
        try:
            built, _ = plan_policy(spec, obs, then)
        except PlanError:
            built = None
        if built is not None:
            obs = apply(obs, built)
            if shape == "some" and obs.partitions:
                keep = draw(st.lists(st.booleans(), min_size=len(obs.partitions), max_size=len(obs.partitions)))
                obs.partitions = [p for p, k in zip(obs.partitions, keep, strict=True) if k]
    if spec.strategy == "list" and draw(st.booleans()):
        obs.partitions.append(PartitionInfo("public", "legacy_list", "FOR VALUES IN ('v0', 'zz')"))
    if spec.strategy != "hash" and draw(st.booleans()):
        default = PartitionInfo("public", draw(st.sampled_from([spec.table.name[:50] + "_default", "catchall"])),
                                "DEFAULT", is_default=True)
        obs.partitions = [p for p in obs.partitions if not p.is_default] + [default]
        obs.default_rows = draw(st.integers(0, 10**6))
        if obs.default_rows and spec.range is not None and draw(st.booleans()):
            # Rows in the DEFAULT partition inside some of the ranges to create.
            try:
                from pgcurator.planner.partition_range import ranges_to_create

                tz = ZoneInfo(spec.range.time_zone)
                for new in ranges_to_create(spec.range, spec.table.name, obs, types["k"], now):
                    if draw(st.booleans()):
                        obs.default_rows_in[render_range(new.lower, new.upper, types["k"], tz)[0]] = draw(
                            st.integers(1, 10))
            except (PlanError, ValueError):
                pass  # the planner reports these itself
    return obs


def _check_no_overlap(spec: PartitionPolicySpec, obs: TableObservation) -> None:
    if spec.range is None:
        return
    tz = ZoneInfo(spec.range.time_zone)
    parts, _ = parse_parts(obs, obs.column_types["k"], tz)
    spans = sorted((span(p.lower, p.upper, obs.column_types["k"], tz) for p in parts),
                   key=lambda s: (s.lo_key is not None, s.lo_key))
    for a, b in itertools.pairwise(spans):
        assert a.hi_key is not None and b.lo_key is not None and a.hi_key <= b.lo_key, (a, b)  # type: ignore[operator]
    for s in spans:
        assert s.lo_key is None or s.hi_key is None or s.lo_key < s.hi_key, s  # type: ignore[operator]
    limits = INT_LIMITS.get(obs.column_types["k"])
    if limits is not None:  # PostgreSQL refuses a bound the column's type cannot hold
        for s in spans:
            for b in (s.lower, s.upper):
                assert b is None or limits[0] <= b <= limits[1], f"bound {b} outside {obs.column_types['k']}"  # type: ignore[operator]


def _check_no_gap(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> None:
    """Every value from the current period to the end of the premade window has a partition."""
    if spec.range is None:
        return
    ctype = obs.column_types["k"]
    tz = ZoneInfo(spec.range.time_zone)
    parts, _ = parse_parts(obs, ctype, tz)
    covers = [span(p.lower, p.upper, ctype, tz) for p in parts]
    for period in desired_range_periods(spec.range, now, obs.max_key):
        want = clamp_to_type(period.lower, period.upper, ctype, tz)
        if want is None or want.lo_key >= want.hi_key:  # type: ignore[operator]
            continue
        gaps = uncovered(want, covers)
        assert not gaps, f"no partition for {[(g.lo_key, g.hi_key) for g in gaps]}"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), case=specs(), now=nows)
def test_every_accepted_spec_plans_or_says_why(data: st.DataObject, case: tuple[dict[str, Any], dict[str, str]],
                                                now: datetime) -> None:
    body, types = case
    TRIED["specs"] += 1
    try:
        spec = PartitionPolicySpec.model_validate(body)
    except pydantic.ValidationError:
        TRIED["refused"] += 1
        record("state-space partition planner: specs tried", TRIED["specs"])
        record("state-space partition planner: specs refused by the model", TRIED["refused"])
        assume(False)
        return
    obs = observation(data.draw, spec, types, now)
    record("state-space partition planner: specs tried", TRIED["specs"])
    try:
        plan, _ = plan_policy(spec, obs, now)
    except PlanError as exc:
        TRIED["plan errors"] += 1
        record("state-space partition planner: PlanError (with a message)", TRIED["plan errors"])
        assert exc.message and exc.reason
        return
    TRIED["plans"] += 1
    record("state-space partition planner: plans checked", TRIED["plans"])
    after = apply(obs, plan)
    _check_no_overlap(spec, after)
    if not plan.blocked:
        _check_no_gap(spec, after, now)
    if not plan.blocked and not any(n.startswith("legacy") for n in (p.name for p in obs.partitions)):
        again, _ = plan_policy(spec, after, now)
        assert again.empty, [s.target for s in again.steps]


def _refusal(body: dict[str, Any]) -> str:
    from pgcurator.runtime import format_validation_error

    try:
        PartitionPolicySpec.model_validate(body)
    except pydantic.ValidationError as exc:
        return format_validation_error(exc)
    raise AssertionError(f"accepted: {body}")


def test_what_cannot_be_planned_is_refused_naming_the_field() -> None:
    base: dict[str, Any] = {"database": {"secretName": "db"}, "table": {"name": "t"}}
    rng = {"column": "k", "interval": "1 month"}
    assert "range.interval" in _refusal({**base, "range": {**rng, "interval": "11 years"}})
    assert "range.interval" in _refusal({**base, "range": {**rng, "interval": "9999 days"}})
    assert "range.premake" in _refusal({**base, "range": {**rng, "interval": "10 years", "premake": 20}})
    assert "retention.keep" in _refusal({**base, "range": {**rng, "interval": "10 years"},
                                         "retention": {"keep": 101, "action": "drop"}})
    assert "template.indexes" in _refusal({**base, "range": rng,
                                           "template": {"indexes": [{"name": "i" * 53, "columns": ["id"]}]}})
    assert "list.partitions[].name" in _refusal({**base, "strategy": "list", "list": {
        "column": "k", "partitions": [{"name": "p" * 62, "values": ["a"]}]}})
    assert "subpartition" in _refusal({**base, "strategy": "hash", "hash": {"column": "k", "modulus": 1024},
                                       "subpartition": {"strategy": "hash", "hash": {"column": "s", "modulus": 1024}}})
    # The largest accepted values plan.
    ok = PartitionPolicySpec.model_validate({**base, "range": {**rng, "interval": "10 years", "premake": 18},
                                             "retention": {"keep": 99, "action": "drop"}})
    obs = TableObservation(schema="public", name="t", exists=True, relkind="p", strategy="r", key_columns=["k"],
                           column_types={"k": "date"})
    for now in (datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)):
        plan, _ = plan_policy(ok, obs, now)
        assert len(plan.steps) == 19
