"""Reconcile one VectorIndex: ensure pgvector, build (or rebuild and swap) the index on its own
connection within the memory budget while reporting progress, then measure recall."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..catalog.vectors import observe_vector_table
from ..db.executor import StepResult, TableLock, run_plan
from ..db.metadata import ensure_metadata
from ..errors import PlanError
from ..models.common import parse_duration
from ..models.vector import VectorIndexSpec, spec_summary
from ..planner.vector import (
    COMMENT_PREFIX,
    BuildSettings,
    VectorPlan,
    fewer_workers,
    fmt_bytes,
    hnsw_element_bytes,
    index_names,
    is_dsm_failure,
    plan_vector_index,
    resolved_options,
)
from ..sql.quote import qualified
from ..sql.statements import Plan, Step
from .context import ReconcileContext
from .outcome import Condition, Event, Outcome
from .partition import _step_event as step_event
from .vector_recall import measure_recall, recall_config_hash

SPILL_NOTICE = re.compile(r"hnsw graph no longer fits into maintenance_work_mem after (\d+) tuples")
PROGRESS_POLL_SECONDS = 1.0
LOCK_RETRY_SECONDS = 15.0
DSM_FIX = ("the server's dynamic shared memory is too small for a parallel build of this size: give PostgreSQL "
           "a larger /dev/shm (e.g. an emptyDir volume with medium: Memory, or CloudNativePG's "
           "spec.ephemeralVolumesSizeLimit.shm), or lower build.maxParallelWorkers")

_PROGRESS_SQL = """
SELECT p.phase, p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done, p.lockers_total, p.lockers_done,
       (SELECT count(*) FROM pg_stat_activity a WHERE a.leader_pid = p.pid) AS workers
  FROM pg_stat_progress_create_index p WHERE p.pid = $1
"""


@dataclass
class BuildReport:
    index: str
    settings: BuildSettings
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    seconds: float = 0.0
    outcome: str = "running"
    error: str | None = None
    spilled_after: int | None = None
    workers_seen: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    dsm_failures: int = 0
    notices: list[str] = field(default_factory=list)
    phase: str | None = None
    percent: float | None = None
    step_result: StepResult | None = None


def _percent(row: Any) -> float | None:
    for total, done in (("blocks_total", "blocks_done"), ("tuples_total", "tuples_done"),
                        ("lockers_total", "lockers_done")):
        if row[total]:
            return round(100.0 * float(row[done]) / float(row[total]), 1)
    return None


def build_status(report: BuildReport, spec: VectorIndexSpec) -> dict[str, Any]:
    s = report.settings
    out: dict[str, Any] = {
        "index": report.index,
        "startedAt": report.started.isoformat(),
        "outcome": report.outcome,
        "memoryBudget": fmt_bytes(s.budget),
        "memoryBudgetBytes": s.budget,
        "memoryEstimate": fmt_bytes(s.estimate),
        "memoryEstimateBytes": s.estimate,
        "maintenanceWorkMem": fmt_bytes(s.maintenance_work_mem),
        "maintenanceWorkMemBytes": s.maintenance_work_mem,
        "parallelWorkers": s.workers,
        "predictedInMemory": s.fits,
        "settingsReason": s.reason,
    }
    if report.finished is not None:
        out["finishedAt"] = report.finished.isoformat()
        out["durationSeconds"] = round(report.seconds, 2)
    if report.phase is not None:
        out["phase"] = report.phase
    if report.percent is not None:
        out["percent"] = report.percent
    if report.workers_seen:
        out["workersLaunched"] = report.workers_seen
    if spec.method.value == "hnsw":
        out["inMemory"] = report.spilled_after is None if report.outcome == "ok" else None
        out["estimatedBytesPerElement"] = hnsw_element_bytes(spec.type.value, spec.dimensions, spec.hnsw_params.m)
        if report.spilled_after:
            out["spilledAfterTuples"] = report.spilled_after
            # The NOTICE tells how many elements filled maintenance_work_mem: a measurement of the
            # real per-element size to put next to the estimate.
            out["measuredBytesPerElement"] = s.maintenance_work_mem // report.spilled_after
    if report.dsm_failures:
        out["sharedMemoryProblem"] = DSM_FIX
    if report.error:
        out["error"] = report.error
    if report.attempts:
        out["attempts"] = report.attempts
    if report.notices:
        out["notices"] = report.notices[:5]
    return out


async def _poll_progress(ctx: ReconcileContext, pid: int, report: BuildReport, spec: VectorIndexSpec) -> None:
    """Copy pg_stat_progress_create_index of the build's backend to the status while it runs."""
    started = time.monotonic()
    async with ctx.connection() as conn:
        while True:
            row = await conn.fetchrow(_PROGRESS_SQL, pid)
            if row is not None:
                report.phase = row["phase"]
                report.percent = _percent(row)
                report.workers_seen = max(report.workers_seen, int(row["workers"]))
                await ctx.progress({"build": build_status(report, spec)})
            # often at first (parallel workers show up early; short builds still get a phase), then calmly
            await asyncio.sleep(0.05 if time.monotonic() - started < 3 else PROGRESS_POLL_SECONDS)


async def _drop_if_invalid(ctx: ReconcileContext, spec: VectorIndexSpec, name: str) -> None:
    """Remove the INVALID leftover a failed CREATE INDEX CONCURRENTLY leaves behind."""
    t = spec.table
    invalid = await ctx.conn.fetchval(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2", t.schema_, name)
    if invalid:
        step = Step("drop_index", name, (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(t.schema_, name)}",),
                    transactional=False, description="INVALID leftover of the failed build")
        await run_plan(ctx.conn, Plan([step]), resource=ctx.resource, timeouts=spec.timeouts)


async def run_build(ctx: ReconcileContext, spec: VectorIndexSpec, step: Step, settings: BuildSettings) -> BuildReport:
    """CREATE INDEX CONCURRENTLY on a connection of its own, with the session settings from the
    budget. Listens for the spill NOTICE, polls progress, and retries with fewer workers when a
    parallel build cannot get its dynamic shared memory."""
    report = BuildReport(step.target, settings)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def on_notice(_conn: Any, msg: Any) -> None:
        text = str(getattr(msg, "message", msg))
        report.notices.append(text)
        m = SPILL_NOTICE.search(text)
        if m and report.spilled_after is None:
            report.spilled_after = int(m.group(1))
            ev = Event("Warning", "BuildSpilled",
                       f"building {step.target}: the HNSW graph no longer fits in maintenance_work_mem "
                       f"({fmt_bytes(report.settings.maintenance_work_mem)}) after {m.group(1)} tuples; the build "
                       f"continues on disk, much slower. Estimate was {fmt_bytes(report.settings.estimate)}; raise "
                       f"build.memoryBudget to build in memory")
            task = loop.create_task(ctx.event(ev))
            pending.add(task)
            task.add_done_callback(pending.discard)

    # Lock conflicts are handled here (a retried CREATE INDEX CONCURRENTLY must first drop the
    # INVALID index the failed attempt left), not by the executor's retry loop.
    timeouts = spec.timeouts.model_copy(update={"lock_retries": 0})
    t0 = time.perf_counter()
    async with ctx.connection() as bconn:
        pid = await bconn.fetchval("SELECT pg_backend_pid()")
        bconn.add_log_listener(on_notice)
        try:
            while True:
                s = report.settings
                create_sql = step.statements[-1]
                attempt_step = replace(step, statements=(*s.statements(), create_sql))
                poller = asyncio.create_task(_poll_progress(ctx, pid, report, spec))
                a0 = time.perf_counter()
                try:
                    run = await run_plan(bconn, Plan([attempt_step]), resource=ctx.resource, timeouts=timeouts)
                finally:
                    poller.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await poller
                sr = run.steps[0]
                report.step_result = sr
                report.attempts.append({"workers": s.workers, "maintenanceWorkMem": fmt_bytes(s.maintenance_work_mem),
                                        "outcome": sr.outcome, "seconds": round(time.perf_counter() - a0, 2),
                                        **({"error": sr.error} if sr.error else {})})
                if sr.outcome == "ok":
                    report.outcome = "ok"
                    report.phase, report.percent = "done", 100.0
                    break
                await _drop_if_invalid(ctx, spec, step.target)
                if sr.outcome == "error" and s.workers > 0 and is_dsm_failure(sr.sqlstate, sr.error):
                    report.dsm_failures += 1
                    fewer = fewer_workers(s.workers)
                    await ctx.event(Event("Warning", "SharedMemoryTooSmall",
                                          f"parallel build of {step.target} with {s.workers} workers failed: "
                                          f"{sr.error}. {DSM_FIX}. Retrying with {fewer} workers"))
                    report.settings = replace(s, workers=fewer)
                    continue
                report.outcome = sr.outcome
                report.error = sr.error
                break
        finally:
            bconn.remove_log_listener(on_notice)
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await bconn.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    report.finished = datetime.now(UTC)
    report.seconds = time.perf_counter() - t0
    return report


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
        obs = await observe_vector_table(ctx.conn, t.schema_, t.name, spec.column,
                                         [names.target, names.temp, names.old], spec.where)
        if obs.extension_version is None and not (spec.dry_run or spec.suspend):
            if obs.extension_available is not None:
                await _ensure_extension(ctx, spec)
            obs = await observe_vector_table(ctx.conn, t.schema_, t.name, spec.column,
                                             [names.target, names.temp, names.old], spec.where)
        vplan = plan_vector_index(spec, obs)
        status: dict[str, Any] = {
            "table": t.qualified,
            "definition": spec_summary(spec),
            "pgvector": obs.extension_version,
            "estimatedRows": obs.estimated_rows,
            "index": _index_status(spec, obs.indexes.get(names.target)),
            "plan": vplan.plan.statements() if (spec.dry_run or spec.suspend) else [],
            "notes": vplan.plan.notes[:20],
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
            status["lastRun"] = {"at": datetime.now(UTC).isoformat(), "action": vplan.action,
                                 "reasons": vplan.reasons, "steps": [s.kind + " " + s.target for s in vplan.plan.steps]}
        if failed is not None:
            return _finish(Outcome.degraded(failed[0], failed[1], status), status)
        if report is not None and report.outcome == "lock_timeout":
            return _finish(Outcome.progressing("WaitingForLock", f"building {report.index}: {report.error}; retrying",
                                               status, requeue_after=LOCK_RETRY_SECONDS), status)
        if report is not None and report.outcome != "ok":
            return _finish(Outcome.degraded("BuildFailed", f"building {report.index} failed: {report.error}", status),
                           status)

        # The index as it is now.
        obs = await observe_vector_table(ctx.conn, t.schema_, t.name, spec.column, [names.target], spec.where)
        idx = obs.indexes.get(names.target)
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
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2", t.schema_, names.target)
    if not (comment or "").startswith(COMMENT_PREFIX):
        return
    steps = [Step("drop_index", n, (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(t.schema_, n)}",),
                  transactional=False) for n in (names.target, names.temp, names.old)]
    async with TableLock(ctx.conn, t.schema_, t.name):
        await run_plan(ctx.conn, Plan(steps), resource=ctx.resource, timeouts=spec.timeouts)
