"""`pgcurator apply` and `pgcurator plan`: the reconcile of one resource without Kubernetes.

They run the operator's own `Engine.reconcile` (the code path of every Worker); only the
surroundings differ: the connection comes from --database-url instead of a Secret, Events and
progress go to stdout, and there is no status to patch. `plan` is the same run with dryRun
forced on, so it prints exactly what the reconcile would run, and holds back what it holds back."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pydantic
import yaml

from .backoff import Backoff
from .db.metadata import ensure_metadata
from .db.params import ConnParams, params_from_url
from .db.pools import PoolRegistry
from .engine import Engine, KindHandler, Prepare, Surroundings, format_validation_error
from .errors import CuratorError
from .limits import INPUT_ECHO, STATUS_TEXT
from .models.common import CommonSpec
from .models.examples import eg
from .reconcile.outcome import Event, Outcome
from .settings import current as current_settings

# Kinds whose reconcile reads or writes Kubernetes objects (cert-manager Certificates, Secrets).
NEEDS_CLUSTER = {"DbTlsCert"}
# Progressing reasons that mean "more of the same work follows at once" (a conversion's slices):
# `apply` runs again instead of stopping half-way.
CONTINUES = {"Converting", "Converted"}
MAX_RUNS = 100_000  # a conversion of a very large table, in batches; a bound, not an expectation


class BadInput(Exception):
    """Exit code 2: the file, an argument or a spec cannot be used. One line, no traceback."""


@dataclass
class Resource:
    handler: KindHandler[Any]
    spec: CommonSpec
    namespace: str
    name: str
    body: dict[str, Any]

    @property
    def key(self) -> str:
        """The same key the operator uses (history rows, ownership): Kind/namespace/name."""
        return f"{self.handler.kind}/{self.namespace}/{self.name}"


def parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        now = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"--now {text[:INPUT_ECHO]!r} is not an ISO time such as 2026-11-22T10:00:00+00:00") from None
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def parse_url(url: str | None) -> ConnParams:
    if not url:
        raise BadInput("--database-url (or DATABASE_URL) is required, e.g. postgresql://user:password@host:5432/db")
    try:
        return params_from_url(url)
    except CuratorError:
        raise BadInput("--database-url is not a postgresql://user:password@host:port/dbname URL") from None


def load_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise BadInput(f"{path} is not valid YAML{where}: {exc.problem or exc}") from None
    except Exception as exc:  # the YAML library's other refusals (bad dates, nesting too deep...)
        raise BadInput(f"{path} is not valid YAML: {type(exc).__name__}: {str(exc)[:STATUS_TEXT]}") from None
    docs = [d for d in docs if d is not None]
    if not docs:
        raise BadInput(f"{path} holds no resource")
    for d in docs:
        if not isinstance(d, dict):
            raise BadInput(f"{path}: a document is a {type(d).__name__}, not a resource (kind, metadata, spec)")
    return docs


def resource_of(doc: dict[str, Any], handlers: list[KindHandler[Any]]) -> Resource:
    kind = doc.get("kind")
    by_kind = {h.kind: h for h in handlers}
    if not isinstance(kind, str) or kind not in by_kind:
        known = ", ".join(sorted(by_kind))
        raise BadInput(f"kind {str(kind)[:INPUT_ECHO]!r} is not one pgcurator serves ({known}), "
                       f"{eg('kind', sorted(by_kind)[0])}")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise BadInput(f"{kind}: metadata.name is missing, {eg('metadata', {'name': 'event-logs'})}")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    namespace = namespace if isinstance(namespace, str) and namespace else "default"
    if kind in NEEDS_CLUSTER:
        raise BadInput(f"{kind}/{name}: {kind} needs a cluster (it reads Secrets and cert-manager objects); "
                       "run it with the operator")
    handler = by_kind[kind]
    spec_body = doc.get("spec")
    try:
        spec = handler.model.model_validate(spec_body if spec_body is not None else {})
    except pydantic.ValidationError as exc:
        raise BadInput(f"{kind}/{name}: invalid: {format_validation_error(exc, handler.model)}") from None
    return Resource(handler, spec, namespace, name, doc)


def _progress_line(status: dict[str, Any]) -> str:
    conv = status.get("conversion")
    if isinstance(conv, dict) and "percent" in conv:
        bar = "#" * int(float(conv["percent"]) / 5)
        eta = f", about {conv['etaSeconds']} s left" if "etaSeconds" in conv else ""
        return (f"progress: [{bar:<20}] {conv['percent']}% {conv.get('phase', '')} "
                f"({conv.get('rowsCopied')}/{conv.get('rowsTotal')} rows{eta})")
    return "progress: " + json.dumps(status, default=str, sort_keys=True)[:STATUS_TEXT]


class Local:
    """One process running resources against one database, printing to `out`."""

    def __init__(self, params: ConnParams, out: TextIO, prepare: Prepare | None = ensure_metadata) -> None:
        self.params = params
        self.out = out
        self.engine = Engine(PoolRegistry(max_size=current_settings().pool_size), prepare)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self, res: Resource, *, now: datetime | None, dry_run: bool) -> Outcome:
        spec = res.spec.model_copy(update={"dry_run": True}) if dry_run else res.spec

        async def params(_: CommonSpec) -> ConnParams:
            return self.params

        async def emit(ev: Event) -> None:
            self.say(f"{ev.type}: {ev.reason}: {ev.message}")

        async def progress(status: dict[str, Any]) -> None:
            self.say(_progress_line(status))

        env = Surroundings(resource=res.key, namespace=res.namespace, name=res.name, body=res.body,
                           params=params, emit=None if dry_run else emit, progress=progress, now=now)
        backoff = Backoff(current_settings().retry_min, current_settings().retry_max)
        outcome = await self.engine.reconcile(res.handler, spec, env, backoff)
        runs = 1
        while not dry_run and _reason(outcome) in CONTINUES and runs < MAX_RUNS:
            for ev in outcome.events:
                await emit(ev)
            self.say(f"-- {res.key}: {_reason(outcome)}: {_message(outcome)}")
            outcome = await self.engine.reconcile(res.handler, spec, env, backoff)
            runs += 1
        return outcome

    async def close(self) -> None:
        await self.engine.pools.close()


def _reason(outcome: Outcome) -> str:
    ready = next((c for c in outcome.conditions if c.type == "Ready"), None)
    return ready.reason if ready else ""


def _message(outcome: Outcome) -> str:
    return next((c.message for c in outcome.conditions if c.status and c.message), "")


def is_ready(outcome: Outcome) -> bool:
    return any(c.type == "Ready" and c.status for c in outcome.conditions)


def is_degraded(outcome: Outcome) -> bool:
    return any(c.type == "Degraded" and c.status for c in outcome.conditions)


def print_plan(local: Local, res: Resource, outcome: Outcome) -> int:
    status = outcome.status
    statements = [str(s) for s in status.get("plan") or []]
    local.say(f"-- {res.key.split('/', 1)[0]}/{res.name}: {len(statements)} statements")
    for note in status.get("notes") or []:
        local.say(f"-- note: {note}")
    for blocked in status.get("blocked") or []:
        local.say(f"-- held back: {blocked}")
    if is_degraded(outcome):
        local.say(f"-- {_reason(outcome)}: {_message(outcome)}")
    for sql in statements:
        local.say(sql.rstrip().rstrip(";") + ";")
    return 1 if is_degraded(outcome) else 0


def print_result(local: Local, res: Resource, outcome: Outcome) -> int:
    for ev in outcome.events:
        local.say(f"{ev.type}: {ev.reason}: {ev.message}")
    for c in outcome.conditions:
        local.say(f"{res.key}: {c.type}={'True' if c.status else 'False'} {c.reason}"
                  + (f": {c.message}" if c.status and c.message else ""))
    return 0 if is_ready(outcome) else 1
