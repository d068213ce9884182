"""PartitionPolicy planner: range, list and hash layouts, one optional sub-level, retention,
DEFAULT-partition rows and templates. Pure: no I/O, `now` is an argument."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import PartitionInfo, TableObservation, retention_marker
from ..errors import PlanError
from ..models.partition import (
    HashSpec,
    ListPartition,
    PartitionPolicySpec,
    RangeSpec,
    Retention,
    RetentionAction,
    SubpartitionSpec,
)
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

STRATEGY_CODE = {"range": "r", "list": "l", "hash": "h"}
LIKE_OPTIONS = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING GENERATED INCLUDING COMMENTS"


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


def default_partition_name(table: str) -> str:
    return fit_identifier(table, "_default")


# ---------------------------------------------------------------------------------------------
# Checks


def _check_key(spec_column: str, obs_strategy: str | None, key_columns: list[str], strategy: str,
               where: str) -> None:
    if obs_strategy != STRATEGY_CODE[strategy] or len(key_columns) != 1:
        raise PlanError(
            f"{where} is not {strategy}-partitioned on a single column (found strategy "
            f"{ {'r': 'range', 'l': 'list', 'h': 'hash'}.get(obs_strategy or '', obs_strategy)!r}, key {key_columns})",
            reason="WrongPartitionKey",
        )
    if key_columns[0] != spec_column:
        raise PlanError(f"{where} is partitioned by {key_columns[0]!r}, not by {spec_column!r}",
                        reason="WrongPartitionKey")


def _check_range_type(r: RangeSpec, column_type: str) -> None:
    if r.interval is not None:
        if column_type not in TIME_TYPES:
            raise PlanError(
                f"column {r.column!r} is {column_type or 'unknown'}; range.interval needs a timestamptz, "
                "timestamp or date column (use range.width for integer columns)",
                reason="WrongColumnType",
            )
        if column_type == "date" and r.parsed_interval[1].value == "hour":
            raise PlanError(f"column {r.column!r} is a date; hourly partitions need a timestamp column",
                            reason="WrongColumnType")
    elif column_type not in INT_TYPES:
        raise PlanError(
            f"column {r.column!r} is {column_type or 'unknown'}; range.width needs an integer column "
            "(use range.interval for time columns)",
            reason="WrongColumnType",
        )


def check_table(spec: PartitionPolicySpec, obs: TableObservation) -> str:
    """Refuse tables the policy cannot maintain; returns the first-level key column's type."""
    t = spec.table
    key = spec.key_column
    if not obs.exists:
        raise PlanError(
            f"table {t.qualified} does not exist; create it as a partitioned table "
            f"(PARTITION BY {spec.strategy.upper()} ({key}))",
            reason="TableNotFound",
        )
    if obs.relkind != "p":
        if spec.convert is not None and spec.convert.enabled:
            raise PlanError(f"table {t.qualified} is not partitioned yet: it is being converted",
                            reason="Converting")
        raise PlanError(
            f"table {t.qualified} is not partitioned; PartitionPolicy maintains tables declared with "
            f"PARTITION BY {spec.strategy.upper()} ({key}) (or set convert.enabled: true to convert it)",
            reason="TableNotPartitioned",
        )
    if obs.key_has_expressions:
        raise PlanError(f"table {t.qualified} is partitioned on an expression", reason="WrongPartitionKey")
    _check_key(key, obs.strategy, obs.key_columns, spec.strategy, f"table {t.qualified}")
    column_type = obs.column_types.get(key, "")
    if spec.range is not None:
        _check_range_type(spec.range, column_type)
    sub = spec.subpartition
    if sub is not None:
        sub_col = (sub.hash or sub.range).column  # type: ignore[union-attr]
        if sub_col not in obs.column_types:
            raise PlanError(f"subpartition column {sub_col!r} is not a column of {t.qualified}",
                            reason="WrongColumnType")
        if sub.range is not None:
            _check_range_type(sub.range, obs.column_types[sub_col])
    for c in [*spec.template.indexes]:
        missing = [col for col in c.columns if col not in obs.column_types]
        if missing:
            raise PlanError(f"template index {c.name!r} names columns that do not exist: {missing}",
                            reason="WrongColumnType")
    ts = spec.template.tablespace
    if ts is not None and ts not in obs.tablespaces and ts not in ("pg_default",):
        raise PlanError(f"template tablespace {ts!r} does not exist", reason="TablespaceNotFound")
    ret = spec.retention
    if ret is not None and ret.archive is not None and ret.archive.tablespace is not None:
        if ret.archive.tablespace not in obs.tablespaces:
            raise PlanError(
                f"archive tablespace {ret.archive.tablespace!r} does not exist; create it (CREATE TABLESPACE) "
                "or remove retention.archive.tablespace",
                reason="TablespaceNotFound",
            )
    return column_type


# ---------------------------------------------------------------------------------------------
# Naming and bounds


def _grid(r: RangeSpec) -> TimeGrid:
    n, unit = r.parsed_interval
    return TimeGrid(n, unit, ZoneInfo(r.time_zone))


def range_name(parent: str, r: RangeSpec, lower: datetime | int) -> str:
    suffix = IntGrid.suffix(lower) if isinstance(lower, int) else _grid(r).suffix(lower)
    return fit_identifier(parent, "_p" + suffix)


def partition_name(spec: PartitionPolicySpec, lower: datetime | int) -> str:
    return range_name(spec.table.name, spec.rng, lower)


def desired_range_periods(r: RangeSpec, now: datetime, max_key: int | None) -> list[Period]:
    """The period holding `now` (or the highest integer key) and `premake` after it."""
    if r.interval is not None:
        grid = _grid(r)
        start = grid.start_of(now)
        return [grid.period(grid.shift(start, k)) for k in range(r.premake + 1)]
    assert r.width is not None
    igrid = IntGrid(r.width)
    istart = igrid.start_of(max_key if max_key is not None else 0)
    return [igrid.period(igrid.shift(istart, k)) for k in range(r.premake + 1)]


def desired_periods(spec: PartitionPolicySpec, now: datetime, max_key: int | None) -> list[Period]:
    return desired_range_periods(spec.rng, now, max_key)


def retention_cutoff_for(r: RangeSpec, retention: Retention | None, now: datetime,
                         max_key: int | None) -> datetime | int | None:
    """Partitions whose whole range ends at or before this bound are removed."""
    if retention is None:
        return None
    if r.interval is not None:
        grid = _grid(r)
        return grid.shift(grid.start_of(now), -retention.keep)
    assert r.width is not None
    if max_key is None:
        return None
    igrid = IntGrid(r.width)
    return igrid.shift(igrid.start_of(max_key), -retention.keep)


def retention_cutoff(spec: PartitionPolicySpec, now: datetime, max_key: int | None) -> datetime | int | None:
    return retention_cutoff_for(spec.rng, spec.retention, now, max_key)


def _list_literal(v: str | int) -> str:
    return str(v) if isinstance(v, int) else literal(v)


def list_bound(p: ListPartition) -> str:
    return "FOR VALUES IN (" + ", ".join(_list_literal(v) for v in p.values) + ")"


def hash_bound(modulus: int, remainder: int) -> str:
    return f"FOR VALUES WITH (modulus {modulus}, remainder {remainder})"


_LIST_VALUE = re.compile(r"'((?:[^']|'')*)'|(-?\d+)|(NULL)")


def parse_list_values(bound_expr: str) -> set[str] | None:
    """`FOR VALUES IN ('a', 'b')` -> {"'a'", "'b'"} in our literal form, for comparisons."""
    m = re.fullmatch(r"FOR VALUES IN \((.*)\)", bound_expr.strip())
    if not m:
        return None
    out = set()
    for sm in _LIST_VALUE.finditer(m.group(1)):
        if sm.group(1) is not None:
            out.add(literal(sm.group(1).replace("''", "'")))
        elif sm.group(2) is not None:
            out.add(sm.group(2))
        else:
            out.add("NULL")
    return out


# ---------------------------------------------------------------------------------------------
# Statements for new children


@dataclass(frozen=True)
class Parent:
    """The parent at one level; `root` is what new tables are created LIKE. Children are named
    after `base` (default: the parent's name): a conversion builds its shadow table's children
    under the names they keep after the swap."""

    schema: str
    name: str
    root: str
    base: str = ""

    @property
    def naming(self) -> str:
        return self.base or self.name


def _create_table_sql(parent: Parent, name: str, spec: PartitionPolicySpec, partition_by: str | None) -> str:
    tpl = spec.template
    sql = (f"CREATE TABLE IF NOT EXISTS {qualified(parent.schema, name)} "
           f"(LIKE {qualified(parent.schema, parent.root)} {LIKE_OPTIONS})")
    if partition_by:
        sql += f" PARTITION BY {partition_by}"
    elif tpl.storage_parameters:
        sql += " WITH (" + ", ".join(f"{k} = {v}" for k, v in sorted(tpl.storage_parameters.items())) + ")"
    if tpl.tablespace:
        sql += f" TABLESPACE {ident(tpl.tablespace)}"
    return sql


def _template_index_sql(parent: Parent, name: str, spec: PartitionPolicySpec) -> list[str]:
    from ..sql.expressions import validate_predicate

    out = []
    for ix in spec.template.indexes:
        iname = fit_identifier(name, "_" + ix.name)
        cols = ", ".join(ident(c) for c in ix.columns)
        sql = (f"CREATE {'UNIQUE ' if ix.unique else ''}INDEX IF NOT EXISTS {ident(iname)} "
               f"ON {qualified(parent.schema, name)} ({cols})")
        if ix.where:
            sql += f" WHERE {validate_predicate(ix.where)}"
        out.append(sql)
    return out


def _sub_partition_by(sub: SubpartitionSpec) -> str:
    if sub.hash is not None:
        return f"HASH ({ident(sub.hash.column)})"
    assert sub.range is not None
    return f"RANGE ({ident(sub.range.column)})"


def child_statements(
    parent: Parent, name: str, bound: str, spec: PartitionPolicySpec, sub: SubpartitionSpec | None,
    column_types: dict[str, str], now: datetime, attach: bool = True,
) -> list[str]:
    """Create one child (and, if it is sub-partitioned, its complete second level), then attach it.

    Everything is built detached and attached last, so the parent never routes rows into an
    incomplete child; and it runs in one transaction, so a crash leaves nothing half-built."""
    stmts = [_create_table_sql(parent, name, spec, _sub_partition_by(sub) if sub else None)]
    if sub is None:
        stmts += _template_index_sql(parent, name, spec)
    else:
        me = Parent(parent.schema, name, parent.root)
        if sub.hash is not None:
            for r in range(sub.hash.modulus):
                leaf = fit_identifier(name, f"_{r}")
                stmts += child_statements(me, leaf, hash_bound(sub.hash.modulus, r), spec, None, column_types, now)
        else:
            assert sub.range is not None
            ctype = column_types[sub.range.column]
            tz = ZoneInfo(sub.range.time_zone)
            for period in desired_range_periods(sub.range, now, None):
                leaf = range_name(name, sub.range, period.lower)
                b = (f"FOR VALUES FROM ({render_bound(period.lower, ctype, tz)}) "
                     f"TO ({render_bound(period.upper, ctype, tz)})")
                stmts += child_statements(me, leaf, b, spec, None, column_types, now)
    if attach:
        stmts.append(f"ALTER TABLE {qualified(parent.schema, parent.name)} ATTACH PARTITION "
                     f"{qualified(parent.schema, name)} {bound}")
    return stmts


def _template_drift(spec: PartitionPolicySpec, p: PartitionInfo) -> str | None:
    """What a leaf partition lacks compared with the template (reported, never changed)."""
    if p.relkind == "p" or p.is_default:
        return None
    tpl = spec.template
    missing = []
    opts = set(p.reloptions)
    for k, v in sorted(tpl.storage_parameters.items()):
        if f"{k}={v}" not in opts:
            missing.append(f"{k}={v}")
    if tpl.tablespace and (p.tablespace or "pg_default") != tpl.tablespace:
        missing.append(f"tablespace {tpl.tablespace}")
    for ix in tpl.indexes:
        if fit_identifier(p.name, "_" + ix.name) not in p.index_names:
            missing.append(f"index {ix.name}")
    return f"{p.name}: lacks {', '.join(missing)}" if missing else None


# ---------------------------------------------------------------------------------------------
# Levels


def _sub_for(spec: PartitionPolicySpec, list_name: str | None) -> SubpartitionSpec | None:
    sub = spec.subpartition
    if sub is None:
        return None
    if sub.only is not None and list_name not in sub.only:
        return None
    return sub


def _finish_interrupted(parent: Parent, obs: TableObservation, retention: Retention | None, plan: Plan) -> None:
    for pending in obs.partitions:
        if pending.detach_pending:
            plan.steps.append(Step(
                kind="finalize_detach", target=pending.name,
                statements=(f"ALTER TABLE {qualified(parent.schema, parent.name)} DETACH PARTITION "
                            f"{qualified(pending.schema, pending.name)} FINALIZE",),
                transactional=False, description="finish an interrupted DETACH CONCURRENTLY",
            ))
    for name in obs.pending_drops:
        plan.steps.append(Step(kind="drop_partition", target=name,
                               statements=(f"DROP TABLE IF EXISTS {qualified(parent.schema, name)}",),
                               description="finish a retention drop interrupted after its detach"))
    for name in obs.pending_archives:
        if retention is None or retention.archive is None:
            plan.notes.append(f"{name} was detached for archiving, but the policy no longer archives: left as is")
            continue
        plan.steps.extend(_archive_steps(parent, name, retention))


def _archive_steps(parent: Parent, name: str, retention: Retention) -> list[Step]:
    assert retention.archive is not None
    arch = retention.archive
    src = qualified(parent.schema, name)
    steps = []
    if arch.tablespace:
        steps.append(Step(kind="archive_tablespace", target=name, group=name,
                          statements=(f"ALTER TABLE {src} SET TABLESPACE {ident(arch.tablespace)}",),
                          description=f"move {name} to tablespace {arch.tablespace}"))
    steps.append(Step(kind="archive_move", target=name, group=name, statements=(
        f"CREATE SCHEMA IF NOT EXISTS {ident(arch.schema_)}",
        f"ALTER TABLE {src} SET SCHEMA {ident(arch.schema_)}",
        f"COMMENT ON TABLE {qualified(arch.schema_, name)} IS "
        f"{literal(f'pgcurator: archived from {parent.schema}.{parent.name}')}",
    ), description=f"move {name} to schema {arch.schema_}"))
    return steps


def _plan_range_level(
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
    pq = qualified(parent.schema, parent.name)

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
                plan.blocked.append(
                    f"{in_default} rows in {default.name} fall in [{lo}, {hi}): partition {name} is not created "
                    "(PostgreSQL refuses it); set defaultRows.move: true to move them, or move them yourself")
                continue
            plan.steps.extend(_move_default_steps(spec, parent, obs, default, name, lo, hi, bound, sub, now))
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

    retention = spec.retention if root_level else None
    cutoff = retention_cutoff_for(r, retention, now, obs.max_key)
    if cutoff is not None and retention is not None:
        old = [rp for rp in parts if rp.upper is not None and rp.upper <= cutoff  # type: ignore[operator]
               and not rp.info.detach_pending]
        if old and len(parts) == len(old):
            old = old[:-1]  # never the last partition
        concurrently = obs.default_partition is None
        for rp in old:
            child = qualified(rp.info.schema, rp.info.name)
            detach = f"ALTER TABLE {pq} DETACH PARTITION {child}" + (" CONCURRENTLY" if concurrently else "")
            g = rp.info.name
            if retention.action is RetentionAction.detach:
                plan.steps.append(Step(kind="detach_partition", target=g, statements=(detach,),
                                       transactional=not concurrently, description=f"older than {cutoff}", group=g))
                continue
            marker = (f"COMMENT ON TABLE {child} IS "
                      f"{literal(retention_marker(parent.schema, parent.name, retention.action.value))}")
            if concurrently:
                plan.steps.append(Step(kind="mark_for_" + retention.action.value, target=g, statements=(marker,),
                                       group=g))
                plan.steps.append(Step(kind="detach_partition", target=g, statements=(detach,),
                                       transactional=False, group=g))
            else:
                plan.steps.append(Step(kind="detach_partition", target=g, statements=(marker, detach), group=g))
            if retention.action is RetentionAction.drop:
                plan.steps.append(Step(kind="drop_partition", target=g, statements=(f"DROP TABLE IF EXISTS {child}",),
                                       description=f"older than {cutoff}", group=g))
            else:
                plan.steps.extend(_archive_steps(parent, rp.info.name, retention))

    covered: Bound = None
    if parts:
        uppers = [p.upper for p in parts]
        covered = None if any(u is None for u in uppers) else max(uppers)  # type: ignore[type-var]
    return RangeLayout(column_type, parts, unparsed, covered)


def _move_default_steps(
    spec: PartitionPolicySpec, parent: Parent, obs: TableObservation, default: PartitionInfo, name: str,
    lo: str, hi: str, bound: str, sub: SubpartitionSpec | None, now: datetime,
) -> list[Step]:
    """Move the DEFAULT partition's rows of [lo, hi) into a new partition, then attach it.

    Each batch is one statement (DELETE ... RETURNING feeding INSERT), so a row is always in
    exactly one place; a crash between batches resumes with the next batch. The last batch and
    the ATTACH share a transaction that holds writers off the DEFAULT partition, so no row can
    slip in between."""
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
    attach = (f"ALTER TABLE {qualified(parent.schema, parent.name)} ATTACH PARTITION {target} {bound}")
    return [
        Step(kind="create_detached", target=name, statements=tuple(create), group=name,
             description="new partition, attached once the DEFAULT partition's rows are in it"),
        Step(kind="move_default_rows", target=name, statements=(move_batch,), group=name, repeat_until_zero=True,
             description=f"move rows of [{lo}, {hi}) out of {default.name}, {batch} per transaction"),
        Step(kind="attach_moved", target=name, group=name, statements=(
            f"LOCK TABLE {dq} IN SHARE ROW EXCLUSIVE MODE", move_rest, attach),
            description="move the rows written meanwhile and attach, holding writers off the DEFAULT partition"),
    ]


def _plan_list_level(spec: PartitionPolicySpec, parent: Parent, obs: TableObservation, now: datetime,
                     plan: Plan) -> None:
    assert spec.list is not None
    by_name = {p.name: p for p in obs.partitions}
    owner_of_value: dict[str, str] = {}
    for p in obs.partitions:
        for v in parse_list_values(p.bound_expr) or set():
            owner_of_value[v] = p.name
    for lp in spec.list.partitions:
        name = fit_identifier(parent.naming, "_" + lp.name)
        want = {_list_literal(v) for v in lp.values}
        existing = by_name.get(name)
        if existing is not None:
            have = parse_list_values(existing.bound_expr)
            if have != want:
                plan.notes.append(f"{name} holds {sorted(have or [])}, the spec says {sorted(want)}: left as is "
                                  "(changing list bounds means moving rows)")
            continue
        taken = sorted({owner_of_value[v] for v in want if v in owner_of_value})
        if taken:
            plan.blocked.append(f"values of {lp.name!r} are already held by {', '.join(taken)}; {name} not created")
            continue
        plan.steps.append(Step(kind="create_partition", target=name, group=name, statements=tuple(
            child_statements(parent, name, list_bound(lp), spec, _sub_for(spec, lp.name), obs.column_types, now)),
            description=list_bound(lp)))


def _plan_hash_level(spec: PartitionPolicySpec, h: HashSpec, parent: Parent, partitions: list[PartitionInfo],
                     column_types: dict[str, str], now: datetime, plan: Plan, sub: SubpartitionSpec | None) -> None:
    bounds = {p.bound_expr: p.name for p in partitions}
    moduli = {int(m) for m in re.findall(r"modulus (\d+)", " ".join(bounds))}
    if moduli and moduli != {h.modulus}:
        plan.notes.append(f"{parent.name} has hash partitions with modulus {sorted(moduli)}, the spec says "
                          f"{h.modulus}: left as is (changing the modulus means re-partitioning)")
        return
    for r in range(h.modulus):
        bound = hash_bound(h.modulus, r)
        if bound in bounds:
            continue
        name = fit_identifier(parent.naming, f"_{r}")
        if name in {p.name for p in partitions}:
            raise PlanError(f"{name} exists with bounds that are not remainder {r}", reason="NameConflict")
        plan.steps.append(Step(kind="create_partition", target=name, group=name, statements=tuple(
            child_statements(parent, name, bound, spec, sub, column_types, now)), description=bound))


def _plan_sub_level(spec: PartitionPolicySpec, root: Parent, obs: TableObservation, now: datetime,
                    plan: Plan) -> None:
    """Keep the second level of existing first-level partitions complete."""
    sub = spec.subpartition
    if sub is None:
        return
    for p in obs.partitions:
        if p.is_default:
            continue
        list_name = None
        if spec.list is not None:
            list_name = next((lp.name for lp in spec.list.partitions
                              if fit_identifier(root.name, "_" + lp.name) == p.name), None)
            if list_name is None:
                continue
        applies = _sub_for(spec, list_name)
        if applies is None:
            continue
        where = f"partition {p.name}"
        if p.relkind != "p":
            plan.notes.append(f"{where} is not sub-partitioned: left as is (re-partitioning it means moving rows)")
            continue
        col = (applies.hash or applies.range).column  # type: ignore[union-attr]
        _check_key(col, p.strategy, p.key_columns, applies.strategy, where)
        me = Parent(p.schema, p.name, root.name)
        if applies.hash is not None:
            _plan_hash_level(spec, applies.hash, me, p.children, obs.column_types, now, plan, None)
        elif applies.range is not None:
            child_obs = TableObservation(schema=p.schema, name=p.name, exists=True, relkind="p",
                                         partitions=p.children, column_types=obs.column_types, columns=obs.columns)
            _plan_range_level(spec, applies.range, me, child_obs, obs.column_types[col], now, plan, False)


def plan_policy(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> tuple[Plan, RangeLayout | None]:
    """Statements that bring the table to the spec, in order, plus what was understood of it."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    column_type = check_table(spec, obs)
    t = spec.table
    root = Parent(t.schema_, t.name, t.name)
    plan = Plan()
    _finish_interrupted(root, obs, spec.retention, plan)

    if spec.default_partition and obs.default_partition is None:
        dname = default_partition_name(t.name)
        if any(p.name == dname for p in obs.partitions):
            raise PlanError(f"{dname} exists but is not the DEFAULT partition", reason="NameConflict")
        plan.steps.append(Step(kind="create_default", target=dname, group=dname, statements=(
            _create_table_sql(root, dname, spec, None),
            f"ALTER TABLE {qualified(t.schema_, t.name)} ATTACH PARTITION {qualified(t.schema_, dname)} DEFAULT",
        )))

    layout: RangeLayout | None = None
    if spec.range is not None:
        layout = _plan_range_level(spec, spec.range, root, obs, column_type, now, plan, True)
    elif spec.list is not None:
        _plan_list_level(spec, root, obs, now, plan)
    elif spec.hash is not None:
        _plan_hash_level(spec, spec.hash, root, obs.partitions, obs.column_types, now, plan, spec.subpartition)
    _plan_sub_level(spec, root, obs, now, plan)
    if layout is not None:
        layout.drift = [d for p in obs.partitions for d in
                        [_template_drift(spec, q) for q in (p.children or [p])] if d]
    return plan, layout


def plan_range(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> tuple[Plan, RangeLayout]:
    """Range-strategy entry point (kept for callers that only deal with range policies)."""
    plan, layout = plan_policy(spec, obs, now)
    assert layout is not None
    return plan, layout


def read_layout(spec: PartitionPolicySpec, obs: TableObservation) -> RangeLayout:
    _, layout = plan_range(spec, obs, datetime.now(ZoneInfo("UTC")))
    return layout
