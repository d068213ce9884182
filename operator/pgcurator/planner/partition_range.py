"""One range level: the periods to premake, rows of the DEFAULT partition in their way, and
retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import PartitionInfo, TableObservation
from ..errors import PlanError
from ..models.partition import PartitionPolicySpec, RangeSpec, SubpartitionSpec
from ..sql.quote import fit_identifier, ident, qualified
from ..sql.statements import Blocked, Plan, Step
from .partition_ddl import Parent, child_statements, desired_range_periods, range_name
from .partition_retention import retention_steps
from .ranges import Bound, overlaps, parse_range_bound, render_bound


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
    drift: list[str] = field(default_factory=list)


def plan_range_level(
    spec: PartitionPolicySpec, r: RangeSpec, parent: Parent, obs: TableObservation, column_type: str,
    now: datetime, plan: Plan, root_level: bool,
) -> RangeLayout:
    tz = ZoneInfo(r.time_zone)
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
    parts.sort(key=lambda rp: (rp.lower is not None, rp.lower))
    by_name = {p.name: p for p in obs.partitions}
    default = obs.default_partition if root_level else None
    sub = spec.subpartition if root_level else None

    for period in desired_range_periods(r, now, obs.max_key):
        blockers = [p for p in parts if overlaps(p.lower, p.upper, period.lower, period.upper)]
        name = range_name(parent.naming, r, period.lower)
        if any(p.lower == period.lower and p.upper == period.upper for p in blockers):
            continue
        if blockers:
            plan.notes.append(f"[{period.lower}, {period.upper}) is already covered by "
                              f"{', '.join(b.info.name for b in blockers)}")
            continue
        if name in by_name:
            raise PlanError(
                f"a partition named {name} exists with bounds {by_name[name].bound_expr!r}, which do not match "
                f"[{period.lower}, {period.upper})",
                reason="NameConflict",
            )
        lo = render_bound(period.lower, column_type, tz)
        hi = render_bound(period.upper, column_type, tz)
        bound = f"FOR VALUES FROM ({lo}) TO ({hi})"
        in_default = obs.default_rows_in.get(lo, 0) if default is not None else 0
        if default is not None and in_default > 0:
            if not spec.default_rows.move:
                plan.blocked.append(Blocked("DefaultRowsConflict", (
                    f"{in_default} rows in {default.name} fall in [{lo}, {hi}): partition {name} is not created "
                    "(PostgreSQL refuses it); set defaultRows.move: true to move them, or move them yourself")))
                continue
            plan.steps.extend(move_default_steps(spec, parent, obs, default, name, lo, hi, bound, sub, now))
            continue
        steps: list[Step] = []
        stmts = child_statements(parent, name, bound, spec, sub, obs.column_types, now)
        if default is not None and (obs.default_rows or 0) > 0:
            # ATTACH scans the DEFAULT partition under an exclusive lock unless a valid CHECK constraint
            # proves no row of it belongs to the new range. Validating that constraint first takes only
            # SHARE UPDATE EXCLUSIVE, so writers keep going during the scan.
            guard = fit_identifier("pgcurator_excl_" + name, "")
            dq = qualified(default.schema, default.name)
            col = ident(r.column)
            steps.append(Step(kind="guard_default", target=default.name, group=name, statements=(
                f"ALTER TABLE {dq} DROP CONSTRAINT IF EXISTS {ident(guard)}",
                f"ALTER TABLE {dq} ADD CONSTRAINT {ident(guard)} CHECK (NOT ({col} >= {lo} AND {col} < {hi})) "
                "NOT VALID",
            ), description=f"prove no row of {default.name} falls in [{lo}, {hi}) without locking writers"))
            steps.append(Step(kind="validate_default_guard", target=default.name, group=name,
                              statements=(f"ALTER TABLE {dq} VALIDATE CONSTRAINT {ident(guard)}",),
                              description=f"scan {default.name} for rows in [{lo}, {hi})"))
            stmts.append(f"ALTER TABLE {dq} DROP CONSTRAINT IF EXISTS {ident(guard)}")
        steps.append(Step(kind="create_partition", target=name, statements=tuple(stmts), group=name,
                          description=f"[{lo}, {hi})"))
        plan.steps.extend(steps)

    if root_level:
        ends = [(p.info, p.upper) for p in parts]
        plan.steps.extend(retention_steps(spec.retention, r, parent, obs, ends, now))

    covered: Bound = None
    if parts:
        uppers = [p.upper for p in parts]
        covered = None if any(u is None for u in uppers) else max(uppers)  # type: ignore[type-var]
    return RangeLayout(column_type, parts, unparsed, covered)


def move_default_steps(
    spec: PartitionPolicySpec, parent: Parent, obs: TableObservation, default: PartitionInfo, name: str,
    lo: str, hi: str, bound: str, sub: SubpartitionSpec | None, now: datetime,
) -> list[Step]:
    """Move the DEFAULT partition's rows of [lo, hi) into a new partition, then attach it.

    Each batch is one statement (DELETE ... RETURNING feeding INSERT), so a row is always in
    exactly one place; a crash between batches resumes with the next batch. The last batch and
    the ATTACH share a transaction that holds writers off the table (under lockTimeout), so no
    row can slip in between and no writer's row is routed by the old layout."""
    cols = [c.name for c in obs.columns if not c.generated]
    col_list = ", ".join(ident(c) for c in cols)
    dq = qualified(default.schema, default.name)
    target = qualified(parent.schema, name)
    key = ident(spec.key_column)
    where = f"{key} >= {lo} AND {key} < {hi}"
    batch = spec.default_rows.batch_rows
    move_batch = (f"WITH moved AS (DELETE FROM {dq} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {dq} WHERE {where} "
                  f"LIMIT {batch})) RETURNING {col_list}) INSERT INTO {target} ({col_list}) OVERRIDING SYSTEM VALUE "
                  f"SELECT {col_list} FROM moved")
    move_rest = (f"WITH moved AS (DELETE FROM {dq} WHERE {where} RETURNING {col_list}) "
                 f"INSERT INTO {target} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM moved")
    create = child_statements(parent, name, bound, spec, sub, obs.column_types, now, attach=False)
    pq = qualified(parent.schema, parent.name)
    attach = f"ALTER TABLE {pq} ATTACH PARTITION {target} {bound}"
    return [
        Step(kind="create_detached", target=name, statements=tuple(create), group=name,
             description="new partition, attached once the DEFAULT partition's rows are in it"),
        Step(kind="move_default_rows", target=name, statements=(move_batch,), group=name, repeat_until_zero=True,
             description=f"move rows of [{lo}, {hi}) out of {default.name}, {batch} per transaction"),
        # The parent is locked first, in a mode that conflicts with the writers' ROW EXCLUSIVE: an
        # INSERT then waits before it routes its row, and routes it to the attached partition once
        # this commits. Locking only the DEFAULT partition let an INSERT route its row there, wait,
        # and then fail the DEFAULT's new partition constraint (23514). ONLY: the other partitions
        # stay writable directly.
        Step(kind="attach_moved", target=name, group=name, statements=(
            f"LOCK TABLE ONLY {pq} IN SHARE ROW EXCLUSIVE MODE",
            f"LOCK TABLE {dq} IN SHARE ROW EXCLUSIVE MODE", move_rest, attach),
            description="move the rows written meanwhile and attach, holding writers off the table"),
    ]
