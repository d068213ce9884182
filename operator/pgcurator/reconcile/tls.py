"""Reconcile one DbTlsCert: the server serves the Secret's certificate, verified over the wire.

Order of a run: (owned) keep the cert-manager Certificate in line -> read the Secret ->
validate it (nothing invalid is ever delivered) -> ask the server what it serves (SSLRequest
handshake) -> when they differ: check privileges, get the files onto the server (mount:
wait until the kubelet has updated them; sql: write them under new names), ALTER SYSTEM,
pg_reload_conf() -> verify over the wire: the fingerprint, and a verify-full client's handshake
for each declared name; sql mode rolls the settings back if the server did not take the new
files. How a run ends, given what it observed, is decided in planner/tls.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..catalog.tls import TlsSettings, observe_privileges, observe_settings, read_server_file
from ..db.executor import ADVISORY_CLASS, apply_session_limits, operator_id, table_lock_key
from ..db.metadata import HISTORY_INSERT, ensure_metadata
from ..errors import ConnectionFailed, LockBusy
from ..models.common import parse_duration
from ..models.tls import DbTlsCertSpec, DeliveryMode
from ..planner import tls as planner
from ..sql.statements import Plan, Step
from ..timefmt import k8s_time
from ..tls.handshake import HandshakeError, fetch_served_certificate, verify_full
from ..tls.validate import CA_KEY, CertInfo, Material, info_of_der, leaf_of_pem, validate_secret
from .context import ReconcileContext
from .outcome import Condition, Event, Outcome
from .tls_certificate import ensure_certificate

VERIFY_SECONDS = 10.0
# Serialises TLS changes to one server across operator replicas (advisory lock in the target db).
LOCK_SCHEMA, LOCK_NAME = "pgcurator", "server-tls"


@dataclass
class _Pending:
    fingerprint: str
    since: float  # wall-clock seconds when the operator first saw this certificate in the Secret


# Per resource uid: when a new certificate was first seen, so delivery time survives requeues.
_PENDING: dict[str, _Pending] = {}


def _decode_secret(raw: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for k, v in raw.items():
        try:
            out[k] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            out[k] = b""
    return out


def _previous_condition(body: dict[str, Any], type_: str) -> str | None:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


async def _observe_served(host: str, port: int) -> tuple[CertInfo | None, str, HandshakeError | None]:
    try:
        served = await fetch_served_certificate(host, port)
    except HandshakeError as exc:
        return None, "", exc
    return info_of_der(served.der), served.tls_version, None


def _expiry(ctx: ReconcileContext, spec: DbTlsCertSpec, served: CertInfo | None,
            now: datetime) -> tuple[Condition, Event | None]:
    """Whatever cert-manager says: the served certificate is what clients see."""
    if served is None:
        return Condition("Expiring", False, "NothingServed", "no certificate observed"), None
    left = (served.not_after - now).total_seconds()
    window = parse_duration(spec.expiry_warning)
    if left > window:
        return Condition("Expiring", False, "NotExpiring", f"served certificate valid until {k8s_time(served.not_after)}"), None
    msg = (f"the served certificate (serial {served.serial}) expires at {k8s_time(served.not_after)}, within "
           f"expiryWarning {spec.expiry_warning}")
    if left <= 0:
        msg = f"the served certificate (serial {served.serial}) EXPIRED at {k8s_time(served.not_after)}"
    event = None if _previous_condition(ctx.body, "Expiring") == "True" else Event("Warning", "CertificateExpiring", msg)
    return Condition("Expiring", True, "ExpiresSoon" if left > 0 else "Expired", msg), event


async def _run(conn: Any, plan: Plan, contents: dict[str, str], resource: str, spec: DbTlsCertSpec) -> str | None:
    """Run the steps in order, stop at the first failure; history rows show statements, never PEM text.
    Returns the error of the failed step, or None."""
    # Here, not at the start of the run: the first thing a role lacking the TLS privileges hears
    # should be which privilege, not that it also cannot use the metadata schema.
    await ensure_metadata(conn)
    await apply_session_limits(conn, spec.timeouts)
    for step in plan.steps:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        error = None
        try:
            await _run_step(conn, step, contents)
        except asyncpg.PostgresError as exc:
            error = f"{exc.sqlstate}: {exc}"
        except (asyncpg.InterfaceError, OSError) as exc:
            raise ConnectionFailed(f"connection lost during {step.kind} {step.target}: {exc}") from None
        ms = (time.perf_counter() - t0) * 1000
        await conn.executemany(HISTORY_INSERT, [
            (resource, step.kind, step.target, sql, started, ms, "error" if error else "ok", error, operator_id())
            for sql in step.statements
        ])
        if error is not None:
            return f"{step.kind} {step.target}: {error}"
    return None


async def _run_step(conn: Any, step: Step, contents: dict[str, str]) -> None:
    if step.kind == "write_file":
        async with conn.transaction():
            # transaction-local: gone at commit, never in a statement's text
            await conn.execute("SELECT set_config($1, $2, true)", planner.PEM_SETTING,
                               contents[step.target].rstrip("\n"))
            for sql in step.statements:
                await conn.execute(sql)
        return
    for sql in step.statements:
        await conn.execute(sql)


async def _wait_served(host: str, port: int, fingerprint: str, within: float) -> CertInfo | None:
    """Poll the handshake until the server presents `fingerprint` (a reload is asynchronous)."""
    deadline = time.monotonic() + within
    last = None
    while True:
        last, _, _ = await _observe_served(host, port)
        if last is not None and last.fingerprint == fingerprint:
            return last
        if time.monotonic() > deadline:
            return last
        await asyncio.sleep(0.05)


class _Run:
    """One reconcile's state: the status being built, the served certificate, the Expiring condition."""

    def __init__(self, ctx: ReconcileContext, spec: DbTlsCertSpec) -> None:
        self.ctx, self.spec, self.now = ctx, spec, datetime.now(UTC)
        self.uid = str(ctx.body.get("metadata", {}).get("uid", ctx.resource))
        self.interval = parse_duration(spec.check_interval)
        self.host, self.port = spec.verify.host or ctx.params.host, spec.verify.port or ctx.params.port
        self.status: dict[str, Any] = {"secretName": spec.tls_secret_name, "deliveryMode": spec.delivery.mode.value,
                                       "verifiedAt": f"{self.host}:{self.port}"}
        prev = ctx.body.get("status") or {}
        self.status.update({k: prev[k] for k in ("lastRotationTime", "deliverySeconds") if k in prev})
        self.served: CertInfo | None = None
        self.handshake_error: HandshakeError | None = None
        self.expiring = Condition("Expiring", False, "NothingServed", "no certificate observed")

    async def observe_served(self) -> None:
        self.served, tls_version, self.handshake_error = await _observe_served(self.host, self.port)
        await self.record_served(self.served, tls_version)

    async def record_served(self, served: CertInfo | None, tls_version: str) -> None:
        if served is not None:
            self.status["served"] = {**served.as_status(), "tlsVersion": tls_version}
            self.status["servedFingerprint"], self.status["servedSerial"] = served.fingerprint, served.serial
            self.status["notAfter"] = k8s_time(served.not_after)
        self.expiring, event = _expiry(self.ctx, self.spec, served, self.now)
        if event is not None:
            await self.ctx.event(event)

    def record_secret(self, leaf: CertInfo) -> None:
        self.status["secret"] = leaf.as_status()
        self.status["secretFingerprint"], self.status["serial"] = leaf.fingerprint, leaf.serial
        self.status["notBefore"] = k8s_time(leaf.not_before)

    def pending_since(self, fingerprint: str) -> float:
        """When the operator first saw this certificate in the Secret (survives requeues)."""
        pending = _PENDING.get(self.uid)
        if pending is None or pending.fingerprint != fingerprint:
            pending = _PENDING[self.uid] = _Pending(fingerprint, time.time())
        self.status["pendingSince"] = k8s_time(pending.since)
        return pending.since

    def finish(self, d: planner.Decision) -> Outcome:
        build = {"ready": Outcome.ready, "progressing": Outcome.progressing, "degraded": Outcome.degraded}[d.state]
        outcome = build(d.reason, d.message, self.status)
        outcome.requeue_after = d.requeue_after if d.requeue_after is not None else self.interval
        outcome.conditions += [Condition("Serving", d.serving, d.serving_reason, d.message), self.expiring]
        return outcome


async def reconcile_db_tls_cert(ctx: ReconcileContext, spec: DbTlsCertSpec) -> Outcome:
    run = _Run(ctx, spec)
    if spec.certificate is not None:
        run.status["certificate"] = await ensure_certificate(ctx, spec)
    await run.observe_served()
    assert ctx.kube is not None
    raw = await ctx.kube.read_secret(ctx.namespace, spec.tls_secret_name)
    if raw is None:
        return run.finish(planner.no_secret(spec, ctx.namespace, run.status.get("certificate"), run.interval))
    validation = validate_secret(_decode_secret(raw), dns_names=spec.dns_names, ip_addresses=spec.ip_addresses,
                                 now=run.now)
    if validation.leaf is not None:
        run.record_secret(validation.leaf)
    if validation.material is None:
        _PENDING.pop(run.uid, None)
        return run.finish(planner.not_deliverable(spec, ctx.namespace, validation.problems[0].reason,
                                                  validation.summary(), run.served.serial if run.served else None))
    async with _server_lock(ctx.conn):
        return await _deliver(run, validation.material)


async def _deliver(run: _Run, material: Material) -> Outcome:
    """Under the server lock: compare, and when the server does not serve the Secret, deliver and verify."""
    ctx, spec = run.ctx, run.spec
    settings = await observe_settings(ctx.conn)
    files = _files(spec, material)
    match = run.served is not None and run.served.fingerprint == material.leaf.fingerprint
    seen = planner.Observed(
        material.leaf.serial, material.leaf.fingerprint, run.served.serial if run.served else None,
        run.served.fingerprint if run.served else None,
        run.handshake_error.message if run.handshake_error else None,
        # Serving means a verify-full client accepts it, not only that the fingerprint matches
        await _client_refusals(run.host, run.port, spec, material) if match else None)
    delivery = planner.plan_delivery(spec, settings, files, seen)
    if delivery is None:
        _PENDING.pop(run.uid, None)
        return run.finish(planner.in_line(spec, seen, k8s_time(material.leaf.not_after)))
    since = run.pending_since(material.leaf.fingerprint) if not seen.match else time.time()
    held = planner.held_back(spec, delivery, seen)
    run.status["plan"] = planner.plan_listing(delivery.plan) if held else []
    if held is not None:
        return run.finish(held)
    missing = planner.missing_privileges(spec, await observe_privileges(ctx.conn),
                                         list(delivery.changes) or list(delivery.desired))
    if missing:
        return run.finish(planner.lacking_privileges(spec, ctx.params.user, missing, seen))
    elapsed = time.time() - since
    if spec.delivery.mode is DeliveryMode.mount and delivery.need_files:
        on_disk = await read_server_file(ctx.conn, files.cert)
        pending = planner.mounted_files_pending(spec, files.cert, _fingerprint_of(on_disk), on_disk is None, seen,
                                                elapsed)
        if pending is not None:
            return run.finish(pending)
    error = await _run(ctx.conn, delivery.plan, {p: _content(material, k) for p, k in delivery.write.items()},
                       ctx.resource, spec)
    if error is not None:
        return run.finish(planner.delivery_failed(error, seen))
    return await _verify_delivery(run, material, seen, delivery, settings, since)


async def _verify_delivery(run: _Run, material: Material, seen: planner.Observed, delivery: planner.Delivery,
                           previous: TlsSettings, since: float) -> Outcome:
    """After the reload: the new certificate is served and verify-full clients accept it, or we say why not."""
    ctx, spec = run.ctx, run.spec
    now_served = await _wait_served(run.host, run.port, material.leaf.fingerprint, VERIFY_SECONDS)
    if now_served is None or now_served.fingerprint != material.leaf.fingerprint:
        if spec.delivery.mode is DeliveryMode.sql:
            await _run(ctx.conn, planner.rollback_plan(previous, delivery.desired), {}, ctx.resource, spec)
        return run.finish(planner.not_serving(spec, delivery.files, seen, time.time() - since))
    refused = await _client_refusals(run.host, run.port, spec, material)
    if refused is not None:
        return run.finish(planner.client_refused(seen, refused))
    if spec.delivery.mode is DeliveryMode.sql:
        directory = spec.delivery.sql.directory
        keep = planner.cleanup_keep(spec, delivery.files, previous)
        await _run(ctx.conn, Plan([Step("cleanup_files", directory, (planner.cleanup_statement(directory, keep),))]),
                   {}, ctx.resource, spec)
    await run.record_served(now_served, run.status.get("served", {}).get("tlsVersion", ""))
    took = time.time() - since
    if not seen.match:
        _PENDING.pop(run.uid, None)
        run.status["lastRotationTime"] = k8s_time(time.time())
        run.status["deliverySeconds"] = round(took, 3)
        run.status.pop("pendingSince", None)
        await ctx.event(Event("Normal", "CertificateRotated",
                              f"now serving serial {seen.serial} (was {seen.served_serial or 'none'}); delivered in "
                              f"{took:.1f}s by {spec.delivery.mode.value}, then pg_reload_conf()"))
    return run.finish(planner.delivered(spec, seen, delivery, took, k8s_time(material.leaf.not_after)))


def _check_names(spec: DbTlsCertSpec, material: Material) -> list[str]:
    """The names a client connects with: the declared ones, else the certificate's first name."""
    declared = [*spec.dns_names, *spec.ip_addresses]
    return declared or [*material.leaf.dns_names, *material.leaf.ip_addresses][:1]


async def _client_refusals(host: str, port: int, spec: DbTlsCertSpec, material: Material) -> str | None:
    """None when a verify-full client (sslrootcert = the Secret's ca.crt) accepts every name; else why not."""
    try:
        refusals = await verify_full(host, port, _check_names(spec, material), material.ca_pem)
    except HandshakeError as exc:
        return exc.message
    if not refusals:
        return None
    return "; ".join(f"for {r.name}: {r.message}" for r in refusals)


class _server_lock:
    """One TLS change per server at a time, across operator replicas."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.key = table_lock_key(LOCK_SCHEMA, LOCK_NAME)

    async def __aenter__(self) -> None:
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", ADVISORY_CLASS, self.key):
            raise LockBusy("another pgcurator run is changing this server's TLS settings; retrying shortly")

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.conn.execute("SELECT pg_advisory_unlock($1::int, $2::int)", ADVISORY_CLASS, self.key)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass


def _files(spec: DbTlsCertSpec, material: Material) -> planner.FileSet:
    if spec.delivery.mode is DeliveryMode.mount:
        return planner.mount_file_set(spec)
    return planner.sql_file_set(spec.delivery.sql.directory, material.leaf.fingerprint, material.ca_pem is not None)


def _content(material: Material, source: str) -> str:
    if source == "tls.key":
        return material.key_pem
    if source == CA_KEY:
        return material.ca_pem or ""
    return material.cert_pem


def _fingerprint_of(data: bytes | None) -> str | None:
    if not data:
        return None
    try:
        return leaf_of_pem(data).fingerprint
    except ValueError:
        return None


async def cleanup_db_tls_cert(ctx: ReconcileContext, spec: DbTlsCertSpec) -> None:
    """deletionPolicy: Delete removes nothing from the server: the server must keep a certificate to start."""
    _PENDING.pop(str(ctx.body.get("metadata", {}).get("uid", "")), None)


__all__ = ["cleanup_db_tls_cert", "reconcile_db_tls_cert"]
