"""Reconcile one VectorIndex: ensure pgvector, build (or rebuild and swap) the index on its own
connection within the memory budget while reporting progress, then measure recall."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..catalog.vectors import observe_vector_table, read_vector_index
from ..db.executor import TableLock, run_plan
from ..db.metadata import ensure_metadata
from ..db.ownership import ConflictingManager, owner_of, release_all
from ..errors import PlanError
from ..limits import STATUS_NOTES
from ..models.common import parse_duration
from ..models.vector import VectorIndexSpec, spec_summary
from ..planner.vector import (
    COMMENT_PREFIX,
    VectorPlan,
    index_names,
    plan_vector_index,
    resolved_options,
)
from ..planner.vector_memory import fmt_bytes
from ..sql.quote import qualified
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from .context import ReconcileContext
from .index_claims import INDEX, claim_indexes, conflict_message
from .outcome import Condition, Event, Outcome, step_event
from .vector_build import BuildReport, build_status, run_build
from .vector_recall import measure_recall, recall_config_hash

LOCK_RETRY_SECONDS = 15.0


def _index_status(spec: VectorIndexSpec, obs_index: Any) -> dict[str, Any] | None:
    if obs_index is None:
        return None
    return {
        "name": obs_index.name,
        "valid": obs_index.valid,
        "method": obs_index.method,
        "opclass": obs_index.opclass,
        "options": obs_index.options,
        "predicate": obs_index.predicate,
        "sizeBytes": obs_index.size_bytes,
        "size": fmt_bytes(obs_index.size_bytes),
        "rowsIndexed": int(obs_index.tuples) if obs_index.tuples >= 0 else None,
        "managed": bool(obs_index.comment and obs_index.comment.startswith(COMMENT_PREFIX)),
        "definition": obs_index.definition,
    }


def _previous(ctx: ReconcileContext) -> dict[str, Any]:
    return dict((ctx.body or {}).get("status") or {})


def _recall_due(spec: VectorIndexSpec, previous: dict[str, Any], config: str, rebuilt: bool) -> bool:
    if not spec.recall.enabled:
        return False
    if rebuilt:
        return True
    prev = previous.get("recall") or {}
    if prev.get("configHash") != config or not prev.get("measuredAt"):
        return True
    try:
        at = datetime.fromisoformat(prev["measuredAt"])
    except (TypeError, ValueError):
        return True
    return datetime.now(UTC) - at >= timedelta(seconds=parse_duration(spec.recall.interval))


async def _ensure_extension(ctx: ReconcileContext, spec: VectorIndexSpec) -> None:
    step = Step("create_extension", "vector", ("CREATE EXTENSION IF NOT EXISTS vector",),
                description="pgvector is not installed in this database")
    run = await run_plan(ctx.conn, Plan([step]), resource=ctx.resource, timeouts=spec.timeouts)
    sr = run.steps[0]
    await ctx.event(step_event(sr))
    if sr.outcome != "ok":
        db = await ctx.conn.fetchval("SELECT current_database()")
        who = await ctx.conn.fetchval("SELECT current_user")
        raise PlanError(
            f"pgvector is not installed in database {db} and role {who} may not create it ({sr.error}): ask an "
            f"administrator to run CREATE EXTENSION vector in {db} (or grant the role the right to). No index "
            "was built", reason="ExtensionMissing")


def _spill_condition(build: dict[str, Any] | None) -> Condition | None:
    if not build or build.get("inMemory") is None:
        return None
    if build["inMemory"]:
        return Condition("BuildInMemory", True, "InMemory",
                         f"the last build of {build.get('index')} kept the HNSW graph within maintenance_work_mem "
                         f"({build.get('maintenanceWorkMem')})")
    return Condition("BuildInMemory", False, "GraphExceededMemory",
                     f"the last build of {build.get('index')} left the fast path after "
                     f"{build.get('spilledAfterTuples')} tuples: the graph did not fit in maintenance_work_mem "
                     f"({build.get('maintenanceWorkMem')}; estimate {build.get('memoryEstimate')}); raise "
                     "build.memoryBudget")


async def reconcile_vector_index(ctx: ReconcileContext, spec: VectorIndexSpec) -> Outcome:
    t = spec.table
    names = index_names(spec)
    previous = _previous(ctx)
    await ensure_metadata(ctx.conn)
    async with TableLock(ctx.conn, t.schema_, t.name):
        await _claim(ctx, spec, names.target, write=False)  # first: a name taken by another resource says who
        obs = await observe_vector_table(ctx.conn, t.schema_, t.name, spec.column,
                                         [names.target, names.temp, names.old], spec.where)
        if obs.extension_version is None and obs.extension_available and not (spec.dry_run or spec.suspend):
            await _ensure_extension(ctx, spec)
            # Nothing else needs reading again: without the extension no column could be a vector, so
            # the plan below refuses the table exactly as a fresh observation would.
            obs = replace(obs, extension_version=obs.extension_available)
        vplan = plan_vector_index(spec, obs)
        # Claimed before it is built or adopted; an index another resource manages is left alone.
        await _claim(ctx, spec, names.target, write=not (spec.dry_run or spec.suspend))
        status: dict[str, Any] = {
            "table": t.qualified,
            "definition": spec_summary(spec),
            "pgvector": obs.extension_version,
            "estimatedRows": obs.estimated_rows,
            "index": _index_status(spec, obs.indexes.get(names.target)),
            "plan": vplan.plan.statements() if (spec.dry_run or spec.suspend) else [],
            "notes": vplan.plan.notes[:STATUS_NOTES],
        }
        if vplan.settings is not None:
            status["buildSettings"] = {
                "memoryEstimate": fmt_bytes(vplan.settings.estimate),
                "memoryBudget": fmt_bytes(vplan.settings.budget),
                "maintenanceWorkMem": fmt_bytes(vplan.settings.maintenance_work_mem),
                "parallelWorkers": vplan.settings.workers,
                "predictedInMemory": vplan.settings.fits,
            }
        if spec.dry_run or spec.suspend:
            if vplan.plan.empty:
                return _with_carried(Outcome.ready("UpToDate", "nothing to change", status), previous)
            reason = "DryRun" if spec.dry_run else "Suspended"
            return _with_carried(Outcome.progressing(
                reason, f"{reason}: {len(vplan.plan.statements())} statements planned and not run (see status.plan)",
                status), previous)

        report, failed = await _apply(ctx, spec, vplan)
        if report is not None:
            status["build"] = build_status(report, spec)
        elif previous.get("build"):
            status["build"] = previous["build"]
        if vplan.plan.steps:
            status["lastRun"] = {"at": k8s_time(), "action": vplan.action,
                                 "reasons": vplan.reasons, "steps": [s.kind + " " + s.target for s in vplan.plan.steps]}
        if failed is not None and failed[0] == "WaitingForLock":
            # A swap, rename or drop that could not get its lock waits like a build does.
            return _finish(Outcome.progressing(failed[0], f"{failed[1]}; retrying", status,
                                               requeue_after=LOCK_RETRY_SECONDS), status)
        if failed is not None:
            return _finish(Outcome.degraded(failed[0], failed[1], status), status)
        if report is not None and report.outcome == "lock_timeout":
            return _finish(Outcome.progressing("WaitingForLock", f"building {report.index}: {report.error}; retrying",
                                               status, requeue_after=LOCK_RETRY_SECONDS), status)
        if report is not None and report.outcome != "ok":
            return _finish(Outcome.degraded("BuildFailed", f"building {report.index} failed: {report.error}", status),
                           status)

        # The index as it is now (the rest of the observation still holds).
        idx = obs.indexes.get(names.target)
        if vplan.plan.steps and obs.table_oid is not None:
            idx = await read_vector_index(ctx.conn, obs.table_oid, names.target)
        status["index"] = _index_status(spec, idx)
        if report is not None and idx is not None:
            status["build"]["sizeBytes"] = idx.size_bytes
            status["build"]["size"] = fmt_bytes(idx.size_bytes)
            status["build"]["rowsIndexed"] = int(idx.tuples) if idx.tuples >= 0 else None

    # Recall is measured outside the table lock: it only reads.
    rebuilt = report is not None and report.outcome == "ok"
    lists = resolved_options(spec, obs.estimated_rows).get("lists")
    if idx is not None and "lists" in idx.options:
        lists = int(idx.options["lists"])
    config = recall_config_hash(spec, idx.definition if idx else "")
    extra: list[Condition] = []
    events: list[Event] = []
    if idx is not None and _recall_due(spec, previous, config, rebuilt):
        recall = await measure_recall(ctx, spec, names.target, lists, obs.estimated_rows)
        recall["configHash"] = config
        status["recall"] = recall
        events.extend(recall.pop("_events", []))
    elif previous.get("recall"):
        status["recall"] = previous["recall"]
    recall_status = status.get("recall") or {}
    if recall_status.get("recommended") is not None:
        status["recommendedSearch"] = f"{recall_status['parameter']}={recall_status['recommended']}"
    if "met" in recall_status:
        met = bool(recall_status["met"])
        extra.append(Condition(
            "RecallTargetMet", met, "TargetMet" if met else "BelowTarget",
            recall_status.get("summary", "")))
    reason = {"none": "UpToDate", "adopt": "Adopted"}.get(vplan.action, "Built")
    msg = _ready_message(status, vplan)
    outcome = Outcome.ready(reason, msg, status)
    outcome.conditions.extend(extra)
    outcome.events.extend(events)
    return _finish(outcome, status)


async def _claim(ctx: ReconcileContext, spec: VectorIndexSpec, name: str, *, write: bool) -> None:
    conflicts = await claim_indexes(ctx, spec.table.schema_, [name], write=write)
    if conflicts:
        raise ConflictingManager(conflict_message(ctx.resource, conflicts))


def _finish(outcome: Outcome, status: dict[str, Any]) -> Outcome:
    cond = _spill_condition(status.get("build"))
    if cond is not None:
        outcome.conditions.append(cond)
    return outcome


def _with_carried(outcome: Outcome, previous: dict[str, Any]) -> Outcome:
    for key in ("build", "recall", "recommendedSearch"):
        if key in previous:
            outcome.status[key] = previous[key]
    return _finish(outcome, outcome.status)


def _ready_message(status: dict[str, Any], vplan: VectorPlan) -> str:
    idx = status.get("index") or {}
    parts = [f"{idx.get('name')} ({idx.get('method')}, {idx.get('size')}, ~{idx.get('rowsIndexed')} rows)"]
    if vplan.action in ("replace", "rebuild_invalid", "create", "finish_swap"):
        b = status.get("build") or {}
        if b.get("durationSeconds") is not None:
            parts.append(f"built in {b['durationSeconds']}s with maintenance_work_mem {b.get('maintenanceWorkMem')}")
    r = status.get("recall") or {}
    if r.get("summary"):
        parts.append(r["summary"])
    return "; ".join(parts)


async def _apply(ctx: ReconcileContext, spec: VectorIndexSpec,
                 vplan: VectorPlan) -> tuple[BuildReport | None, tuple[str, str] | None]:
    """Run the plan's steps in order; the build step on its own connection. Returns the build
    report (if a build ran) and (reason, message) of the first failure."""
    report: BuildReport | None = None
    for step in vplan.plan.steps:
        if step.kind == "build_index":
            assert vplan.settings is not None
            await ctx.event(Event("Normal", "BuildStarted",
                                  f"building {step.target}: {vplan.settings.reason}"))
            report = await run_build(ctx, spec, step, vplan.settings)
            if report.step_result is not None:
                await ctx.event(step_event(report.step_result))
            if report.outcome != "ok":
                return report, None
            continue
        run = await run_plan(ctx.conn, Plan([step]), resource=ctx.resource, timeouts=spec.timeouts)
        sr = run.steps[0]
        await ctx.event(step_event(sr))
        if sr.outcome == "lock_timeout":
            return report, ("WaitingForLock", f"{step.kind} {step.target}: {sr.error}")
        if sr.outcome != "ok":
            return report, ("StepFailed", f"{step.kind} {step.target} failed: {sr.error}")
    return report, None


async def cleanup_vector_index(ctx: ReconcileContext, spec: VectorIndexSpec) -> None:
    """deletionPolicy: Delete. Drops the index, only if this resource's marker is on it."""
    t = spec.table
    names = index_names(spec)
    comment = await ctx.conn.fetchval(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2", t.schema_, names.target)
    if not (comment or "").startswith(COMMENT_PREFIX):
        return
    await ensure_metadata(ctx.conn)
    if await owner_of(ctx.conn, INDEX, t.schema_, names.target) not in (None, ctx.resource):
        return  # another resource manages it now
    steps = [Step("drop_index", n, (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(t.schema_, n)}",),
                  transactional=False) for n in (names.target, names.temp, names.old)]
    async with TableLock(ctx.conn, t.schema_, t.name):
        run = await run_plan(ctx.conn, Plan(steps), resource=ctx.resource, timeouts=spec.timeouts)
        if not run.failed and not run.lock_waits:
            await release_all(ctx.conn, ctx.resource)
