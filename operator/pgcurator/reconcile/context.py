"""What a reconcile function gets: a connection, a way to get more, and ways to report."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..db.params import ConnParams
from ..db.pools import PoolRegistry
from ..kube import Kube
from ..models.common import Timeouts
from .outcome import Event

PROGRESS_MIN_INTERVAL = 2.0


@dataclass
class ReconcileContext:
    """One run for one resource.

    `conn` is a pooled connection held for the whole run. Parallel work (e.g. one index build
    per partition) takes more with `connection()`, bounded by the per-database pool.
    """

    conn: Any
    resource: str  # Kind/namespace/name: the key used in history rows
    namespace: str
    name: str
    body: dict[str, Any]
    params: ConnParams
    pools: PoolRegistry
    kube: Kube | None = None
    emit: Callable[[Event], Awaitable[None]] | None = None
    publish_progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    # Every connection handed out for this run carries the resource's limits.
    timeouts: Timeouts | None = None
    # Whether another resource ("Kind/namespace/name") still exists: a claim it left behind on an
    # object (pgcurator.owners) is taken over when it does not. None: assume it does.
    alive: Callable[[str], Awaitable[bool]] | None = None
    # Plan as of this time instead of the clock (`pgcurator apply --now`); None in the operator.
    now: datetime | None = None
    # Run another resource now ("Kind", namespace, name) -> whether it is known (DatabaseMonitor:
    # drift repaired at once), and the resource bodies known in a namespace. None outside the runtime.
    wake: Callable[[str, str, str], bool] | None = None
    peers: Callable[[str], list[dict[str, Any]]] | None = None
    _last_progress: float = field(default=0.0, repr=False)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        async with self.pools.connection(self.params, self.timeouts) as conn:
            yield conn

    async def event(self, ev: Event) -> None:
        if self.emit is not None:
            await self.emit(ev)

    async def progress(self, status: dict[str, Any], force: bool = False) -> None:
        """Merge `status` into the resource's status now; throttled to one write per 2 s."""
        now = time.monotonic()
        if self.publish_progress is None or (not force and now - self._last_progress < PROGRESS_MIN_INTERVAL):
            return
        self._last_progress = now
        await self.publish_progress(status)
