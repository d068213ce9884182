"""How the state-space suite runs a reconcile: the operator's own entry point, without Kubernetes.

`Harness.apply` is the ONE place that knows how a reconcile is started. Today it drives the
runtime's `Worker._reconcile_outcome` (the code path the operator runs for every resource: Secret
-> connection parameters -> pooled connection -> `KindHandler.reconcile` -> exception mapping ->
status) with a fake at the Kubernetes-client edge; when `pgcurator apply` lands, switch this
method to it and nothing else changes.

Hypothesis runs the examples synchronously, so the harness owns a private event loop that
outlives the examples of one test (asyncpg connections and pools belong to a loop).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
import traceback
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from pgcurator.db.pools import PoolRegistry
from pgcurator.kinds import INDEX_POLICY, PARTITION_POLICY, VECTOR_INDEX
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.outcome import Outcome
from pgcurator.reconcile.partition import reconcile_partition_policy
from pgcurator.runtime import KindHandler, Runtime, Worker
from pgcurator_devenv.postgres import EmbeddedPostgres

T = TypeVar("T")
NAMESPACE = "state"
SECRET = "app-db"
KINDS: dict[str, KindHandler[Any]] = {h.kind: h for h in (PARTITION_POLICY, INDEX_POLICY, VECTOR_INDEX)}
# What the suite's own sessions (state builders, probes) run with: never the database's defaults.
PINNED = {"DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC", "search_path": "public",
          "extra_float_digits": "1", "lock_timeout": "5s", "application_name": "pgcurator-state-suite"}


class FakeKube:
    """The Kubernetes-client edge: one Secret, statuses and events recorded."""

    def __init__(self, uri: str) -> None:
        self.secret = {"uri": base64.b64encode(uri.encode()).decode()}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return dict(self.secret) if name == SECRET else None

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)

    async def set_finalizer(self, plural: str, body: dict[str, Any], present: bool) -> None:
        return None

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


@dataclass
class Result:
    kind: str
    spec: dict[str, Any]
    status: dict[str, Any]
    elapsed: float
    events: list[tuple[str, str, str]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)

    def condition(self, type_: str) -> dict[str, Any]:
        return next((c for c in self.status.get("conditions", []) if c["type"] == type_), {})

    @property
    def ready(self) -> bool:
        return self.status.get("ready") == "True"

    @property
    def reason(self) -> str:
        return str(self.status.get("reason", ""))

    @property
    def degraded(self) -> bool:
        return self.condition("Degraded").get("status") == "True"

    @property
    def message(self) -> str:
        return str(self.condition("Ready").get("message", ""))

    def describe(self) -> str:
        head = f"{self.kind} -> ready={self.status.get('ready')} reason={self.reason}: {self.message[:600]}"
        if self.tracebacks:
            head += "\n" + "\n".join(tb[-1500:] for tb in self.tracebacks)
        return head


class _Capture(logging.Handler):
    """The runtime logs the traceback of an unexpected exception; keep it for the report."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append("".join(traceback.format_exception(*record.exc_info)))


class Harness:
    """One database, reused by every example of a test; `reset()` gives each example a clean slate."""

    def __init__(self, pg: EmbeddedPostgres, dbname: str, app_url: str) -> None:
        self.pg = pg
        self.dbname = dbname
        self.app_url = app_url
        self.admin_url = pg.dsn(dbname)
        self.loop = asyncio.new_event_loop()
        self.kube = FakeKube(app_url)
        self.pools: PoolRegistry | None = None
        self.runtime: Runtime | None = None
        self._admin: asyncpg.Connection | None = None
        self._app: asyncpg.Connection | None = None
        self.generation = 0

    # -- running coroutines ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 300) -> T:
        """Run on the harness's loop; a hang fails the example instead of blocking the suite."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        async def shut() -> None:
            for c in (self._admin, self._app):
                if c is not None and not c.is_closed():
                    await c.close()
            if self.pools is not None:
                await self.pools.close()

        self.loop.run_until_complete(shut())
        self.loop.close()

    # -- sessions of the suite itself ------------------------------------------------------

    async def connect(self, superuser: bool = True, **settings: str) -> asyncpg.Connection:
        url = self.admin_url if superuser else self.app_url
        # No statement cache: every example drops and recreates the tables under the same names,
        # with other column types, and a cached statement would keep the old parameter types.
        return await asyncpg.connect(url, server_settings={**PINNED, **settings}, statement_cache_size=0)

    async def admin(self) -> asyncpg.Connection:
        if self._admin is None or self._admin.is_closed():
            self._admin = await self.connect(True)
        return self._admin

    async def app(self) -> asyncpg.Connection:
        """The operator's role (it owns the tables it manages), with pinned settings."""
        if self._app is None or self._app.is_closed():
            self._app = await self.connect(False)
        return self._app

    async def fresh_pools(self) -> None:
        """New pooled connections: they pick up `ALTER DATABASE ... SET` made since the last ones."""
        if self.pools is not None:
            await self.pools.close()
        self.pools = PoolRegistry()
        self.runtime = Runtime(self.kube, list(KINDS.values()), pools=self.pools)  # type: ignore[arg-type]

    async def reset(self, schemas: tuple[str, ...] = ("st", "other", "archive", "pgcurator")) -> None:
        """Drop what the last example built; the database's settings back to the server's."""
        if self.pools is not None:
            await self.pools.close()
            self.pools = None
        if self._app is not None and not self._app.is_closed():
            await self._app.close()
        admin = await self.admin()
        # e.g. a session of the last example still holding a lock
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")
        for s in schemas:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
        await admin.execute(f'ALTER DATABASE "{self.dbname}" RESET ALL')
        await admin.execute('CREATE SCHEMA st AUTHORIZATION curator; CREATE SCHEMA other AUTHORIZATION curator')
        await self.fresh_pools()

    # -- the reconcile ---------------------------------------------------------------------

    async def apply(self, kind: str, spec: dict[str, Any], *, now: datetime | None = None,
                    name: str = "subject", status: dict[str, Any] | None = None) -> Result:
        """One reconcile of one resource, through the operator's runtime."""
        assert self.runtime is not None, "reset() first"
        handler = KINDS[kind]
        if kind == "PartitionPolicy" and now is not None:
            # Same handler, only `now` passed through (the operator passes the wall clock).
            async def with_now(ctx: ReconcileContext, s: Any) -> Outcome:
                return await reconcile_partition_policy(ctx.conn, s, resource=ctx.resource, now=now,
                                                        on_event=ctx.event, progress=ctx.progress, alive=ctx.alive)

            handler = dataclasses.replace(handler, reconcile=with_now)
        self.generation += 1
        body = {
            "apiVersion": "pgcurator.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": NAMESPACE, "generation": self.generation,
                         "uid": f"uid-{name}", "resourceVersion": str(self.generation)},
            "spec": {"database": {"secretName": SECRET}, **spec},
            # What the runtime passes between runs: the last published status is in the next body.
            "status": dict(status or {}),
        }
        worker = Worker(self.runtime, handler, body)
        capture = _Capture()
        logger = logging.getLogger("pgcurator")
        logger.addHandler(capture)
        before = len(self.kube.statuses), len(self.kube.events)
        t0 = time.monotonic()
        try:
            await worker._reconcile_outcome(body)
        finally:
            logger.removeHandler(capture)
        elapsed = time.monotonic() - t0
        statuses = self.kube.statuses[before[0]:]
        final = next((s for s in reversed(statuses) if "conditions" in s), {})
        return Result(kind, body["spec"], final, elapsed, self.kube.events[before[1]:], capture.tracebacks)


async def create_metadata(conn: asyncpg.Connection) -> None:
    """The metadata schema as the operator creates it (the lead's versioned `ensure_metadata` once it lands)."""
    from pgcurator.db import metadata

    ensure = getattr(metadata, "ensure_metadata", None) or metadata.ensure_metadata_schema
    await ensure(conn)


def resource_name(kind: str, name: str = "subject") -> str:
    """The key history rows carry for a resource (Kind/namespace/name)."""
    return f"{kind}/{NAMESPACE}/{name}"


def db_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432
