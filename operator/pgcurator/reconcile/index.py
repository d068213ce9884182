"""Reconcile one IndexPolicy: build what is declared without blocking writes, report the rest."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..catalog.indexes import IndexObservation, build_progress, observe_indexes, reference_definitions
from ..db.executor import RunResult, StepResult, TableLock, run_plan
from ..db.metadata import ensure_metadata
from ..errors import CuratorError
from ..models.common import Timeouts
from ..models.index import IndexPolicySpec
from ..planner.index import BuildJob, IndexPlan, plan_indexes, reference_statements
from ..sql.quote import qualified
from ..sql.statements import Plan, Step
from .context import ReconcileContext
from .outcome import Event, Outcome

PROGRESS_POLL_SECONDS = 1.0
FAILED_RETRY_SECONDS = 60.0
LOCK_RETRY_SECONDS = 15.0
MAX_STATUS_ROWS = 200


async def reconcile_index_policy(ctx: ReconcileContext, spec: IndexPolicySpec) -> Outcome:
    t = spec.table
    conn = ctx.conn
    await ensure_metadata(conn)
    async with TableLock(conn, t.schema_, t.name):
        obs = await observe_indexes(conn, t.schema_, t.name)
        plan = await _plan(conn, spec, obs)
        if spec.dry_run or spec.suspend:
            status = await _status(ctx, spec, obs, plan, None)
            status["plan"] = plan.statements()
            mode = "dryRun" if spec.dry_run else "suspended"
            if plan.empty:
                return Outcome.ready("UpToDate", f"{mode}: nothing to change; " + _summary(status), status)
            return Outcome.progressing(
                "DryRun" if spec.dry_run else "Suspended",
                f"{mode}: {len(plan.statements())} statements planned and not run (see status.plan)",
                status,
            )
        if plan.empty:
            status = await _status(ctx, spec, obs, plan, None)
            return Outcome.ready("UpToDate", _summary(status), status)
        run = await execute(ctx, spec, plan)
        obs = await observe_indexes(conn, t.schema_, t.name)
        after = await _plan(conn, spec, obs)
        status = await _status(ctx, spec, obs, after, run)
    return _outcome(run, status)


async def _plan(conn: Any, spec: IndexPolicySpec, obs: IndexObservation) -> IndexPlan:
    if not obs.exists:
        return plan_indexes(spec, obs, {})  # raises TableNotFound
    reference = await reference_definitions(conn, spec.table.schema_, spec.table.name, reference_statements(spec))
    return plan_indexes(spec, obs, reference)


# --- running ------------------------------------------------------------------------------------


@dataclass
class BuildRun(RunResult):
    """Outcome of one plan: the step results of each phase (failed/lock_waits/applied come from
    RunResult) and one row per build job."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed_indexes: set[str] = field(default_factory=set)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


async def execute(ctx: ReconcileContext, spec: IndexPolicySpec, plan: IndexPlan) -> BuildRun:
    """before (main connection) -> jobs (parallel, own connections) -> after (main connection)."""
    result = BuildRun()

    async def step_done(sr: StepResult) -> None:
        await ctx.event(_step_event(sr))

    def absorb(run: RunResult) -> None:
        result.steps.extend(run.steps)

    absorb(await run_plan(ctx.conn, plan.before, resource=ctx.resource, timeouts=spec.timeouts, on_step=step_done))
    if any(s.outcome != "ok" for s in result.steps):
        # A parent index that could not be created: its partition builds cannot be attached.
        for s in result.steps:
            if s.outcome != "ok" and s.step.kind == "create_parent_index":
                result.failed_indexes.add(s.step.group)  # the declared name (target may be _pgc_new)
    await _run_jobs(ctx, spec, [j for j in plan.jobs if j.index not in result.failed_indexes], result, step_done)
    after = Plan([s for s in plan.after.steps if not (s.group and s.group in result.failed_indexes)])
    absorb(await run_plan(ctx.conn, after, resource=ctx.resource, timeouts=spec.timeouts, on_step=step_done))
    return result


async def _run_jobs(ctx: ReconcileContext, spec: IndexPolicySpec, jobs: list[BuildJob], result: BuildRun,
                    step_done: Any) -> None:
    if not jobs:
        return
    lanes: dict[str, list[BuildJob]] = defaultdict(list)
    for job in jobs:
        lanes[job.lane].append(job)
    slots = asyncio.Semaphore(spec.parallelism)
    running: dict[int, BuildJob] = {}  # backend pid -> job
    done = 0

    async def one(job: BuildJob) -> None:
        nonlocal done
        t0 = time.perf_counter()
        row: dict[str, Any] = {"partition": job.partition, "index": job.index, "table": job.table}
        try:
            async with ctx.connection() as conn:
                pid = conn.get_server_pid()
                running[pid] = job
                try:
                    run = await run_plan(conn, Plan(list(job.steps)), resource=ctx.resource,
                                         timeouts=spec.timeouts, on_step=step_done)
                    bad = [s for s in run.steps if s.outcome != "ok"]
                    if bad:
                        await _clean_failed_build(conn, job, bad[0])
                finally:
                    running.pop(pid, None)
            result.steps.extend(run.steps)
            row["success"] = not bad
            if bad:
                row["error"] = bad[0].error or bad[0].outcome
            built = next((s for s in run.steps if s.step.kind in ("create_index", "create_replacement")), None)
            row["state"] = "failed" if bad else ("built" if built else "attached")
        except CuratorError as exc:
            row.update(success=False, error=exc.message, state="failed")
        row["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        row["rows"] = job.estimated_rows
        if not row["success"]:
            result.failed_indexes.add(job.index)
        result.rows.append(row)
        done += 1

    async def lane(queue: list[BuildJob]) -> None:
        for job in queue:
            async with slots:
                await one(job)

    async def poll() -> None:
        total = len(jobs)
        while True:
            await asyncio.sleep(PROGRESS_POLL_SECONDS)
            try:
                builds = await build_progress(ctx.conn, list(running))
            except Exception:  # progress is best effort; the builds go on
                builds = []
            await ctx.progress({"progress": {
                "builds": builds, "jobsDone": done, "jobsTotal": total,
                "updatedAt": datetime.now(UTC).replace(microsecond=0).isoformat(),
            }})

    poller = asyncio.create_task(poll())
    try:
        await asyncio.gather(*(lane(q) for q in lanes.values()))
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller


async def _clean_failed_build(conn: Any, job: BuildJob, failed: StepResult) -> None:
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index that every write still
    maintains: drop it now rather than on the next run (which would also find it)."""
    if failed.step.kind not in ("create_index", "create_replacement"):
        return
    drop = Step("drop_failed_build", failed.step.target,
                (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(job.schema, failed.step.target)}",),
                transactional=False)
    with contextlib.suppress(CuratorError):
        await run_plan(conn, Plan([drop]), resource="cleanup", timeouts=_cleanup_timeouts())


def _cleanup_timeouts() -> Timeouts:
    return Timeouts.model_validate({"lockTimeout": "5s", "statementTimeout": "10m", "lockRetries": 1})


# --- status -----------------------------------------------------------------------------------


def _step_event(sr: StepResult) -> Event:
    stmts = "; ".join(s.statement for s in sr.statements) or "; ".join(sr.step.statements)
    if sr.outcome == "ok":
        return Event("Normal", "DDLApplied", f"{sr.step.kind} {sr.step.target} in {sr.duration_ms:.0f} ms: {stmts}")
    if sr.outcome == "lock_timeout":
        return Event("Warning", "WaitingForLock", f"{sr.step.kind} {sr.step.target}: {sr.error}")
    return Event("Warning", "DDLFailed", f"{sr.step.kind} {sr.step.target} failed: {sr.error}")


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
                  run: BuildRun | None) -> dict[str, Any]:
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
    status["notes"] = plan.notes[:20]
    status["undeclared"] = plan.prunable[:50]
    if run is not None:
        status["lastRun"] = {
            "startedAt": run.started.isoformat(),
            "finishedAt": datetime.now(UTC).isoformat(),
            "applied": len(run.applied),
            "failed": len(run.failed),
            "waitingForLock": len(run.lock_waits),
            "builds": [r for r in run.rows if r["partition"] is None][:50],
            "changes": [
                {"step": s.step.kind, "target": s.step.target, "outcome": s.outcome, "ms": round(s.duration_ms, 1),
                 **({"error": s.error} if s.error else {})}
                for s in run.steps
            ][:100],
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
    failed_rows = [r for r in run.rows if not r.get("success")]
    if failed_rows and status.get("partitioned"):
        names = ", ".join(f"{r['partition']}/{r['index']}" for r in failed_rows[:5])
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
    return Outcome.ready("Applied", f"applied {len(run.applied)} steps; " + _summary(status), status)


_CREATED_SQL = """
SELECT DISTINCT target FROM pgcurator.history
 WHERE resource = $1 AND step IN ('create_index', 'create_parent_index', 'rename_index', 'swap_index')
   AND outcome = 'ok'
"""


async def cleanup_index_policy(ctx: ReconcileContext, spec: IndexPolicySpec) -> None:
    """deletionPolicy: Delete. Drops the declared indexes this resource built (recorded in
    pgcurator.history), never one backing a constraint; dropping an index loses no data."""
    t = spec.table
    conn = ctx.conn
    if not await conn.fetchval("SELECT to_regclass('pgcurator.history') IS NOT NULL"):
        return
    created = {r[0] for r in await conn.fetch(_CREATED_SQL, ctx.resource)}
    async with TableLock(conn, t.schema_, t.name):
        obs = await observe_indexes(conn, t.schema_, t.name)
        plan = Plan()
        for decl in spec.indexes:
            info = obs.index(decl.name)
            if info is None or info.backs_constraint or decl.name not in created:
                continue
            target = qualified(info.schema, info.name)
            if info.partitioned:
                plan.steps.append(Step("drop_index", info.name, (f"DROP INDEX IF EXISTS {target}",)))
            else:
                plan.steps.append(Step("drop_index", info.name, (f"DROP INDEX CONCURRENTLY IF EXISTS {target}",),
                                       transactional=False))
        await run_plan(conn, plan, resource=ctx.resource, timeouts=spec.timeouts)
