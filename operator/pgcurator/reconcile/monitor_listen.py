"""LISTEN for the event trigger's NOTIFY, so a DatabaseMonitor runs within moments of a schema
change instead of at its next fingerprint.

One dedicated connection per monitor (LISTEN needs a session of its own; a pooled one would be
held forever), outside the per-database pool. The changes themselves are in
pgcurator.schema_changes, so a lost notification only delays: the next run reads them anyway.
A listener closes when its monitor stops refreshing it (deleted, or this replica lost the lead)
or, at the next notification, when the runtime no longer knows the monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .. import settings
from ..db.params import ConnParams, connect_kwargs
from ..db.pools import CONNECTION_LOST
from ..db.session import PINNED_SETTINGS
from ..planner.monitor_trigger import CHANNEL

log = logging.getLogger("pgcurator")

# Checks for a stale or closed connection this often (a notification itself arrives at once).
POLL_SECONDS = 2.0
RECONNECT_MAX_SECONDS = 30.0
CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_LOST, asyncpg.PostgresError)


@dataclass
class _Listener:
    resource: str
    key: str
    kwargs: dict[str, Any]
    wake: Callable[[], object]
    stale_after: float
    touched: float = field(default_factory=time.monotonic)
    connected: bool = False
    task: asyncio.Task[None] | None = None

    def fresh(self) -> bool:
        return time.monotonic() - self.touched < self.stale_after

    def _notified(self, *_: Any) -> None:
        if self.wake() is False:  # the runtime no longer knows the monitor (deleted): stop listening
            self.touched = float("-inf")

    async def run(self) -> None:
        backoff = 1.0
        try:
            while self.fresh():
                try:
                    conn = await asyncpg.connect(**self.kwargs, timeout=settings.current().connect_timeout)
                except CONNECT_ERRORS as exc:
                    log.warning("%s: cannot LISTEN for schema changes (%s); retrying", self.resource,
                                type(exc).__name__)
                    await asyncio.sleep(backoff)
                    backoff = min(RECONNECT_MAX_SECONDS, backoff * 2)
                    continue
                try:
                    await conn.add_listener(CHANNEL, self._notified)
                    self.connected, backoff = True, 1.0
                    self._notified()  # catch up with whatever happened while we were not listening
                    closed = asyncio.Event()
                    conn.add_termination_listener(lambda _c, ev=closed: ev.set())
                    while self.fresh() and not closed.is_set() and not conn.is_closed():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(closed.wait(), POLL_SECONDS)
                finally:
                    self.connected = False
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=5)
        finally:
            if _LISTENERS.get(self.resource) is self:
                _LISTENERS.pop(self.resource, None)


_LISTENERS: dict[str, _Listener] = {}


def keep_listening(resource: str, params: ConnParams, wake: Callable[[], object], stale_after: float) -> bool:
    """Start or refresh the listener of `resource`; returns whether it is connected now."""
    current = _LISTENERS.get(resource)
    if current is not None and current.key == params.pool_key and current.task is not None \
            and not current.task.done():
        current.touched, current.wake, current.stale_after = time.monotonic(), wake, stale_after
        return current.connected
    stop_listening(resource)
    listener = _Listener(resource, params.pool_key, connect_kwargs(params, PINNED_SETTINGS), wake, stale_after)
    _LISTENERS[resource] = listener
    listener.task = asyncio.create_task(listener.run(), name=f"listen {resource}")
    return False


def stop_listening(resource: str) -> None:
    listener = _LISTENERS.pop(resource, None)
    if listener is not None and listener.task is not None:
        listener.task.cancel()


def listening(resource: str) -> bool:
    listener = _LISTENERS.get(resource)
    return listener is not None and listener.connected


def stop_all() -> None:
    """Lost the lead or shutting down: no replica but the leader keeps connections listening."""
    for resource in list(_LISTENERS):
        stop_listening(resource)
