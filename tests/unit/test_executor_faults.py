"""run_plan and TableLock against a fake connection that raises: lock conflicts are retried with
a history row per attempt, a failed step skips only its own group, a lost connection aborts the
run, a busy table lock is LockBusy and a failing unlock never hides the run's own outcome."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcurator.db import executor
from pgcurator.db.executor import TableLock, run_plan
from pgcurator.db.metadata import HISTORY_INSERT
from pgcurator.errors import ConnectionFailed, LockBusy
from pgcurator.models.common import Timeouts
from pgcurator.sql.statements import Plan, Step


class FakeConn:
    """Raises the queued exceptions of a statement in order, then succeeds."""

    def __init__(self, failures: dict[str, list[BaseException]] | None = None, lock_free: bool = True,
                 unlock_error: BaseException | None = None) -> None:
        self.failures = failures or {}
        self.executed: list[str] = []
        self.history: list[tuple[Any, ...]] = []
        self.lock_free = lock_free
        self.unlock_error = unlock_error

    async def execute(self, sql: str, *args: Any) -> str:
        if sql == HISTORY_INSERT:
            self.history.append(args)
            return "INSERT 0 1"
        if "pg_advisory_unlock" in sql and self.unlock_error is not None:
            raise self.unlock_error
        queued = self.failures.get(sql)
        if queued:
            raise queued.pop(0)
        self.executed.append(sql)
        return "OK"

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert sql == HISTORY_INSERT
        self.history.extend(rows)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        assert "pg_try_advisory_lock" in sql
        return self.lock_free

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    def outcomes(self, statement: str) -> list[str]:
        return [row[6] for row in self.history if row[3] == statement]


@pytest.fixture(autouse=True)
def _no_metadata_no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(conn: Any) -> None:
        return None

    monkeypatch.setattr(executor, "ensure_metadata", nothing)
    monkeypatch.setattr(executor, "lock_retry_delay", lambda attempt: 0.0)


def _step(sql: str, group: str = "") -> Step:
    return Step("create_partition", "public.t", (sql,), group=group)


def _timeouts(retries: int = 5) -> Timeouts:
    return Timeouts.model_validate({"lockRetries": retries})


async def test_lock_conflict_is_retried_and_every_attempt_recorded() -> None:
    sql = "CREATE TABLE a ()"
    conn = FakeConn({sql: [asyncpg.LockNotAvailableError("lock timeout"), asyncpg.DeadlockDetectedError("dl")]})
    result = await run_plan(conn, Plan([_step(sql)]), resource="ns/p", timeouts=_timeouts())
    [step] = result.steps
    assert step.outcome == "ok" and step.attempts == 3
    assert conn.outcomes(sql) == ["lock_timeout", "lock_timeout", "ok"]


async def test_lock_conflict_gives_up_after_lock_retries() -> None:
    sql = "CREATE TABLE a ()"
    conn = FakeConn({sql: [asyncpg.LockNotAvailableError("lock timeout") for _ in range(10)]})
    result = await run_plan(conn, Plan([_step(sql)]), resource="ns/p", timeouts=_timeouts(retries=2))
    [step] = result.steps
    assert step.outcome == "lock_timeout" and step.attempts == 3
    assert step.sqlstate == "55P03" and result.lock_waits == [step]
    assert conn.outcomes(sql) == ["lock_timeout"] * 3 and sql not in conn.executed


async def test_a_failed_step_skips_its_group_only() -> None:
    bad, after, other = "CREATE TABLE a ()", "CREATE INDEX ON a (x)", "CREATE TABLE b ()"
    conn = FakeConn({bad: [asyncpg.UndefinedTableError('relation "x" does not exist')]})
    plan = Plan([_step(bad, "a"), _step(after, "a"), _step(other, "b")])
    result = await run_plan(conn, plan, resource="ns/p", timeouts=_timeouts())
    assert [s.outcome for s in result.steps] == ["error", "skipped", "ok"]
    assert result.steps[0].sqlstate == "42P01" and "does not exist" in (result.steps[0].error or "")
    assert conn.executed[-1] == other and after not in conn.executed
    assert conn.outcomes(bad) == ["error"] and conn.outcomes(other) == ["ok"]


async def test_a_lost_connection_aborts_the_run() -> None:
    first, second = "CREATE TABLE a ()", "CREATE TABLE b ()"
    conn = FakeConn({first: [asyncpg.InterfaceError("connection is closed")]})
    seen: list[str] = []

    async def on_step(sr: executor.StepResult) -> None:
        seen.append(sr.outcome)

    with pytest.raises(ConnectionFailed, match="connection lost"):
        await run_plan(conn, Plan([_step(first), _step(second)]), resource="ns/p", timeouts=_timeouts(),
                       on_step=on_step)
    assert second not in conn.executed and seen == []


async def test_table_lock_held_elsewhere_is_lock_busy() -> None:
    conn = FakeConn(lock_free=False)
    with pytest.raises(LockBusy, match=r"public\.t"):
        async with TableLock(conn, "public", "t"):
            pytest.fail("entered a lock another run holds")
    assert not any("unlock" in s for s in conn.executed)


@pytest.mark.parametrize("error", [asyncpg.InterfaceError("closed"), OSError("reset"),
                                   asyncpg.AdminShutdownError("terminating")])
async def test_table_lock_unlock_failure_is_swallowed(error: BaseException) -> None:
    conn = FakeConn(unlock_error=error)
    async with TableLock(conn, "public", "t") as lock:
        assert lock.name == "public.t"
    with pytest.raises(ValueError, match="the run's own"):  # the body's error is what surfaces
        async with TableLock(conn, "public", "t"):
            raise ValueError("the run's own failure")
