"""DbTlsCert plans and decisions: which files to write, which settings to change, which privileges
that takes, and how a run ends given what it observed.

Pure functions. Statements never contain key material: the PEM text of a file travels as a
bind parameter into a transaction-local setting (`pgcurator.tls_pem`) which the COPY reads,
so history rows, status.plan and Events only ever show file names.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from ..catalog.tls import TlsPrivileges, TlsSettings
from ..models.common import parse_duration
from ..models.tls import DbTlsCertSpec, DeliveryMode
from ..sql.quote import literal
from ..sql.statements import Plan, Step

PEM_SETTING = "pgcurator.tls_pem"
RELOAD = "SELECT pg_reload_conf()"
FILE_PREFIX = "tls-"
# Hex digits of the certificate's fingerprint in its file names: unique per certificate, short to read.
FINGERPRINT_IN_NAME = 16


@dataclass(frozen=True)
class FileSet:
    cert: str
    key: str
    ca: str | None  # None: ssl_ca_file is left alone


@dataclass(frozen=True)
class Decision:
    """How a run ends: the resource's state, and whether the server serves the Secret (`Serving`)."""

    state: str  # "ready" | "progressing" | "degraded"
    reason: str
    message: str
    serving: bool
    serving_reason: str  # Match | Mismatch | ClientRefused | NoSecret | SecretInvalid
    requeue_after: float | None = None  # None: checkInterval


@dataclass(frozen=True)
class Observed:
    """The Secret's certificate against what the server presents, before anything is changed."""

    serial: str  # the Secret's leaf
    fingerprint: str
    served_serial: str | None  # None: nothing observed (see handshake_error)
    served_fingerprint: str | None
    handshake_error: str | None = None
    refused: str | None = None  # why a verify-full client refuses what is served; None: accepts / not asked

    @property
    def match(self) -> bool:
        return self.served_fingerprint == self.fingerprint

    @property
    def serving(self) -> bool:
        return self.match and self.refused is None

    @property
    def serving_reason(self) -> str:
        if not self.match:
            return "Mismatch"
        return "Match" if self.refused is None else "ClientRefused"

    def describe(self) -> str:
        if self.match and self.refused is not None:
            return f"the server serves serial {self.serial} but {self.refused}"
        served = (f"serial {self.served_serial}" if self.served_serial is not None
                  else f"nothing ({self.handshake_error or 'no answer'})")
        return f"server serves {served}, the Secret holds serial {self.serial}"


@dataclass(frozen=True)
class Delivery:
    files: FileSet
    desired: dict[str, str]
    changes: dict[str, str]
    write: dict[str, str]  # sql mode: path -> the Secret key it holds
    plan: Plan
    need_files: bool  # mount mode: wait until the kubelet has put the Secret's files in place


FILE_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file")


def plan_delivery(spec: DbTlsCertSpec, current: TlsSettings, files: FileSet, seen: Observed) -> Delivery | None:
    """What to run so the server serves the Secret; None when it already does and the settings are in line."""
    desired = desired_settings(spec, files)
    changes = changed_settings(current, desired)
    if seen.serving and not changes:
        return None
    # Files are (re)placed whenever the settings are to point at them: never at a file we did not check.
    need_files = not seen.serving or any(k in changes for k in FILE_SETTINGS)
    write = sql_writes(spec, files) if need_files else {}
    return Delivery(files, desired, changes, write, delivery_plan(spec, current, files, write), need_files)


def sql_writes(spec: DbTlsCertSpec, files: FileSet) -> dict[str, str]:
    """sql mode: path -> Secret key it holds (the key file first, so the certificate never names a missing key)."""
    if spec.delivery.mode is not DeliveryMode.sql:
        return {}
    out = {files.key: "tls.key", files.cert: "tls.crt"}
    if files.ca is not None:
        out[files.ca] = "ca.crt"
    return out


def plan_listing(plan: Plan) -> list[str]:
    """status.plan: statements, and for file writes only their description (never PEM text)."""
    return [f"-- {s.description}" if s.kind == "write_file" else s.statements[0] for s in plan.steps]


def no_secret(spec: DbTlsCertSpec, namespace: str, certificate: dict[str, Any] | None,
              interval: float) -> Decision:
    msg = f"Secret {namespace}/{spec.tls_secret_name} does not exist"
    if certificate is not None:
        return Decision("progressing", "WaitingForCertificate", f"{msg} yet: cert-manager has not issued Certificate "
                        f"{certificate['name']} ({certificate['reason'] or 'pending'})", False, "NoSecret",
                        min(interval, 5))
    return Decision("degraded", "SecretNotFound", msg, False, "NoSecret")


def not_deliverable(spec: DbTlsCertSpec, namespace: str, reason: str, summary: str,
                    served_serial: str | None) -> Decision:
    """The Secret failed validation: nothing reaches the server."""
    kept = f"the server keeps serving serial {served_serial}" if served_serial else "nothing was delivered"
    msg = f"Secret {namespace}/{spec.tls_secret_name} was not delivered: {summary}; {kept}"
    if spec.delivery.mode is DeliveryMode.mount:
        msg += ("; the kubelet still projects these files into the pod and PostgreSQL would refuse to start "
                "with them: fix the Secret before the server restarts")
    return Decision("degraded", reason, msg, False, "SecretInvalid")


def in_line(spec: DbTlsCertSpec, seen: Observed, not_after: str) -> Decision:
    msg = f"serving serial {seen.serial} from Secret {spec.tls_secret_name}, valid until {not_after}"
    return Decision("ready", "Serving", msg, True, "Match")


def held_back(spec: DbTlsCertSpec, delivery: Delivery, seen: Observed) -> Decision | None:
    """dryRun / suspend: the plan is shown, nothing runs."""
    if not (spec.dry_run or spec.suspend):
        return None
    reason = "DryRun" if spec.dry_run else "Suspended"
    return Decision("progressing", reason, f"{reason}: {seen.describe()}; {len(delivery.plan.steps)} steps planned "
                    "(status.plan), none run", seen.serving, seen.serving_reason)


def lacking_privileges(spec: DbTlsCertSpec, user: str, missing: list[str], seen: Observed) -> Decision:
    msg = (f"role {user} lacks what {spec.delivery.mode.value} mode needs; nothing was written: " + "; ".join(missing))
    return Decision("degraded", "InsufficientPrivilege", msg, seen.serving, seen.serving_reason)


WAIT_FILES_SECONDS = 2.0


def mounted_files_pending(spec: DbTlsCertSpec, cert_file: str, disk_fingerprint: str | None, missing: bool,
                          seen: Observed, elapsed: float) -> Decision | None:
    """mount mode: the kubelet has not yet put the Secret's certificate at `cert_file`."""
    if disk_fingerprint == seen.fingerprint:
        return None
    state = "is missing" if missing else "still holds another certificate"
    msg = (f"{seen.describe()}; {cert_file} on the server {state} (the kubelet updates mounted Secrets with a "
           f"delay), waited {elapsed:.0f}s")
    if elapsed > parse_duration(spec.delivery.timeout):
        return Decision("degraded", "DeliveryTimedOut", f"{msg}, more than delivery.timeout {spec.delivery.timeout}",
                        False, "Mismatch", WAIT_FILES_SECONDS)
    return Decision("progressing", "WaitingForFiles", msg, False, "Mismatch", WAIT_FILES_SECONDS)


def delivery_failed(error: str, seen: Observed) -> Decision:
    return Decision("degraded", "DeliveryFailed", f"delivery failed at {error}; the server keeps serving what it "
                    "served", seen.serving, seen.serving_reason)


def not_serving(spec: DbTlsCertSpec, files: FileSet, seen: Observed, elapsed: float) -> Decision:
    """The reload did not make the server present the new certificate."""
    msg = f"after pg_reload_conf() the server still does not serve serial {seen.serial}"
    if spec.delivery.mode is DeliveryMode.sql:
        msg += "; the settings were rolled back to the previous files (see the server log for why)"
    else:
        msg += (f"; check the server log: PostgreSQL takes {files.key} only when it is mode 0600 and owned "
                "by the server's user, or 0640 and owned by root (set the volume's defaultMode and fsGroup)")
    retry = WAIT_FILES_SECONDS if elapsed <= parse_duration(spec.delivery.timeout) else None
    return Decision("degraded", "NotServing", msg, False, "Mismatch", retry)


def client_refused(seen: Observed, refused: str) -> Decision:
    msg = f"the server serves serial {seen.serial} but {refused}"
    return Decision("degraded", "ClientRefused", msg, False, "ClientRefused")


def delivered(spec: DbTlsCertSpec, seen: Observed, delivery: Delivery, took: float, not_after: str) -> Decision:
    if not seen.match:
        return Decision("ready", "Rotated", f"rotated to serial {seen.serial} in {took:.1f}s; valid until "
                        f"{not_after}", True, "Match")
    if not delivery.changes:
        return Decision("ready", "Redelivered", f"the files were written again after a verify-full client refused "
                        f"them ({seen.refused}); serving serial {seen.serial}", True, "Match")
    return Decision("ready", "SettingsApplied", f"settings brought in line ({', '.join(delivery.changes)}); "
                    f"serving serial {seen.serial}", True, "Match")


def cleanup_keep(spec: DbTlsCertSpec, files: FileSet, previous: TlsSettings) -> list[str]:
    """sql mode: the files to keep after a verified delivery, the current and the previous ones."""
    keep = [files.cert, files.key, *([files.ca] if files.ca else [])]
    prev = [previous.get(k) for k in FILE_SETTINGS]
    return keep + [f for f in prev if f.startswith(spec.delivery.sql.directory + "/")]


def sql_file_set(directory: str, fingerprint: str, with_ca: bool) -> FileSet:
    """New names for every certificate: a half-written file is never one the settings point at."""
    base = f"{directory}/{FILE_PREFIX}{fingerprint[:FINGERPRINT_IN_NAME]}"
    return FileSet(cert=f"{base}.crt", key=f"{base}.key", ca=f"{base}-ca.crt" if with_ca else None)


def mount_file_set(spec: DbTlsCertSpec) -> FileSet:
    assert spec.delivery.mount is not None
    m = spec.delivery.mount
    return FileSet(cert=m.cert_file, key=m.key_file, ca=m.ca_file)


def desired_settings(spec: DbTlsCertSpec, files: FileSet) -> dict[str, str]:
    out = {
        "ssl": "on",
        "ssl_cert_file": files.cert,
        "ssl_key_file": files.key,
        "ssl_min_protocol_version": spec.min_protocol_version.value,
    }
    if files.ca is not None:
        out["ssl_ca_file"] = files.ca
    return out


def changed_settings(current: TlsSettings, desired: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in desired.items() if current.get(k) != v}


def alter_system(name: str, value: str) -> str:
    # Parameter names come from our fixed list; values are literals.
    return f"ALTER SYSTEM SET {name} = {literal(value)}"


def write_file_program(path: str) -> str:
    """Shell run by COPY ... TO PROGRAM: the server's umask (077) plus our own make the file 0600,
    which PostgreSQL requires of a key file; written under a temporary name, then renamed."""
    directory, _, name = path.rpartition("/")
    directory = directory or "."
    tmp = f"{directory}/.{name}.tmp"
    q = shlex.quote
    return f"umask 077 && mkdir -p {q(directory)} && cat > {q(tmp)} && mv -f {q(tmp)} {q(path)}"


def write_file_statement(path: str) -> str:
    # One row per PEM line: COPY's text format writes base64 and the BEGIN/END lines unchanged.
    return (
        "COPY (SELECT line FROM unnest(string_to_array(current_setting("
        f"{literal(PEM_SETTING)}), E'\\n')) WITH ORDINALITY AS t(line, n) ORDER BY n) "
        f"TO PROGRAM {literal(write_file_program(path))}"
    )


def cleanup_statement(directory: str, keep: list[str]) -> str:
    """Remove earlier certificate files of ours from the directory, keeping the ones in `keep`, and
    temporary files a server crash mid-write may have left."""
    q = shlex.quote
    names = " ".join(f"! -name {q(k.rpartition('/')[2])}" for k in keep)
    ours = f"\\( -name {q(FILE_PREFIX + '*')} -o -name {q('.' + FILE_PREFIX + '*.tmp')} \\)"
    program = f"find {q(directory)} -maxdepth 1 -type f {ours} {names} -delete"
    return f"COPY (SELECT 1 WHERE false) TO PROGRAM {literal(program)}"


def delivery_plan(spec: DbTlsCertSpec, current: TlsSettings, files: FileSet,
                  write: dict[str, str] | None) -> Plan:
    """Files (sql mode: `write` maps path -> which Secret key it holds), then settings, then a reload."""
    plan = Plan()
    for path, source in (write or {}).items():
        plan.steps.append(Step("write_file", path, (write_file_statement(path),),
                               description=f"write {source} to {path} (mode 0600)", group="tls"))
    changes = changed_settings(current, desired_settings(spec, files))
    for name, value in changes.items():
        plan.steps.append(Step("alter_system", name, (alter_system(name, value),), transactional=False,
                               description=f"{name}: {current.get(name)!r} -> {value!r}", group="tls"))
    plan.steps.append(Step("reload", "server", (RELOAD,), transactional=False,
                           description="pg_reload_conf(): no restart", group="tls"))
    return plan


def rollback_plan(previous: TlsSettings, desired: dict[str, str]) -> Plan:
    """Point the settings back at what was served before (a reload that was not taken)."""
    plan = Plan()
    for name in desired:
        if previous.get(name) != desired[name]:
            plan.steps.append(Step("alter_system", name, (alter_system(name, previous.get(name)),),
                                   transactional=False, description=f"roll back {name}"))
    plan.steps.append(Step("reload", "server", (RELOAD,), transactional=False))
    return plan


def missing_privileges(spec: DbTlsCertSpec, privs: TlsPrivileges, settings: list[str]) -> list[str]:
    """The GRANTs the connecting role lacks for this delivery mode; empty when it may proceed."""
    if privs.superuser:
        return []
    missing = []
    if spec.delivery.mode is DeliveryMode.sql and not privs.execute_server_program:
        missing.append("GRANT pg_execute_server_program TO <role>  -- write the files (COPY ... TO PROGRAM)")
    if spec.delivery.mode is DeliveryMode.mount:
        if not privs.read_server_files:
            missing.append("GRANT pg_read_server_files TO <role>  -- read the mounted certificate file")
        if not privs.read_binary_file:
            missing.append("GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO <role>")
    if not privs.read_all_settings:
        missing.append("GRANT pg_read_all_settings TO <role>  -- see ssl_min_protocol_version")
    denied = [s for s in settings if not privs.alter_system.get(s, False)]
    if denied:
        if privs.version_num >= 150000:
            missing.append(f"GRANT ALTER SYSTEM ON PARAMETER {', '.join(denied)} TO <role>")
        else:
            missing.append(f"superuser (ALTER SYSTEM of {', '.join(denied)} needs it before PostgreSQL 15)")
    if not privs.reload_conf:
        missing.append("GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <role>")
    if not (privs.create_schema or privs.history_exists):
        missing.append("GRANT CREATE ON DATABASE <db> TO <role>  -- the pgcurator.history table")
    return missing


def certificate_manifest(spec: DbTlsCertSpec, name: str, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    """The cert-manager Certificate this resource owns."""
    c = spec.certificate
    assert c is not None
    key: dict[str, Any] = {
        "algorithm": c.private_key.algorithm.value,
        "rotationPolicy": c.private_key.rotation_policy.value,
        "encoding": c.private_key.encoding.value,
        "size": c.private_key.size,
    }
    body_spec: dict[str, Any] = {
        "secretName": c.secret_name,
        "issuerRef": {"name": c.issuer_ref.name, "kind": c.issuer_ref.kind.value, "group": c.issuer_ref.group},
        "duration": c.duration,
        "renewBefore": c.renew_before,
        "dnsNames": list(spec.dns_names) or None,
        "ipAddresses": list(spec.ip_addresses) or None,
        "commonName": c.common_name,
        "privateKey": key,
        "usages": ["server auth", "digital signature", "key encipherment"],
    }
    meta = owner["metadata"]
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "pgcurator"},
            "ownerReferences": [{
                "apiVersion": owner.get("apiVersion", "pgcurator.io/v1alpha1"),
                "kind": owner.get("kind", "DbTlsCert"),
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": False,
            }],
        },
        "spec": body_spec,
    }


def certificate_drift(existing_spec: dict[str, Any], desired_spec: dict[str, Any]) -> dict[str, Any]:
    """A merge patch for the managed fields that differ (None removes a field); empty when in line."""
    patch: dict[str, Any] = {}
    for key, want in desired_spec.items():
        have = existing_spec.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            sub = {k: v for k, v in want.items() if have.get(k) != v}
            if sub:
                patch[key] = sub
        elif have != want:
            patch[key] = want
    return patch
