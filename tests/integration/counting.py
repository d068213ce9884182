"""A connection that remembers every statement sent on it: tests count what a run reads and writes."""

from __future__ import annotations

from typing import Any

import asyncpg


class Counting:
    """The run's main connection, remembering every statement sent on it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def count(self, marker: str) -> int:
        return sum(marker in s for s in self.sent)

    async def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.sent.append(sql)
        return await self._conn.execute(sql, *args, **kw)

    async def executemany(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.sent.append(sql)
        return await self._conn.executemany(sql, *args, **kw)

    async def fetch(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.sent.append(sql)
        return await self._conn.fetch(sql, *args, **kw)

    async def fetchrow(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.sent.append(sql)
        return await self._conn.fetchrow(sql, *args, **kw)

    async def fetchval(self, sql: str, *args: Any, **kw: Any) -> Any:
        self.sent.append(sql)
        return await self._conn.fetchval(sql, *args, **kw)
