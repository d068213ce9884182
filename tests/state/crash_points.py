"""Fault injection at every statement boundary: the operator's sessions are killed right after the
N-th statement they send, as a crash of the operator's process there would leave the database.

`Fuse` counts every statement the operator's pooled connections send (BEGIN and COMMIT included:
asyncpg's transactions go through `Connection.execute`). When the N-th one has returned, the
server ends every session of the operator (pg_terminate_backend from the suite's own session), the
harness waits until those backends are gone (their locks with them), and the operator sees its
connection lost: nothing more of the run reaches the database.

`durable_points` picks the boundaries after which the database is in a different state: after a
statement that changed something outside a transaction, or after a COMMIT. A kill after any other
statement leaves the same state as the last such boundary (an open transaction is rolled back)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from pgcurator.db.params import ConnParams, connect_kwargs
from pgcurator.db.pools import PoolRegistry
from pgcurator.db.session import PINNED_SETTINGS
from pgcurator_devenv.postgres import EmbeddedPostgres

from .harness import Harness

_READ = re.compile(r"^\s*(SELECT|SHOW|SET|RESET|BEGIN|START|ROLLBACK|SAVEPOINT|RELEASE|LOCK)\b", re.I)


@dataclass
class Sent:
    statement: str
    in_transaction: bool  # after it returned


@dataclass
class Fuse:
    """Counts the operator's statements; with `after` set, kills its sessions after that many."""

    after: int | None = None
    sent: list[Sent] = field(default_factory=list)
    blown: bool = False
    killer: asyncpg.Connection | None = None  # the suite's session that terminates the operator's
    live: weakref.WeakSet[Fused] = field(default_factory=weakref.WeakSet)
    # Kill statement `after` while it runs instead (one that commits partway: DETACH CONCURRENTLY),
    # once it waits for a session `hold()` opens just before it, keeping a snapshot open.
    hold: Callable[[], Awaitable[asyncpg.Connection]] | None = None
    # Run once, just before the first statement containing the text: another session's move.
    before: tuple[str, Callable[[], Awaitable[None]]] | None = None

    def arm(self, after: int | None, killer: asyncpg.Connection,
            hold: Callable[[], Awaitable[asyncpg.Connection]] | None = None) -> None:
        self.after, self.sent, self.blown, self.killer, self.hold = after, [], False, killer, hold

    def disarm(self) -> tuple[list[Sent], bool]:
        """What was sent, and whether the fuse blew; the operator's next sessions live again."""
        out = self.sent, self.blown
        self.after, self.killer, self.hold, self.sent, self.blown = None, None, None, [], False
        self.before = None
        return out

    async def blow(self) -> None:
        self.blown = True
        assert self.killer is not None
        pids = [c.get_server_pid() for c in list(self.live) if not c.is_closed()]
        await self.killer.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p", pids)
        # Waiting on the state, not a clock: the backends are gone, so are their locks.
        while await self.killer.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids):
            await self.killer.execute("SELECT pg_sleep(0.01)")
        for c in list(self.live):
            c.terminate()


FUSE = Fuse()


class Killed(asyncpg.ConnectionDoesNotExistError):
    """What the operator sees once its sessions are gone (a lost connection)."""


class Fused(asyncpg.Connection):  # type: ignore[misc]
    """The operator's connection: every statement counted, the session killed when the fuse blows."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        FUSE.live.add(self)

    async def _counted(self, method: Any, query: str, *args: Any, **kw: Any) -> Any:
        if FUSE.blown:
            raise Killed("the crash harness killed the operator's sessions")
        if FUSE.before is not None and FUSE.before[0] in query:
            hook, FUSE.before = FUSE.before[1], None
            await hook()
        if FUSE.hold is not None and FUSE.after == len(FUSE.sent) + 1:
            await self._kill_midway(method, query, *args, **kw)
        try:
            return await method(query, *args, **kw)
        finally:
            FUSE.sent.append(Sent(query, self.is_in_transaction() if not self.is_closed() else False))
            if FUSE.after is not None and len(FUSE.sent) == FUSE.after:
                await FUSE.blow()
                raise Killed(f"the crash harness killed the operator's sessions after statement {FUSE.after}")

    async def _kill_midway(self, method: Any, query: str, *args: Any, **kw: Any) -> None:
        """Send the statement, wait until it waits for the holder's snapshot (its first
        transaction committed), and kill the operator there."""
        assert FUSE.killer is not None and FUSE.hold is not None
        holder = await FUSE.hold()
        FUSE.sent.append(Sent(query, False))
        running = asyncio.ensure_future(method(query, *args, **kw))
        pid = self.get_server_pid()
        while not running.done() and not await FUSE.killer.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid):
            await FUSE.killer.execute("SELECT pg_sleep(0.01)")
        assert not running.done(), f"{query!r} did not wait for the session holding a snapshot"
        await FUSE.blow()
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
            await running
        await holder.close()
        raise Killed(f"the crash harness killed the operator's sessions during statement {FUSE.after}")

    async def execute(self, query: str, *args: Any, **kw: Any) -> Any:
        return await self._counted(super().execute, query, *args, **kw)

    async def executemany(self, command: str, args: Any, **kw: Any) -> Any:
        return await self._counted(super().executemany, command, args, **kw)

    async def fetch(self, query: str, *args: Any, **kw: Any) -> Any:
        return await self._counted(super().fetch, query, *args, **kw)

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> Any:
        return await self._counted(super().fetchrow, query, *args, **kw)

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        return await self._counted(super().fetchval, query, *args, **kw)


class FusedPools(PoolRegistry):
    """The operator's pools, with `Fused` connections."""

    async def get(self, params: ConnParams) -> asyncpg.Pool:
        pool = self._pools.get(params.pool_key)
        if pool is None:
            pool = await asyncpg.create_pool(**connect_kwargs(params, PINNED_SETTINGS), min_size=0,
                                             max_size=self.max_size, connection_class=Fused)
            self._pools[params.pool_key] = pool
        return pool


class CrashHarness(Harness):
    """The state suite's harness, its operator running on `FusedPools`."""

    def __init__(self, pg: EmbeddedPostgres, dbname: str, app_url: str) -> None:
        super().__init__(pg, dbname, app_url)

    async def fresh_pools(self) -> None:
        from pgcurator.runtime import Runtime

        from .harness import KINDS

        if self.pools is not None:
            await self.pools.close()
        self.pools = FusedPools()
        self.runtime = Runtime(self.kube, list(KINDS.values()), pools=self.pools)  # type: ignore[arg-type]


def durable(sent: list[Sent]) -> list[int]:
    """1-based positions after which the database is in a new state: a COMMIT, or a change made
    outside a transaction."""
    out = []
    for i, s in enumerate(sent, 1):
        if s.in_transaction:
            continue
        head = s.statement.lstrip().split(None, 1)[0].upper() if s.statement.strip() else ""
        if head == "COMMIT" or not _READ.match(s.statement):
            out.append(i)
    return out


def midway(sent: list[Sent]) -> list[int]:
    """Statements that commit partway: killed while they run, they leave a state of their own."""
    return [i for i, s in enumerate(sent, 1) if re.search(r"DETACH PARTITION .* CONCURRENTLY", s.statement)]


def crash_points(sent: list[Sent], exhaustive: bool, budget: int) -> list[int]:
    """Every boundary (exhaustive), else the durable ones: rounds of one repeated statement (move
    batches) reduced to the first two and the last, then spread evenly over `budget` if needed."""
    if exhaustive:
        return list(range(1, len(sent) + 1))
    points = durable(sent)
    kept: list[int] = []
    for j, n in enumerate(points):
        stmt = _shape(sent[n - 1].statement)
        prev = [_shape(sent[m - 1].statement) for m in points[max(0, j - 2):j]]
        nxt = _shape(sent[points[j + 1] - 1].statement) if j + 1 < len(points) else None
        if len(prev) == 2 and all(p == stmt for p in prev) and nxt == stmt:
            continue  # a middle round of a repeated batch
        kept.append(n)
    if len(kept) > budget:
        step = (len(kept) - 1) / (budget - 1)
        kept = sorted({kept[round(i * step)] for i in range(budget)})
    return kept


def _shape(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()
