"""DatabaseMonitor, schema changes: read what the event trigger recorded, wake the resources that
manage what changed, take the fingerprint when due, record what only the fingerprint saw, and
link each woken resource's repair to the change."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..catalog.fingerprint import identities, read_fingerprint
from ..db import monitor_store as store
from ..models.common import parse_duration
from ..models.monitor import SYSTEM_SCHEMAS, DatabaseMonitorSpec
from ..planner.monitor import (
    Definitions,
    Peer,
    change_message,
    definitions,
    diff,
    due,
    explain,
    fingerprint_rows,
    is_ours,
    managers,
    peer_names,
    schema_version,
    touched,
)
from .context import ReconcileContext

# After DDL the trigger recorded, the fingerprint follows this soon (for a fresh schema version),
# not sooner: a burst of DDL costs one fingerprint.
FINGERPRINT_DEBOUNCE_SECONDS = 10.0
# Trigger rows this much older than the previous fingerprint may still explain its diff (a DDL
# transaction that began before that fingerprint and committed after it).
EXPLAIN_MARGIN = timedelta(minutes=5)


@dataclass
class ChangesRun:
    messages: list[str] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)
    version: str | None = None
    objects: int | None = None
    fingerprint_at: datetime | None = None
    fingerprinted: bool = False


def observed_schemas(spec: DatabaseMonitorSpec) -> tuple[list[str], list[str]]:
    """(never, only) for the catalog queries."""
    return [*SYSTEM_SCHEMAS, *spec.schemas.exclude], list(spec.schemas.include)


class _Waker:
    """Finds and wakes the managers of what a change touched; peers and owners read once a run."""

    def __init__(self, ctx: ReconcileContext, spec: DatabaseMonitorSpec, role: str, write: bool) -> None:
        self.ctx, self.spec, self.role, self.write = ctx, spec, role, write
        self._peers: list[Peer] | None = None
        self._owners: list[tuple[str, str]] = []

    async def _load(self) -> list[Peer]:
        if self._peers is None:
            bodies = self.ctx.peers(self.ctx.namespace) if self.ctx.peers is not None else []
            database = self.spec.database.model_dump(by_alias=True, exclude_none=True)
            named = peer_names(bodies, database)
            pairs = [p for _, tables, indexes in named for p in (*tables, *indexes)]
            idents = iter(await identities(self.ctx.conn, pairs))
            self._peers = []
            for resource, tables, indexes in named:
                self._peers.append(Peer(resource, {next(idents) for _ in tables}, {next(idents) for _ in indexes}))
            self._owners = await store.owner_identities(self.ctx.conn)
        return self._peers

    async def __call__(self, change: dict[str, Any], defs: Definitions) -> list[str]:
        if not self.spec.changes.wake_managers or is_ours(change, self.role):
            return []
        peers = await self._load()
        found = [r for r in managers(touched(change, defs), peers, self._owners) if r != self.ctx.resource]
        woke: list[str] = []
        mark = await store.history_mark(self.ctx.conn) if found else 0
        for resource in found:
            kind, _, rest = resource.partition("/")
            namespace, _, name = rest.partition("/")
            # only inside the operator (ctx.wake), never in dryRun/suspend
            if self.write and self.ctx.wake is not None and self.ctx.wake(kind, namespace, name):
                woke.append(resource)
        if woke and change.get("id") is not None:
            await store.record_wake(self.ctx.conn, change["id"], woke, mark)
        return woke


async def process_changes(ctx: ReconcileContext, spec: DatabaseMonitorSpec, state: dict[str, Any], now: datetime,
                          role: str, write: bool) -> ChangesRun:
    conn = ctx.conn
    run = ChangesRun(version=state.get("schema_version"), fingerprint_at=state.get("fingerprint_at"))
    waker = _Waker(ctx, spec, role, write)
    snap = await store.last_snapshot(conn, ctx.resource)
    before: Definitions = snap[1] if snap else {}

    # The trigger's rows first: waking a manager is what repairs drift, so it comes before the
    # (heavier) fingerprint.
    last_id = int(state["last_change_id"])
    never, only = observed_schemas(spec)
    # dryRun/suspend never move last_change_id: reading the rows again would repeat their Events
    new = await store.changes_after(conn, last_id, never, only) if write else []
    for change in new:
        woke = await waker(change, before)
        run.woken += woke
        run.messages.append(change_message(change, woke))
    if new and write:
        last_id = int(new[-1]["id"])
        await store.save_state(conn, ctx.resource, last_change_id=last_id)

    interval = parse_duration(spec.changes.fingerprint_interval)
    last_fp = state.get("fingerprint_at")
    if due(last_fp, interval, now) or (new and due(last_fp, FINGERPRINT_DEBOUNCE_SECONDS, now)):
        await _fingerprint(ctx, spec, run, snap, last_fp, now, waker, write)
    if write:
        await store.link_repairs(conn)
    return run


async def _fingerprint(ctx: ReconcileContext, spec: DatabaseMonitorSpec, run: ChangesRun,
                       snap: tuple[str, Definitions] | None, last_fp: datetime | None, now: datetime,
                       waker: _Waker, write: bool) -> None:
    conn = ctx.conn
    never, only = observed_schemas(spec)
    defs = definitions(await read_fingerprint(conn, never, only))
    version = schema_version(defs)
    run.version, run.objects, run.fingerprint_at, run.fingerprinted = version, len(defs), now, True
    if not write:
        return
    max_id = await store.start_after_now(conn)
    if snap is None:
        await store.insert_snapshot(conn, ctx.resource, version, defs)  # the baseline: nothing to compare yet
    elif version != snap[0]:
        since = (last_fp - EXPLAIN_MARGIN) if last_fp else None
        left, confirmed = explain(diff(snap[1], defs), await store.trigger_changes_since(conn, since))
        rows = fingerprint_rows(left, now)
        ids = await store.insert_fingerprint_changes(conn, rows, version)
        both = {**snap[1], **defs}
        for change_id, row in zip(ids, rows, strict=True):
            change = {**row, "id": change_id, "mechanism": "fingerprint"}
            woke = await waker(change, both)
            run.woken += woke
            run.messages.append(change_message(change, woke))
        await store.insert_snapshot(conn, ctx.resource, version, defs)
        await store.confirm(conn, sorted(confirmed), version, max_id)
    await store.confirm(conn, [], version, max_id)
    await store.save_state(conn, ctx.resource, fingerprint_at=now, schema_version=version)
