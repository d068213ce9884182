"""Schedules reconciles: one worker task per resource, woken by spec changes and by its own
timer. No kopf daemons or timers, because those add finalizers to every resource; a
finalizer is added only where deletion has work to do (deletionPolicy: Delete).

A worker is a guarded eternal task (kopf's habit): whatever one iteration raises is logged,
reported on the resource's status where the API lets us, and retried with backoff. Two tasks of
the same resource never run at once: a new one starts only after the previous one has ended."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any

import pydantic

from . import metrics
from .backoff import Backoff
from .db.metadata import ensure_metadata
from .db.params import ConnParams, params_from_secret
from .db.pools import PoolRegistry
from .engine import Engine, KindHandler, Prepare, Surroundings, format_validation_error
from .errors import CuratorError, SecretProblem
from .kube import FINALIZER, GROUP, VERSION, Kube
from .limits import CONDITION_MESSAGE
from .models.common import CommonSpec, DeletionPolicy
from .reconcile import monitor_listen
from .reconcile.outcome import Condition, Event, Outcome
from .settings import Settings
from .timefmt import k8s_time

log = logging.getLogger("pgcurator")

__all__ = ["KindHandler", "Runtime", "Worker", "format_validation_error", "merge_conditions"]

Key = tuple[str, str, str]  # plural, namespace, name
# How long a cancelled task may take to clean up (advisory unlock, connection release) before it
# is cancelled again.
CANCEL_GRACE = 30.0


def merge_conditions(old: list[dict[str, Any]], new: list[Condition], generation: int) -> list[dict[str, Any]]:
    """Kubernetes conditions: lastTransitionTime moves only when status flips."""
    now = k8s_time()
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        status = "True" if c.status else "False"
        prev = previous.get(c.type)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
        out.append({"type": c.type, "status": status, "reason": c.reason, "message": c.message[:CONDITION_MESSAGE],
                    "lastTransitionTime": since or now, "observedGeneration": generation})
    return out


def ca_pem_of(secret: str, key: str, value: str) -> str:
    """The CA certificate text of a Secret's (base64) value, or SecretInvalid naming the key."""
    try:
        text = base64.b64decode(value, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise SecretProblem(f"Secret {secret} key {key!r} is not base64 of a PEM certificate "
                            "(-----BEGIN CERTIFICATE-----)", reason="SecretInvalid") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise SecretProblem(f"Secret {secret} key {key!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            reason="SecretInvalid")
    return text


class Worker:
    def __init__(self, runtime: Runtime, handler: KindHandler[Any], body: dict[str, Any]) -> None:
        self.runtime = runtime
        self.handler = handler
        self.body = body
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False  # cancelled by deactivate(): activate() starts it again
        self._last_warning: tuple[str, str] | None = None
        self._last_outcome = "unknown"
        self.last_reason = ""  # the Ready condition's reason last published
        # Failed runs, and failed status writes (the API server may be away while the database is fine).
        s = runtime.engine.settings
        self.backoff = Backoff(s.retry_min, s.retry_max)
        self.status_backoff = Backoff(s.retry_min, s.retry_max)

    @property
    def key(self) -> Key:
        m = self.body["metadata"]
        return (self.handler.plural, m["namespace"], m["name"])

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
        """Returns only when the resource's deletion is done; cancellation ends it too."""
        while True:
            self.wake.clear()
            body = self.body
            try:
                if body["metadata"].get("deletionTimestamp"):
                    if await self._finalize(body):
                        return
                    delay: float | None = self.backoff.failure()
                else:
                    delay = await self._reconcile_once(body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.backoff.failure()
                if isinstance(exc, CuratorError):
                    log.warning("%s: %s; retrying in %.0f s", self.name, exc.message, delay)
                else:
                    log.error("%s failed unexpectedly; retrying in %.0f s", self.name, delay, exc_info=exc)
                await self._report(body, exc, delay)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
            # arrives as the wait ends, and a worker that ignores its cancel runs on beside its successor.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.wake.wait()

    async def _report(self, body: dict[str, Any], exc: Exception, delay: float) -> None:
        """Put a failure outside the reconcile itself (finalizer, status, events) on the status, if the API lets us."""
        reason = exc.reason if isinstance(exc, CuratorError) else "InternalError"
        message = exc.message if isinstance(exc, CuratorError) else f"{type(exc).__name__}: {exc}"
        outcome = Outcome.degraded(reason, f"{message}; retrying in {delay:.0f} s", requeue_after=delay)
        outcome.events = []  # the API is likely what failed: no Event storm while it is away
        try:
            await self._publish(body, outcome, int(body["metadata"].get("generation", 0)))
        except Exception as again:
            log.debug("could not report the failure of %s either: %r", self.name, again)

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
            ca_pem = ca_pem_of(f"{namespace}/{ref.ca_secret.name}", ref.ca_secret.key, ca_data[ref.ca_secret.key])
        return params_from_secret(f"{namespace}/{ref.secret_name}", data, ref, ca_pem)

    def surroundings(self, body: dict[str, Any]) -> Surroundings:
        meta = body["metadata"]

        async def params(spec: CommonSpec) -> ConnParams:
            return await self._params(spec, meta["namespace"])

        async def emit(ev: Event) -> None:
            await self._post(body, ev)

        async def progress(status: dict[str, Any]) -> None:
            try:
                await self.runtime.kube.patch_status(self.handler.plural, meta["namespace"], meta["name"], status)
            except Exception:
                log.warning("could not write progress of %s", self.name)

        return Surroundings(resource=self.name, namespace=meta["namespace"], name=meta["name"], body=body,
                            params=params, emit=emit, progress=progress, kube=self.runtime.kube,
                            alive=self.runtime.resource_alive, wake=self.runtime.wake, peers=self.runtime.bodies)

    async def _reconcile_once(self, body: dict[str, Any]) -> float | None:
        started = time.monotonic()
        delay = await self._reconcile_outcome(body)
        metrics.observe_reconcile(self.handler.kind, self._last_outcome, time.monotonic() - started)
        return delay

    async def _reconcile_outcome(self, body: dict[str, Any]) -> float | None:
        generation = int(body["metadata"].get("generation", 0))
        try:
            spec = self.handler.model.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            outcome = Outcome.degraded("InvalidSpec", format_validation_error(exc, self.handler.model))
            if not await self._publish(body, outcome, generation):
                return self.status_backoff.failure()
            return None  # wait for the spec to change
        schedule = self.handler.schedule_seconds(spec)
        await self.runtime.kube.set_finalizer(
            self.handler.plural, body, spec.deletion_policy is DeletionPolicy.Delete
        )
        outcome = await self.runtime.engine.reconcile(self.handler, spec, self.surroundings(body), self.backoff)
        delay = outcome.requeue_after if outcome.requeue_after is not None else schedule
        if not await self._publish(body, outcome, generation):
            delay = min(delay, self.status_backoff.failure())  # the status must catch up soon
        return delay

    async def _publish(self, body: dict[str, Any], outcome: Outcome, generation: int) -> bool:
        """Events and the status; False when the status could not be written (the API is away)."""
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
        status["reason"] = self.last_reason = ready.reason if ready else ""
        status["lastReconcileTime"] = k8s_time()
        self._last_outcome = next((c.type.lower() for c in outcome.conditions if c.status), "unknown")
        metrics.observe_status(self.handler.kind, body["metadata"]["namespace"], body["metadata"]["name"], status)
        log.info("%s: %s", self.name, "; ".join(f"{c.type}={c.status} {c.reason}" for c in outcome.conditions[:1]))
        try:
            await self.runtime.kube.patch_status(self.handler.plural, body["metadata"]["namespace"],
                                                 body["metadata"]["name"], status)
        except CuratorError as exc:
            log.warning("could not write the status of %s: %s", self.name, exc.message)
            return False
        self.status_backoff.success()
        return True

    async def _finalize(self, body: dict[str, Any]) -> bool:
        """True when deletion may proceed; False to try again after a backoff."""
        if FINALIZER not in (body["metadata"].get("finalizers") or []):
            return True
        try:
            spec = self.handler.model.model_validate(body.get("spec") or {})
            if spec.deletion_policy is DeletionPolicy.Delete:
                await self.runtime.engine.cleanup(self.handler, spec, self.surroundings(body))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, CuratorError):
                log.error("cleanup of %s failed unexpectedly", self.name, exc_info=exc)
            message = exc.message if isinstance(exc, CuratorError) else f"{type(exc).__name__}: {exc}"
            await self._post(body, Event("Warning", "CleanupFailed", f"{message}; retrying"))
            return False
        await self.runtime.kube.set_finalizer(self.handler.plural, body, False)
        self.backoff.success()
        return True


class Runtime:
    """`active` is False on replicas that are not the leader: they keep every body they are told
    about but run nothing until `activate()` (leader.py decides)."""

    def __init__(self, kube: Kube, handlers: list[KindHandler[Any]], pools: PoolRegistry | None = None,
                 active: bool = True, prepare: Prepare | None = ensure_metadata,
                 settings: Settings | None = None) -> None:
        self.active = active
        self.kube = kube
        self.handlers = {h.plural: h for h in handlers}
        self.engine = Engine(pools or PoolRegistry(), prepare, settings)
        self.workers: dict[Key, Worker] = {}
        # The newest task started per resource, until it ends: the next one waits for it.
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    @property
    def pools(self) -> PoolRegistry:
        return self.engine.pools

    def table_lock(self, params: ConnParams, table: str) -> asyncio.Lock:
        return self.engine.table_lock(params, table)

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
            # Its claims are released (Delete) or may now be taken over (Retain): whoever was refused
            # as a second manager tries again now, not at its next schedule (an hour by default).
            for other in self.workers.values():
                if other.last_reason == "ConflictingManager":
                    other.wake.set()
            return
        if worker is not None and worker.body["metadata"].get("uid") == meta.get("uid"):
            worker.update(body)
            if worker.task is not None and worker.task.done() and not meta.get("deletionTimestamp"):
                self.restart(worker)
            return
        if worker is not None and worker.task is not None:
            worker.task.cancel()  # the resource was replaced: its successor starts once this has ended
        worker = Worker(self, self.handlers[plural], body)
        self.workers[key] = worker
        self.restart(worker)

    def restart(self, worker: Worker) -> None:
        if not self.active:
            return  # a follower: the leader acts; activate() starts this worker if we take over
        key = worker.key
        previous = self._tasks.get(key)
        worker.stopped = False
        task = asyncio.create_task(self._guarded(worker, previous), name=worker.name)
        worker.task = task
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._ended(worker, key, t))

    async def _guarded(self, worker: Worker, previous: asyncio.Task[None] | None) -> None:
        while previous is not None and not previous.done():  # never two runs of one resource at once
            if not previous.cancelling():
                previous.cancel()  # once: a second cancel would interrupt its cleanup (unlock, release)
            await asyncio.wait({previous}, timeout=CANCEL_GRACE)
            if not previous.done():
                log.warning("the previous task of %s ignores its cancellation; cancelling again", worker.name)
                previous.cancel()
        await worker.run()

    def _ended(self, worker: Worker, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if task.cancelled() or task.exception() is None:
            return
        # run() catches every Exception; this is the last guard (e.g. a bug in the guard itself).
        delay = worker.backoff.failure()
        log.error("worker %s ended unexpectedly; restarting in %.0f s", worker.name, delay, exc_info=task.exception())
        asyncio.get_running_loop().call_later(delay, self._restart_if_current, worker, task)

    def _restart_if_current(self, worker: Worker, task: asyncio.Task[None]) -> None:
        if self.workers.get(worker.key) is worker and worker.task is task:
            self.restart(worker)

    def activate(self) -> None:
        """Became the leader: start a worker for every resource known so far."""
        self.active = True
        for worker in list(self.workers.values()):
            if worker.task is None or worker.task.done() or worker.stopped:
                self.restart(worker)

    def deactivate(self) -> None:
        """Lost the leadership: stop acting at once (the advisory lock guards the remainder)."""
        self.active = False
        monitor_listen.stop_all()
        for worker in self.workers.values():
            if worker.task is not None:
                worker.task.cancel()
                worker.stopped = True

    def count_by_kind(self) -> dict[str, int]:
        out = {h.kind: 0 for h in self.handlers.values()}
        for worker in self.workers.values():
            out[worker.handler.kind] += 1
        return out

    async def stop(self) -> None:
        monitor_listen.stop_all()
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pools.close()
