"""deletionPolicy: Delete — remove the partitions a PartitionPolicy created, but only empty ones,
and only while it manages the table; then give up its claim on the table.

Each partition goes in one transaction that first locks the parent and the partition ACCESS
EXCLUSIVE (under lockTimeout), then checks it is empty, detaches and drops it. Checking outside
that lock let a writer's row land between the check and the drop, and the drop took it along.
Before that, rows of an interrupted DEFAULT-row move go back through the parent: no run of this
policy will resume it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..catalog.partitions import PartitionInfo, TableObservation, move_marker, observe_table
from ..db.executor import RETRYABLE, TableLock, lock_retry_delay, record_history
from ..db.metadata import ensure_metadata
from ..db.ownership import owner_of
from ..errors import LockBusy
from ..limits import SHOWN_ITEMS
from ..models.common import Timeouts, parse_duration
from ..models.partition import PartitionPolicySpec
from ..sql.quote import ident, literal, qualified
from .outcome import Event
from .partition_claim import TABLE, release_table

log = logging.getLogger("pgcurator")

_CREATED_SQL = """
SELECT DISTINCT target FROM pgcurator.history
 WHERE resource = $1 AND step IN ('create_partition', 'create_default', 'create_detached')
   AND outcome = 'ok'
"""


async def _drop_if_empty(conn: Any, parent: str, p: PartitionInfo, timeouts: Timeouts, resource: str) -> bool:
    """One attempt: True when dropped, False when kept because it holds rows."""
    child = qualified(p.schema, p.name)
    lock_ms = int(parse_duration(timeouts.lock_timeout) * 1000)
    stmt_ms = int(parse_duration(timeouts.statement_timeout) * 1000)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {literal(f'{lock_ms}ms')}")
        await conn.execute(f"SET LOCAL statement_timeout = {literal(f'{stmt_ms}ms')}")
        # Parent first, as writers lock it (then the partition they route to): no lock-order deadlock.
        # ONLY: the other partitions are not locked. The partition's lock includes its sub-partitions.
        await conn.execute(f"LOCK TABLE ONLY {parent} IN ACCESS EXCLUSIVE MODE")
        await conn.execute(f"LOCK TABLE {child} IN ACCESS EXCLUSIVE MODE")
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {child})"):
            await record_history(conn, resource, "drop_partition", p.name, f"-- {p.name} kept", started,
                                 (time.perf_counter() - t0) * 1000, "skipped", "not empty: kept")
            return False
        statements = (f"ALTER TABLE {parent} DETACH PARTITION {child}", f"DROP TABLE {child}")
        for sql in statements:
            await conn.execute(sql)
        ms = (time.perf_counter() - t0) * 1000
        for sql in statements:
            await record_history(conn, resource, "drop_partition", p.name, sql, started, ms)
    return True


async def _restore_moving(conn: Any, obs: TableObservation, name: str, timeouts: Timeouts, resource: str) -> bool:
    """Put the rows of an interrupted DEFAULT-row move's detached table back through the parent
    (into the DEFAULT partition, or a partition attached since) and drop the table: no run of
    this policy will resume the move, and its rows are invisible through the parent meanwhile.
    False (kept) when the parent refuses a row (e.g. no DEFAULT partition any more)."""
    cols = ", ".join(ident(c.name) for c in obs.columns if not c.generated)
    parent, moving = qualified(obs.schema, obs.name), qualified(obs.schema, name)
    statements = (f"INSERT INTO {parent} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {moving}",
                  f"DROP TABLE {moving}")
    lock_ms = int(parse_duration(timeouts.lock_timeout) * 1000)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {literal(f'{lock_ms}ms')}")
            await conn.execute(f"LOCK TABLE {moving} IN ACCESS EXCLUSIVE MODE")
            for sql in statements:
                await conn.execute(sql)
            for sql in statements:
                await record_history(conn, resource, "undo_move_default_rows", name, sql, started,
                                     (time.perf_counter() - t0) * 1000)
    except asyncpg.IntegrityConstraintViolationError:
        return False
    except RETRYABLE as exc:
        raise LockBusy(f"could not lock {name} to put its rows back within lockTimeout: {exc}; retrying") from exc
    return True


async def cleanup_partition_policy(conn: Any, spec: PartitionPolicySpec, resource: str,
                                   on_event: Callable[[Event], Awaitable[None]] | None = None) -> list[str]:
    """Drops the empty partitions this policy created; returns the ones kept because they hold
    rows (deleting a policy never deletes rows). Raises LockBusy when a lock stays unavailable
    after lockRetries attempts, so the deletion is retried. A table another resource manages
    (this one was refused as a second manager, or gave it up) is left as it is."""
    await ensure_metadata(conn)
    t = spec.table
    holder = await owner_of(conn, TABLE, t.schema_, t.name)
    if holder not in (None, resource):
        msg = f"{t.qualified} is managed by {holder}: nothing of it dropped"
        log.info("%s: %s", resource, msg)
        if on_event is not None:
            await on_event(Event("Normal", "ManagedElsewhere", msg))
        return []
    created = {r[0] for r in await conn.fetch(_CREATED_SQL, resource)}
    kept: list[str] = []
    async with TableLock(conn, t.schema_, t.name):
        obs = await observe_table(conn, t.schema_, t.name, spec.key_column)
        parent = qualified(t.schema_, t.name)
        # First, while the partitions are all there to take them: rows of an interrupted move.
        for name, comment in sorted(obs.loose_tables.items()):
            if comment == move_marker(t.schema_, t.name) and not await _restore_moving(
                    conn, obs, name, spec.timeouts, resource):
                kept.append(name)
        # The DEFAULT partition last: while range partitions are still attached, rows of theirs
        # could otherwise be routed into it.
        for p in sorted((p for p in obs.partitions if p.name in created), key=lambda p: p.is_default):
            attempt = 0
            while True:
                attempt += 1
                try:
                    dropped = await _drop_if_empty(conn, parent, p, spec.timeouts, resource)
                    break
                except RETRYABLE as exc:
                    if attempt > spec.timeouts.lock_retries:
                        raise LockBusy(f"could not lock {p.name} to drop it within lockTimeout after {attempt} "
                                       f"attempts: {exc}; retrying") from exc
                    await asyncio.sleep(lock_retry_delay(attempt))
                except asyncpg.UndefinedTableError:
                    dropped = True  # dropped meanwhile by someone else
                    break
            if not dropped:
                kept.append(p.name)
        await release_table(conn, spec, resource)
    if kept:
        msg = f"kept {len(kept)} partitions that hold rows: {', '.join(kept[:SHOWN_ITEMS])}"
        log.warning("%s: %s", resource, msg)
        if on_event is not None:
            await on_event(Event("Warning", "PartitionsKept", msg))
    return kept
