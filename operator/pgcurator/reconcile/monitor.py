"""Reconcile one DatabaseMonitor: keep the event trigger where the role may, process schema
changes (waking the resources that manage what changed), take statistics when due, and report.

What the role may not do (create an event trigger, read others' statements) marks that feature
unavailable on the status with the fix; it is not an error, so the resource stays Ready."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import metrics
from ..catalog.monitor_stats import Abilities, read_abilities
from ..db import monitor_store as store
from ..db.executor import run_plan
from ..db.metadata import ensure_metadata
from ..models.monitor import DatabaseMonitorSpec
from ..planner.monitor import change_entry, change_events
from ..planner.monitor_stats import Missing, missing_privileges, trigger_state
from ..planner.monitor_trigger import TRIGGER_VERSION, install_plan, uninstall_plan
from ..timefmt import k8s_time_or_none
from .context import ReconcileContext
from .monitor_changes import observed_schemas, process_changes
from .monitor_collect import collect
from .monitor_listen import keep_listening, listening, stop_listening
from .outcome import Condition, Event, Outcome

KIND = "DatabaseMonitor"


async def reconcile_database_monitor(ctx: ReconcileContext, spec: DatabaseMonitorSpec) -> Outcome:
    conn = ctx.conn
    await ensure_metadata(conn)
    write = not (spec.dry_run or spec.suspend)
    now: datetime = await conn.fetchval("SELECT now() /*pgcurator*/")
    abilities = await read_abilities(conn)
    plan: list[str] = []
    trigger = await _keep_trigger(ctx, spec, abilities, write, plan)

    state = await store.load_state(conn, ctx.resource)
    if state["fingerprint_at"] is None and state["last_change_id"] == 0 and write:
        state["last_change_id"] = await store.start_after_now(conn)  # a new monitor: earlier changes are history
        await store.save_state(conn, ctx.resource, last_change_id=state["last_change_id"])

    status: dict[str, Any] = {"plan": plan}
    if spec.changes.enabled:
        run = await process_changes(ctx, spec, state, now, abilities.role, write)
        for reason, message in change_events(run.messages, spec.changes.events_per_run):
            await ctx.event(Event("Normal", reason, message))
        never, only = observed_schemas(spec)
        counts = await store.change_counts(conn, never, only)
        recent = [change_entry(c) for c in await store.recent_changes(conn, spec.changes.status_changes, never, only)]
        status["schemaVersion"] = run.version
        status["changes"] = {
            "total": sum(counts.values()), "eventTrigger": counts.get("event_trigger", 0) + counts.get("both", 0),
            "fingerprintOnly": counts.get("fingerprint", 0), "confirmedByBoth": counts.get("both", 0),
            "lastAt": recent[0]["at"] if recent else None, "last": recent,
        }
        listen = _listen(ctx, spec, trigger[0] == "Active")
        status["changeDetection"] = {
            "eventTrigger": {"state": trigger[0], "message": trigger[1]},
            "fingerprint": {"state": "Active", "lastAt": k8s_time_or_none(run.fingerprint_at), "objects": run.objects,
                            "interval": spec.changes.fingerprint_interval},
            "listening": listen,
        }
        metrics.observe_monitor_changes(ctx.namespace, ctx.name, run.version, counts, {
            "event_trigger": trigger[0] == "Active", "fingerprint": True, "listen": listen,
            "slow_statements": abilities.pgss_schema is not None})
    fragment, hidden = await collect(ctx, spec, state, now, abilities, write)
    status.update(fragment)
    missing = missing_privileges(abilities, spec.changes.enabled and spec.changes.event_trigger,
                                 spec.slow_statements.enabled, hidden)
    status["privileges"] = [{"feature": m.feature, "reason": m.reason, "message": m.message, "fix": m.fix}
                            for m in missing]
    if "columns" not in (fragment.get("statistics") or {}):
        # column statistics were not due this run: what the last one found still holds
        previous = (ctx.body.get("status") or {}).get("privileges") or []
        status["privileges"] += [p for p in previous if p.get("feature") == "columnStatistics"]
    return _outcome(spec, status, trigger, missing)


async def _keep_trigger(ctx: ReconcileContext, spec: DatabaseMonitorSpec, abilities: Abilities, write: bool,
                        plan: list[str]) -> tuple[str, str]:
    """(state, message). Installs or upgrades the trigger when the role may; never fails the run."""
    if not (spec.changes.enabled and spec.changes.event_trigger):
        return "Off", "event trigger not asked for (spec.changes.eventTrigger: false)"
    state, message = trigger_state(abilities, TRIGGER_VERSION)
    if state in ("Active", "Disabled"):
        return state, message  # a disabled trigger was disabled by someone: reported, not overridden
    if not abilities.superuser:
        if state == "Outdated":  # still records; a superuser upgrades it
            return state, f"{message}; a superuser re-runs the event trigger SQL (docs/databasemonitor.md)"
        return "Unavailable", f"{message}; role {abilities.role} may not create event triggers (superuser only)"
    install = install_plan()
    if not write:
        plan.extend(install.statements())
        return state, message + "; would install it (see status.plan)"
    result = await run_plan(ctx.conn, install, resource=ctx.resource, timeouts=spec.timeouts)
    if result.failed or result.lock_waits:
        bad = (result.failed or result.lock_waits)[0]
        return "Unavailable", f"installing the event trigger failed: {bad.error}"
    await ctx.event(Event("Normal", "EventTriggerInstalled", "schema changes are now recorded with who and when"))
    return trigger_state(await read_abilities(ctx.conn), TRIGGER_VERSION)


def _listen(ctx: ReconcileContext, spec: DatabaseMonitorSpec, active: bool) -> bool:
    """LISTEN only inside the operator (ctx.wake) and when a trigger sends NOTIFYs."""
    if ctx.wake is None or not active or spec.suspend:
        stop_listening(ctx.resource)
        return False
    wake = ctx.wake
    namespace, name = ctx.namespace, ctx.name
    stale_after = 3 * spec.schedule_seconds() + 60
    connected = keep_listening(ctx.resource, ctx.params, lambda: wake(KIND, namespace, name), stale_after)
    return connected or listening(ctx.resource)


def _outcome(spec: DatabaseMonitorSpec, status: dict[str, Any], trigger: tuple[str, str],
             missing: list[Missing]) -> Outcome:
    parts = []
    if status.get("schemaVersion"):
        parts.append(f"schema version {status['schemaVersion']}")
    if "changes" in status:
        parts.append(f"{status['changes']['total']} changes recorded")
    parts.append(f"event trigger {trigger[0].lower()}")
    if missing:
        parts.append(f"{len(missing)} features limited by privileges (see status.privileges)")
    summary = "; ".join(parts)
    if spec.dry_run or spec.suspend:
        reason = "DryRun" if spec.dry_run else "Suspended"
        outcome = Outcome.progressing(reason, f"{reason}: observing without writing; {summary}", status)
    else:
        outcome = Outcome.ready("Observing", summary, status)
    fix = next((m.fix for m in missing if m.feature == "eventTrigger"), "")
    outcome.conditions.append(Condition(
        "EventTrigger", trigger[0] == "Active",
        "Active" if trigger[0] == "Active" else
        ("EventTriggerNeedsSuperuser" if fix else trigger[0]),
        trigger[1] + (f". Fix: {fix}" if fix else "")))
    return outcome


async def cleanup_database_monitor(ctx: ReconcileContext, spec: DatabaseMonitorSpec) -> None:
    """deletionPolicy: Delete: the event trigger (when this role may drop it) and this monitor's
    snapshots go; pgcurator.schema_changes stays (it is the database's history)."""
    stop_listening(ctx.resource)
    conn = ctx.conn
    if not await conn.fetchval("SELECT to_regclass('pgcurator.monitor_state') IS NOT NULL"):
        return
    abilities = await read_abilities(conn)
    others = await conn.fetchval("SELECT count(*) FROM pgcurator.monitor_state WHERE resource <> $1", ctx.resource)
    if abilities.superuser and abilities.triggers and not others:
        await run_plan(conn, uninstall_plan(), resource=ctx.resource, timeouts=spec.timeouts)
    await store.forget(conn, ctx.resource)
