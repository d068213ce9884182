"""A cancelled build lane makes sure its backend stopped, with fakes that misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

import pgcurator.reconcile.index_build as index_build


class BrokenLane:
    """The lane's connection after a cancel the server never acknowledged."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.terminated = False

    async def fetchval(self, sql: str, *args: Any) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        raise asyncpg.InterfaceError("cannot perform operation: connection is closed")

    def terminate(self) -> None:
        self.terminated = True


class Other:
    """Another session: the backend goes away after two pg_terminate_backend calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.calls.append((sql, args))
        return len(self.calls) < 3


class Ctx:
    def __init__(self) -> None:
        self.other = Other()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Other]:
        yield self.other


@pytest.mark.parametrize("hang", [False, True], ids=["connection-lost", "no-answer"])
async def test_a_lane_whose_backend_does_not_answer_is_terminated_and_waited_for(
        monkeypatch: pytest.MonkeyPatch, hang: bool) -> None:
    monkeypatch.setattr(index_build, "ANSWER_WAIT_SECONDS", 0.05 if hang else 30.0)
    lane, ctx = BrokenLane(hang), Ctx()
    usable = await index_build._wait_stopped(ctx, lane, 4242)  # type: ignore[arg-type]
    assert usable is False and lane.terminated
    assert [args for _, args in ctx.other.calls] == [(4242,)] * 3  # until the backend was gone
    assert all("pg_terminate_backend" in sql for sql, _ in ctx.other.calls)


async def test_clean_up_runs_to_its_end_through_repeated_cancels() -> None:
    release = asyncio.Event()
    finished: list[bool] = []

    async def clean_up() -> None:
        await release.wait()
        finished.append(True)

    task = asyncio.create_task(index_build._to_completion(clean_up()))
    await asyncio.sleep(0)
    for _ in range(3):
        task.cancel()
        await asyncio.sleep(0)
    assert not task.done()  # still waiting for the clean-up
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True]
