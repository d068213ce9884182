"""DbTlsCert plans: which files to write, which settings to change, which privileges that takes.

Pure functions. Statements never contain key material: the PEM text of a file travels as a
bind parameter into a transaction-local setting (`pgcurator.tls_pem`) which the COPY reads,
so history rows, status.plan and Events only ever show file names.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from ..catalog.tls import TlsPrivileges, TlsSettings
from ..models.tls import DbTlsCertSpec, DeliveryMode
from ..sql.quote import literal
from ..sql.statements import Plan, Step

PEM_SETTING = "pgcurator.tls_pem"
RELOAD = "SELECT pg_reload_conf()"
FILE_PREFIX = "tls-"


@dataclass(frozen=True)
class FileSet:
    cert: str
    key: str
    ca: str | None  # None: ssl_ca_file is left alone


def sql_file_set(directory: str, fingerprint: str, with_ca: bool) -> FileSet:
    """New names for every certificate: a half-written file is never one the settings point at."""
    base = f"{directory}/{FILE_PREFIX}{fingerprint[:16]}"
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
