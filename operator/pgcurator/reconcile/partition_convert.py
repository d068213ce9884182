"""Online conversion of a plain table into a partitioned one, resumable from any recorded phase.

The phases, the transitions and how objects removed by hand and spec changes between runs are
handled are described in planner/conversion_machine.py; this module runs the transitions it
decides, each in the transaction that also records it, until the conversion needs another slice
(Progressing), waits for a person (Degraded with a typed reason), or has nothing to do (None:
the maintenance path follows).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..catalog import conversion as cat
from ..catalog.partitions import observe_table
from ..db.executor import TableLock, apply_session_limits, record_history
from ..errors import CuratorError, PlanError
from ..limits import SHOWN_ITEMS
from ..models.partition import PartitionPolicySpec
from ..planner import partition_convert as ddl
from ..planner.conversion_machine import AFTER_SWAP, Action, Decision, Phase, decide
from ..sql.quote import qualified
from .outcome import Event, Outcome
from .partition_convert_copy import Emit, Mismatch, OutsideShadow, Progress, Work

SLICE_SECONDS = 20.0
MAX_TRANSITIONS = 12  # per reconcile; each decision is taken again from a fresh observation
MAX_VERIFICATION_RESTARTS = 2

# Called after every committed transition with (action, phase after it): lets a test stop the
# machine in any phase exactly as a crash there would.
OnTransition = Callable[[str, Phase | None], Awaitable[None]] | None


async def convert_if_needed(
    conn: Any, spec: PartitionPolicySpec, *, resource: str, on_event: Emit = None, progress: Progress = None,
    on_transition: OnTransition = None,
) -> Outcome | None:
    """None when the conversion has nothing (more) to do and the normal maintenance path follows;
    otherwise what this slice of conversion did, or why it waits."""
    t = spec.table
    async with TableLock(conn, t.schema_, t.name):
        return await convert_locked(conn, spec, resource=resource, on_event=on_event, progress=progress,
                                    on_transition=on_transition)


async def convert_locked(
    conn: Any, spec: PartitionPolicySpec, *, resource: str, on_event: Emit = None, progress: Progress = None,
    on_transition: OnTransition = None, now: datetime | None = None,
) -> Outcome | None:
    """convert_if_needed for a caller that holds the table's TableLock: the facts the first
    decision is taken on are read once, under that lock. `now`: the run's (the wall clock if None),
    which the shadow's layout is planned for, as the maintenance plan of the same run is."""
    t = spec.table
    facts = await cat.observe_conversion(conn, t.schema_, t.name)
    if decide(facts, spec).action is Action.NONE:
        return None
    await apply_session_limits(conn, spec.timeouts)
    return await _run(conn, spec, resource, on_event, progress, on_transition, facts, now or datetime.now(UTC))


class _Skipped(Exception):
    """A transition after the swap that cannot run now; the maintenance path goes on regardless."""


async def _run(conn: Any, spec: PartitionPolicySpec, resource: str, emit: Emit, progress: Progress,
               hook: OnTransition, first: cat.ConversionFacts, now: datetime) -> Outcome | None:
    t = spec.table

    async def committed(action: str, phase: Phase | None) -> None:
        if hook is not None:
            await hook(action, phase)

    deadline = time.monotonic() + SLICE_SECONDS
    fresh: cat.ConversionFacts | None = first
    for _ in range(MAX_TRANSITIONS):
        # The first decision on the facts the caller read; every later one on what the last transition left.
        facts, fresh = fresh or await cat.observe_conversion(conn, t.schema_, t.name), None
        d = decide(facts, spec)
        try:
            if d.action is Action.NONE:
                return None
            if d.action is Action.PAUSE:
                rec = facts.record
                return Outcome.progressing("DryRun" if spec.dry_run and not spec.suspend else "Suspended", d.why,
                                           {"conversion": {"phase": rec.phase if rec else None}})
            if d.action is Action.BLOCK:
                return Outcome.degraded(d.reason, d.why, {"conversion": {"phase": facts.record.phase
                                                                         if facts.record else None}})
            if d.action in (Action.PREPARE, Action.RESTART):
                assert facts.table_oid is not None
                out = await _prepare(conn, spec, facts, d, resource, emit, now)
                if out is not None:
                    return out
                await committed(d.action.value, Phase.COPYING)
                continue
            if d.action in (Action.COPY, Action.CATCH_UP):
                assert facts.record is not None
                work = Work(conn, spec, facts.record, resource, committed, emit, progress)
                if d.action is Action.COPY:
                    out = await work.copy(deadline)
                    if out is not None:
                        return out
                    continue
                return await work.catch_up(deadline)
            after = await _finish_step(conn, spec, facts, d, resource)
            await committed(d.action.value, after)
        except _Skipped as exc:
            if emit:
                await emit(Event("Warning", "OriginalInUse", str(exc)))
            return None
        except (OutsideShadow, Mismatch) as exc:
            # The original has every row: starting again is always safe; a mismatch that keeps
            # coming back needs a person (something writes without the capture seeing it).
            facts = await cat.observe_conversion(conn, t.schema_, t.name)
            tries = int(facts.record.details.get("verificationRestarts", 0)) if facts.record else 0
            if isinstance(exc, Mismatch):
                if tries >= MAX_VERIFICATION_RESTARTS:
                    return Outcome.degraded(exc.reason, f"{exc.message}; after {tries} fresh copies the copy still "
                                            "differs: something writes with the capture trigger disabled (or as a replica). Stop it, then set "
                                            "convert.enabled to false and back to true to start over",
                                            {"conversion": {"phase": _phase(facts)}})
                why, carry = f"{exc.message}: starting a fresh copy", {"verificationRestarts": tries + 1}
            else:
                why, carry = f"a row written during the conversion fits no partition of the copy ({exc})", {}
            restart = Decision(Action.RESTART, why, drop_shadow=True)
            out = await _prepare(conn, spec, facts, restart, resource, emit, now, carry)
            if out is not None:
                return out
            await committed(Action.RESTART.value, Phase.COPYING)
        except asyncpg.LockNotAvailableError:
            if d.action in AFTER_SWAP:  # the table is partitioned: maintain it, try again next run
                if emit:
                    await emit(Event("Warning", "WaitingForLock", f"{d.action.value}: could not lock "
                                     f"{ddl.original_name(t.name)} within lockTimeout; next run"))
                return None
            return Outcome.progressing("WaitingForLock", f"{d.action.value}: could not lock {t.qualified} within "
                                       "lockTimeout; retrying", {"conversion": {"phase": _phase(facts)}},
                                       requeue_after=5)
    raise CuratorError(f"the conversion of {t.qualified} made {MAX_TRANSITIONS} transitions in one run without "
                       "settling", reason="ConversionUnsettled", transient=True)


def _phase(facts: cat.ConversionFacts) -> str | None:
    return facts.record.phase if facts.record else None


async def _prepare(conn: Any, spec: PartitionPolicySpec, facts: cat.ConversionFacts, d: Decision, resource: str,
                   emit: Emit, now: datetime, carry: dict[str, Any] | None = None) -> Outcome | None:
    """(no record) -> copy, or RESTART: whatever is left of an earlier attempt -> copy, in one
    transaction: the shadow, the change capture and the record. None once committed."""
    t = spec.table
    oid = facts.table_oid
    assert oid is not None and spec.convert is not None
    obs = await observe_table(conn, t.schema_, t.name, spec.key_column)
    plain = await cat.plain_facts(conn, spec, oid)
    problems = ddl.refusals(spec, obs, plain)
    if facts.shadow_exists and not d.drop_shadow:
        problems.append(f"a table named {ddl.shadow_name(t.name)} already exists; rename or drop it")
    if facts.original_exists:
        problems.append(f"a table named {ddl.original_name(t.name)} already exists; rename or drop it")
    if problems:
        raise PlanError("cannot convert: " + "; ".join(problems), reason="ConversionRefused")
    stmts = ddl.shadow_statements(spec, obs, plain, now)
    if spec.dry_run:
        return Outcome.progressing("DryRun", f"dryRun: conversion would start with {len(stmts)} statements "
                                             "(see status.plan)", {"plan": stmts})
    old_oids = sorted({*facts.logs, *facts.functions, *([facts.record.oid] if facts.record and facts.record.oid
                                                         else [])})
    discard = ddl.scaffolding_drops(t.schema_, t.name, old_oids, shadow=d.drop_shadow) \
        if d.action is Action.RESTART else []
    keys = plain.primary_key
    types = {c.name: c.type for c in obs.columns}
    capture = ddl.capture_statements(t.schema_, t.name, oid, keys, types)
    width = await cat.row_width(conn, oid)
    batch = ddl.batch_rows(spec.convert.batch_memory, width)
    total = await cat.row_count(conn, qualified(t.schema_, t.name))
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    async with conn.transaction():
        if d.action is Action.RESTART:
            for s in discard:
                await conn.execute(s)
            await conn.execute("DELETE FROM pgcurator.conversions WHERE table_schema = $1 AND table_name = $2",
                               t.schema_, t.name)
            await record_history(conn, resource, "convert_restart", t.name, f"{d.why}: " + "; ".join(discard),
                                 started, 0.0)
        # The trigger goes in with the shadow, before the first batch: every write from here on is logged.
        for s in [*stmts, *capture]:
            await conn.execute(s)
        await conn.execute(
            "INSERT INTO pgcurator.conversions (table_schema, table_name, phase, log_table, batch_rows, rows_total, "
            "details) VALUES ($1, $2, $3, $4, $5, $6, $7)", t.schema_, t.name, Phase.COPYING.value,
            ddl.log_table_name(oid), batch, total,
            json.dumps({"keys": keys, "types": [types[k] for k in keys], "oid": oid, "width": width,
                        "layout": ddl.layout_fingerprint(spec), **(carry or {})}))
        await record_history(conn, resource, "convert_prepare", t.name, f"{len(stmts) + len(capture)} statements: "
                             + "; ".join(stmts[:SHOWN_ITEMS]) + " ...", started, (time.perf_counter() - t0) * 1000)
    if emit:
        verb = f"restarting ({d.why})" if d.action is Action.RESTART else "converting"
        await emit(Event("Normal", "ConversionStarted", f"{verb} {t.qualified}: {total} rows, batches of "
                                                        f"{batch}; shadow {ddl.shadow_name(t.name)} built"))
    return None


async def _finish_step(conn: Any, spec: PartitionPolicySpec, facts: cat.ConversionFacts, d: Decision,
                       resource: str) -> Phase | None:
    """The transitions that only drop objects and move the record: one transaction each. Returns
    the phase after it (None: no record)."""
    t = spec.table
    rec = facts.record
    oids = sorted({*facts.logs, *facts.functions, *([rec.oid] if rec and rec.oid else [])})
    where = "WHERE table_schema = $1 AND table_name = $2"
    if d.action is Action.CANCEL:
        stmts, after = ddl.scaffolding_drops(t.schema_, t.name, oids, shadow=True), None
    elif d.action is Action.ABANDON:
        stmts, after = ddl.scaffolding_drops(t.schema_, t.name, oids, shadow=False), None
    elif d.action is Action.CLEAN:
        assert rec is not None
        stmts, after = ddl.scaffolding_drops(t.schema_, t.name, oids, shadow=False), Phase(rec.phase)
    elif d.action is Action.DROP_ORIGINAL:
        stmts, after = [ddl.drop_original(t.schema_, t.name)], Phase.DONE
    elif d.action is Action.ORIGINAL_GONE:
        stmts, after = [], Phase.DONE
    else:
        raise AssertionError(f"no executor for {d.action}")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        async with conn.transaction():  # the work, the record and its history row: all or nothing
            for s in stmts:
                await conn.execute(s)
            if after is None:
                await conn.execute(f"DELETE FROM pgcurator.conversions {where}", t.schema_, t.name)
            else:
                await conn.execute(f"UPDATE pgcurator.conversions SET phase = $3, updated_at = now() {where}",
                                   t.schema_, t.name, after.value)
            await record_history(conn, resource, f"convert_{d.action.value}", t.name,
                                 "; ".join(stmts) or d.why, started, (time.perf_counter() - t0) * 1000)
    except asyncpg.DependentObjectsStillExistError as exc:
        # The table is partitioned and maintained; only the drop waits for a person.
        raise _Skipped(f"{ddl.original_name(t.name)} is not dropped: other objects depend on it ({exc}); drop "
                       "them or set convert.dropOriginal: false") from exc
    return after
