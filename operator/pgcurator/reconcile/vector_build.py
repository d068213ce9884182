"""Building one VectorIndex: CREATE INDEX CONCURRENTLY on its own connection with the session
settings the memory budget gives, the spill NOTICE listened for, progress polled, and a retry
with fewer workers when a parallel build cannot get its dynamic shared memory."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..db.executor import StepResult, run_plan
from ..limits import SHOWN_ITEMS
from ..models.vector import VectorIndexSpec
from ..planner.vector_memory import (
    BuildSettings,
    fewer_workers,
    fmt_bytes,
    hnsw_element_bytes,
    is_dsm_failure,
)
from ..sql.quote import qualified
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from .context import ReconcileContext
from .outcome import Event

SPILL_NOTICE = re.compile(r"hnsw graph no longer fits into maintenance_work_mem after (\d+) tuples")
PROGRESS_POLL_SECONDS = 1.0
DSM_FIX = ("the server's dynamic shared memory is too small for a parallel build of this size: give PostgreSQL "
           "a larger /dev/shm (e.g. an emptyDir volume with medium: Memory, or CloudNativePG's "
           "spec.ephemeralVolumesSizeLimit.shm), or lower build.maxParallelWorkers")

_PROGRESS_SQL = """
SELECT p.phase, p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done, p.lockers_total, p.lockers_done,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.leader_pid = p.pid) AS workers
  FROM pg_catalog.pg_stat_progress_create_index p WHERE p.pid = $1
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
        "startedAt": k8s_time(report.started),
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
        out["finishedAt"] = k8s_time(report.finished)
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
        out["notices"] = report.notices[:SHOWN_ITEMS]
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
        "SELECT NOT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2", t.schema_, name)
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
