"""PartitionPolicy planner (range strategy). Pure: no I/O, `now` is an argument."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import PartitionInfo, TableObservation, retention_marker
from ..errors import PlanError
from ..models.partition import PartitionPolicySpec, RetentionAction
from ..sql.quote import fit_identifier, ident, literal, qualified
from ..sql.statements import Plan, Step
from .ranges import (
    INT_TYPES,
    TIME_TYPES,
    Bound,
    IntGrid,
    Period,
    TimeGrid,
    overlaps,
    parse_range_bound,
    render_bound,
)


@dataclass(frozen=True)
class RangePartition:
    """An observed range partition with parsed bounds."""

    info: PartitionInfo
    lower: Bound
    upper: Bound


@dataclass
class RangeLayout:
    """What the planner understood of the table; also feeds the status."""

    column_type: str
    partitions: list[RangePartition]
    unparsed: list[PartitionInfo]
    covered_until: Bound


def default_partition_name(table: str) -> str:
    return fit_identifier(table, "_default")


def check_table(spec: PartitionPolicySpec, obs: TableObservation) -> str:
    """Refuse tables the range strategy cannot maintain; returns the key column's type."""
    t = spec.table
    if not obs.exists:
        raise PlanError(
            f"table {t.qualified} does not exist; create it as a partitioned table "
            f"(PARTITION BY RANGE ({spec.range.column}))",
            reason="TableNotFound",
        )
    if obs.relkind != "p":
        raise PlanError(
            f"table {t.qualified} is not partitioned; PartitionPolicy maintains tables declared with "
            f"PARTITION BY RANGE ({spec.range.column})",
            reason="TableNotPartitioned",
        )
    if obs.strategy != "r" or obs.key_has_expressions or len(obs.key_columns) != 1:
        raise PlanError(
            f"table {t.qualified} is not range-partitioned on a single column "
            f"(strategy {obs.strategy!r}, key {obs.key_columns})",
            reason="WrongPartitionKey",
        )
    if obs.key_columns[0] != spec.range.column:
        raise PlanError(
            f"table {t.qualified} is partitioned by {obs.key_columns[0]!r}, not by {spec.range.column!r}",
            reason="WrongPartitionKey",
        )
    column_type = obs.column_types.get(spec.range.column, "")
    if spec.range.interval is not None:
        if column_type not in TIME_TYPES:
            raise PlanError(
                f"column {spec.range.column!r} is {column_type or 'unknown'}; range.interval needs a timestamptz, "
                "timestamp or date column (use range.width for integer columns)",
                reason="WrongColumnType",
            )
        _, unit = spec.range.parsed_interval
        if column_type == "date" and unit.value == "hour":
            raise PlanError(
                f"column {spec.range.column!r} is a date; hourly partitions need a timestamp column",
                reason="WrongColumnType",
            )
    elif column_type not in INT_TYPES:
        raise PlanError(
            f"column {spec.range.column!r} is {column_type or 'unknown'}; range.width needs an integer column "
            "(use range.interval for time columns)",
            reason="WrongColumnType",
        )
    return column_type


def read_layout(spec: PartitionPolicySpec, obs: TableObservation) -> RangeLayout:
    column_type = check_table(spec, obs)
    tz = ZoneInfo(spec.range.time_zone)
    parts: list[RangePartition] = []
    unparsed: list[PartitionInfo] = []
    for p in obs.partitions:
        if p.is_default:
            continue
        bounds = parse_range_bound(p.bound_expr, column_type, tz)
        if bounds is None:
            unparsed.append(p)
        else:
            parts.append(RangePartition(p, bounds[0], bounds[1]))
    parts.sort(key=lambda r: (r.lower is not None, r.lower))
    covered: Bound = None
    if parts:
        uppers = [p.upper for p in parts]
        covered = None if any(u is None for u in uppers) else max(uppers)  # type: ignore[type-var]
    return RangeLayout(column_type, parts, unparsed, covered)


def desired_periods(spec: PartitionPolicySpec, now: datetime, max_key: int | None) -> list[Period]:
    """The period holding `now` (or the highest integer key) and `premake` after it."""
    r = spec.range
    if r.interval is not None:
        n, unit = r.parsed_interval
        grid = TimeGrid(n, unit, ZoneInfo(r.time_zone))
        start = grid.start_of(now)
        return [grid.period(grid.shift(start, k)) for k in range(r.premake + 1)]
    assert r.width is not None
    igrid = IntGrid(r.width)
    istart = igrid.start_of(max_key if max_key is not None else 0)
    return [igrid.period(igrid.shift(istart, k)) for k in range(r.premake + 1)]


def partition_name(spec: PartitionPolicySpec, lower: datetime | int) -> str:
    r = spec.range
    if isinstance(lower, int):
        suffix = IntGrid.suffix(lower)
    else:
        n, unit = r.parsed_interval
        suffix = TimeGrid(n, unit, ZoneInfo(r.time_zone)).suffix(lower)
    return fit_identifier(spec.table.name, "_p" + suffix)


def retention_cutoff(spec: PartitionPolicySpec, now: datetime, max_key: int | None) -> datetime | int | None:
    """Partitions whose whole range ends at or before this bound are removed."""
    if spec.retention is None:
        return None
    r = spec.range
    keep = spec.retention.keep
    if r.interval is not None:
        n, unit = r.parsed_interval
        grid = TimeGrid(n, unit, ZoneInfo(r.time_zone))
        return grid.shift(grid.start_of(now), -keep)
    assert r.width is not None
    if max_key is None:
        return None
    igrid = IntGrid(r.width)
    return igrid.shift(igrid.start_of(max_key), -keep)


def _create_partition_step(
    spec: PartitionPolicySpec, name: str, lo: str, hi: str, default: PartitionInfo | None, default_rows: int
) -> list[Step]:
    t = spec.table
    parent = qualified(t.schema_, t.name)
    child = qualified(t.schema_, name)
    col = ident(spec.range.column)
    steps: list[Step] = []
    # A separate table attached afterwards: CREATE TABLE ... PARTITION OF would take an
    # ACCESS EXCLUSIVE lock on the parent; ATTACH needs only SHARE UPDATE EXCLUSIVE.
    stmts = [
        f"CREATE TABLE IF NOT EXISTS {child} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        "INCLUDING STORAGE INCLUDING GENERATED INCLUDING COMMENTS)"
    ]
    guard_name = ""
    if default is not None and default_rows > 0:
        # ATTACH scans the DEFAULT partition under an exclusive lock unless a valid CHECK
        # constraint proves no row of it belongs to the new range. Validating that constraint
        # first takes only SHARE UPDATE EXCLUSIVE, so writers keep going during the scan.
        guard_name = fit_identifier("pgcurator_excl_" + name, "")
        dflt = qualified(default.schema, default.name)
        steps.append(
            Step(
                kind="guard_default",
                target=default.name,
                statements=(
                    f"ALTER TABLE {dflt} DROP CONSTRAINT IF EXISTS {ident(guard_name)}",
                    f"ALTER TABLE {dflt} ADD CONSTRAINT {ident(guard_name)} "
                    f"CHECK (NOT ({col} >= {lo} AND {col} < {hi})) NOT VALID",
                ),
                description=f"prove no row of {default.name} falls in [{lo}, {hi}) without locking writers",
            )
        )
        steps.append(
            Step(
                kind="validate_default_guard",
                target=default.name,
                statements=(f"ALTER TABLE {dflt} VALIDATE CONSTRAINT {ident(guard_name)}",),
                description=f"scan {default.name} for rows in [{lo}, {hi})",
            )
        )
    stmts.append(f"ALTER TABLE {parent} ATTACH PARTITION {child} FOR VALUES FROM ({lo}) TO ({hi})")
    if guard_name and default is not None:
        stmts.append(
            f"ALTER TABLE {qualified(default.schema, default.name)} DROP CONSTRAINT IF EXISTS {ident(guard_name)}"
        )
    steps.append(
        Step(kind="create_partition", target=name, statements=tuple(stmts), description=f"[{lo}, {hi})")
    )
    return steps


def plan_range(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> tuple[Plan, RangeLayout]:
    """Statements that bring a range-partitioned table to the spec, in order."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    layout = read_layout(spec, obs)
    tz = ZoneInfo(spec.range.time_zone)
    t = spec.table
    parent = qualified(t.schema_, t.name)
    plan = Plan()
    by_name = {p.name: p for p in obs.partitions}
    default = obs.default_partition

    # 1. Finish what an interrupted run left: a concurrent detach, or a detach-then-drop.
    for pending in obs.partitions:
        if pending.detach_pending:
            plan.steps.append(
                Step(
                    kind="finalize_detach",
                    target=pending.name,
                    statements=(
                        f"ALTER TABLE {parent} DETACH PARTITION {qualified(pending.schema, pending.name)} FINALIZE",
                    ),
                    transactional=False,
                    description="finish an interrupted DETACH CONCURRENTLY",
                )
            )
    for name in obs.pending_drops:
        plan.steps.append(
            Step(
                kind="drop_partition",
                target=name,
                statements=(f"DROP TABLE IF EXISTS {qualified(t.schema_, name)}",),
                description="finish a retention drop interrupted after its detach",
            )
        )

    # 2. DEFAULT partition.
    if spec.default_partition and default is None:
        dname = default_partition_name(t.name)
        if dname in by_name:
            raise PlanError(f"{dname} exists but is not the DEFAULT partition", reason="NameConflict")
        dtable = qualified(t.schema_, dname)
        plan.steps.append(
            Step(
                kind="create_default",
                target=dname,
                statements=(
                    f"CREATE TABLE IF NOT EXISTS {dtable} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                    "INCLUDING STORAGE INCLUDING GENERATED INCLUDING COMMENTS)",
                    f"ALTER TABLE {parent} ATTACH PARTITION {dtable} DEFAULT",
                ),
            )
        )

    # 3. Premake: the current period and `premake` after it.
    for period in desired_periods(spec, now, obs.max_key):
        blockers = [p for p in layout.partitions if overlaps(p.lower, p.upper, period.lower, period.upper)]
        name = partition_name(spec, period.lower)
        if any(p.lower == period.lower and p.upper == period.upper for p in blockers):
            continue
        if blockers:
            plan.notes.append(
                f"[{period.lower}, {period.upper}) is already covered by {', '.join(b.info.name for b in blockers)}"
            )
            continue
        if name in by_name:
            raise PlanError(
                f"a partition named {name} exists with bounds {by_name[name].bound_expr!r}, which do not match "
                f"[{period.lower}, {period.upper})",
                reason="NameConflict",
            )
        lo = render_bound(period.lower, layout.column_type, tz)
        hi = render_bound(period.upper, layout.column_type, tz)
        plan.steps.extend(
_create_partition_step(spec, name, lo, hi, default, obs.default_rows or 0)
        )

    # 4. Retention.
    cutoff = retention_cutoff(spec, now, obs.max_key)
    if cutoff is not None and spec.retention is not None:
        old: list[RangePartition] = [
            p for p in layout.partitions
            if p.upper is not None and p.upper <= cutoff  # type: ignore[operator]
            and not p.info.detach_pending
        ]
        remaining = len(layout.partitions) - len(old)
        if old and remaining == 0:
            # Never the last partition: keep the newest of the old ones.
            old = old[:-1]
        concurrently = default is None
        for p in old:
            child = qualified(p.info.schema, p.info.name)
            detach = f"ALTER TABLE {parent} DETACH PARTITION {child}" + (" CONCURRENTLY" if concurrently else "")
            if spec.retention.action is RetentionAction.detach:
                plan.steps.append(
                    Step(kind="detach_partition", target=p.info.name, statements=(detach,),
                         transactional=not concurrently, description=f"older than {cutoff}")
                )
                continue
            marker = f"COMMENT ON TABLE {child} IS {literal(retention_marker(t.schema_, t.name))}"
            if concurrently:
                plan.steps.append(Step(kind="mark_for_drop", target=p.info.name, statements=(marker,)))
                plan.steps.append(
                    Step(kind="detach_partition", target=p.info.name, statements=(detach,), transactional=False)
                )
                plan.steps.append(
                    Step(kind="drop_partition", target=p.info.name,
                         statements=(f"DROP TABLE IF EXISTS {child}",), description=f"older than {cutoff}")
                )
            else:
                plan.steps.append(
                    Step(kind="drop_partition", target=p.info.name,
                         statements=(marker, detach, f"DROP TABLE IF EXISTS {child}"),
                         description=f"older than {cutoff}")
                )
    return plan, layout
