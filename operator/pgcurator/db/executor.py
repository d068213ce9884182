"""Runs a plan: under a per-table advisory lock, with lock_timeout and statement_timeout on
every statement, retrying lock conflicts with backoff, and a history row for each statement."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .. import metrics, settings
from ..backoff import backoff_delay
from ..errors import ConnectionFailed, LockBusy
from ..models.common import Timeouts
from ..sql.statements import Plan, Step
from .metadata import HISTORY_INSERT, ensure_metadata
from .session import limit_statements

ADVISORY_CLASS = 0x70676375  # "pgcu": keeps our keys apart from the application's advisory locks
RETRYABLE = (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError, asyncpg.ObjectInUseError)


def operator_id() -> str:
    """Who ran a statement, in history rows."""
    return settings.current().operator_id


def lock_retry_delay(attempt: int) -> float:
    """Seconds before retry `attempt` of a statement that hit lock_timeout (jittered, so replicas
    retrying the same lock do not retry in step)."""
    return backoff_delay(attempt, base=settings.current().lock_backoff, cap=30.0, jitter=True)


def table_lock_key(schema: str, table: str) -> int:
    """A stable signed 32-bit key per table, the same in every operator replica."""
    v = zlib.crc32(f"{schema}.{table}".encode())
    return v - (1 << 32) if v >= (1 << 31) else v


@dataclass
class StatementResult:
    statement: str
    outcome: str  # ok | error | lock_timeout | skipped
    duration_ms: float
    error: str | None = None


@dataclass
class StepResult:
    step: Step
    outcome: str
    duration_ms: float
    attempts: int = 1
    error: str | None = None
    sqlstate: str | None = None
    statements: list[StatementResult] = field(default_factory=list)


@dataclass
class RunResult:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome == "error"]

    @property
    def lock_waits(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome == "lock_timeout"]

    @property
    def applied(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome == "ok"]


StepCallback = Callable[[StepResult], Awaitable[None]]


class TableLock:
    """Session-level advisory lock for one table, held for a whole run."""

    def __init__(self, conn: Any, schema: str, table: str) -> None:
        self.conn = conn
        self.key = table_lock_key(schema, table)
        self.name = f"{schema}.{table}"

    async def __aenter__(self) -> TableLock:
        got = await self.conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", ADVISORY_CLASS, self.key)
        if not got:
            raise LockBusy(f"another pgcurator run holds the lock for {self.name}; retrying shortly")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.conn.execute("SELECT pg_advisory_unlock($1::int, $2::int)", ADVISORY_CLASS, self.key)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass  # connection gone: the server released the lock with it


async def apply_session_limits(conn: Any, timeouts: Timeouts) -> None:
    """The resource's limits (pooled connections already have them from hand-out)."""
    await conn.execute(limit_statements(timeouts))


def _affected(status: str) -> int:
    """Row count from a command tag such as 'INSERT 0 500' or 'DELETE 12'."""
    last = status.rsplit(" ", 1)[-1] if status else "0"
    return int(last) if last.isdigit() else 0


async def _run_step_once(conn: Any, step: Step, results: list[StatementResult],
                         on_round: Callable[[int], Awaitable[None]] | None = None,
                         in_tx: Callable[[], Awaitable[None]] | None = None) -> None:
    """Appends one result per statement attempted, including the one that raised."""

    async def one(sql: str) -> None:
        t0 = time.perf_counter()
        try:
            await conn.execute(sql)
        except BaseException as exc:
            outcome = "lock_timeout" if isinstance(exc, RETRYABLE) else "error"
            results.append(StatementResult(sql, outcome, (time.perf_counter() - t0) * 1000, _err(exc)))
            raise
        results.append(StatementResult(sql, "ok", (time.perf_counter() - t0) * 1000))

    if step.repeat_until_zero:
        # Each round is its own short transaction (autocommit); stops when a round moves nothing.
        (sql,) = step.statements
        while True:
            t0 = time.perf_counter()
            try:
                status = await conn.execute(sql)
            except BaseException as exc:
                outcome = "lock_timeout" if isinstance(exc, RETRYABLE) else "error"
                results.append(StatementResult(sql, outcome, (time.perf_counter() - t0) * 1000, _err(exc)))
                raise
            rows = _affected(status)
            results.append(StatementResult(f"{sql} -- {rows} rows", "ok", (time.perf_counter() - t0) * 1000))
            if on_round is not None:
                await on_round(rows)
            if rows == 0:
                return
    elif step.transactional:
        async with conn.transaction():
            for sql in step.statements:
                await one(sql)
            if in_tx is not None:
                # The history rows commit with the change they describe: a crash can never leave
                # a change without its row, or a row for a change that was rolled back.
                await in_tx()
    else:
        for sql in step.statements:
            await one(sql)


def _bind(on_rows: Callable[[Step, int], Awaitable[None]] | None,
          step: Step) -> Callable[[int], Awaitable[None]] | None:
    if on_rows is None:
        return None

    async def cb(rows: int) -> None:
        await on_rows(step, rows)

    return cb


def _err(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError):
        detail = getattr(exc, "detail", None)
        return f"{exc.sqlstate}: {exc}" + (f" ({detail})" if detail else "")
    return f"{type(exc).__name__}: {exc}"


async def record_history(conn: Any, resource: str, kind: str, target: str, statement: str, started: datetime,
                         duration_ms: float, outcome: str = "ok", error: str | None = None) -> None:
    """One history row for work that does not go through run_plan (e.g. conversion batches)."""
    await conn.execute(HISTORY_INSERT, resource, kind, target, statement, started, duration_ms, outcome, error,
                       operator_id())


async def _record(conn: Any, resource: str, step: Step, started: datetime, results: list[StatementResult]) -> None:
    metrics.observe_statements(step.kind, results)  # every attempt, as in the history table
    rows = [
        (resource, step.kind, step.target, r.statement, started, r.duration_ms, r.outcome, r.error, operator_id())
        for r in results
    ]
    if rows:
        await conn.executemany(HISTORY_INSERT, rows)


async def _undo(conn: Any, resource: str, step: Step) -> None:
    """One attempt (under lockTimeout); if it fails too, the next run resumes where this one stopped."""
    started = datetime.now(UTC)
    undo = Step(kind="undo_" + step.kind, target=step.target, statements=step.undo, group=step.group)
    stmts: list[StatementResult] = []
    try:
        await _run_step_once(conn, undo, stmts)
    except asyncpg.PostgresError:
        pass  # recorded in stmts
    await _record(conn, resource, undo, started, stmts)


async def run_plan(
    conn: Any,
    plan: Plan,
    *,
    resource: str,
    timeouts: Timeouts,
    on_step: StepCallback | None = None,
    on_rows: Callable[[Step, int], Awaitable[None]] | None = None,
) -> RunResult:
    """Run every step in order. Lock conflicts are retried; a failed step skips the rest of
    its group but not the other steps. Lost connections abort the run."""
    await ensure_metadata(conn)
    await apply_session_limits(conn, timeouts)
    result = RunResult()
    failed_groups: set[str] = set()
    for step in plan.steps:
        if step.group and step.group in failed_groups:
            result.steps.append(StepResult(step, "skipped", 0.0, error="an earlier step of this change failed"))
            continue
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            stmts: list[StatementResult] = []
            try:
                async def in_tx(stmts: list[StatementResult] = stmts, started: datetime = started,
                                step: Step = step) -> None:
                    await _record(conn, resource, step, started, stmts)

                await _run_step_once(conn, step, stmts, _bind(on_rows, step), in_tx)
                sr = StepResult(step, "ok", (time.perf_counter() - t0) * 1000, attempt, statements=stmts)
                break
            except RETRYABLE as exc:
                if attempt > timeouts.lock_retries:
                    sr = StepResult(
                        step, "lock_timeout", (time.perf_counter() - t0) * 1000, attempt,
                        error=f"could not get a lock within lockTimeout after {attempt} attempts: {exc}",
                        sqlstate=exc.sqlstate, statements=stmts,
                    )
                    break
                await _record(conn, resource, step, started, stmts)
                delay = lock_retry_delay(attempt)
                await asyncio.sleep(delay)
                started = datetime.now(UTC)
            except asyncpg.PostgresError as exc:
                sr = StepResult(
                    step, "error", (time.perf_counter() - t0) * 1000, attempt,
                    error=_err(exc), sqlstate=exc.sqlstate, statements=stmts,
                )
                break
            except (asyncpg.InterfaceError, OSError) as exc:
                raise ConnectionFailed(f"connection lost while running {step.kind} on {step.target}: {exc}") from None
        if not sr.statements:
            sr.statements = [StatementResult(s, sr.outcome, 0.0, sr.error) for s in step.statements]
        if sr.outcome != "ok" and step.group:
            failed_groups.add(step.group)
        if sr.outcome != "ok" and step.undo:
            await _undo(conn, resource, step)
        if not (sr.outcome == "ok" and step.transactional and not step.repeat_until_zero):
            await _record(conn, resource, step, started, sr.statements)
        result.steps.append(sr)
        if on_step is not None:
            await on_step(sr)
    return result
