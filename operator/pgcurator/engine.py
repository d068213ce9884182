"""One reconcile of one resource, with or without Kubernetes: connection parameters -> table
lock -> pooled connection -> handler.reconcile -> an Outcome, whatever was raised.

The operator's Worker and `pgcurator apply` / `pgcurator plan` run this same function; what
differs between them (where the parameters come from, where Events and progress go, the
Kubernetes client) is handed in as a `Surroundings`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg
import pydantic

from .backoff import Backoff
from .db.metadata import ensure_metadata
from .db.params import ConnParams
from .db.pools import CONNECTION_LOST, PoolRegistry, describe_connect_error
from .errors import ApiUnavailable, CuratorError, LockBusy, PlanError
from .kube import Kube
from .limits import SHOWN_ITEMS
from .models.common import CommonSpec, parse_duration
from .models.examples import Refusal, error_loc, example_at, model_named, unknown_field
from .models.hints import describe_mismatch
from .reconcile.context import ReconcileContext
from .reconcile.outcome import Event, Outcome
from .settings import Settings, current

log = logging.getLogger("pgcurator")

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired (PostgreSQL appendix A, class 55)
# A 57014 that ended this much short of statement_timeout was cancelled by someone, not timed out.
TIMEOUT_MARGIN = 0.9
MAX_SHOWN_QUERY = 240

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
    # False: the kind creates the metadata schema itself, when it first writes (DbTlsCert: a role
    # without the TLS privileges must hear which privilege first).
    metadata_first: bool = True


def format_validation_error(exc: pydantic.ValidationError, model: type[pydantic.BaseModel] | None = None) -> str:
    """One line: `spec.<field>: <what is wrong>, e.g. <field>: <what is accepted>` per error."""
    model = model or model_named(exc.title)
    # A value every member of a union refused is one refusal (pydantic reports one per member).
    by_loc: dict[tuple[str | int, ...], list[Any]] = {}
    for err in exc.errors():
        by_loc.setdefault(error_loc(err, model), []).append(err)
    parts = [describe_errors(errs, model) for errs in list(by_loc.values())[:SHOWN_ITEMS]]
    more = len(by_loc) - SHOWN_ITEMS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def describe_error(err: Any, model: type[pydantic.BaseModel] | None) -> str:
    return describe_errors([err], model)


def describe_errors(errs: list[Any], model: type[pydantic.BaseModel] | None) -> str:
    """The errors at one place of a spec, with an example of what the field accepts."""
    # A rule over the whole spec (a model validator) has no location: it is just `spec`.
    where = error_loc(errs[0], model)
    loc = ".".join(["spec", *(str(x) for x in where)])
    said: list[str] = []
    for err in errs:
        msg = _what(err, where, model)
        if msg not in said:
            said.append(msg if not said else msg.removeprefix("Input should be "))
    cause = (errs[0].get("ctx") or {}).get("error")
    example = cause.example if isinstance(cause, Refusal) else None
    if example is None and model is not None and errs[0]["type"] != "extra_forbidden":
        example = example_at(model, where)
    return f"{loc}: {' or '.join(said)}" + (f", {example}" if example is not None else "")


def _what(err: Any, where: tuple[str | int, ...], model: type[pydantic.BaseModel] | None) -> str:
    msg: str = err["msg"]
    if err["type"] == "string_pattern_mismatch":
        # pydantic would show the raw regular expression; say what is expected instead.
        pattern = (err.get("ctx") or {}).get("pattern")
        msg = describe_mismatch(pattern, err.get("input")) or msg
    if err["type"] == "extra_forbidden" and model is not None:
        msg = unknown_field(model, err["loc"]) or msg
    msg = msg.removeprefix("Value error, ")
    last = str(where[-1]) if where else ""
    if last and msg.startswith((f"{last}: ", f"{last} ")):
        msg = msg[len(last) + 1:].lstrip(": ")  # `spec.x.lists: lists must ...` names the field once
    return msg


@dataclass
class Surroundings:
    """What a run needs from outside the database: who it is for, where the connection
    parameters come from, where Events and progress go."""

    resource: str  # Kind/namespace/name
    namespace: str
    name: str
    body: dict[str, Any]
    params: Callable[[CommonSpec], Awaitable[ConnParams]]
    emit: Callable[[Event], Awaitable[None]] | None = None
    progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    kube: Kube | None = None
    now: datetime | None = None  # plan as of this time (the CLI's --now); None: the clock
    # Whether another resource still exists (ownership take-over); None: assume it does.
    alive: Callable[[str], Awaitable[bool]] | None = None
    # Run another resource now (DatabaseMonitor: drift repaired at once), and the bodies of the
    # resources known in a namespace; None outside the operator.
    wake: Callable[[str, str, str], bool] | None = None
    peers: Callable[[str], list[dict[str, Any]]] | None = None


Prepare = Callable[[Any], Awaitable[None]]


class FailedStatements:
    """asyncpg's query logger on a run's connection: remembers which statement raised which
    exception, so a lock timeout escaping a reconcile can say what was being read."""

    def __init__(self) -> None:
        self._records: dict[int, Any] = {}

    def __call__(self, record: Any) -> None:
        if record.exception is not None:
            self._records[id(record.exception)] = record  # the record keeps the exception, so ids stay unique

    def of(self, exc: BaseException) -> Any | None:
        return self._records.get(id(exc))


def describe_statement(record: Any | None) -> str:
    """The statement (whitespace folded, cut short) and its text arguments, e.g. the table's name."""
    if record is None:
        return "a statement outside the planned steps"
    text = " ".join(str(record.query).split())
    if len(text) > MAX_SHOWN_QUERY:
        text = text[:MAX_SHOWN_QUERY] + "..."
    names = [a for a in (record.args or ()) if isinstance(a, str)][:SHOWN_ITEMS]
    return text + (f" (with {', '.join(names)})" if names else "")


class Engine:
    """Runs reconciles; one per process (the Worker's Runtime, or the CLI)."""

    def __init__(self, pools: PoolRegistry, prepare: Prepare | None = ensure_metadata,
                 settings: Settings | None = None) -> None:
        """`prepare` runs on the run's connection before the reconcile: by default it creates or
        upgrades the metadata schema, before anything reads or writes it."""
        self.pools = pools
        self.prepare = prepare
        self.settings = settings or current()
        self._table_locks: dict[str, asyncio.Lock] = {}

    def table_lock(self, params: ConnParams, table: str) -> asyncio.Lock:
        """In-process guard: one run per table at a time (the advisory lock guards across replicas)."""
        key = f"{params.host}:{params.port}/{params.dbname}/{table}"
        return self._table_locks.setdefault(key, asyncio.Lock())

    def context(self, conn: Any, env: Surroundings, params: ConnParams, spec: CommonSpec) -> ReconcileContext:
        return ReconcileContext(
            conn=conn, resource=env.resource, namespace=env.namespace, name=env.name, body=env.body,
            params=params, pools=self.pools, kube=env.kube, emit=env.emit, publish_progress=env.progress,
            timeouts=spec.timeouts, alive=env.alive, now=env.now, wake=env.wake, peers=env.peers,
        )

    async def reconcile(self, handler: KindHandler[Any], spec: CommonSpec, env: Surroundings,
                        backoff: Backoff) -> Outcome:
        """Never raises (except cancellation): every failure becomes an Outcome with a retry."""
        params: ConnParams | None = None
        failed = FailedStatements()
        try:
            params = await env.params(spec)
            # Every statement of the run, reads included, under the resource's lockTimeout/statementTimeout.
            async with self.table_lock(params, handler.table_of(spec)), \
                    self.pools.connection(params, spec.timeouts) as conn:
                conn.add_query_logger(failed)
                try:
                    if self.prepare is not None and handler.metadata_first:
                        await self.prepare(conn)
                    outcome = await handler.reconcile(self.context(conn, env, params, spec), spec)
                finally:
                    conn.remove_query_logger(failed)
            backoff.success()
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await asyncio.sleep(0)  # asyncpg hands query-log records over with call_soon
            schedule = handler.schedule_seconds(spec)
            return outcome_for(exc, params=params, schedule=schedule, backoff=backoff, resource=env.resource,
                               plan_retry=min(schedule, self.settings.plan_error_retry), spec=spec,
                               statement=failed.of(exc), lock_retry=self.settings.lock_wait_retry)

    async def cleanup(self, handler: KindHandler[Any], spec: CommonSpec, env: Surroundings) -> None:
        """deletionPolicy: Delete. Raises on failure: the caller retries."""
        if handler.cleanup is None:
            return
        params = await env.params(spec)
        try:
            async with self.table_lock(params, handler.table_of(spec)), \
                    self.pools.connection(params, spec.timeouts) as conn:
                if self.prepare is not None and handler.metadata_first:
                    await self.prepare(conn)
                await handler.cleanup(self.context(conn, env, params, spec), spec)
        except CONNECTION_LOST as exc:
            # As in reconcile: a session lost mid-cleanup is the database's state, not a bug.
            raise describe_connect_error(params, exc) from None


def outcome_for(exc: Exception, *, params: ConnParams | None, schedule: float, backoff: Backoff,
                resource: str, plan_retry: float, spec: CommonSpec | None = None,
                statement: Any | None = None, lock_retry: float = 15.0) -> Outcome:
    """The one mapping from what a run raised to what the status says and when to try again."""
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == LOCK_NOT_AVAILABLE:
        # a read or check outside run_plan (which retries its own steps) met another session's lock
        limit = f" ({spec.timeouts.lock_timeout})" if spec is not None else ""
        return Outcome.progressing(
            "WaitingForLock",
            f"another session holds a lock this run needs; waited lockTimeout{limit} while running "
            f"{describe_statement(statement)}; retrying",
            requeue_after=lock_retry,
        )
    if isinstance(exc, asyncpg.QueryCanceledError):
        return _canceled(exc, spec, statement, schedule, backoff)
    if isinstance(exc, LockBusy):
        return Outcome.progressing(exc.reason, exc.message, requeue_after=lock_retry)
    if isinstance(exc, PlanError):
        return Outcome.degraded(exc.reason, exc.message, requeue_after=plan_retry)
    if isinstance(exc, CuratorError):
        delay = backoff.failure()
        return Outcome.degraded(exc.reason, exc.message, requeue_after=delay if exc.transient else schedule)
    if isinstance(exc, CONNECTION_LOST):
        delay = backoff.failure()
        err = (describe_connect_error(params, exc) if params is not None
               else ApiUnavailable(f"cannot reach the Kubernetes API to read the Secret: {exc}"))
        return Outcome.degraded(err.reason, err.message, requeue_after=delay)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        # a GRANT fixes it: said plainly, retried with backoff, no traceback
        who = f"role {params.user}" if params is not None else "the operator's role"
        return Outcome.degraded("InsufficientPrivilege", f"{who} lacks a privilege: {exc}",
                                requeue_after=backoff.failure())
    # a bug or an unexpected server answer: report it, keep the worker alive
    log.error("reconcile of %s failed unexpectedly", resource, exc_info=exc)
    return Outcome.degraded("InternalError", f"{type(exc).__name__}: {exc}", requeue_after=backoff.failure())


def _canceled(exc: asyncpg.QueryCanceledError, spec: CommonSpec | None, statement: Any | None, schedule: float,
              backoff: Backoff) -> Outcome:
    """57014: statement_timeout expired, or someone cancelled the statement (pg_cancel_backend).
    Told apart by how long the statement ran, never by the (localised) server message."""
    what = describe_statement(statement)
    limit = parse_duration(spec.timeouts.statement_timeout) if spec is not None else None
    if statement is not None and limit is not None and statement.elapsed < TIMEOUT_MARGIN * limit:
        return Outcome.degraded("QueryCanceled", f"another session cancelled {what}; retrying",
                                requeue_after=backoff.failure())
    shown = f" ({spec.timeouts.statement_timeout})" if spec is not None else ""
    # Retrying sooner than the schedule would just run the same long statement again.
    return Outcome.degraded(
        "StatementTimeout",
        f"{what} ran longer than statementTimeout{shown} and was cancelled: {exc}; raise "
        "spec.timeouts.statementTimeout or make the work smaller",
        requeue_after=schedule,
    )
