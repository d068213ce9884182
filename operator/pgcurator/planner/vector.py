"""VectorIndex planning, pure: pgvector's rules, operator classes, and the DDL steps from an
observation (the build's memory estimate and session settings are in vector_memory, the recall
arithmetic in vector_recall). No I/O here."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import PlanError
from ..models.pgvector import MAX_TYPE_DIMENSIONS, select_opclass, version_ok
from ..sql.quote import fit_identifier, ident, literal, qualified
from ..sql.statements import Plan, Step
from .vector_memory import (
    SPARSEVEC_MAX_NONZERO,
    BuildSettings,
    auto_lists,
    build_settings,
    hnsw_graph_bytes,
    ivfflat_build_bytes,
)

if TYPE_CHECKING:
    from ..catalog.vectors import ExistingVectorIndex, VectorObservation
    from ..models.vector import VectorIndexSpec

# ----------------------------------------------------------------------------- index definition

TEMP_SUFFIX = "_pgc_new"
OLD_SUFFIX = "_pgc_old"
COMMENT_PREFIX = "pgcurator VectorIndex "


@dataclass(frozen=True)
class IndexNames:
    target: str
    temp: str
    old: str


def index_names(spec: VectorIndexSpec) -> IndexNames:
    from ..models.vector import default_index_name

    name = spec.index_name or default_index_name(spec.table.name, spec.column, spec.method.value)
    return IndexNames(name, fit_identifier(name, TEMP_SUFFIX), fit_identifier(name, OLD_SUFFIX))


def resolved_options(spec: VectorIndexSpec, rows: int) -> dict[str, int]:
    if spec.method.value == "hnsw":
        p = spec.hnsw_params
        return {"m": p.m, "ef_construction": p.ef_construction}
    lists = spec.ivfflat_params.lists
    return {"lists": auto_lists(rows) if lists == "auto" else int(lists)}


def fingerprint(spec: VectorIndexSpec) -> str:
    """What defines the index as declared ('auto' lists stays 'auto': growth alone never rebuilds)."""
    opclass = select_opclass(spec.type.value, spec.metric.value, spec.method.value)
    if spec.method.value == "hnsw":
        opts = f"m={spec.hnsw_params.m},ef_construction={spec.hnsw_params.ef_construction}"
    else:
        opts = f"lists={spec.ivfflat_params.lists}"
    text = f"{spec.column}|{spec.method.value}|{opclass}|{opts}|{spec.where or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_index_sql(spec: VectorIndexSpec, name: str, rows: int) -> str:
    opclass = select_opclass(spec.type.value, spec.metric.value, spec.method.value)
    opts = ", ".join(f"{k} = {v}" for k, v in resolved_options(spec, rows).items())
    t = spec.table
    sql = (f"CREATE INDEX CONCURRENTLY {ident(name)} ON {qualified(t.schema_, t.name)} "
           f"USING {spec.method.value} ({ident(spec.column)} {opclass}) WITH ({opts})")
    if spec.where:
        sql += f" WHERE {spec.where}"
    return sql


def _norm_predicate(text: str | None) -> str:
    return re.sub(r"[\s()\"]", "", (text or "").lower())


def mismatches(spec: VectorIndexSpec, idx: ExistingVectorIndex) -> list[str]:
    """How an existing index differs from the spec (empty: it is the declared index)."""
    out: list[str] = []
    opclass = select_opclass(spec.type.value, spec.metric.value, spec.method.value)
    if idx.method != spec.method.value:
        out.append(f"method {idx.method} -> {spec.method.value}")
    if idx.opclass != opclass:
        out.append(f"operator class {idx.opclass} -> {opclass}")
    if idx.column != spec.column:
        out.append(f"column {idx.column} -> {spec.column}")
    if spec.method.value == "hnsw":
        p = spec.hnsw_params
        if int(idx.options.get("m", 16)) != p.m:
            out.append(f"m {idx.options.get('m', 16)} -> {p.m}")
        if int(idx.options.get("ef_construction", 64)) != p.ef_construction:
            out.append(f"ef_construction {idx.options.get('ef_construction', 64)} -> {p.ef_construction}")
    else:
        lists = spec.ivfflat_params.lists
        if lists != "auto" and int(idx.options.get("lists", 100)) != int(lists):
            out.append(f"lists {idx.options.get('lists', 100)} -> {lists}")
    marked = idx.comment.startswith(COMMENT_PREFIX) if idx.comment else False
    if marked:
        if idx.comment != COMMENT_PREFIX + fingerprint(spec) and not out:
            out.append("predicate or parameters changed")
    elif _norm_predicate(idx.predicate) != _norm_predicate(spec.where):
        out.append(f"predicate {idx.predicate or 'none'} -> {spec.where or 'none'}")
    return out


# ----------------------------------------------------------------------------- the plan

@dataclass
class VectorPlan:
    plan: Plan
    names: IndexNames
    action: str  # none | create | rebuild_invalid | replace | finish_swap | adopt | create_extension
    settings: BuildSettings | None = None
    rows: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def builds(self) -> bool:
        return any(s.kind == "build_index" for s in self.plan.steps)


def check_observation(spec: VectorIndexSpec, obs: VectorObservation) -> None:
    """Refuse, before any DDL, what cannot be built: wrong table, column, type, dimensions."""
    t = spec.table
    if obs.extension_version is not None and not version_ok(obs.extension_version):
        raise PlanError(
            f"pgvector {obs.extension_version} is installed; versions before 0.8.4 have known index corruption "
            f"bugs: run ALTER EXTENSION vector UPDATE (available: {obs.extension_available or 'unknown'})",
            reason="PgvectorTooOld")
    if obs.extension_version is None and obs.extension_available is None:
        raise PlanError("the pgvector extension is not available on this server (no vector.control): install "
                        "pgvector 0.8.4 or newer", reason="ExtensionMissing")
    if obs.extension_version is None and obs.extension_available and not version_ok(obs.extension_available):
        raise PlanError(f"the server offers pgvector {obs.extension_available}; 0.8.4 or newer is required",
                        reason="PgvectorTooOld")
    if not obs.table_exists:
        raise PlanError(f"table {t.qualified} does not exist", reason="TableNotFound")
    if obs.relkind == "p":
        raise PlanError(f"{t.qualified} is partitioned: CREATE INDEX CONCURRENTLY cannot run on a partitioned "
                        "table; declare a VectorIndex per partition", reason="TablePartitioned")
    col = obs.column
    if col is None:
        raise PlanError(f"column {spec.column} does not exist in {t.qualified}", reason="ColumnNotFound")
    if col.base_type != spec.type.value:
        raise PlanError(f"column {t.qualified}.{spec.column} is {col.type_name}, not {spec.type.value}"
                        + (" (not a pgvector type)" if col.base_type not in MAX_TYPE_DIMENSIONS else ""),
                        reason="WrongColumnType")
    if col.dimensions is None:
        raise PlanError(f"column {t.qualified}.{spec.column} is {col.type_name} without dimensions; pgvector "
                        f"indexes need a fixed dimension: ALTER it to {spec.type.value}({spec.dimensions})",
                        reason="DimensionMismatch")
    if col.dimensions != spec.dimensions:
        raise PlanError(f"column {t.qualified}.{spec.column} is {col.type_name}, the spec says "
                        f"{spec.dimensions} dimensions", reason="DimensionMismatch")
    if spec.type.value == "sparsevec" and obs.max_nonzero is not None and obs.max_nonzero > SPARSEVEC_MAX_NONZERO:
        raise PlanError(f"rows of {t.qualified}.{spec.column} have up to {obs.max_nonzero} non-zero elements; "
                        f"HNSW indexes sparsevec values with at most {SPARSEVEC_MAX_NONZERO}",
                        reason="DimensionMismatch")


def estimate_bytes(spec: VectorIndexSpec, rows: int, avg_nonzero: float | None = None) -> int:
    if spec.method.value == "hnsw":
        return hnsw_graph_bytes(rows, spec.type.value, spec.dimensions, spec.hnsw_params.m, avg_nonzero)
    lists = resolved_options(spec, rows)["lists"]
    return ivfflat_build_bytes(rows, spec.type.value, spec.dimensions, lists)


def plan_vector_index(spec: VectorIndexSpec, obs: VectorObservation) -> VectorPlan:
    """Steps that bring the index to the spec. Every step is idempotent and the state between any two
    of them is recognised on the next run (crash anywhere resumes)."""
    names = index_names(spec)
    t = spec.table
    plan = Plan()
    if obs.extension_version is None and obs.extension_available is not None:
        # Without the extension the column cannot be a vector yet: create it first; the table and
        # column are checked on the run after.
        if not version_ok(obs.extension_available):
            check_observation(spec, obs)
        plan.steps.append(Step("create_extension", "vector", ("CREATE EXTENSION IF NOT EXISTS vector",),
                               description="pgvector is not installed in this database"))
        plan.notes.append("the table and column are checked once pgvector is installed")
        return VectorPlan(plan, names, "create_extension")
    check_observation(spec, obs)
    rows = obs.estimated_rows
    max_workers = obs.max_parallel_workers
    if spec.build.max_parallel_workers is not None:
        max_workers = min(max_workers, spec.build.max_parallel_workers)
    settings = build_settings(estimate_bytes(spec, rows, obs.avg_nonzero), spec.build.budget_bytes, rows,
                              max_workers)
    comment = COMMENT_PREFIX + fingerprint(spec)

    def drop(name: str, why: str) -> Step:
        return Step("drop_index", name, (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(t.schema_, name)}",),
                    transactional=False, description=why)

    def build(name: str, why: str) -> Step:
        return Step("build_index", name, (*settings.statements(), create_index_sql(spec, name, rows)),
                    transactional=False, description=why)

    def mark(name: str) -> Step:
        return Step("mark_index", name, (f"COMMENT ON INDEX {qualified(t.schema_, name)} IS {literal(comment)}",),
                    description="record the definition this index was built from")

    target = obs.indexes.get(names.target)
    temp = obs.indexes.get(names.temp)
    old = obs.indexes.get(names.old)
    reasons: list[str] = []
    action = "none"

    if target is not None and target.valid:
        diff = mismatches(spec, target)
        if not diff:
            if temp is not None:
                plan.steps.append(drop(names.temp, "leftover of an interrupted replacement"))
            if target.comment != comment:
                action = "adopt"
                plan.steps.append(mark(names.target))
        else:
            action = "replace"
            reasons = diff
            if temp is not None and (not temp.valid or mismatches(spec, temp)):
                plan.steps.append(drop(names.temp, "leftover of an interrupted build"))
                temp = None
            if temp is None:
                plan.steps.append(build(names.temp, "build the new definition next to the old index: "
                                        + "; ".join(diff)))
            s = t.schema_
            plan.steps.append(Step(
                "swap_index", names.target,
                (f"ALTER INDEX {qualified(s, names.target)} RENAME TO {ident(names.old)}",
                 f"ALTER INDEX {qualified(s, names.temp)} RENAME TO {ident(names.target)}",
                 f"COMMENT ON INDEX {qualified(s, names.target)} IS {literal(comment)}"),
                description="swap the new index in; queries always have a valid index"))
            plan.steps.append(drop(names.old, "the replaced index"))
            old = None
    else:
        if target is not None:  # INVALID: an interrupted CREATE INDEX CONCURRENTLY
            action = "rebuild_invalid"
            reasons = [f"{names.target} is INVALID (an interrupted concurrent build)"]
            plan.steps.append(drop(names.target, "INVALID leftover of an interrupted build"))
        else:
            action = "create"
        if temp is not None and temp.valid and not mismatches(spec, temp):
            action = "finish_swap"
            plan.steps.append(Step(
                "rename_index", names.target,
                (f"ALTER INDEX {qualified(t.schema_, names.temp)} RENAME TO {ident(names.target)}",
                 f"COMMENT ON INDEX {qualified(t.schema_, names.target)} IS {literal(comment)}"),
                description="finish an interrupted replacement"))
        else:
            if temp is not None:
                plan.steps.append(drop(names.temp, "leftover of an interrupted build"))
            plan.steps.append(build(names.target, "create the index"))
            plan.steps.append(mark(names.target))
    if old is not None:
        plan.steps.append(drop(names.old, "leftover of an interrupted replacement"))
    for other in obs.other_indexes:
        plan.notes.append(f"index {other} also covers {spec.column}; not managed by this resource")
    if obs.build_in_progress:
        plan.notes.append("another CREATE INDEX is running on this table")
    return VectorPlan(plan, names, action, settings, rows, reasons)
