"""Schedules reconciles: one worker task per resource, woken by spec changes and by its own
timer. No kopf daemons or timers, because those add finalizers to every resource; a
finalizer is added only where deletion has work to do (deletionPolicy: Delete)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import asyncpg
import pydantic

from . import metrics
from .db.params import ConnParams, params_from_secret
from .db.pools import CONNECTION_LOST, PoolRegistry, describe_connect_error
from .errors import CuratorError, LockBusy, PlanError, SecretProblem
from .kube import FINALIZER, GROUP, VERSION, Kube
from .models.common import CommonSpec, DeletionPolicy
from .reconcile.context import ReconcileContext
from .reconcile.outcome import Condition, Event, Outcome

log = logging.getLogger("pgcurator")

RETRY_MIN = float(os.environ.get("PGCURATOR_RETRY_MIN", "2"))
# Transient failures (database or Secret) are retried with backoff up to this: a database that
# comes back is noticed within this many seconds.
RETRY_MAX = float(os.environ.get("PGCURATOR_RETRY_MAX", "20"))
PLAN_ERROR_RETRY = float(os.environ.get("PGCURATOR_PLAN_ERROR_RETRY", "60"))

S = TypeVar("S", bound=CommonSpec)


@dataclass(frozen=True)
class KindHandler(Generic[S]):
    kind: str
    plural: str
    model: type[S]
    reconcile: Callable[[ReconcileContext, S], Awaitable[Outcome]]
    schedule_seconds: Callable[[S], float]
    # What the in-process lock serialises on (usually schema.table).
    table_of: Callable[[S], str]
    cleanup: Callable[[ReconcileContext, S], Awaitable[None]] | None = None


def format_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "spec"
        parts.append(f"spec.{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def merge_conditions(old: list[dict[str, Any]], new: list[Condition], generation: int) -> list[dict[str, Any]]:
    """Kubernetes conditions: lastTransitionTime moves only when status flips."""
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        status = "True" if c.status else "False"
        prev = previous.get(c.type)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
        out.append(
            {
                "type": c.type,
                "status": status,
                "reason": c.reason,
                "message": c.message[:2000],
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        )
    return out


class Worker:
    def __init__(self, runtime: Runtime, handler: KindHandler[Any], body: dict[str, Any]) -> None:
        self.runtime = runtime
        self.handler = handler
        self.body = body
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._last_warning: tuple[str, str] | None = None
        self._failures = 0
        self._last_outcome = "unknown"

    @property
    def name(self) -> str:
        m = self.body["metadata"]
        return f"{self.handler.kind}/{m['namespace']}/{m['name']}"

    def update(self, body: dict[str, Any]) -> None:
        old = self.body
        self.body = body
        changed = old["metadata"].get("generation") != body["metadata"].get("generation")
        if changed or body["metadata"].get("deletionTimestamp"):
            self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            body = self.body
            if body["metadata"].get("deletionTimestamp"):
                await self._finalize(body)
                return
            delay = await self._reconcile_once(body)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)

    async def _post(self, body: dict[str, Any], ev: Event) -> None:
        if ev.type == "Warning":
            key = (ev.reason, ev.message)
            if key == self._last_warning:
                return  # the same warning again: the condition already says it
            self._last_warning = key
        await self.runtime.kube.event(body, ev.type, ev.reason, ev.message)

    async def _params(self, spec: CommonSpec, namespace: str) -> ConnParams:
        ref = spec.database
        data = await self.runtime.kube.read_secret(namespace, ref.secret_name)
        if data is None:
            raise SecretProblem(f"Secret {namespace}/{ref.secret_name} not found", reason="SecretNotFound")
        ca_pem = None
        if ref.ca_secret is not None:
            ca_data = await self.runtime.kube.read_secret(namespace, ref.ca_secret.name)
            if ca_data is None or ref.ca_secret.key not in ca_data:
                raise SecretProblem(
                    f"CA Secret {namespace}/{ref.ca_secret.name} or its key {ref.ca_secret.key!r} not found",
                    reason="SecretNotFound",
                )
            import base64

            ca_pem = base64.b64decode(ca_data[ref.ca_secret.key]).decode()
        return params_from_secret(f"{namespace}/{ref.secret_name}", data, ref, ca_pem)

    async def _reconcile_once(self, body: dict[str, Any]) -> float | None:
        started = time.monotonic()
        delay = await self._reconcile_outcome(body)
        metrics.observe_reconcile(self.handler.kind, self._last_outcome, time.monotonic() - started)
        return delay

    async def _reconcile_outcome(self, body: dict[str, Any]) -> float | None:
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        namespace = meta["namespace"]
        try:
            spec = self.handler.model.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            outcome = Outcome.degraded("InvalidSpec", format_validation_error(exc))
            await self._publish(body, outcome, generation)
            return None  # wait for the spec to change
        schedule = self.handler.schedule_seconds(spec)
        await self.runtime.kube.set_finalizer(
            self.handler.plural, body, spec.deletion_policy is DeletionPolicy.Delete
        )
        params: ConnParams | None = None
        try:
            params = await self._params(spec, namespace)
            lock = self.runtime.table_lock(params, self.handler.table_of(spec))
            async with lock, self.runtime.pools.connection(params, spec.timeouts) as conn:
                ctx = self._context(conn, body, params, spec)
                outcome = await self.handler.reconcile(ctx, spec)
            self._failures = 0
        except LockBusy as exc:
            outcome = Outcome.progressing(exc.reason, exc.message, requeue_after=15)
        except PlanError as exc:
            outcome = Outcome.degraded(exc.reason, exc.message, requeue_after=min(schedule, PLAN_ERROR_RETRY))
        except CuratorError as exc:
            self._failures += 1
            retry = min(RETRY_MAX, RETRY_MIN * 2 ** (self._failures - 1)) if exc.transient else schedule
            outcome = Outcome.degraded(exc.reason, exc.message, requeue_after=retry)
        except CONNECTION_LOST as exc:
            self._failures += 1
            err = (describe_connect_error(params, exc) if params is not None else
                   CuratorError(f"cannot reach the Kubernetes API to read the Secret: {exc}", reason="ApiUnreachable"))
            outcome = Outcome.degraded(err.reason, err.message,
                                       requeue_after=min(RETRY_MAX, RETRY_MIN * 2 ** (self._failures - 1)))
        except asyncpg.InsufficientPrivilegeError as exc:
            # a GRANT fixes it: said plainly, retried with backoff, no traceback
            self._failures += 1
            who = f"role {params.user}" if params is not None else "the operator's role"
            outcome = Outcome.degraded(
                "InsufficientPrivilege", f"{who} lacks a privilege: {exc}",
                requeue_after=min(RETRY_MAX, RETRY_MIN * 2 ** (self._failures - 1)),
            )
        except Exception as exc:  # a bug or an unexpected server answer: report it, keep the worker alive
            log.exception("reconcile of %s failed unexpectedly", self.name)
            self._failures += 1
            outcome = Outcome.degraded(
                "InternalError", f"{type(exc).__name__}: {exc}",
                requeue_after=min(RETRY_MAX, RETRY_MIN * 2 ** (self._failures - 1)),
            )
        await self._publish(body, outcome, generation)
        return outcome.requeue_after if outcome.requeue_after is not None else schedule

    def _context(self, conn: Any, body: dict[str, Any], params: ConnParams, spec: CommonSpec) -> ReconcileContext:
        meta = body["metadata"]

        async def emit(ev: Event) -> None:
            await self._post(body, ev)

        async def progress(status: dict[str, Any]) -> None:
            try:
                await self.runtime.kube.patch_status(self.handler.plural, meta["namespace"], meta["name"], status)
            except Exception:
                log.warning("could not write progress of %s", self.name)

        return ReconcileContext(
            conn=conn, resource=self.name, namespace=meta["namespace"], name=meta["name"], body=body,
            params=params, pools=self.runtime.pools, kube=self.runtime.kube, emit=emit,
            publish_progress=progress, timeouts=spec.timeouts, alive=self.runtime.resource_alive,
            wake=self.runtime.wake, peers=self.runtime.bodies,
        )

    async def _publish(self, body: dict[str, Any], outcome: Outcome, generation: int) -> None:
        for ev in outcome.events:
            await self._post(body, ev)
        if not any(c.type == "Degraded" and c.status for c in outcome.conditions):
            self._last_warning = None
        old = (body.get("status") or {}).get("conditions") or []
        status = dict(outcome.status)
        status["observedGeneration"] = generation
        status["conditions"] = merge_conditions(old, outcome.conditions, generation)
        ready = next((c for c in outcome.conditions if c.type == "Ready"), None)
        status["ready"] = "True" if ready and ready.status else "False"
        status["reason"] = ready.reason if ready else ""
        status["lastReconcileTime"] = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        self._last_outcome = next((c.type.lower() for c in outcome.conditions if c.status), "unknown")
        metrics.observe_status(self.handler.kind, body["metadata"]["namespace"], body["metadata"]["name"], status)
        try:
            await self.runtime.kube.patch_status(self.handler.plural, body["metadata"]["namespace"],
                                                 body["metadata"]["name"], status)
        except Exception:
            log.exception("could not write the status of %s", self.name)
        log.info("%s: %s", self.name, "; ".join(f"{c.type}={c.status} {c.reason}" for c in outcome.conditions[:1]))

    async def _finalize(self, body: dict[str, Any]) -> None:
        if FINALIZER not in (body["metadata"].get("finalizers") or []):
            return
        try:
            spec = self.handler.model.model_validate(body.get("spec") or {})
            if self.handler.cleanup is not None and spec.deletion_policy is DeletionPolicy.Delete:
                params = await self._params(spec, body["metadata"]["namespace"])
                async with self.runtime.pools.connection(params, spec.timeouts) as conn:
                    await self.handler.cleanup(self._context(conn, body, params, spec), spec)
        except Exception as exc:
            await self._post(body, Event("Warning", "CleanupFailed", f"{exc}; retrying"))
            await asyncio.sleep(RETRY_MAX)
            self.runtime.restart(self)
            return
        await self.runtime.kube.set_finalizer(self.handler.plural, body, False)


class Runtime:
    """`active` is False on replicas that are not the leader: they keep every body they are told
    about but run nothing until `activate()` (leader.py decides)."""

    def __init__(self, kube: Kube, handlers: list[KindHandler[Any]], pools: PoolRegistry | None = None,
                 active: bool = True) -> None:
        self.active = active
        self.kube = kube
        self.handlers = {h.plural: h for h in handlers}
        self.pools = pools or PoolRegistry()
        self.workers: dict[tuple[str, str, str], Worker] = {}
        self._table_locks: dict[str, asyncio.Lock] = {}

    def table_lock(self, params: ConnParams, table: str) -> asyncio.Lock:
        """In-process guard: one run per table at a time (the advisory lock guards across replicas)."""
        key = f"{params.host}:{params.port}/{params.dbname}/{table}"
        return self._table_locks.setdefault(key, asyncio.Lock())

    async def resource_alive(self, resource: str) -> bool:
        """`Kind/namespace/name` still exists in the API (errors count as alive: never take over
        another resource's object on a guess)."""
        kind, _, rest = resource.partition("/")
        namespace, _, name = rest.partition("/")
        plural = next((p for p, h in self.handlers.items() if h.kind == kind), None)
        if plural is None or not name:
            return True
        try:
            return await self.kube.get_object(GROUP, VERSION, plural, name, namespace) is not None
        except Exception:
            return True

    def wake(self, kind: str, namespace: str, name: str) -> bool:
        """Run that resource now instead of at its next schedule (a DatabaseMonitor saw drift)."""
        for (plural, ns, n), worker in self.workers.items():
            if ns == namespace and n == name and self.handlers[plural].kind == kind:
                worker.wake.set()
                return True
        return False

    def bodies(self, namespace: str) -> list[dict[str, Any]]:
        """The resources known in a namespace, as last seen (each body carries its kind)."""
        return [w.body for (_, ns, _), w in self.workers.items() if ns == namespace]

    def observe(self, plural: str, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        worker = self.workers.get(key)
        if event_type == "DELETED":
            metrics.forget_resource(meta["namespace"], meta["name"])
            if worker is not None and worker.task is not None:
                worker.task.cancel()
            self.workers.pop(key, None)
            return
        if worker is not None and worker.body["metadata"].get("uid") == meta.get("uid"):
            worker.update(body)
            if worker.task is not None and worker.task.done() and not meta.get("deletionTimestamp"):
                self.restart(worker)
            return
        if worker is not None and worker.task is not None:
            worker.task.cancel()
        worker = Worker(self, self.handlers[plural], body)
        self.workers[key] = worker
        self.restart(worker)

    def restart(self, worker: Worker) -> None:
        if not self.active:
            return  # a follower: the leader acts; activate() starts this worker if we take over
        worker.task = asyncio.create_task(worker.run(), name=worker.name)

    def activate(self) -> None:
        """Became the leader: start a worker for every resource known so far."""
        self.active = True
        for worker in list(self.workers.values()):
            if worker.task is None or worker.task.done():
                self.restart(worker)

    def deactivate(self) -> None:
        """Lost the leadership: stop acting at once (the advisory lock guards the remainder)."""
        self.active = False
        for worker in self.workers.values():
            if worker.task is not None:
                worker.task.cancel()
                worker.task = None

    def count_by_kind(self) -> dict[str, int]:
        out = {h.kind: 0 for h in self.handlers.values()}
        for worker in self.workers.values():
            out[worker.handler.kind] += 1
        return out

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pools.close()
