"""The conversion's data transitions: keyset copy batches (copy), re-syncing the change log
(catchup), the proof that both tables hold the same rows, and the swap. Each batch, re-sync and
the swap is one transaction that also records its progress in pgcurator.conversions."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..catalog import conversion as cat
from ..catalog.partitions import table_columns
from ..db.executor import record_history
from ..errors import CuratorError
from ..models.partition import PartitionPolicySpec
from ..planner import partition_convert as ddl
from ..planner.conversion_machine import Phase
from ..sql.quote import fit_identifier, ident, qualified
from .outcome import Event, Outcome

CATCHUP_BATCH = 5000
SWAP_WHEN_LOG_BELOW = 2000

Emit = Callable[[Event], Awaitable[None]] | None
Progress = Callable[[dict[str, Any]], Awaitable[None]] | None
Committed = Callable[[str, Phase | None], Awaitable[None]]


class OutsideShadow(Exception):
    """A row written during the conversion has a key no partition of the shadow holds."""


class Mismatch(CuratorError):
    """The copy differs from the original: nothing was swapped."""

    reason = "VerificationFailed"


def rejected(exc: asyncpg.IntegrityConstraintViolationError) -> Exception:
    """A row the shadow refuses: outside every partition (restart: the new shadow covers it) or
    against a constraint the original does not enforce on old rows (a person must fix the row)."""
    if isinstance(exc, asyncpg.CheckViolationError) and not getattr(exc, "constraint_name", None):
        return OutsideShadow(str(exc))
    return CuratorError(f"the partitioned copy refuses a row of the table: {exc}; fix that row (or the constraint, "
                        "e.g. one added NOT VALID), then the conversion continues", reason="ConversionRowRejected")


def status(copied: int, total: int, phase: str, rate: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"phase": phase, "rowsCopied": copied, "rowsTotal": total,
                           "percent": round(100 * copied / total, 1) if total else 100.0}
    if rate:
        out["rowsPerSecond"] = round(rate)
        out["etaSeconds"] = round(max(0, total - copied) / rate)
    return out


class Work:
    """One slice of conversion work on one table."""

    def __init__(self, conn: Any, spec: PartitionPolicySpec, rec: cat.ConversionRecord, resource: str,
                 committed: Committed, emit: Emit, progress: Progress) -> None:
        self.conn, self.spec, self.rec, self.resource = conn, spec, rec, resource
        self.committed, self.emit, self.progress = committed, emit, progress
        t = spec.table
        self.keys: list[str] = rec.details["keys"]
        self.types: list[str] = rec.details["types"]
        self.src = qualified(t.schema_, t.name)
        self.dst = qualified(t.schema_, ddl.shadow_name(t.name))
        self.log = qualified("pgcurator", rec.log_table)

    async def columns(self) -> str:
        t = self.spec.table
        # The columns alone: the rest of the table was observed when the conversion was prepared.
        cols = [c for c in await table_columns(self.conn, t.schema_, t.name) if not c.generated]
        return ", ".join(ident(c.name) for c in cols)

    async def _batch_size(self) -> int:
        """From the current batchMemory: a change takes effect with the next batch."""
        assert self.spec.convert is not None
        width = self.rec.details.get("width")
        if width is None:  # recorded by an earlier version: keep its size
            return self.rec.batch_rows
        return ddl.batch_rows(self.spec.convert.batch_memory, int(width))

    async def copy(self, deadline: float) -> Outcome | None:
        """copy -> copy (a slice of batches) or -> catchup (no row left). None: go on."""
        t, rec = self.spec.table, self.rec
        col_list = await self.columns()
        copied, last, batch = rec.rows_copied, rec.last_key, await self._batch_size()
        t0, start_copied, started = time.perf_counter(), copied, datetime.now(UTC)
        phase = Phase.COPYING
        while time.monotonic() < deadline and phase is Phase.COPYING:
            sql = ddl.copy_batch_sql(self.src, self.dst, self.keys, self.types, col_list, batch, bool(last))
            try:
                async with self.conn.transaction():
                    res = await self.conn.fetchrow(sql, *(last or []))
                    n = int(res[0])
                    if n:
                        last = [res[i + 1] for i in range(len(self.keys))]
                        copied += n
                    phase = Phase.COPYING if n else Phase.CATCHING_UP
                    await self.conn.execute(
                        "UPDATE pgcurator.conversions SET last_key = $3, rows_copied = $4, updated_at = now(), "
                        "phase = $5, batch_rows = $6 WHERE table_schema = $1 AND table_name = $2",
                        t.schema_, t.name, json.dumps(last), copied, phase.value, batch)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise rejected(exc) from exc
            await self.committed("copy", phase)
            rate = (copied - start_copied) / max(time.perf_counter() - t0, 1e-6)
            if self.progress:
                await self.progress({"conversion": status(copied, rec.rows_total, phase.value, rate)})
        await record_history(self.conn, self.resource, "convert_copy", t.name,
                             f"copied rows {start_copied}..{copied} in batches of {batch}", started,
                             (time.perf_counter() - t0) * 1000)
        if phase is Phase.CATCHING_UP:
            return None
        rate = (copied - start_copied) / max(time.perf_counter() - t0, 1e-6)
        st = status(copied, rec.rows_total, phase.value, rate)
        if self.emit:
            await self.emit(Event("Normal", "ConversionProgress", f"copied {copied} of {rec.rows_total} rows "
                                  f"({st['percent']}%), {round(rate)} rows/s"))
        return Outcome.progressing("Converting", f"copying: {st['percent']}% ({copied}/{rec.rows_total} rows)",
                                   {"conversion": st}, requeue_after=0)

    async def _apply_log(self, col_list: str, limit: int | None, drained: set[tuple[str, ...]] | None = None) -> int:
        """Re-sync the logged keys: delete them from the shadow and copy their current rows from the original."""
        rows = await self.conn.fetch(ddl.drain_log_sql(self.log, self.keys, limit))
        if not rows:
            return 0
        unique = sorted({tuple(r) for r in rows})
        if drained is not None:
            drained.update(unique)
        cols = [[u[i] for u in unique] for i in range(len(self.keys))]
        try:
            for sql in ddl.resync_sql(self.src, self.dst, self.keys, self.types, col_list):
                await self.conn.execute(sql, *cols)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise rejected(exc) from exc
        return len(rows)

    async def catch_up(self, deadline: float) -> Outcome:
        """catchup -> catchup (re-sync a slice of the change log) or -> swapped."""
        col_list = await self.columns()
        while time.monotonic() < deadline:
            if await cat.pending_changes(self.conn, self.log) < SWAP_WHEN_LOG_BELOW:
                return await self.swap(col_list)
            async with self.conn.transaction():
                await self._apply_log(col_list, CATCHUP_BATCH)
            await self.committed("catch_up", Phase.CATCHING_UP)
        return Outcome.progressing("Converting", "catching up with rows written during the copy",
                                   {"conversion": {"phase": Phase.CATCHING_UP.value}}, requeue_after=0)

    async def _preverify(self) -> tuple[int, str]:
        """Compare the two tables without blocking anyone: in one snapshot, every row whose key is not
        waiting in the change log must be identical on both sides (count and checksum of whole
        rows: a write the capture missed, e.g. while its trigger was disabled, shows). The keys
        in the log are re-synced and checked under the swap's lock; no catch-up runs in between, so
        those two sets together cover the whole table."""
        where = ddl.not_logged(self.log, self.keys)
        async with self.conn.transaction(isolation="repeatable_read", readonly=True):
            a = await cat.checksum(self.conn, self.src, where)
            b = await cat.checksum(self.conn, self.dst, where)
        if a != b:
            raise Mismatch(f"verification failed before the swap: original has {a[0]} rows (checksum {a[1]}), the "
                           f"partitioned copy {b[0]} (checksum {b[1]}); nothing was swapped")
        return a

    async def swap(self, col_list: str) -> Outcome:
        t, rec, conn = self.spec.table, self.rec, self.conn
        old = ddl.original_name(t.name)
        started = datetime.now(UTC)
        seqs = await cat.serial_sequences(conn, self.src)
        base_rows, base_sum = await self._preverify()
        t0 = time.perf_counter()
        async with conn.transaction():
            # Writers wait here (readers do not); lock_timeout bounds how long we may make them wait.
            await conn.execute(ddl.lock_writers(self.src))
            drained: set[tuple[str, ...]] = set()
            while await self._apply_log(col_list, None, drained):
                pass
            drained_rows = 0
            if drained:
                cols = [[d[i] for d in sorted(drained)] for i in range(len(self.keys))]
                only = ddl.only_keys(self.keys, self.types)
                ra = await cat.checksum(conn, self.src, only, *cols)
                rb = await cat.checksum(conn, self.dst, only, *cols)
                if ra != rb:
                    raise Mismatch(f"verification failed at the swap: the {len(drained)} rows written last differ "
                                   f"(original {ra[0]} rows, copy {rb[0]}); nothing was swapped")
                drained_rows = ra[0]
            total_rows = base_rows + drained_rows
            for sql in ddl.swap_renames(t.schema_, t.name):
                await conn.execute(sql)
            # The change capture goes with the swap: nothing is left to clean up after its commit.
            for sql in ddl.scaffolding_drops(t.schema_, t.name, [rec.oid] if rec.oid else [], shadow=False):
                await conn.execute(sql)
            await _carry_index_names(conn, t.schema_, old, t.name)
            await _carry_sequences(conn, t.schema_, t.name, seqs)
            lock_ms = (time.perf_counter() - t0) * 1000
            await conn.execute(
                "UPDATE pgcurator.conversions SET phase = $4, swapped_at = now(), updated_at = now(), "
                "details = details || $3 WHERE table_schema = $1 AND table_name = $2", t.schema_, t.name,
                json.dumps({"rows": total_rows, "checksum": base_sum, "swapMs": round(lock_ms, 1)}),
                Phase.SWAPPED.value)
            await record_history(conn, self.resource, "convert_swap", t.name,
                                 f"verified {total_rows} rows (count and row checksum); renamed {t.name} -> {old}, "
                                 f"{ddl.shadow_name(t.name)} -> {t.name}", started, lock_ms)
        await self.committed("swap", Phase.SWAPPED)
        assert self.spec.convert is not None
        kept = "to be dropped (dropOriginal)" if self.spec.convert.drop_original else "kept"
        if self.emit:
            await self.emit(Event("Normal", "ConversionSwapped", f"{t.qualified} is now partitioned: {total_rows} rows "
                                  f"verified by count and row checksum; writers waited {lock_ms:.0f} ms; original "
                                  f"{kept} as {old}"))
        return Outcome.progressing("Converted", f"converted: {total_rows} rows verified; original {kept} as {old}",
                                   {"conversion": {"phase": Phase.SWAPPED.value, "rowsVerified": total_rows,
                                                   "swapMilliseconds": round(lock_ms, 1)}}, requeue_after=0)


async def _carry_sequences(conn: Any, schema: str, table: str, seqs: list[tuple[str, str, bool]]) -> None:
    new_table = qualified(schema, table)
    for col, seq, is_identity in seqs:
        if is_identity:
            last, called = await cat.sequence_position(conn, seq)
            new_seq = await cat.serial_sequence(conn, new_table, col)
            stmts = ddl.carry_identity(seq, new_seq, await cat.relation_name(conn, seq), last, called)
        else:
            stmts = [ddl.carry_serial(seq, new_table, col)]
        for sql in stmts:
            await conn.execute(sql)


async def _carry_index_names(conn: Any, schema: str, original: str, table: str) -> None:
    """LIKE ... INCLUDING INDEXES names the copy's indexes after the shadow table; give each the
    name of the original's index with the same definition (the original's move aside first)."""
    old = await cat.index_shapes(conn, schema, original)
    for name, _ in old:
        await conn.execute(ddl.rename_statement("INDEX", schema, name, fit_identifier(name, "_unpartitioned")))
    wanted = {shape: name for name, shape in old}
    for name, shape in await cat.index_shapes(conn, schema, table):
        target = wanted.pop(shape, None)
        if target is not None and target != name:
            await conn.execute(ddl.rename_statement("INDEX", schema, name, target))
