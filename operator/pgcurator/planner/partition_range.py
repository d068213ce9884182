"""One range level: the periods to premake, rows of the DEFAULT partition in their way, and
retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import PartitionInfo, TableObservation, move_marker
from ..errors import PlanError
from ..models.partition import PartitionPolicySpec, RangeSpec, SubpartitionSpec
from ..sql.quote import fit_identifier, ident, literal, qualified
from ..sql.statements import Blocked, Plan, Step
from .partition_ddl import (
    NameTaken,
    Parent,
    child_statements,
    desired_range_periods,
    pieces_within,
    range_name,
    template_drift,
)
from .partition_retention import retention_steps
from .ranges import (
    Bound,
    Span,
    Value,
    clamp_to_type,
    column_key,
    key_suffix,
    overlaps,
    parse_range_bound,
    render_range,
    span,
    uncovered,
)


@dataclass(frozen=True)
class RangePartition:
    """An observed range partition with parsed bounds."""

    info: PartitionInfo
    lower: Bound
    upper: Bound


@dataclass
class RangeLayout:
    """What is understood of a range-partitioned table, for the status: `range_layout` of the
    observation, so the status after a run needs no second plan."""

    column_type: str
    partitions: list[RangePartition]
    unparsed: list[PartitionInfo]
    covered_until: Bound
    drift: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NewRange:
    """A range partition to create: one period of the grid, or a bridge over the part of a period
    that partitions on another grid (an earlier interval or time zone) leave uncovered."""

    name: str
    lower: Bound  # None: MINVALUE / MAXVALUE (an integer type's limit)
    upper: Bound
    bridge: bool = False


def parse_parts(obs: TableObservation, column_type: str, tz: ZoneInfo) -> tuple[list[RangePartition],
                                                                               list[PartitionInfo]]:
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
    return parts, unparsed


def ranges_to_create(r: RangeSpec, naming: str, obs: TableObservation, column_type: str, now: datetime,
                     notes: list[str] | None = None, inside: tuple[Bound, Bound] | None = None) -> list[NewRange]:
    """Everything of the window (the current period and `premake` after it) that no existing
    partition covers: whole periods under their grid names, and the uncovered parts of periods that
    existing partitions cover only partly as bridges (after a change of interval or time zone), so
    the window never has a gap. Nothing planned overlaps an existing partition or another plan.

    `inside`: the parent's range, for a sub-level on the parent's own column. The window is then
    the rest of that range from now (or the highest key), cut at its edges."""
    tz = ZoneInfo(r.time_zone)
    parts, _ = parse_parts(obs, column_type, tz)
    covers = [span(p.lower, p.upper, column_type, tz) for p in parts]
    # Detached tables of an interrupted DEFAULT-row move keep their name: the move resumes into them.
    names = {p.name for p in obs.partitions} | {n for n in obs.loose_tables if obs.foreign_table(n)}
    out: list[NewRange] = []
    for want, start, whole in _window(r, obs, column_type, now, inside):
        if want.lo_key >= want.hi_key:  # type: ignore[operator]
            continue  # empty for this column: a wall-clock hour repeated when clocks go back
        gaps = uncovered(want, covers)
        untouched = len(gaps) == 1 and gaps[0].lo_key == want.lo_key and gaps[0].hi_key == want.hi_key
        if untouched and whole:
            out.append(NewRange(range_name(naming, r, start), want.lower, want.upper))
            continue
        exact = any(c.lo_key == want.lo_key and c.hi_key == want.hi_key for c in covers)
        if not exact and not untouched and notes is not None:
            by = [p.info.name for p, c in zip(parts, covers, strict=True)
                  if overlaps(c.lo_key, c.hi_key, want.lo_key, want.hi_key)]
            notes.append(f"[{want.lower}, {want.upper}) is covered by {', '.join(by)}"
                         + (f" and {len(gaps)} bridging partitions" if gaps else ""))
        for g in gaps:
            assert g.lo_key is not None and g.hi_key is not None
            base = fit_identifier(naming, f"_b{key_suffix(g.lo_key)}_{key_suffix(g.hi_key)}")
            name, n = base, 1
            while name in names or any(o.name == name for o in out):
                n += 1
                name = fit_identifier(naming, f"_b{key_suffix(g.lo_key)}_{key_suffix(g.hi_key)}_{n}")
            out.append(NewRange(name, g.lower, g.upper, bridge=True))
    return out


def _window(r: RangeSpec, obs: TableObservation, column_type: str, now: datetime,
            inside: tuple[Bound, Bound] | None) -> list[tuple[Span, Value, bool]]:
    """(span, grid period start, whole period?) of each period the level should have."""
    if inside is not None:
        since: Value = now if r.interval is not None else (obs.max_key if obs.max_key is not None else 0)
        if inside[0] is not None and inside[0] > since:  # type: ignore[operator]
            since = inside[0]
        return [(p.span, p.period_start, p.whole)
                for p in pieces_within(r, inside, since, now, obs.max_key, column_type)]
    tz = ZoneInfo(r.time_zone)
    out = []
    for period in desired_range_periods(r, now, obs.max_key, column_type):
        want = clamp_to_type(period.lower, period.upper, column_type, tz)
        if want is not None:  # else beyond what the column's type can hold
            out.append((want, period.lower, True))
    return out


def range_layout(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> RangeLayout | None:
    """The first range level as the status shows it (None for list and hash): parsed partitions,
    unparsed ones, coverage and template drift. Pure, and independent of planning."""
    r = spec.range
    if r is None:
        return None
    column_type = obs.column_types.get(r.column, "")
    tz = ZoneInfo(r.time_zone)
    parts, unparsed = parse_parts(obs, column_type, tz)
    drift = [d for p in obs.partitions for d in [template_drift(spec, q) for q in (p.children or [p])] if d]
    anchor: Value | None = now if r.interval is not None else obs.max_key
    return RangeLayout(column_type, parts, unparsed, covered_until(parts, anchor, column_type, tz), drift)


def covered_until(parts: list[RangePartition], anchor: Value | None, column_type: str, tz: ZoneInfo) -> Bound:
    """The upper end of the run of adjacent partitions that holds `anchor` (now, or the largest
    integer key; None: from the lowest partition, for an empty integer table). None when no
    partition holds it, or when the run reaches MAXVALUE. A hole ends the run: coverage past it
    is not coverage of the window."""
    spans = sorted((span(p.lower, p.upper, column_type, tz) for p in parts),
                   key=lambda s: (s.lo_key is not None, s.lo_key))
    if not spans:
        return None
    if anchor is None:
        first = 0
    else:
        key = column_key(anchor, column_type, tz)
        holds = [i for i, s in enumerate(spans) if (s.lo_key is None or s.lo_key <= key)  # type: ignore[operator]
                 and (s.hi_key is None or key < s.hi_key)]  # type: ignore[operator]
        if not holds:
            return None
        first = holds[0]
    end = spans[first]
    for s in spans[first + 1:]:
        if end.hi_key is None or s.lo_key is None or s.lo_key > end.hi_key:  # type: ignore[operator]
            break
        end = s
    return end.upper


def plan_range_level(
    spec: PartitionPolicySpec, r: RangeSpec, parent: Parent, obs: TableObservation, column_type: str,
    now: datetime, plan: Plan, root_level: bool, inside: tuple[Bound, Bound] | None = None,
) -> None:
    tz = ZoneInfo(r.time_zone)
    parts, _ = parse_parts(obs, column_type, tz)
    by_name = {p.name: p for p in obs.partitions}
    default = obs.default_partition if root_level else None
    sub = spec.subpartition if root_level else None

    planned = 0
    for new in ranges_to_create(r, parent.naming, obs, column_type, now, plan.notes, inside):
        name = new.name
        if name in by_name:
            raise PlanError(
                f"a partition named {name} exists with bounds {by_name[name].bound_expr!r}, which do not match "
                f"[{new.lower}, {new.upper})",
                reason="NameConflict",
            )
        lo, hi, bound = render_range(new.lower, new.upper, column_type, tz)
        try:
            # Its leaves too: a table named like one of them is someone else's.
            child_statements(parent, name, bound, spec, sub, obs.column_types, now, inside=(new.lower, new.upper),
                             taken=obs.foreign_table)
        except NameTaken as clash:
            plan.blocked.append(foreign_name(parent, clash.name, f"[{lo}, {hi})"))
            continue
        in_default = obs.default_rows_in.get(lo, 0) if default is not None else 0
        if default is not None and in_default > 0:
            if (held := rows_in_the_way(spec, default, in_default, name, f"fall in [{lo}, {hi})")) is not None:
                plan.blocked.append(held)
                continue
            key = ident(spec.key_column)
            plan.steps.extend(move_default_steps(spec, parent, obs, default, name, f"{key} >= {lo} AND {key} < {hi}",
                                                 f"[{lo}, {hi})", bound, sub, now, (new.lower, new.upper),
                                                 guard=guard_name(name)))
            planned += 1
            continue
        steps: list[Step] = []
        stmts = child_statements(parent, name, bound, spec, sub, obs.column_types, now, inside=(new.lower, new.upper))
        stmts[1:1] = clear_move_marker(parent, obs, name)
        if default is not None and (obs.default_rows or 0) > 0:
            # ATTACH scans the DEFAULT partition under an exclusive lock unless a valid CHECK constraint
            # proves no row of it belongs to the new range. Validating that constraint first takes only
            # SHARE UPDATE EXCLUSIVE, so writers keep going during the scan.
            guard = guard_name(name)
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
                          description=f"[{lo}, {hi})" + (" bridging partitions on another grid" if new.bridge
                                                         else "")))
        plan.steps.extend(steps)
        planned += 1

    if root_level:
        ends = [(p.info, p.upper) for p in parts]
        plan.steps.extend(retention_steps(spec.retention, r, parent, obs, ends, now, planned,
                                          default_planned=any(s.kind == "create_default" for s in plan.steps)))


def guard_name(name: str) -> str:
    """The DEFAULT partition's CHECK constraint that lets partition `name` attach without a scan
    under an exclusive lock."""
    return fit_identifier("pgcurator_excl_" + name, "")


def clear_move_marker(parent: Parent, obs: TableObservation, name: str) -> list[str]:
    """For a creation that attaches the detached table of an interrupted move (its rows all moved,
    none left in the DEFAULT): the marker goes with the ATTACH, or the partition, detached again
    some day, would pass for a move in progress and be filled."""
    if name not in obs.loose_tables or obs.foreign_table(name):
        return []
    return [f"COMMENT ON TABLE {qualified(parent.schema, name)} IS NULL"]


def rows_in_the_way(spec: PartitionPolicySpec, default: PartitionInfo, rows: int, name: str,
                    what: str) -> Blocked | None:
    """Rows of the DEFAULT partition that belong in a new partition: PostgreSQL refuses the ATTACH,
    so without `defaultRows.move` the partition is held back (None: they are moved)."""
    if spec.default_rows.move:
        return None
    return Blocked("DefaultRowsConflict", (
        f"{rows} rows in {default.name} {what}: partition {name} is not created (PostgreSQL refuses it); set "
        "defaultRows.move: true to move them, or move them yourself"))


def foreign_name(parent: Parent, name: str, what: str) -> Blocked:
    return Blocked("NameConflict", (
        f"{parent.schema}.{name} exists as a table pgcurator did not create (e.g. one detached by hand, with its "
        f"rows): partition {what} is not created, as CREATE TABLE IF NOT EXISTS and ATTACH would adopt it; "
        "rename or drop it, or attach it yourself"))


def move_default_steps(
    spec: PartitionPolicySpec, parent: Parent, obs: TableObservation, default: PartitionInfo, name: str,
    where: str, what: str, bound: str, sub: SubpartitionSpec | None, now: datetime,
    inside: tuple[Bound, Bound] | None = None, guard: str | None = None,
) -> list[Step]:
    """Move the DEFAULT partition's rows matching `where` (`what`, e.g. [lo, hi)) into a new
    partition, then attach it.

    Each batch is one statement (DELETE ... RETURNING feeding INSERT), so a row is always in
    exactly one place; a crash between batches resumes with the next batch. The last batch and
    the ATTACH share a transaction that holds writers off the table (under lockTimeout), so no
    row can slip in between and no writer's row is routed by the old layout.

    `guard`: the constraint an earlier creation of this partition may have left on the DEFAULT
    partition when its VALIDATE met a row that arrived meanwhile (hence this move); dropped with
    the ATTACH, which locks the DEFAULT partition exclusively anyway."""
    cols = [c.name for c in obs.columns if not c.generated]
    col_list = ", ".join(ident(c) for c in cols)
    dq = qualified(default.schema, default.name)
    target = qualified(parent.schema, name)
    batch = spec.default_rows.batch_rows
    move_batch = (f"WITH moved AS (DELETE FROM {dq} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {dq} WHERE {where} "
                  f"LIMIT {batch})) RETURNING {col_list}) INSERT INTO {target} ({col_list}) OVERRIDING SYSTEM VALUE "
                  f"SELECT {col_list} FROM moved")
    move_rest = (f"WITH moved AS (DELETE FROM {dq} WHERE {where} RETURNING {col_list}) "
                 f"INSERT INTO {target} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM moved")
    create = child_statements(parent, name, bound, spec, sub, obs.column_types, now, attach=False, inside=inside)
    # Marked as ours while detached: a later run resumes into it, and never into someone else's table.
    create.append(f"COMMENT ON TABLE {target} IS {literal(move_marker(parent.schema, parent.root))}")
    pq = qualified(parent.schema, parent.name)
    attach = f"ALTER TABLE {pq} ATTACH PARTITION {target} {bound}"
    move_back = (f"WITH moved AS (DELETE FROM {target} RETURNING {col_list}) INSERT INTO {dq} ({col_list}) "
                 f"OVERRIDING SYSTEM VALUE SELECT {col_list} FROM moved")
    return [
        Step(kind="create_detached", target=name, statements=tuple(create), group=name,
             description="new partition, attached once the DEFAULT partition's rows are in it"),
        # Moved rows are invisible until the ATTACH: no row moves unless the parent's lock can be had
        # now (under lockTimeout); should the ATTACH still not get it, `undo` moves them back.
        Step(kind="check_parent_lock", target=name, group=name,
             statements=(f"LOCK TABLE ONLY {pq} IN SHARE ROW EXCLUSIVE MODE",),
             description="the ATTACH that ends the move will get its lock"),
        Step(kind="move_default_rows", target=name, statements=(move_batch,), group=name, repeat_until_zero=True,
             undo=(move_back,), description=f"move rows of {what} out of {default.name}, {batch} per transaction"),
        # The parent is locked first, in a mode that conflicts with the writers' ROW EXCLUSIVE: an
        # INSERT then waits before it routes its row, and routes it to the attached partition once
        # this commits. Locking only the DEFAULT partition let an INSERT route its row there, wait,
        # and then fail the DEFAULT's new partition constraint (23514). ONLY: the other partitions
        # stay writable directly.
        Step(kind="attach_moved", target=name, group=name, statements=(
            f"LOCK TABLE ONLY {pq} IN SHARE ROW EXCLUSIVE MODE",
            f"LOCK TABLE {dq} IN SHARE ROW EXCLUSIVE MODE", move_rest,
            f"COMMENT ON TABLE {target} IS NULL",
            *([f"ALTER TABLE {dq} DROP CONSTRAINT IF EXISTS {ident(guard)}"] if guard else []), attach),
            undo=(move_back,),
            description="move the rows written meanwhile and attach, holding writers off the table"),
    ]
