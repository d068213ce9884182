"""Reconcile one IndexPolicy: build what is declared without blocking writes, report the rest."""

from __future__ import annotations

from typing import Any

from ..catalog.indexes import IndexObservation, observe_indexes, reference_definitions, reread_indexes
from ..db.executor import TableLock, run_plan
from ..db.metadata import ensure_metadata
from ..db.ownership import owner_of, release_all
from ..limits import SHOWN_ITEMS, STATUS_LIST, STATUS_NOTES
from ..models.index import IndexPolicySpec
from ..planner.index import IndexPlan, plan_indexes, reference_statements
from ..sql.quote import qualified
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from .context import ReconcileContext
from .index_build import BuildRun, execute
from .index_claims import INDEX, claim_indexes, conflict_message, managed_by_others, release_undeclared
from .outcome import Outcome, step_event

FAILED_RETRY_SECONDS = 60.0
LOCK_RETRY_SECONDS = 15.0
MAX_STATUS_ROWS = 200


async def reconcile_index_policy(ctx: ReconcileContext, spec: IndexPolicySpec) -> Outcome:
    t = spec.table
    conn = ctx.conn
    acting = not (spec.dry_run or spec.suspend)
    await ensure_metadata(conn)
    async with TableLock(conn, t.schema_, t.name):
        obs = await observe_indexes(conn, t.schema_, t.name)
        if not obs.exists:
            plan_indexes(spec, obs, {})  # raises TableNotFound
        # Claimed before anything is built or adopted: a crash later leaves nothing unowned.
        conflicts = await claim_indexes(ctx, t.schema_, [d.name for d in spec.indexes], write=acting)
        if acting:
            await release_undeclared(ctx, t.schema_, [d.name for d in spec.indexes])
        managed = spec.model_copy(update={"indexes": [d for d in spec.indexes if d.name not in conflicts]})
        foreign = await managed_by_others(conn, {t.schema_, *(p.schema for p in obs.partitions)}, ctx.resource)
        # PostgreSQL's own text of each declared index: built once per run on a scratch table.
        reference = await reference_definitions(conn, t.schema_, t.name, reference_statements(managed))
        plan = plan_indexes(managed, obs, reference, foreign)
        if not acting:
            status = await _status(ctx, spec, obs, plan, None, conflicts)
            status["plan"] = plan.statements()
            mode = "dryRun" if spec.dry_run else "suspended"
            if conflicts:
                return Outcome.degraded("ConflictingManager", conflict_message(ctx.resource, conflicts), status)
            if plan.empty and _invalid(status):
                return _invalid_outcome(_invalid(status), status)
            if plan.empty:
                return Outcome.ready("UpToDate", f"{mode}: nothing to change; " + _summary(status), status)
            return Outcome.progressing(
                "DryRun" if spec.dry_run else "Suspended",
                f"{mode}: {len(plan.statements())} statements planned and not run (see status.plan)",
                status,
            )
        run: BuildRun | None = None
        if not plan.empty:
            run = await execute(ctx, managed, plan, step_done=lambda sr: ctx.event(step_event(sr)))
            # What the run left, for the status: the indexes read again (the table, its partitions and
            # the reference definitions are those observed above).
            obs = await reread_indexes(conn, obs)
            plan = plan_indexes(managed, obs, reference, foreign)
        status = await _status(ctx, spec, obs, plan, run, conflicts)
    if conflicts:
        return Outcome.degraded("ConflictingManager", conflict_message(ctx.resource, conflicts), status)
    if run is None and _invalid(status):
        return _invalid_outcome(_invalid(status), status)
    if run is None:
        return Outcome.ready("UpToDate", _summary(status), status)
    return _outcome(run, status)


# --- status -----------------------------------------------------------------------------------


def _index_states(spec: IndexPolicySpec, obs: IndexObservation) -> list[dict[str, Any]]:
    out = []
    for decl in spec.indexes:
        info = obs.index(decl.name)
        entry: dict[str, Any] = {"name": decl.name, "exists": info is not None}
        if info is not None:
            entry.update(valid=info.valid, definition=info.definition, sizeBytes=info.size_bytes)
        out.append(entry)
    return out


async def _status(ctx: ReconcileContext, spec: IndexPolicySpec, obs: IndexObservation, plan: IndexPlan,
                  run: BuildRun | None, conflicts: dict[str, str]) -> dict[str, Any]:
    from .index_report import analysis_status

    status: dict[str, Any] = {
        "table": spec.table.qualified,
        "partitioned": obs.partitioned,
        "declared": len(spec.indexes),
        "indexes": _index_states(spec, obs),
        "pendingChanges": len(plan.statements()),
        "plan": [],
        "progress": None,
    }
    status["validIndexes"] = sum(1 for i in status["indexes"] if i.get("exists") and i.get("valid"))
    if obs.partitioned:
        rows = [dict(r) for r in (run.rows if run else [])]
        after_rows = {(r["partition"], r["index"]): r for r in plan.present}
        for r in rows:  # a build updates the partition's row estimate: report the fresher number
            fresh = after_rows.get((r["partition"], r["index"]))
            if fresh is not None and fresh.get("rows"):
                r["rows"] = fresh["rows"]
                r["childIndex"] = fresh.get("childIndex")
        seen = {(r["partition"], r["index"]) for r in rows}
        for job in plan.jobs:  # what still needs doing (e.g. a failed partition, retried next run)
            if (job.partition, job.index) not in seen:
                rows.append({"partition": job.partition, "index": job.index, "success": False, "state": "pending",
                             "rows": job.estimated_rows})
                seen.add((job.partition, job.index))
        rows.extend(r for r in plan.present if (r["partition"], r["index"]) not in seen)
        status["partitions"] = rows[:MAX_STATUS_ROWS]
        status["partitionCount"] = len(obs.partitions)
    # Always written (status is merge-patched: an absent key would keep an old value).
    status["notes"] = plan.notes[:STATUS_NOTES]
    status["undeclared"] = plan.prunable[:STATUS_LIST]
    status["conflicts"] = [{"index": n, "managedBy": h} for n, h in sorted(conflicts.items())]
    if run is not None:
        status["lastRun"] = {
            "startedAt": k8s_time(run.started),
            "finishedAt": k8s_time(),
            "applied": len(run.applied),
            "failed": len(run.failed),
            "waitingForLock": len(run.lock_waits),
            "builds": [r for r in run.rows if r["partition"] is None][:STATUS_LIST],
            "changes": [
                {"step": s.step.kind, "target": s.step.target, "outcome": s.outcome, "ms": round(s.duration_ms, 1),
                 **({"error": s.error} if s.error else {})}
                for s in run.steps
            ][:STATUS_LIST],
        }
    if spec.analysis.enabled or spec.suggestions.enabled:
        status.update(await analysis_status(ctx, spec, obs))
    return status


def _summary(status: dict[str, Any]) -> str:
    msg = f"{status['validIndexes']}/{status['declared']} declared indexes valid on {status['table']}"
    if status.get("partitioned"):
        msg += f" ({status.get('partitionCount', 0)} partitions)"
    return msg


def _outcome(run: BuildRun, status: dict[str, Any]) -> Outcome:
    failed_rows = [r for r in run.rows if not r.get("success") and r.get("state") != "waitingForLock"]
    if failed_rows and status.get("partitioned"):
        names = ", ".join(f"{r['partition']}/{r['index']}" for r in failed_rows[:SHOWN_ITEMS])
        first = failed_rows[0].get("error", "")
        return Outcome.degraded(
            "PartitionBuildFailed",
            f"{len(failed_rows)} partition builds failed ({names}); first error: {first}; the others were built. "
            "Failed partitions are retried on the next run",
            status, requeue_after=FAILED_RETRY_SECONDS,
        )
    if run.failed or failed_rows:
        first = run.failed[0] if run.failed else None
        detail = f"{first.step.kind} {first.step.target}: {first.error}" if first else failed_rows[0].get("error")
        return Outcome.degraded("StepFailed", f"{len(run.failed) or len(failed_rows)} steps failed; first: {detail}",
                                status, requeue_after=FAILED_RETRY_SECONDS)
    if run.lock_waits:
        w = run.lock_waits[0]
        return Outcome.progressing(
            "WaitingForLock",
            f"{len(run.lock_waits)} steps could not get their lock within lockTimeout (e.g. {w.step.kind} "
            f"{w.step.target}); retrying",
            status, requeue_after=LOCK_RETRY_SECONDS,
        )
    if _invalid(status):
        return _invalid_outcome(_invalid(status), status)
    return Outcome.ready("Applied", f"applied {len(run.applied)} steps; " + _summary(status), status)


def _invalid(status: dict[str, Any]) -> list[str]:
    """Declared indexes that exist but are INVALID after the run: PostgreSQL does not use them."""
    return [i["name"] for i in status["indexes"] if i.get("exists") and not i.get("valid")]


def _invalid_outcome(names: list[str], status: dict[str, Any]) -> Outcome:
    # Not Ready: an INVALID index serves no query. Reached when nothing planned can validate it, e.g. a
    # partitioned index with a partition pgcurator does not index (see status.partitions).
    return Outcome.degraded(
        "IndexInvalid",
        f"{len(names)} declared indexes exist INVALID and could not be repaired ({', '.join(names[:SHOWN_ITEMS])}); "
        + _summary(status),
        status, requeue_after=FAILED_RETRY_SECONDS,
    )


_CREATED_SQL = """
SELECT DISTINCT target FROM pgcurator.history
 WHERE resource = $1 AND step IN ('create_index', 'create_parent_index', 'rename_index', 'swap_index')
   AND outcome = 'ok'
"""


async def cleanup_index_policy(ctx: ReconcileContext, spec: IndexPolicySpec) -> None:
    """deletionPolicy: Delete. Drops the declared indexes this resource built (recorded in
    pgcurator.history) and still manages, never one backing a constraint or managed by another
    resource; dropping an index loses no data. Then gives up its claims."""
    t = spec.table
    conn = ctx.conn
    if not await conn.fetchval("SELECT to_regclass('pgcurator.history') IS NOT NULL"):
        return
    await ensure_metadata(conn)
    created = {r[0] for r in await conn.fetch(_CREATED_SQL, ctx.resource)}
    async with TableLock(conn, t.schema_, t.name):
        obs = await observe_indexes(conn, t.schema_, t.name)
        plan = Plan()
        for decl in spec.indexes:
            info = obs.index(decl.name)
            if info is None or info.backs_constraint or decl.name not in created:
                continue
            if await owner_of(conn, INDEX, info.schema, info.name) not in (None, ctx.resource):
                continue
            target = qualified(info.schema, info.name)
            if info.partitioned:
                plan.steps.append(Step("drop_index", info.name, (f"DROP INDEX IF EXISTS {target}",)))
            else:
                plan.steps.append(Step("drop_index", info.name, (f"DROP INDEX CONCURRENTLY IF EXISTS {target}",),
                                       transactional=False))
        run = await run_plan(conn, plan, resource=ctx.resource, timeouts=spec.timeouts)
        if not run.failed and not run.lock_waits:
            await release_all(conn, ctx.resource)
