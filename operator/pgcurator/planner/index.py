"""Pure planning for IndexPolicy: declared indexes + observed catalog -> what to run.

The plan has three phases:
* `before`: short steps on the main connection (the `ON ONLY` parent index of a partitioned
  table, clean-up of leftovers from an interrupted replacement);
* `jobs`: concurrent builds. Each job runs its steps in order on its own connection; jobs in
  the same `lane` (same table: concurrent builds on one table wait for each other's locks)
  run one after another, lanes run in parallel up to `parallelism`;
* `after`: steps that need the builds done (swapping a replaced partitioned index in,
  pruning). A step whose `group` names an index with a failed job is skipped.

Definitions are compared by `shape()`: the part of `pg_get_indexdef` after the table name
(method, keys with opclasses/order, INCLUDE, WITH, WHERE) plus uniqueness. The declared
index's reference text comes from PostgreSQL itself (catalog.indexes.reference_definitions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalog.indexes import SHAPE_TABLE, IndexInfo, IndexObservation, shape_index_name
from ..errors import PlanError
from ..limits import STATUS_TEXT
from ..models.index import IndexDecl, IndexPolicySpec
from ..sql.quote import fit_identifier, ident, qualified
from ..sql.statements import Plan, Step
from .vector import COMMENT_PREFIX as VECTOR_MARKER

NEW_SUFFIX = "_pgc_new"
OLD_SUFFIX = "_pgc_old"


def new_name(name: str) -> str:
    """Temporary name of the replacement built while the old index keeps serving."""
    return fit_identifier(name, NEW_SUFFIX)


def old_name(name: str) -> str:
    """Name the replaced index carries between the swap and its drop."""
    return fit_identifier(name, OLD_SUFFIX)


def child_name(index: str, partition: str) -> str:
    """Deterministic name of our index on one partition, so a crashed build is found again."""
    return fit_identifier(f"{partition}_{index}", "")


# --- rendering -------------------------------------------------------------------------------


def _key(col: Any) -> str:
    text = ident(col.column) if col.column is not None else f"({col.expression})"
    if col.opclass:
        text += f" {ident(col.opclass)}"
    if col.order:
        text += f" {col.order.value.upper()}"
    if col.nulls:
        text += f" NULLS {col.nulls.value.upper()}"
    return text


def render_create(
    decl: IndexDecl,
    table_sql: str,
    *,
    name: str,
    concurrently: bool = False,
    only: bool = False,
    if_not_exists: bool = False,
    with_tablespace: bool = True,
) -> str:
    parts = ["CREATE"]
    if decl.unique:
        parts.append("UNIQUE")
    parts.append("INDEX")
    if concurrently:
        parts.append("CONCURRENTLY")
    if if_not_exists:
        parts.append("IF NOT EXISTS")
    parts.append(ident(name))
    parts.append("ON")
    if only:
        parts.append("ONLY")
    parts.append(table_sql)
    parts.append(f"USING {decl.method.value} ({', '.join(_key(c) for c in decl.columns)})")
    if decl.include:
        parts.append(f"INCLUDE ({', '.join(ident(c) for c in decl.include)})")
    if decl.storage_parameters:
        # Names and values were restricted to plain words/numbers by the model.
        params = ", ".join(f"{k} = {v}" for k, v in sorted(decl.storage_parameters.items()))
        parts.append(f"WITH ({params})")
    if decl.tablespace and with_tablespace:
        parts.append(f"TABLESPACE {ident(decl.tablespace)}")
    if decl.where:
        parts.append(f"WHERE ({decl.where})")
    return " ".join(parts)


def reference_statements(spec: IndexPolicySpec) -> dict[str, str]:
    """The statements catalog.indexes.reference_definitions runs on the scratch table."""
    return {
        d.name: render_create(d, SHAPE_TABLE, name=shape_index_name(i), with_tablespace=False)
        for i, d in enumerate(spec.indexes)
    }


# --- comparing definitions ---------------------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")*"|[^\s".]+)'
_DEF_RE = re.compile(
    rf"^CREATE (?P<unique>UNIQUE )?INDEX {_IDENT} ON (?P<only>ONLY )?{_IDENT}(?:\.{_IDENT})? (?P<tail>USING .*)$",
    re.DOTALL,
)


@dataclass(frozen=True)
class Shape:
    unique: bool
    tail: str  # "USING btree (a, b DESC) INCLUDE (c) WITH (fillfactor='90') WHERE (...)"


def shape(definition: str) -> Shape:
    """The comparable part of a `pg_get_indexdef` text: everything but the names and ONLY."""
    m = _DEF_RE.match(definition.strip())
    if not m:
        raise ValueError(f"not an index definition: {definition[:STATUS_TEXT]!r}")
    tail = re.sub(r"\s+", " ", m.group("tail")).strip()
    return Shape(unique=bool(m.group("unique")), tail=tail)


def same_definition(existing: str, reference: str) -> bool:
    return shape(existing) == shape(reference)


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildJob:
    index: str  # declared index name
    partition: str | None
    table: str  # "schema.table" the build runs on
    lane: str
    steps: tuple[Step, ...]
    estimated_rows: int = 0
    schema: str = "public"  # schema of the table the build runs on (for clean-up of a failed build)


@dataclass
class IndexPlan:
    before: Plan = field(default_factory=Plan)
    jobs: list[BuildJob] = field(default_factory=list)
    after: Plan = field(default_factory=Plan)
    notes: list[str] = field(default_factory=list)
    # Partition rows that need nothing: {partition, index, success, state}.
    present: list[dict[str, Any]] = field(default_factory=list)
    # Indexes prune would drop (also reported in dryRun).
    prunable: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.before.empty and not self.jobs and self.after.empty

    def statements(self) -> list[str]:
        out = self.before.statements()
        for job in self.jobs:
            out.extend(s for step in job.steps for s in step.statements)
        out.extend(self.after.statements())
        return out


def _drop_concurrently(schema: str, name: str) -> str:
    return f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(schema, name)}"


def _drop(schema: str, name: str) -> str:
    # Partitioned indexes cannot be dropped concurrently; this is a catalog-only change
    # bounded by lock_timeout.
    return f"DROP INDEX IF EXISTS {qualified(schema, name)}"


def _rename(schema: str, name: str, to: str) -> str:
    return f"ALTER INDEX {qualified(schema, name)} RENAME TO {ident(to)}"


def _matches(info: IndexInfo | None, ref: Shape, decl: IndexDecl) -> bool:
    if info is None:
        return False
    if decl.tablespace is not None and (info.tablespace or "pg_default") != decl.tablespace:
        return False
    try:
        return shape(info.definition) == ref
    except ValueError:
        return False


# (schema, index name) -> the other resource that manages it: never dropped, replaced or attached.
Foreign = Mapping[tuple[str, str], str]


def plan_indexes(spec: IndexPolicySpec, obs: IndexObservation, reference: dict[str, str],
                 foreign: Foreign | None = None) -> IndexPlan:
    t = spec.table
    foreign = foreign or {}
    if not obs.exists:
        raise PlanError(f"table {t.qualified} does not exist", reason="TableNotFound")
    plan = IndexPlan()
    table_sql = qualified(t.schema_, t.name)
    for decl in spec.indexes:
        ref = shape(reference[decl.name])
        if obs.partitioned:
            _plan_partitioned(plan, spec, obs, decl, ref, table_sql, foreign)
        else:
            _plan_plain(plan, spec, obs, decl, ref, table_sql)
    _plan_prune(plan, spec, obs, foreign)
    return plan


def _plan_plain(
    plan: IndexPlan, spec: IndexPolicySpec, obs: IndexObservation, decl: IndexDecl, ref: Shape, table_sql: str
) -> None:
    schema = spec.table.schema_
    name, tmp, old = decl.name, new_name(decl.name), old_name(decl.name)
    existing, pending, replaced = obs.index(name), obs.index(tmp), obs.index(old)
    lane = spec.table.qualified
    if replaced is not None:  # a swap happened, the drop of the old one did not
        plan.before.steps.append(Step("drop_replaced", old, (_drop_concurrently(schema, old),), transactional=False,
                                      description=f"finish replacing {name}"))
    create = render_create(decl, table_sql, name=name, concurrently=True)
    if existing is None:
        steps: list[Step] = []
        if pending is not None and pending.valid and _matches(pending, ref, decl):
            steps.append(Step("rename_index", name, (_rename(schema, tmp, name),), group=name))
        else:
            if pending is not None:
                steps.append(Step("drop_leftover", tmp, (_drop_concurrently(schema, tmp),), transactional=False,
                                  group=name))
            steps.append(Step("create_index", name, (create,), transactional=False, group=name,
                              description=f"build {name}"))
        plan.jobs.append(BuildJob(name, None, lane, lane, tuple(steps), obs.estimated_rows, schema))
        return
    if existing.backs_constraint:
        if not _matches(existing, ref, decl):
            plan.notes.append(
                f"index {name} backs constraint {existing.constraint} and differs from the declaration; "
                "change the constraint by hand"
            )
        return
    if not existing.valid:
        plan.jobs.append(BuildJob(name, None, lane, lane, (
            Step("drop_invalid", name, (_drop_concurrently(schema, name),), transactional=False, group=name,
                 description=f"{name} is INVALID (a failed concurrent build)"),
            Step("create_index", name, (create,), transactional=False, group=name, description=f"rebuild {name}"),
        ), obs.estimated_rows, schema))
        return
    if _matches(existing, ref, decl):
        if pending is not None:  # a replacement that is no longer needed
            plan.before.steps.append(Step("drop_leftover", tmp, (_drop_concurrently(schema, tmp),),
                                          transactional=False))
        return
    # Drift: build the replacement under a temporary name, swap names, drop the old one.
    steps = []
    if not (pending is not None and pending.valid and _matches(pending, ref, decl)):
        if pending is not None:
            steps.append(Step("drop_leftover", tmp, (_drop_concurrently(schema, tmp),), transactional=False,
                              group=name))
        steps.append(Step("create_replacement", tmp, (render_create(decl, table_sql, name=tmp, concurrently=True),),
                          transactional=False, group=name, description=f"replacement for {name}"))
    steps.append(Step("swap_index", name, (_rename(schema, name, old), _rename(schema, tmp, name)), group=name,
                      description=f"swap the replacement of {name} in"))
    steps.append(Step("drop_replaced", old, (_drop_concurrently(schema, old),), transactional=False, group=name))
    plan.jobs.append(BuildJob(name, None, lane, lane, tuple(steps), obs.estimated_rows, schema))


def _plan_partitioned(
    plan: IndexPlan, spec: IndexPolicySpec, obs: IndexObservation, decl: IndexDecl, ref: Shape, table_sql: str,
    foreign: Foreign,
) -> None:
    schema = spec.table.schema_
    name, tmp, old = decl.name, new_name(decl.name), old_name(decl.name)
    existing, pending, replaced = obs.index(name), obs.index(tmp), obs.index(old)
    if replaced is not None:
        plan.before.steps.append(Step("drop_replaced", old, (_drop(schema, old),), description=f"finish replacing {name}"))
    if existing is not None and existing.backs_constraint and not _matches(existing, ref, decl):
        plan.notes.append(
            f"index {name} backs constraint {existing.constraint} and differs from the declaration; change the "
            "constraint by hand"
        )
        return
    if existing is None or _matches(existing, ref, decl):
        target = name
        if pending is not None:
            plan.before.steps.append(Step("drop_leftover", tmp, (_drop(schema, tmp),)))
        if existing is not None and not existing.valid and not existing.backs_constraint and not obs.partitions:
            # INVALID with no partition whose attach could validate it (e.g. made ON ONLY, then the
            # partitions detached): recreated in one transaction; ON ONLY with no partitions is valid.
            plan.before.steps.append(Step(
                "create_parent_index", name,
                (_drop(schema, name), render_create(decl, table_sql, name=name, only=True)),
                description=f"{name} is INVALID and the table has no partitions: recreated", group=name,
            ))
        elif existing is None:
            plan.before.steps.append(Step(
                "create_parent_index", name,
                (render_create(decl, table_sql, name=name, only=True, if_not_exists=True),),
                description=f"{name} on the parent only; partitions follow", group=name,
            ))
    else:
        target = tmp
        if pending is not None and not _matches(pending, ref, decl):
            plan.before.steps.append(Step("drop_leftover", tmp, (_drop(schema, tmp),)))
            pending = None
        if pending is None:
            plan.before.steps.append(Step(
                "create_parent_index", tmp,
                (render_create(decl, table_sql, name=tmp, only=True, if_not_exists=True),),
                description=f"replacement for {name} on the parent only", group=name,
            ))
        plan.after.steps.append(Step("swap_index", name, (_rename(schema, name, old), _rename(schema, tmp, name)),
                                     group=name, description=f"swap the replacement of {name} in"))
        plan.after.steps.append(Step("drop_replaced", old, (_drop(schema, old),), group=name))
    for part in obs.partitions:
        attached = next((i for i in part.indexes if i.parent_index == target), None)
        if attached is not None:
            plan.present.append({"partition": part.name, "index": name, "childIndex": attached.name,
                                 "success": True, "state": "present", "rows": part.estimated_rows})
            continue
        if part.relkind != "r":
            plan.present.append({"partition": part.name, "index": name, "success": False, "state": "unsupported",
                                 "error": "nested partitioned or foreign partitions are not indexed by pgcurator"})
            continue
        cname = child_name(target, part.name)
        part_sql = qualified(part.schema, part.name)
        attach = Step("attach_index", cname, (f"ALTER INDEX {qualified(schema, target)} ATTACH PARTITION "
                                               f"{qualified(part.schema, cname)}",), group=f"{name}/{part.name}")
        ours = next((i for i in part.indexes if i.name == cname), None)
        adoptable = [i for i in part.indexes if i.parent_index is None and i.valid and _matches(i, ref, decl)
                     and (part.schema, i.name) not in foreign]
        if ours is not None and ours in adoptable:
            adoptable = [ours]
        steps: tuple[Step, ...]
        if adoptable:
            chosen = adoptable[0]
            attach = Step("attach_index", chosen.name, (f"ALTER INDEX {qualified(schema, target)} ATTACH PARTITION "
                                                         f"{qualified(part.schema, chosen.name)}",),
                          group=f"{name}/{part.name}")
            steps = (attach,)
        else:
            build = Step("create_index", cname, (render_create(decl, part_sql, name=cname, concurrently=True),),
                         transactional=False, group=f"{name}/{part.name}", description=f"{name} on {part.name}")
            if ours is not None:
                drop = Step("drop_leftover", cname, (_drop_concurrently(part.schema, cname),), transactional=False,
                            group=f"{name}/{part.name}", description=f"{cname} is invalid or stale")
                steps = (drop, build, attach)
            else:
                steps = (build, attach)
        lane = f"{part.schema}.{part.name}"
        plan.jobs.append(BuildJob(name, part.name, lane, lane, steps, part.estimated_rows, part.schema))


def _plan_prune(plan: IndexPlan, spec: IndexPolicySpec, obs: IndexObservation, foreign: Foreign) -> None:
    declared = {d.name for d in spec.indexes}
    ours = declared | {new_name(n) for n in declared} | {old_name(n) for n in declared}
    for info in obs.indexes:
        # An index attached to a partitioned index (this table is a partition) belongs to that
        # index: PostgreSQL refuses to drop it alone, and whoever manages the parent manages it.
        if info.name in ours or info.backs_constraint or info.parent_index is not None:
            continue
        holder = foreign.get((info.schema, info.name))
        if holder is None and (info.comment or "").startswith(VECTOR_MARKER):
            holder = "a VectorIndex"  # built before claims were recorded; it claims it on its next run
        if holder is not None:
            if spec.prune:
                plan.notes.append(f"index {info.name} is managed by {holder}: not pruned")
            continue
        plan.prunable.append(info.name)
        if spec.prune:
            sql = _drop(info.schema, info.name) if info.partitioned else _drop_concurrently(info.schema, info.name)
            plan.after.steps.append(Step("prune_index", info.name, (sql,), transactional=info.partitioned,
                                         description="not declared and prune: true"))
