"""One bounded asyncpg pool per target database, shared by every resource that points at it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from .. import settings
from ..errors import ConnectionFailed, CuratorError
from ..models.common import Timeouts
from .params import ConnParams, connect_kwargs
from .session import PINNED_SETTINGS, prepare_session

# Raised mid-run when the server goes away (restart, crash, network): the database is
# unreachable, not a bug, and the run is retried with backoff.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.PostgresConnectionError, OSError, TimeoutError,
)


def describe_connect_error(params: ConnParams, exc: BaseException) -> CuratorError:
    """A message that says which of the usual causes it was, without credentials."""
    where = params.display
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return CuratorError(
            f"password authentication failed for {where}: check the Secret's password",
            reason="AuthenticationFailed",
            transient=True,
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return CuratorError(f"role rejected by {where}: {exc}", reason="AuthenticationFailed", transient=True)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return CuratorError(f"database does not exist on {where}", reason="DatabaseNotFound", transient=True)
    if isinstance(exc, socket.gaierror):
        return ConnectionFailed(f"cannot resolve {params.hosts_display} for {where}")
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        return ConnectionFailed(f"none of {params.hosts_display} is {params.target_session_attrs} "
                                f"(target_session_attrs) for {where}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return ConnectionFailed(f"timed out connecting to {where} after {settings.current().connect_timeout:.0f}s")
    if isinstance(exc, OSError):
        return ConnectionFailed(f"cannot connect to {where}: {exc.strerror or exc}")
    if isinstance(exc, (asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError)):
        return ConnectionFailed(f"{where} is starting up or shutting down")
    if isinstance(exc, (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)):
        return ConnectionFailed(f"connection to {where} was lost: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        return CuratorError(f"{where} refused the connection: {exc}", reason="ConnectionRefused", transient=True)
    return ConnectionFailed(f"cannot connect to {where}: {type(exc).__name__}")


class PoolRegistry:
    def __init__(self, max_size: int | None = None) -> None:
        self.max_size = max_size if max_size is not None else settings.current().pool_size
        self._pools: dict[str, asyncpg.Pool] = {}
        self._creating: dict[str, asyncio.Lock] = {}

    async def get(self, params: ConnParams) -> asyncpg.Pool:
        key = params.pool_key
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        lock = self._creating.setdefault(key, asyncio.Lock())
        async with lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = await asyncpg.create_pool(
                    # Catalog text we parse never depends on the database's or role's defaults.
                    **connect_kwargs(params, PINNED_SETTINGS),
                    min_size=0,
                    max_size=self.max_size,
                    timeout=settings.current().connect_timeout,
                    max_inactive_connection_lifetime=120,
                )
                self._pools[key] = pool
        return pool

    @asynccontextmanager
    async def connection(self, params: ConnParams, timeouts: Timeouts | None = None) -> AsyncIterator[Any]:
        """A pooled connection; with `timeouts`, every statement on it (reads included) runs under
        the resource's lock_timeout and statement_timeout until it is released."""
        try:
            pool = await self.get(params)
            conn = await pool.acquire(timeout=settings.current().connect_timeout + 30)
        except CuratorError:
            raise
        except Exception as exc:
            raise describe_connect_error(params, exc) from None
        try:
            try:
                await prepare_session(conn, timeouts, pin=False)
            except Exception as exc:
                raise describe_connect_error(params, exc) from None
            yield conn
        finally:
            await pool.release(conn)

    def in_use(self) -> dict[str, int]:
        """Connections checked out per database (for metrics)."""
        out: dict[str, int] = {}
        for key, pool in self._pools.items():
            display = key.split("?")[0]
            out[display] = out.get(display, 0) + (pool.get_size() - pool.get_idle_size())
        return out

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except Exception:
                pool.terminate()
