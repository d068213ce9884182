"""Reconcile one PartitionPolicy against its database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..catalog.partitions import observe_table
from ..db.executor import RunResult, StepResult, TableLock, run_plan
from ..models.partition import PartitionPolicySpec
from ..planner.partition import RangeLayout, plan_range
from ..planner.ranges import Bound
from .outcome import Event, Outcome

MAX_LISTED_PARTITIONS = 100
LOCK_RETRY_SECONDS = 15.0


def _fmt(value: Bound, tz: ZoneInfo) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return value.astimezone(tz).isoformat()


def layout_status(spec: PartitionPolicySpec, layout: RangeLayout, default_rows: int | None,
                  now: datetime) -> dict[str, Any]:
    tz = ZoneInfo(spec.range.time_zone)
    parts = layout.partitions
    listed = parts[-MAX_LISTED_PARTITIONS:]
    ahead = 0
    for p in parts:
        lower = p.lower
        if isinstance(lower, datetime) and lower > now:
            ahead += 1
    status: dict[str, Any] = {
        "partitionCount": len(parts),
        "partitions": [
            {
                "name": p.info.name,
                "from": _fmt(p.lower, tz),
                "to": _fmt(p.upper, tz),
                "estimatedRows": p.info.estimated_rows,
                "sizeBytes": p.info.size_bytes,
            }
            for p in listed
        ],
        "coveredUntil": _fmt(layout.covered_until, tz),
        "oldestBound": _fmt(parts[0].lower, tz) if parts else None,
        "defaultRows": default_rows,
    }
    if spec.range.interval is not None:
        status["partitionsAhead"] = ahead
    if len(parts) > len(listed):
        status["partitionsTruncated"] = len(parts) - len(listed)
    if layout.unparsed:
        status["unmanagedPartitions"] = [p.name for p in layout.unparsed]
    return status


def _step_event(sr: StepResult) -> Event:
    stmts = "; ".join(s.statement for s in sr.statements) or "; ".join(sr.step.statements)
    if sr.outcome == "ok":
        return Event("Normal", "DDLApplied", f"{sr.step.kind} {sr.step.target} in {sr.duration_ms:.0f} ms: {stmts}")
    if sr.outcome == "lock_timeout":
        return Event("Warning", "WaitingForLock", f"{sr.step.kind} {sr.step.target}: {sr.error}")
    return Event("Warning", "DDLFailed", f"{sr.step.kind} {sr.step.target} failed: {sr.error}; statements: {stmts}")


def _run_summary(run: RunResult, started: datetime) -> dict[str, Any]:
    return {
        "startedAt": started.isoformat(),
        "finishedAt": datetime.now(UTC).isoformat(),
        "applied": len(run.applied),
        "failed": len(run.failed),
        "waitingForLock": len(run.lock_waits),
        "changes": [
            {"step": s.step.kind, "target": s.step.target, "outcome": s.outcome, "ms": round(s.duration_ms, 1),
             **({"error": s.error} if s.error else {})}
            for s in run.steps
        ][:50],
    }


async def reconcile_partition_policy(
    conn: Any,
    spec: PartitionPolicySpec,
    *,
    resource: str,
    now: datetime | None = None,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
) -> Outcome:
    """Observe, plan, run (unless dryRun/suspend), observe again, and describe the result."""
    now = now or datetime.now(UTC)
    t = spec.table
    async with TableLock(conn, t.schema_, t.name):
        obs = await observe_table(conn, t.schema_, t.name, spec.range.column)
        plan, layout = plan_range(spec, obs, now)
        status = layout_status(spec, layout, obs.default_rows, now)
        status["plan"] = plan.statements() if (spec.dry_run or spec.suspend) else []
        if plan.notes:
            status["notes"] = plan.notes[:20]
        if spec.dry_run or spec.suspend:
            mode = "dryRun" if spec.dry_run else "suspended"
            if plan.empty:
                return Outcome.ready("UpToDate", f"{mode}: nothing to change", status)
            reason = "DryRun" if spec.dry_run else "Suspended"
            return Outcome.progressing(
                reason, f"{mode}: {len(plan.statements())} statements planned and not run (see status.plan)", status
            )
        if plan.empty:
            return Outcome.ready("UpToDate", _ready_message(status), status)

        async def step_done(sr: StepResult) -> None:
            if on_event is not None:
                await on_event(_step_event(sr))

        started = datetime.now(UTC)
        run = await run_plan(conn, plan, resource=resource, timeouts=spec.timeouts, on_step=step_done)
        obs = await observe_table(conn, t.schema_, t.name, spec.range.column)
        _, layout = plan_range(spec, obs, now)
        status = layout_status(spec, layout, obs.default_rows, now)
        status["plan"] = []
        status["lastRun"] = _run_summary(run, started)
        if plan.notes:
            status["notes"] = plan.notes[:20]
    if run.failed:
        first = run.failed[0]
        msg = f"{len(run.failed)} of {len(run.steps)} steps failed; first: {first.step.kind} {first.step.target}: {first.error}"
        return Outcome.degraded("StepFailed", msg, status)
    if run.lock_waits:
        w = run.lock_waits[0]
        return Outcome.progressing(
            "WaitingForLock",
            f"{len(run.lock_waits)} steps could not get their lock within lockTimeout (e.g. {w.step.kind} "
            f"{w.step.target}); another session holds a conflicting lock; retrying",
            status,
            requeue_after=LOCK_RETRY_SECONDS,
        )
    return Outcome.ready("Applied", f"applied {len(run.applied)} steps; " + _ready_message(status), status)


def _ready_message(status: dict[str, Any]) -> str:
    msg = f"{status['partitionCount']} partitions"
    if status.get("coveredUntil"):
        msg += f", covered until {status['coveredUntil']}"
    if status.get("defaultRows"):
        msg += f"; {status['defaultRows']} rows in the default partition"
    return msg


_CREATED_SQL = """
SELECT DISTINCT target FROM pgcurator.history
 WHERE resource = $1 AND step IN ('create_partition', 'create_default') AND outcome = 'ok'
"""


async def cleanup_partition_policy(conn: Any, spec: PartitionPolicySpec, resource: str) -> None:
    """deletionPolicy: Delete. Removes the partitions this policy created, but only those
    that are empty: deleting a policy never deletes rows."""
    from ..db.executor import run_plan
    from ..sql.quote import qualified
    from ..sql.statements import Plan, Step

    t = spec.table
    created = {r[0] for r in await conn.fetch(_CREATED_SQL, resource)}
    obs = await observe_table(conn, t.schema_, t.name, spec.range.column)
    plan = Plan()
    concurrently = obs.default_partition is None
    for p in obs.partitions:
        if p.name not in created:
            continue
        child = qualified(p.schema, p.name)
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {child})"):
            continue
        detach = f"ALTER TABLE {qualified(t.schema_, t.name)} DETACH PARTITION {child}"
        if concurrently and not p.is_default:
            plan.steps.append(Step("detach_partition", p.name, (detach + " CONCURRENTLY",), transactional=False,
                                   group=p.name))
            plan.steps.append(Step("drop_partition", p.name, (f"DROP TABLE IF EXISTS {child}",), group=p.name))
        else:
            plan.steps.append(Step("drop_partition", p.name, (detach, f"DROP TABLE IF EXISTS {child}"), group=p.name))
    async with TableLock(conn, t.schema_, t.name):
        await run_plan(conn, plan, resource=resource, timeouts=spec.timeouts)
