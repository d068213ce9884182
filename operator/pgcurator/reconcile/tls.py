"""Reconcile one DbTlsCert: the server serves the Secret's certificate, verified over the wire.

Order of a run: (owned) keep the cert-manager Certificate in line -> read the Secret ->
validate it (nothing invalid is ever delivered) -> ask the server what it serves (SSLRequest
handshake) -> when they differ: check privileges, get the files onto the server (mount:
wait until the kubelet has updated them; sql: write them under new names), ALTER SYSTEM,
pg_reload_conf() -> verify over the wire; sql mode rolls the settings back if the server
did not take the new files.
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

from ..catalog.tls import observe_privileges, observe_settings, read_server_file
from ..db.executor import ADVISORY_CLASS, OPERATOR_ID, apply_session_limits, table_lock_key
from ..db.metadata import HISTORY_INSERT, ensure_metadata, ensure_metadata_schema
from ..errors import ConnectionFailed, CuratorError, LockBusy
from ..models.common import parse_duration
from ..models.tls import DbTlsCertSpec, DeliveryMode, IssuerKind
from ..planner import tls as planner
from ..sql.statements import Plan, Step
from ..tls.handshake import HandshakeError, fetch_served_certificate
from ..tls.validate import CA_KEY, CERT_KEY, CertInfo, Material, info_of_der, leaf_of_pem, validate_secret
from .context import ReconcileContext
from .outcome import Condition, Event, Outcome

CM_GROUP, CM_VERSION = "cert-manager.io", "v1"
WAIT_FILES_SECONDS = 2.0
VERIFY_SECONDS = 10.0
# Serialises TLS changes to one server across operator replicas (advisory lock in the target db).
LOCK_SCHEMA, LOCK_NAME = "pgcurator", "server-tls"


@dataclass
class _Pending:
    fingerprint: str
    since: float  # wall-clock seconds when the operator first saw this certificate in the Secret


# Per resource uid: when a new certificate was first seen, so delivery time survives requeues.
_PENDING: dict[str, _Pending] = {}


def _iso(t: datetime | float) -> str:
    if isinstance(t, float):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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


async def _ensure_certificate(ctx: ReconcileContext, spec: DbTlsCertSpec) -> dict[str, Any]:
    """Create or correct the owned Certificate; return its readiness for the status."""
    assert spec.certificate is not None and ctx.kube is not None
    ref = spec.certificate.issuer_ref
    if ref.group == CM_GROUP:
        cluster = ref.kind is IssuerKind.ClusterIssuer
        issuer = await ctx.kube.get_object(CM_GROUP, CM_VERSION, "clusterissuers" if cluster else "issuers",
                                           ref.name, None if cluster else ctx.namespace)
        if issuer is None:
            where = "" if cluster else f" in namespace {ctx.namespace}"
            raise CuratorError(f"{ref.kind.value} {ref.name!r} not found{where}: create it or fix "
                               "certificate.issuerRef", reason="IssuerNotFound")
    name = spec.certificate.name or ctx.name
    desired = planner.certificate_manifest(spec, name, ctx.namespace, ctx.body)
    existing = await ctx.kube.get_object(CM_GROUP, CM_VERSION, "certificates", name, ctx.namespace)
    if existing is None:
        existing = await ctx.kube.create_object(CM_GROUP, CM_VERSION, "certificates", ctx.namespace, desired)
        await ctx.event(Event("Normal", "CertificateCreated", f"created cert-manager Certificate {name}"))
    else:
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == ctx.body["metadata"].get("uid") for o in owners):
            raise CuratorError(f"Certificate {name} exists and is not owned by this DbTlsCert: refusing to take it "
                               "over; rename certificate.name or use secretName to follow its Secret",
                               reason="CertificateNotOwned")
        patch = planner.certificate_drift(existing.get("spec") or {}, desired["spec"])
        if patch:
            existing = await ctx.kube.patch_object(CM_GROUP, CM_VERSION, "certificates", ctx.namespace, name,
                                                   {"spec": patch})
            await ctx.event(Event("Normal", "CertificateUpdated",
                                  f"brought Certificate {name} in line: {', '.join(sorted(patch))}"))
    cstatus = existing.get("status") or {}
    ready: dict[str, Any] = next((c for c in cstatus.get("conditions") or [] if c.get("type") == "Ready"), {})
    return {
        "name": name,
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "message": str(ready.get("message", ""))[:500],
        "notAfter": cstatus.get("notAfter"),
        "renewalTime": cstatus.get("renewalTime"),
        "revision": cstatus.get("revision"),
    }


def _serving(match: bool, reason: str, message: str) -> Condition:
    return Condition("Serving", match, reason, message)


def _expiry(ctx: ReconcileContext, spec: DbTlsCertSpec, served: CertInfo | None,
            now: datetime) -> tuple[Condition, Event | None]:
    """Whatever cert-manager says: the served certificate is what clients see."""
    if served is None:
        return Condition("Expiring", False, "NothingServed", "no certificate observed"), None
    left = (served.not_after - now).total_seconds()
    window = parse_duration(spec.expiry_warning)
    if left > window:
        return Condition("Expiring", False, "NotExpiring", f"served certificate valid until {_iso(served.not_after)}"), None
    msg = (f"the served certificate (serial {served.serial}) expires at {_iso(served.not_after)}, within "
           f"expiryWarning {spec.expiry_warning}")
    if left <= 0:
        msg = f"the served certificate (serial {served.serial}) EXPIRED at {_iso(served.not_after)}"
    event = None if _previous_condition(ctx.body, "Expiring") == "True" else Event("Warning", "CertificateExpiring", msg)
    return Condition("Expiring", True, "ExpiresSoon" if left > 0 else "Expired", msg), event


async def _run(conn: Any, plan: Plan, contents: dict[str, str], resource: str, spec: DbTlsCertSpec) -> str | None:
    """Run the steps in order, stop at the first failure; history rows show statements, never PEM text.
    Returns the error of the failed step, or None."""
    await ensure_metadata_schema(conn)
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
            (resource, step.kind, step.target, sql, started, ms, "error" if error else "ok", error, OPERATOR_ID)
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


async def reconcile_db_tls_cert(ctx: ReconcileContext, spec: DbTlsCertSpec) -> Outcome:
    await ensure_metadata(ctx.conn)
    now = datetime.now(UTC)
    uid = str(ctx.body.get("metadata", {}).get("uid", ctx.resource))
    interval = parse_duration(spec.check_interval)
    host, port = spec.verify.host or ctx.params.host, spec.verify.port or ctx.params.port
    status: dict[str, Any] = {"secretName": spec.tls_secret_name, "deliveryMode": spec.delivery.mode.value,
                              "verifiedAt": f"{host}:{port}"}
    prev_status = ctx.body.get("status") or {}
    for key in ("lastRotationTime", "deliverySeconds"):
        if key in prev_status:
            status[key] = prev_status[key]

    if spec.certificate is not None:
        status["certificate"] = await _ensure_certificate(ctx, spec)

    served, tls_version, handshake_error = await _observe_served(host, port)
    if served is not None:
        status["served"] = {**served.as_status(), "tlsVersion": tls_version}
        status["servedFingerprint"], status["servedSerial"] = served.fingerprint, served.serial
        status["notAfter"] = _iso(served.not_after)
    expiring, expiry_event = _expiry(ctx, spec, served, now)
    if expiry_event is not None:
        await ctx.event(expiry_event)

    def finish(outcome: Outcome, serving: Condition) -> Outcome:
        outcome.conditions += [serving, expiring]
        return outcome

    assert ctx.kube is not None
    raw = await ctx.kube.read_secret(ctx.namespace, spec.tls_secret_name)
    if raw is None:
        msg = f"Secret {ctx.namespace}/{spec.tls_secret_name} does not exist"
        if spec.certificate is not None:
            cert = status["certificate"]
            return finish(Outcome.progressing("WaitingForCertificate", f"{msg} yet: cert-manager has not issued "
                                              f"Certificate {cert['name']} ({cert['reason'] or 'pending'})",
                                              status, requeue_after=min(interval, 5)),
                          _serving(False, "NoSecret", msg))
        return finish(Outcome.degraded("SecretNotFound", msg, status, requeue_after=interval),
                      _serving(False, "NoSecret", msg))

    validation = validate_secret(_decode_secret(raw), dns_names=spec.dns_names, ip_addresses=spec.ip_addresses,
                                 now=now)
    if validation.leaf is not None:
        status["secret"] = validation.leaf.as_status()
        status["secretFingerprint"], status["serial"] = validation.leaf.fingerprint, validation.leaf.serial
        status["notBefore"] = _iso(validation.leaf.not_before)
    if not validation.ok or validation.material is None:
        first = validation.problems[0]
        kept = f"the server keeps serving serial {served.serial}" if served else "nothing was delivered"
        msg = (f"Secret {ctx.namespace}/{spec.tls_secret_name} was not delivered: {validation.summary()}; {kept}")
        if spec.delivery.mode is DeliveryMode.mount:
            msg += ("; the kubelet still projects these files into the pod and PostgreSQL would refuse to start "
                    "with them: fix the Secret before the server restarts")
        _PENDING.pop(uid, None)
        return finish(Outcome.degraded(first.reason, msg, status, requeue_after=interval),
                      _serving(False, "SecretInvalid", msg))
    material = validation.material
    fp = material.leaf.fingerprint

    async with _server_lock(ctx.conn):
        settings = await observe_settings(ctx.conn)
        files = _files(spec, material)
        desired = planner.desired_settings(spec, files)
        changes = planner.changed_settings(settings, desired)
        match = served is not None and served.fingerprint == fp
        if match and not changes:
            _PENDING.pop(uid, None)
            msg = f"serving serial {material.leaf.serial} from Secret {spec.tls_secret_name}, valid until " \
                  f"{_iso(material.leaf.not_after)}"
            return finish(_requeue(Outcome.ready("Serving", msg, status), interval),
                          _serving(True, "Match", msg))

        if not match:
            pending = _PENDING.get(uid)
            if pending is None or pending.fingerprint != fp:
                pending = _PENDING[uid] = _Pending(fp, time.time())
            status["pendingSince"] = _iso(pending.since)
        mismatch = ("server serves " + (f"serial {served.serial}" if served else
                    f"nothing ({handshake_error.message if handshake_error else 'no answer'})")
                    + f", the Secret holds serial {material.leaf.serial}")

        # Files are (re)placed whenever the settings are to point at them: never at a file we did not check.
        need_files = not match or any(k in changes for k in ("ssl_cert_file", "ssl_key_file", "ssl_ca_file"))
        write = _writes(spec, files, material) if need_files else {}
        plan = planner.delivery_plan(spec, settings, files, write)
        if spec.dry_run or spec.suspend:
            status["plan"] = [f"-- {s.description}" if s.kind == "write_file" else s.statements[0]
                              for s in plan.steps]
            reason = "DryRun" if spec.dry_run else "Suspended"
            return finish(Outcome.progressing(reason, f"{reason}: {mismatch}; {len(plan.steps)} steps planned "
                                              "(status.plan), none run", status, requeue_after=interval),
                          _serving(match, "Match" if match else "Mismatch", mismatch))
        status["plan"] = []

        privs = await observe_privileges(ctx.conn)
        missing = planner.missing_privileges(spec, privs, list(changes) or list(desired))
        if missing:
            msg = (f"role {ctx.params.user} lacks what {spec.delivery.mode.value} mode needs; nothing was written: "
                   + "; ".join(missing))
            return finish(Outcome.degraded("InsufficientPrivilege", msg, status, requeue_after=interval),
                          _serving(match, "Match" if match else "Mismatch", mismatch))

        elapsed = time.time() - _PENDING[uid].since if uid in _PENDING else 0.0
        timeout = parse_duration(spec.delivery.timeout)
        if spec.delivery.mode is DeliveryMode.mount and need_files:
            on_disk = await read_server_file(ctx.conn, files.cert)
            disk_fp = _fingerprint_of(on_disk)
            if disk_fp != fp:
                seen = "is missing" if on_disk is None else "still holds another certificate"
                msg = f"{mismatch}; {files.cert} on the server {seen} (the kubelet updates mounted Secrets " \
                      f"with a delay), waited {elapsed:.0f}s"
                if elapsed > timeout:
                    return finish(Outcome.degraded("DeliveryTimedOut", msg + f", more than delivery.timeout "
                                                   f"{spec.delivery.timeout}", status, requeue_after=WAIT_FILES_SECONDS),
                                  _serving(False, "Mismatch", msg))
                return finish(Outcome.progressing("WaitingForFiles", msg, status, requeue_after=WAIT_FILES_SECONDS),
                              _serving(False, "Mismatch", msg))

        error = await _run(ctx.conn, plan, {p: _content(material, src) for p, src in write.items()},
                           ctx.resource, spec)
        if error is not None:
            msg = f"delivery failed at {error}; the server keeps serving what it served"
            return finish(Outcome.degraded("DeliveryFailed", msg, status, requeue_after=interval),
                          _serving(match, "Match" if match else "Mismatch", mismatch))

        now_served = await _wait_served(host, port, fp, VERIFY_SECONDS)
        if now_served is None or now_served.fingerprint != fp:
            msg = f"after pg_reload_conf() the server still does not serve serial {material.leaf.serial}"
            if spec.delivery.mode is DeliveryMode.sql:
                await _run(ctx.conn, planner.rollback_plan(settings, desired), {}, ctx.resource, spec)
                msg += "; the settings were rolled back to the previous files (see the server log for why)"
            else:
                msg += (f"; check the server log: PostgreSQL takes {files.key} only when it is mode 0600 and owned "
                        "by the server's user, or 0640 and owned by root (set the volume's defaultMode and fsGroup)")
            degraded = Outcome.degraded("NotServing", msg, status,
                                        requeue_after=WAIT_FILES_SECONDS if elapsed <= timeout else interval)
            return finish(degraded, _serving(False, "Mismatch", msg))

        if spec.delivery.mode is DeliveryMode.sql:
            keep = [files.cert, files.key, *([files.ca] if files.ca else [])]
            prev_files = [settings.get("ssl_cert_file"), settings.get("ssl_key_file"), settings.get("ssl_ca_file")]
            keep += [f for f in prev_files if f.startswith(spec.delivery.sql.directory + "/")]
            await _run(ctx.conn, Plan([Step("cleanup_files", spec.delivery.sql.directory,
                                             (planner.cleanup_statement(spec.delivery.sql.directory, keep),))]),
                       {}, ctx.resource, spec)

    status["served"] = {**now_served.as_status(), "tlsVersion": status.get("served", {}).get("tlsVersion", "")}
    status["servedFingerprint"], status["servedSerial"] = now_served.fingerprint, now_served.serial
    status["notAfter"] = _iso(now_served.not_after)
    expiring, expiry_event = _expiry(ctx, spec, now_served, now)
    if expiry_event is not None:
        await ctx.event(expiry_event)
    if not match:
        pending = _PENDING.pop(uid, None)
        took = time.time() - pending.since if pending else 0.0
        status["lastRotationTime"] = _iso(time.time())
        status["deliverySeconds"] = round(took, 3)
        status.pop("pendingSince", None)
        await ctx.event(Event("Normal", "CertificateRotated",
                              f"now serving serial {material.leaf.serial} (was "
                              f"{served.serial if served else 'none'}); delivered in {took:.1f}s by "
                              f"{spec.delivery.mode.value}, then pg_reload_conf()"))
        msg = f"rotated to serial {material.leaf.serial} in {took:.1f}s; valid until {_iso(material.leaf.not_after)}"
        return finish(_requeue(Outcome.ready("Rotated", msg, status), interval), _serving(True, "Match", msg))
    msg = f"settings brought in line ({', '.join(changes)}); serving serial {material.leaf.serial}"
    return finish(_requeue(Outcome.ready("SettingsApplied", msg, status), interval), _serving(True, "Match", msg))


def _requeue(outcome: Outcome, seconds: float) -> Outcome:
    outcome.requeue_after = seconds
    return outcome


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


def _writes(spec: DbTlsCertSpec, files: planner.FileSet, material: Material) -> dict[str, str]:
    """sql mode: path -> Secret key it holds (the key file first, so the certificate never names a missing key)."""
    if spec.delivery.mode is not DeliveryMode.sql:
        return {}
    out = {files.key: "tls.key", files.cert: CERT_KEY}
    if files.ca is not None:
        out[files.ca] = CA_KEY
    return out


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
