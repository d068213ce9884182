"""Running an IndexPolicy plan: the short steps on the main connection, the builds in parallel
lanes on their own connections.

A run never outlives itself: the lanes run in one TaskGroup, so a lane that fails with an
unexpected exception cancels the others, and the run returns (and the table's advisory lock is
released) only once every lane's server-side statement has stopped and its half-built INVALID
index is dropped or, failing that, recorded in the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from ..catalog.indexes import build_progress
from ..db.executor import RunResult, StepResult, lock_retry_delay, record_history, run_plan
from ..errors import CuratorError
from ..models.common import Timeouts, parse_duration
from ..models.index import IndexPolicySpec
from ..planner.index import BuildJob, IndexPlan
from ..sql.quote import qualified
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from .context import ReconcileContext

log = logging.getLogger("pgcurator")
PROGRESS_POLL_SECONDS = 1.0
# How long a cancelled lane waits for its backend to acknowledge the cancel before terminating it,
# and then for the terminated backend to be gone.
ANSWER_WAIT_SECONDS = 15.0
GONE_WAIT_SECONDS = 60.0
BUILD_KINDS = ("create_index", "create_replacement")
# A stopping run drops its half-built index only if that is quick; otherwise the next run does.
ABANDON_LOCK_SECONDS = 2.0

T = TypeVar("T")
StepDone = Callable[[StepResult], Awaitable[None]]


@dataclass
class BuildRun(RunResult):
    """Outcome of one plan: the step results of each phase (failed/lock_waits/applied come from
    RunResult) and one row per build job."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed_indexes: set[str] = field(default_factory=set)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


async def execute(ctx: ReconcileContext, spec: IndexPolicySpec, plan: IndexPlan, step_done: StepDone) -> BuildRun:
    """before (main connection) -> jobs (parallel, own connections) -> after (main connection)."""
    result = BuildRun()
    run = await run_plan(ctx.conn, plan.before, resource=ctx.resource, timeouts=spec.timeouts, on_step=step_done)
    result.steps.extend(run.steps)
    for s in run.steps:
        # A parent index that could not be created: its partition builds cannot be attached.
        if s.outcome != "ok" and s.step.kind == "create_parent_index":
            result.failed_indexes.add(s.step.group)  # the declared name (target may be _pgc_new)
    await _run_jobs(ctx, spec, [j for j in plan.jobs if j.index not in result.failed_indexes], result, step_done)
    after = Plan([s for s in plan.after.steps if not (s.group and s.group in result.failed_indexes)])
    run = await run_plan(ctx.conn, after, resource=ctx.resource, timeouts=spec.timeouts, on_step=step_done)
    result.steps.extend(run.steps)
    return result


async def _run_jobs(ctx: ReconcileContext, spec: IndexPolicySpec, jobs: list[BuildJob], result: BuildRun,
                    step_done: StepDone) -> None:
    if not jobs:
        return
    lanes: dict[str, list[BuildJob]] = defaultdict(list)
    for job in jobs:
        lanes[job.lane].append(job)
    slots = asyncio.Semaphore(spec.parallelism)
    running: dict[int, BuildJob] = {}  # backend pid -> job
    counter = {"done": 0}

    async def lane(queue: list[BuildJob]) -> None:
        for job in queue:
            async with slots:
                await _one(ctx, spec, job, result, running, step_done)
                counter["done"] += 1

    poller = asyncio.create_task(_poll(ctx, running, counter, len(jobs)))
    try:
        async with asyncio.TaskGroup() as group:
            for queue in lanes.values():
                group.create_task(lane(queue))
    except BaseExceptionGroup as eg:
        # The lanes have all stopped; the first real failure is the run's.
        first = next((e for e in eg.exceptions if not isinstance(e, asyncio.CancelledError)), eg.exceptions[0])
        raise first from None
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller


async def _one(ctx: ReconcileContext, spec: IndexPolicySpec, job: BuildJob, result: BuildRun,
               running: dict[int, BuildJob], step_done: StepDone) -> None:
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    row: dict[str, Any] = {"partition": job.partition, "index": job.index, "table": job.table}
    finished: list[StepResult] = []

    async def on_step(sr: StepResult) -> None:
        finished.append(sr)
        await step_done(sr)

    try:
        async with ctx.connection() as conn:
            pid = conn.get_server_pid()
            running[pid] = job
            try:
                steps = await _run_job(ctx, conn, spec, job, on_step)
                bad = [s for s in steps if s.outcome != "ok"]
            except asyncio.CancelledError:
                # Another lane failed (or the run is being stopped): this lane's statement must be
                # gone from the server before the connection goes back and the table lock is freed.
                try:
                    await _to_completion(_abandon(ctx, spec, conn, pid, job, len(finished), started))
                except Exception as exc:  # the lane is stopping either way
                    log.warning("stopping the build of %s on %s: %s", job.index, job.table, exc)
                raise
            finally:
                running.pop(pid, None)
        result.steps.extend(steps)
        row["success"] = not bad
        if bad:
            row["error"] = bad[0].error or bad[0].outcome
        built = next((s for s in steps if s.step.kind in BUILD_KINDS), None)
        if bad:
            # A lock not had within lockTimeout is a wait (retried next run), not a failure.
            row["state"] = "waitingForLock" if bad[0].outcome == "lock_timeout" else "failed"
        else:
            row["state"] = "built" if built else "attached"
    except CuratorError as exc:
        row.update(success=False, error=exc.message, state="failed")
    row["ms"] = round((time.perf_counter() - t0) * 1000, 1)
    row["rows"] = job.estimated_rows
    if not row["success"]:
        result.failed_indexes.add(job.index)
    result.rows.append(row)


async def _run_job(ctx: ReconcileContext, conn: Any, spec: IndexPolicySpec, job: BuildJob,
                   on_step: StepDone) -> list[StepResult]:
    """The job's steps in order; the first that does not succeed skips the rest (they are one change)."""
    out: list[StepResult] = []
    for i, step in enumerate(job.steps):
        if step.kind in BUILD_KINDS:
            sr = await _build(ctx, conn, spec, job, step)
            await on_step(sr)
        else:
            run = await run_plan(conn, Plan([step]), resource=ctx.resource, timeouts=spec.timeouts, on_step=on_step)
            sr = run.steps[0]
        out.append(sr)
        if sr.outcome != "ok":
            out.extend(StepResult(s, "skipped", 0.0, error="an earlier step of this change failed")
                       for s in job.steps[i + 1:])
            break
    return out


async def _build(ctx: ReconcileContext, conn: Any, spec: IndexPolicySpec, job: BuildJob, step: Step) -> StepResult:
    """One CREATE INDEX CONCURRENTLY, with the lock retries done here rather than by the executor: a
    concurrent build that gives up waiting for the application's transactions has already registered
    its index (INVALID), so a plain retry fails with 42P07. Each retry first drops that leftover,
    under the resource's lockTimeout; if even the drop cannot get its lock, the run waits for the next."""
    once = spec.timeouts.model_copy(update={"lock_retries": 0})
    attempt = 0
    while True:
        attempt += 1
        sr = (await run_plan(conn, Plan([step]), resource=ctx.resource, timeouts=once)).steps[0]
        if sr.outcome == "ok":
            break
        gone = await _drop_failed_build(conn, job.schema, step.target, ctx.resource, once)
        if sr.outcome != "lock_timeout" or not gone or attempt > spec.timeouts.lock_retries:
            break
        await asyncio.sleep(lock_retry_delay(attempt))
    sr.attempts = attempt
    return sr


async def _to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """Run a bounded clean-up to its end even if the task is cancelled meanwhile; a cancellation
    that came in is raised once it is done."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # the clean-up has its own deadlines
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


async def _abandon(ctx: ReconcileContext, spec: IndexPolicySpec, conn: Any, pid: int, job: BuildJob,
                   steps_done: int, started: datetime) -> None:
    """Stop the lane's backend, record the interrupted step, drop the half-built index."""
    alive = await _wait_stopped(ctx, conn, pid)
    if not alive or steps_done >= len(job.steps):
        return
    step = job.steps[steps_done]
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await record_history(conn, ctx.resource, step.kind, step.target, "; ".join(step.statements), started,
                             (datetime.now(UTC) - started).total_seconds() * 1000, outcome="cancelled",
                             error="cancelled: another build lane of this run failed or the run was stopped")
    if step.kind in BUILD_KINDS:
        # Never longer than the resource's own lockTimeout.
        seconds = min(ABANDON_LOCK_SECONDS, parse_duration(spec.timeouts.lock_timeout))
        quick = Timeouts.model_validate({"lockTimeout": f"{int(seconds * 1000)}ms", "statementTimeout": "1m",
                                         "lockRetries": 0})
        await _drop_failed_build(conn, job.schema, step.target, ctx.resource, quick)


async def _wait_stopped(ctx: ReconcileContext, conn: Any, pid: int) -> bool:
    """Wait until the backend has acknowledged the cancel (True: the connection is usable);
    otherwise terminate it from another session and wait for it to leave pg_stat_activity."""
    try:
        async with asyncio.timeout(ANSWER_WAIT_SECONDS):
            # asyncpg sent a cancel request when the task was cancelled; this query runs only once the
            # server answered the cancelled statement, so the backend is idle when it returns.
            await conn.fetchval("SELECT 1")
        return True
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass
    conn.terminate()  # closing the socket alone does not stop a CREATE INDEX on the server
    async with ctx.connection() as other:
        deadline = time.monotonic() + GONE_WAIT_SECONDS
        while await other.fetchval("SELECT pg_catalog.pg_terminate_backend($1)", pid):
            if time.monotonic() > deadline:
                log.error("backend %s of a stopped index build is still running after %.0f s", pid,
                          GONE_WAIT_SECONDS)
                break
            await asyncio.sleep(0.05)
    return False


async def _drop_failed_build(conn: Any, schema: str, name: str, resource: str, timeouts: Timeouts) -> bool:
    """A failed or cancelled CREATE INDEX CONCURRENTLY leaves an INVALID index that every write still
    maintains: drop it now rather than on the next run (which would also find it). Only an INVALID
    index of that name is dropped. True when no leftover remains."""
    invalid = await conn.fetchval(_INVALID_SQL, schema, name)
    if not invalid:
        return True  # none was left (the build never got its lock), or it is valid and not ours to drop
    drop = Step("drop_failed_build", name, (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(schema, name)}",),
                transactional=False, description="INVALID leftover of the failed build")
    try:
        run = await run_plan(conn, Plan([drop]), resource=resource, timeouts=timeouts)
    except CuratorError:
        return False
    return not run.failed and not run.lock_waits


_INVALID_SQL = """
SELECT NOT i.indisvalid FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relname = $2
"""


async def _poll(ctx: ReconcileContext, running: dict[int, BuildJob], counter: dict[str, int], total: int) -> None:
    while True:
        await asyncio.sleep(PROGRESS_POLL_SECONDS)
        try:
            builds = await build_progress(ctx.conn, list(running))
        except Exception:  # progress is best effort; the builds go on
            builds = []
        await ctx.progress({"progress": {
            "builds": builds, "jobsDone": counter["done"], "jobsTotal": total,
            "updatedAt": k8s_time(),
        }})
