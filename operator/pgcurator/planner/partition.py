"""PartitionPolicy planner: range, list and hash layouts, one optional sub-level, retention,
DEFAULT-partition rows and templates. Pure: no I/O, `now` is an argument.

The range level, retention, child DDL and refusals live in their own modules; this one ties
the levels together."""

from __future__ import annotations

import math
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from ..catalog.partitions import PartitionInfo, TableObservation
from ..errors import PlanError
from ..models.partition import HashSpec, PartitionPolicySpec, SubpartitionSpec
from ..sql.quote import fit_identifier, qualified
from ..sql.statements import Blocked, Plan, Step
from .partition_checks import check_key, check_table
from .partition_ddl import (
    LIKE_OPTIONS,
    NameTaken,
    Parent,
    child_statements,
    create_table_sql,
    default_partition_name,
    desired_range_periods,
    hash_bound,
    list_bound,
    list_literal,
    list_predicate,
    parse_list_values,
    partition_name,
    range_name,
    sub_for,
)
from .partition_range import (
    RangeLayout,
    RangePartition,
    clear_move_marker,
    foreign_name,
    move_default_steps,
    plan_range_level,
    range_layout,
    rows_in_the_way,
)
from .partition_retention import finish_interrupted
from .ranges import parse_range_bound

# Names other modules (the conversion planner, tests) import from here.
__all__ = [
    "LIKE_OPTIONS", "Parent", "RangeLayout", "RangePartition", "check_table",
    "child_statements", "default_partition_name", "desired_range_periods", "hash_bound", "list_bound",
    "parse_list_values", "partition_name", "plan_policy", "plan_range", "range_layout", "range_name",
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
        want = {list_literal(v) for v in lp.values}
        existing = by_name.get(name)
        if existing is not None:
            have = parse_list_values(existing.bound_expr)
            if have != want:
                plan.notes.append(f"{name} holds {sorted(have or [])}, the spec says {sorted(want)}: left as is "
                                  "(changing list bounds means moving rows)")
                homeless = sorted(v for v in want if v not in owner_of_value)
                if homeless:
                    # Not Ready: rows of these values find no partition (or land in the DEFAULT).
                    plan.blocked.append(Blocked("ListValuesDiffer", (
                        f"values {', '.join(homeless)} of {lp.name!r} have no partition: {name} holds "
                        f"{', '.join(sorted(have or [])) or 'other values'}; change its bounds yourself (moving "
                        "rows) or rename the list partition in the spec")))
            continue
        try:  # its name, or one of its leaves', taken by someone else's table
            child_statements(parent, name, list_bound(lp), spec, sub_for(spec, lp.name), obs.column_types, now,
                             taken=obs.foreign_table)
        except NameTaken as clash:
            plan.blocked.append(foreign_name(parent, clash.name, list_bound(lp)))
            continue
        taken = sorted({owner_of_value[v] for v in want if v in owner_of_value})
        if taken:
            plan.blocked.append(Blocked("ListValuesTaken", f"values of {lp.name!r} are already held by "
                                        f"{', '.join(taken)}; {name} not created"))
            continue
        default = obs.default_partition
        in_default = obs.default_rows_in.get(name, 0) if default is not None else 0
        if default is not None and in_default > 0:
            if (held := rows_in_the_way(spec, default, in_default, name, f"have values of {lp.name!r}")) is not None:
                plan.blocked.append(held)
                continue
            plan.steps.extend(move_default_steps(spec, parent, obs, default, name, list_predicate(spec.key_column, lp),
                                                 list_bound(lp), list_bound(lp), sub_for(spec, lp.name), now))
            continue
        stmts = child_statements(parent, name, list_bound(lp), spec, sub_for(spec, lp.name), obs.column_types, now)
        stmts[1:1] = clear_move_marker(parent, obs, name)
        plan.steps.append(Step(kind="create_partition", target=name, group=name, statements=tuple(stmts),
                               description=list_bound(lp)))


def _plan_hash_level(spec: PartitionPolicySpec, h: HashSpec, parent: Parent, partitions: list[PartitionInfo],
                     column_types: dict[str, str], now: datetime, plan: Plan, sub: SubpartitionSpec | None) -> None:
    bounds = {p.bound_expr: p.name for p in partitions}
    moduli = {int(m) for m in re.findall(r"modulus (\d+)", " ".join(bounds))}
    if moduli and moduli != {h.modulus}:
        plan.notes.append(f"{parent.name} has hash partitions with modulus {sorted(moduli)}, the spec says "
                          f"{h.modulus}: left as is (changing the modulus means re-partitioning)")
        held = [(int(m), int(r)) for m, r in re.findall(r"modulus (\d+), remainder (\d+)", " ".join(bounds))]
        span_ = math.lcm(*(m for m, _ in held))
        if any(all(x % m != r for m, r in held) for x in range(span_)):
            # Not Ready: some hash values have no partition, so rows with them are refused.
            plan.blocked.append(Blocked("HashModulusDiffers", (
                f"{parent.name} has hash partitions with modulus {sorted(moduli)} that do not cover every hash "
                f"value, and the spec says modulus {h.modulus}: re-partition it yourself")))
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
    # Parents retention detaches or drops in this plan get no new leaves (they would be created in
    # a table that is gone, or kept apart from the table).
    leaving = {s.target for s in plan.steps if s.kind in ("detach_partition", "drop_partition")}
    for p in obs.partitions:
        if p.is_default or p.name in leaving:
            continue
        list_name = None
        if spec.list is not None:
            list_name = next((lp.name for lp in spec.list.partitions
                              if fit_identifier(root.name, "_" + lp.name) == p.name), None)
            if list_name is None:
                continue
        applies = sub_for(spec, list_name)
        if applies is None:
            continue
        where = f"partition {p.name}"
        if p.relkind != "p":
            plan.notes.append(f"{where} is not sub-partitioned: left as is (re-partitioning it means moving rows)")
            continue
        col = (applies.hash or applies.range).column  # type: ignore[union-attr]
        check_key(col, p.strategy, p.key_columns, applies.strategy, where)
        me = Parent(p.schema, p.name, root.name)
        if applies.hash is not None:
            _plan_hash_level(spec, applies.hash, me, p.children, obs.column_types, now, plan, None)
        elif applies.range is not None:
            same_column = spec.range is not None and spec.range.column == col
            # The highest key is the first level's column's: it only bounds a sub-level on that column.
            # The root's loose tables: a leaf's name taken by someone else's table is not reused.
            child_obs = TableObservation(schema=p.schema, name=p.name, exists=True, relkind="p",
                                         partitions=p.children, column_types=obs.column_types, columns=obs.columns,
                                         max_key=obs.max_key if same_column else None,
                                         loose_tables=obs.loose_tables)
            inside = None
            if spec.range is not None and same_column:
                # On the parent's own column: leaves for the rest of this parent's range, not a
                # window from now that would leave later parents (created by premake) without any.
                # Read in the sub-level's zone: a wall-clock or date bound is the same text there.
                inside = parse_range_bound(p.bound_expr, obs.column_types[col], ZoneInfo(applies.range.time_zone))
                if inside is None:
                    plan.notes.append(f"{where}: bound {p.bound_expr!r} not understood; its sub-level is left as is")
                    continue
            plan_range_level(spec, applies.range, me, child_obs, obs.column_types[col], now, plan, False, inside)


def plan_policy(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> tuple[Plan, RangeLayout | None]:
    """Statements that bring the table to the spec, in order, plus what was understood of it."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    column_type = check_table(spec, obs)
    t = spec.table
    root = Parent(t.schema_, t.name, t.name)
    plan = Plan()
    finish_interrupted(root, obs, spec.retention, plan)

    if spec.default_partition and obs.default_partition is None:
        dname = default_partition_name(t.name)
        if any(p.name == dname for p in obs.partitions):
            raise PlanError(f"{dname} exists but is not the DEFAULT partition", reason="NameConflict")
        if obs.foreign_table(dname):
            plan.blocked.append(foreign_name(root, dname, "DEFAULT"))
        else:
            plan.steps.append(Step(kind="create_default", target=dname, group=dname, statements=(
                create_table_sql(root, dname, spec, None),
                f"ALTER TABLE {qualified(t.schema_, t.name)} ATTACH PARTITION {qualified(t.schema_, dname)} DEFAULT",
            )))

    if spec.range is not None:
        plan_range_level(spec, spec.range, root, obs, column_type, now, plan, True)
    elif spec.list is not None:
        _plan_list_level(spec, root, obs, now, plan)
    elif spec.hash is not None:
        _plan_hash_level(spec, spec.hash, root, obs.partitions, obs.column_types, now, plan, spec.subpartition)
    _plan_sub_level(spec, root, obs, now, plan)
    return plan, range_layout(spec, obs, now)


def plan_range(spec: PartitionPolicySpec, obs: TableObservation, now: datetime) -> tuple[Plan, RangeLayout]:
    """Range-strategy entry point (kept for callers that only deal with range policies)."""
    plan, layout = plan_policy(spec, obs, now)
    assert layout is not None
    return plan, layout


