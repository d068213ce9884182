"""Reconcile one PartitionPolicy against its database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..catalog.partitions import (
    TableObservation,
    count_default_rows_in,
    count_default_rows_where,
    observe_table,
    reread_partitions,
)
from ..db.executor import RunResult, StepResult, TableLock, run_plan
from ..db.metadata import ensure_metadata
from ..db.ownership import Alive
from ..errors import PlanError
from ..limits import SHOWN_ITEMS, STATUS_LIST, STATUS_NOTES
from ..models.partition import PartitionPolicySpec
from ..planner.partition import RangeLayout, plan_policy, range_layout
from ..planner.partition_ddl import list_predicate
from ..planner.partition_range import ranges_to_create
from ..planner.ranges import Bound, render_range
from ..sql.quote import fit_identifier
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from .outcome import Event, Outcome, step_event
from .partition_claim import claim_table, conflict_outcome
from .partition_cleanup import cleanup_partition_policy
from .partition_stats import record_and_summarise

__all__ = ["cleanup_partition_policy", "layout_status", "observe_policy", "reconcile_partition_policy"]

MAX_LISTED_PARTITIONS = 100
LOCK_RETRY_SECONDS = 15.0

Progress = Callable[[dict[str, Any]], Awaitable[None]]


def _fmt(value: Bound, tz: ZoneInfo) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return value.astimezone(tz).isoformat()


def _leaf_count(obs: TableObservation) -> int:
    return sum(len(p.children) or 1 for p in obs.partitions)


def layout_status(spec: PartitionPolicySpec, obs: TableObservation, layout: RangeLayout | None,
                  now: datetime) -> dict[str, Any]:
    status: dict[str, Any] = {"defaultRows": obs.default_rows, "partitionCount": _leaf_count(obs)}
    if obs.default_rows:
        status["defaultRowsRange"] = {"min": str(obs.default_min), "max": str(obs.default_max)}
    if layout is None:  # list / hash
        listed = [p for p in obs.partitions if not p.is_default][:MAX_LISTED_PARTITIONS]
        status["partitions"] = [
            {"name": p.name, "bound": p.bound_expr, "estimatedRows": p.estimated_rows + sum(
                c.estimated_rows for c in p.children), "sizeBytes": p.size_bytes + sum(c.size_bytes for c in p.children),
             **({"subpartitions": [c.name for c in p.children]} if p.children else {})}
            for p in listed
        ]
        return status
    tz = ZoneInfo(spec.range.time_zone if spec.range else "UTC")
    parts = layout.partitions
    listed_r = parts[-MAX_LISTED_PARTITIONS:]
    status.update({
        "partitions": [
            {"name": p.info.name, "from": _fmt(p.lower, tz), "to": _fmt(p.upper, tz),
             "estimatedRows": p.info.estimated_rows + sum(c.estimated_rows for c in p.info.children),
             "sizeBytes": p.info.size_bytes + sum(c.size_bytes for c in p.info.children),
             **({"subpartitions": len(p.info.children)} if p.info.children else {})}
            for p in listed_r
        ],
        "coveredUntil": _fmt(layout.covered_until, tz),
        "oldestBound": _fmt(parts[0].lower, tz) if parts else None,
        "newestBound": _fmt(parts[-1].upper, tz) if parts else None,
    })
    if spec.range is not None and spec.range.interval is not None:
        status["partitionsAhead"] = sum(1 for p in parts if isinstance(p.lower, datetime) and p.lower > now)
    if len(parts) > len(listed_r):
        status["partitionsTruncated"] = len(parts) - len(listed_r)
    if layout.unparsed:
        status["unmanagedPartitions"] = [p.name for p in layout.unparsed]
    if layout.drift:
        status["templateDrift"] = layout.drift[:STATUS_LIST]
    return status


def _run_summary(run: RunResult, started: datetime) -> dict[str, Any]:
    return {
        "startedAt": k8s_time(started),
        "finishedAt": k8s_time(),
        "applied": len(run.applied),
        "failed": len(run.failed),
        "waitingForLock": len(run.lock_waits),
        "changes": [
            {"step": s.step.kind, "target": s.step.target, "outcome": s.outcome, "ms": round(s.duration_ms, 1),
             **({"error": s.error} if s.error else {})}
            for s in run.steps
        ][:STATUS_LIST],
    }


async def observe_policy(conn: Any, spec: PartitionPolicySpec, now: datetime) -> TableObservation:
    """What the planner needs, DEFAULT rows inside the ranges to create included: `pgcurator plan`
    uses it too, so it shows exactly what a reconcile would do."""
    t = spec.table
    obs = await observe_table(conn, t.schema_, t.name, spec.key_column)
    r = spec.range
    if r is not None and obs.default_rows and obs.relkind == "p":
        ctype = obs.column_types.get(r.column, "")
        if ctype:
            tz = ZoneInfo(r.time_zone)
            try:
                # Exactly the ranges the planner will create (bridges included).
                ranges = []
                for new in ranges_to_create(r, t.name, obs, ctype, now):
                    lo, hi, _ = render_range(new.lower, new.upper, ctype, tz)
                    ranges.append((lo, lo, hi))
            except (ValueError, PlanError):
                ranges = []  # e.g. a wrong column type: the planner says so
            obs.default_rows_in = await count_default_rows_in(conn, obs, r.column, ranges)
    elif spec.list is not None and obs.default_rows and obs.relkind == "p":
        # Keyed by the partition's name: a list partition whose values have rows in the DEFAULT is
        # held back or moved, never attached (PostgreSQL refuses the ATTACH).
        preds = [(fit_identifier(t.name, "_" + lp.name), list_predicate(spec.list.column, lp))
                 for lp in spec.list.partitions]
        obs.default_rows_in = await count_default_rows_where(conn, obs, preds)
    return obs


async def reconcile_partition_policy(
    conn: Any,
    spec: PartitionPolicySpec,
    *,
    resource: str,
    now: datetime | None = None,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
    progress: Progress | None = None,
    alive: Alive | None = None,
) -> Outcome:
    """Observe once, plan once, run (unless dryRun/suspend), read back what the run changed, and
    describe the result. `alive` tells whether the holder of a claim on the table still exists
    (None: assume it does)."""
    await ensure_metadata(conn)
    # Before any conversion step or DDL: a table another live PartitionPolicy manages is left alone.
    holder = await claim_table(conn, spec, resource, alive, write=not (spec.dry_run or spec.suspend))
    if holder is not None:
        return conflict_outcome(spec, resource, holder)
    now = now or datetime.now(UTC)
    t = spec.table
    from .partition_convert import convert_locked

    # One lock for the whole run: the conversion's facts are read under it, once, and a
    # conversion that finishes hands over to maintenance without another run slipping in.
    async with TableLock(conn, t.schema_, t.name):
        # Also without convert.enabled: a conversion in flight when it was turned off is cancelled.
        converting = await convert_locked(conn, spec, resource=resource, on_event=on_event, progress=progress, now=now)
        if converting is not None:
            return converting
        obs = await observe_policy(conn, spec, now)
        plan, layout = plan_policy(spec, obs, now)
        status = layout_status(spec, obs, layout, now)
        status["plan"] = plan.statements() if (spec.dry_run or spec.suspend) else []
        if plan.notes:
            status["notes"] = plan.notes[:STATUS_NOTES]
        if spec.dry_run or spec.suspend:
            mode = "dryRun" if spec.dry_run else "suspended"
            if plan.empty:
                return _blocked_or(plan, Outcome.ready("UpToDate", f"{mode}: nothing to change", status), status)
            reason = "DryRun" if spec.dry_run else "Suspended"
            return Outcome.progressing(
                reason, f"{mode}: {len(plan.statements())} statements planned and not run (see status.plan)", status
            )
        run = RunResult()
        started = datetime.now(UTC)
        if not plan.empty:

            async def step_done(sr: StepResult) -> None:
                if on_event is not None:
                    await on_event(step_event(sr))

            moved: dict[str, int] = {}

            async def rows_moved(step: Step, rows: int) -> None:
                moved[step.target] = moved.get(step.target, 0) + rows
                if progress is not None:
                    await progress({"defaultRowsMoved": dict(moved)})

            run = await run_plan(conn, plan, resource=resource, timeouts=spec.timeouts, on_step=step_done,
                                 on_rows=rows_moved)
            if _changed(run):
                # Only what a run changes is read back; the status follows from it without planning again.
                obs = await reread_partitions(conn, obs, spec.key_column)
                status = layout_status(spec, obs, range_layout(spec, obs, now), now)
                status["plan"] = []
                if plan.notes:
                    status["notes"] = plan.notes[:STATUS_NOTES]
            status["lastRun"] = _run_summary(run, started)
            if moved:
                status["defaultRowsMoved"] = moved
        status["statistics"] = await record_and_summarise(conn, spec, obs, resource)
    if run.failed:
        first = run.failed[0]
        msg = (f"{len(run.failed)} of {len(run.steps)} steps failed; first: {first.step.kind} {first.step.target}: "
               f"{first.error}")
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
    if plan.empty:
        return _blocked_or(plan, Outcome.ready("UpToDate", _ready_message(status), status), status)
    return _blocked_or(plan, Outcome.ready("Applied", f"applied {len(run.applied)} steps; " + _ready_message(status),
                                           status), status)


def _changed(run: RunResult) -> bool:
    """Whether anything of the run took effect: a step that succeeded, or what a failed one left
    outside a transaction (a DETACH CONCURRENTLY half done, move batches already committed)."""
    return any(sr.outcome == "ok" or ((not sr.step.transactional or sr.step.repeat_until_zero)
                                      and any(r.outcome == "ok" for r in sr.statements)) for sr in run.steps)


def _blocked_or(plan: Plan, outcome: Outcome, status: dict[str, Any]) -> Outcome:
    """Steps the planner would not attempt make the resource Degraded; everything else still ran."""
    if not plan.blocked:
        return outcome
    status["blocked"] = [b.message for b in plan.blocked[:STATUS_NOTES]]
    # The first held-back step's reason names the condition; its message says which step and why.
    return Outcome.degraded(plan.blocked[0].reason, "; ".join(b.message for b in plan.blocked[:SHOWN_ITEMS]), status)


def _ready_message(status: dict[str, Any]) -> str:
    msg = f"{status['partitionCount']} partitions"
    if status.get("coveredUntil"):
        msg += f", covered until {status['coveredUntil']}"
    if status.get("defaultRows"):
        msg += f"; {status['defaultRows']} rows in the default partition"
    return msg
