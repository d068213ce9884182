"""DbTlsCert end to end: real API server, real cert-manager controller, Debian's PostgreSQL with
TLS, the operator as its own process, and the served certificate checked over the wire."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcurator.tls.handshake import fetch_served_certificate
from pgcurator.tls.validate import info_of_der, leaf_of_pem
from pgcurator_devenv.certmanager import CertManager
from pgcurator_devenv.certs import issue, make_ca, secret_data, secret_manifest
from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.debian_postgres import DebianPostgres, create_tls_role
from pgcurator_devenv.kubelet_volume import ProjectedSecret

from ..tls_corpus import psql_verify_full
from .conftest import apply, condition, get, put_secret, wait_for

pytestmark = pytest.mark.e2e

NAME = "postgresql.alt-database.svc.cluster.local"
KIND = "dbtlscert"


@pytest.fixture(scope="module")
def cert_manager(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertManager]:
    cm = CertManager(cluster, tmp_path_factory.mktemp("cert-manager"))
    cm.start()
    yield cm
    cm.stop()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory the server's unprivileged user can reach. Not under pytest's basetemp: every pytest
    session resets that root to 0700, which would lock a running server out of its data directory."""
    d = Path(tempfile.mkdtemp(prefix="pgcurator-tls-e2e-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tls_pg(shared_tmp: Path) -> Iterator[DebianPostgres]:
    """A fresh server per test: every test rewrites the server's TLS settings."""
    server = DebianPostgres(shared_tmp / "pgdata")
    server.start()
    yield server
    server.stop()


class Env:
    def __init__(self, cluster: ControlPlane, ns: str, pg: DebianPostgres, log: Path) -> None:
        self.cluster, self.ns, self.pg, self.log = cluster, ns, pg, log
        self.login = ("", "")  # the role and password of the last db_secret

    def db_secret(self, mode: str | None, name: str = "pg-admin") -> str:
        role = f"tls_{mode or 'bare'}"
        password = secrets.token_urlsafe(12)
        create_tls_role(self.pg, role, password, mode)
        self.login = (role, password)
        put_secret(self.cluster, self.ns, name, self.pg.dsn("postgres", user=role, password=password))
        return name

    def resource(self, name: str, spec: dict[str, Any]) -> None:
        apply(self.cluster, self.ns, {"apiVersion": "pgcurator.io/v1alpha1", "kind": "DbTlsCert",
                                      "metadata": {"name": name}, "spec": spec})

    def wait(self, name: str, pred: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(self.cluster, self.ns, name, pred, timeout=timeout, what=what, operator_log=self.log,
                        kind=KIND)

    def tls_secret(self, name: str) -> dict[str, bytes]:
        obj = get(self.cluster, self.ns, "secret", name)
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def served_serial(self) -> str:
        import asyncio

        served = asyncio.run(fetch_served_certificate("127.0.0.1", self.pg.port))
        return info_of_der(served.der).serial

    def assert_verify_full(self, ca_pem: bytes, host: str = NAME) -> None:
        """What pgcurator calls Serving, libpq's verify-full client accepts (sslrootcert = the Secret's ca.crt)."""
        done = psql_verify_full(host, self.pg.host, self.pg.port, *self.login, ca_pem, self.pg.datadir.parent)
        assert done.returncode == 0 and done.stdout.strip() == "t", done.stderr

    def postmaster_pid(self) -> int:
        return int((self.pg.datadir / "postmaster.pid").read_text().splitlines()[0])

    def auto_conf(self) -> str:
        return (self.pg.datadir / "postgresql.auto.conf").read_text()


@pytest.fixture
def env(cluster: ControlPlane, namespace: str, tls_pg: DebianPostgres, operator_log: Path) -> Iterator[Env]:
    e = Env(cluster, namespace, tls_pg, operator_log)
    yield e
    # the operator must stop acting on this server before the next test's server takes its port
    cluster.kubectl("delete", "dbtlscerts", "--all", "-n", namespace, "--wait=true", check=False)


def serving(obj: dict[str, Any]) -> bool:
    return condition(obj, "Serving").get("status") == "True"


def base_spec(db_secret: str, delivery: dict[str, Any], **over: Any) -> dict[str, Any]:
    spec = {"database": {"secretName": db_secret}, "dnsNames": [NAME], "delivery": delivery,
            "checkInterval": "2s", "expiryWarning": "48h"}
    spec.update(over)
    return spec


def _serial_of(data: dict[str, bytes]) -> str:
    return leaf_of_pem(data["tls.crt"]).serial


def test_owned_certificate_is_issued_served_and_renewed_in_sql_mode(env: Env, cert_manager: CertManager) -> None:
    cert_manager.ca_issuer(env.ns)
    db = env.db_secret("sql")
    pid = env.postmaster_pid()
    env.resource("pg", base_spec(db, {"mode": "sql"}, certificate={
        "secretName": "postgresql-tls-secret", "issuerRef": {"name": "ca-issuer", "kind": "Issuer"},
        "duration": "2160h", "renewBefore": "720h"}))
    obj = env.wait("pg", lambda o: serving(o) and o["status"]["certificate"]["ready"] == "True",
                   "the issued certificate to be served, the Certificate's readiness mirrored", timeout=90)
    data = env.tls_secret("postgresql-tls-secret")
    first = _serial_of(data)
    st = obj["status"]
    assert st["servedSerial"] == st["serial"] == first == env.served_serial()
    assert st["servedFingerprint"] == st["secretFingerprint"]
    env.assert_verify_full(data["ca.crt"])  # cert-manager's chain, as an application connects
    assert st["reason"] in ("Rotated", "Serving") and st["certificate"]["notAfter"]
    assert st["deliverySeconds"] >= 0 and st["lastRotationTime"]
    assert condition(obj, "Expiring")["status"] == "False"  # 90 days left, window 48h
    # the Certificate is ours, as the spec says
    cert = get(env.cluster, env.ns, "certificate", "pg")
    assert cert["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert cert["spec"]["dnsNames"] == [NAME] and cert["spec"]["renewBefore"] == "720h"
    # files written through SQL: the key is 0600 and owned by the server's user (PostgreSQL insists)
    settings = env.pg.psql("SELECT setting FROM pg_settings WHERE name IN ('ssl_cert_file', 'ssl_key_file', "
                           "'ssl_min_protocol_version') ORDER BY name").split()
    cert_file, key_file, min_version = settings
    assert key_file.startswith("pgcurator-tls/tls-") and min_version == "TLSv1.2"
    key_stat = (env.pg.datadir / key_file).stat()
    assert stat.S_IMODE(key_stat.st_mode) == 0o600 and key_stat.st_uid == env.pg.run_uid
    assert leaf_of_pem((env.pg.datadir / cert_file).read_bytes()).serial == first
    history = env.pg.psql("SELECT string_agg(statement, ' ') FROM pgcurator.history")
    assert "ALTER SYSTEM SET ssl_cert_file" in history and "PRIVATE KEY" not in history

    # renewal, as `cmctl renew` triggers it: a new serial reaches the server with nobody acting
    cert_manager.renew(env.ns, "pg")
    obj = env.wait("pg", lambda o: o["status"].get("servedSerial") not in (None, first) and serving(o),
                   "the renewed certificate to be served", timeout=90)
    renewed = _serial_of(env.tls_secret("postgresql-tls-secret"))
    assert renewed != first and obj["status"]["servedSerial"] == renewed == env.served_serial()
    env.assert_verify_full(env.tls_secret("postgresql-tls-secret")["ca.crt"])
    assert env.postmaster_pid() == pid  # reloaded, never restarted
    # only the current and the previous files are kept
    kept = sorted(p.name for p in (env.pg.datadir / "pgcurator-tls").iterdir())
    assert len(kept) <= 6 and all(n.startswith("tls-") for n in kept)

    # hand edits to the Certificate are brought back in line
    env.cluster.kubectl("patch", "certificate", "pg", "-n", env.ns, "--type=merge",
                        "-p", json.dumps({"spec": {"renewBefore": "100h"}}))
    deadline = time.monotonic() + 30
    while get(env.cluster, env.ns, "certificate", "pg")["spec"]["renewBefore"] != "720h":
        assert time.monotonic() < deadline, "the Certificate was not brought back in line"
        time.sleep(0.5)


def test_mismatched_key_is_never_delivered(env: Env) -> None:
    ca = make_ca()
    good = issue(ca, [NAME], lifetime=dt.timedelta(days=1))  # inside the 48h expiry window
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest("pg-tls", env.ns,
                                                                             secret_data(good, ca))))
    db = env.db_secret("sql")
    env.resource("pg", base_spec(db, {"mode": "sql"}, secretName="pg-tls"))
    obj = env.wait("pg", serving, "the followed Secret to be served")
    good_serial = format(good.cert.serial_number, "X")
    env.assert_verify_full(ca.cert_pem)
    table = env.cluster.kubectl("get", "dbtlscerts", "-n", env.ns).stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "SECRET", "MODE", "SERIAL", "NOT-AFTER", "SERVING"]
    assert table[1].split()[:6] == ["pg", "pg-tls", "sql", good_serial, obj["status"]["notAfter"], "True"]
    expiring = condition(obj, "Expiring")
    assert expiring["status"] == "True" and expiring["reason"] == "ExpiresSoon" and good_serial in expiring["message"]
    auto_conf = env.auto_conf()
    # once served, further checks change nothing: no ALTER SYSTEM, no reload every checkInterval
    runs = env.pg.psql("SELECT count(*) FROM pgcurator.history").strip()
    time.sleep(4)
    assert env.pg.psql("SELECT count(*) FROM pgcurator.history").strip() == runs

    # replaced by hand: a new certificate with somebody else's key
    newer, stranger = issue(ca, [NAME]), issue(ca, [NAME])
    bad = secret_data(newer, ca, key_pem=stranger.key_pem())
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest("pg-tls", env.ns, bad)))
    obj = env.wait("pg", lambda o: condition(o, "Degraded").get("status") == "True",
                   "Degraded after the mismatched key")
    deg = condition(obj, "Degraded")
    assert deg["reason"] == "KeyMismatch" and "not delivered" in deg["message"]
    assert good_serial in deg["message"]  # says what the server keeps serving
    assert condition(obj, "Serving")["status"] == "False"
    assert obj["status"]["servedSerial"] == good_serial == env.served_serial()
    assert obj["status"]["serial"] == format(newer.cert.serial_number, "X")
    time.sleep(3)  # a few more check intervals: still nothing written
    assert env.served_serial() == good_serial and env.auto_conf() == auto_conf
    events = env.cluster.kubectl("get", "events", "-n", env.ns, "-o", "json").stdout
    assert "KeyMismatch" in events and "CertificateExpiring" in events

    # a fixed Secret is delivered
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest("pg-tls", env.ns,
                                                                             secret_data(newer, ca))))
    obj = env.wait("pg", lambda o: serving(o) and o["status"]["servedSerial"] == format(newer.cert.serial_number,
                                                                                          "X"),
                   "the fixed Secret to be served")
    assert condition(obj, "Expiring")["status"] == "False"  # 90 days left


def test_mount_mode_waits_for_the_kubelet_then_reloads(env: Env, cert_manager: CertManager,
                                                       shared_tmp: Path) -> None:
    cert_manager.ca_issuer(env.ns)
    mount = ProjectedSecret(shared_tmp / "secret-volume", env.pg.run_uid, env.pg.run_gid)
    stop = threading.Event()
    delay = 3.0

    def kubelet() -> None:
        """Project the Secret whenever it changes, `delay` seconds later, like a kubelet sync."""
        last = None
        while not stop.is_set():
            proc = env.cluster.kubectl("get", "secret", "postgresql-tls-secret", "-n", env.ns, "-o", "json",
                                       check=False)
            if proc.returncode == 0:
                data = json.loads(proc.stdout).get("data") or {}
                if data and data != last:
                    last = data
                    mount.write_later({k: base64.b64decode(v) for k, v in data.items()}, delay)
            stop.wait(0.5)

    threading.Thread(target=kubelet, daemon=True).start()
    try:
        db = env.db_secret("mount")
        pid = env.postmaster_pid()
        d = mount.directory
        env.resource("pg", base_spec(db, {"mode": "mount", "mount": {
            "certFile": str(d / "tls.crt"), "keyFile": str(d / "tls.key"), "caFile": str(d / "ca.crt")}},
            certificate={"secretName": "postgresql-tls-secret", "issuerRef": {"name": "ca-issuer"}}))
        seen_waiting = []

        def waiting_or_serving(o: dict[str, Any]) -> bool:
            if o.get("status", {}).get("reason") == "WaitingForFiles":
                seen_waiting.append(True)
            return serving(o)

        obj = env.wait("pg", waiting_or_serving, "the mounted certificate to be served", timeout=90)
        first = _serial_of(env.tls_secret("postgresql-tls-secret"))
        assert obj["status"]["servedSerial"] == first == env.served_serial()
        env.assert_verify_full(env.tls_secret("postgresql-tls-secret")["ca.crt"])
        assert seen_waiting, "the operator should have waited for the kubelet's update"
        assert (d / "..data").is_symlink() and os.readlink(d / "tls.crt") == "..data/tls.crt"
        settings = env.pg.psql("SHOW ssl_cert_file").strip()
        assert settings == str(d / "tls.crt")

        cert_manager.renew(env.ns, "pg")
        obj = env.wait("pg", lambda o: serving(o) and o["status"].get("servedSerial") != first,
                       "the renewed certificate to be served from the mount", timeout=90)
        assert obj["status"]["servedSerial"] == env.served_serial() == _serial_of(
            env.tls_secret("postgresql-tls-secret"))
        assert obj["status"]["deliverySeconds"] >= delay - 1  # includes the kubelet's delay
        env.assert_verify_full(env.tls_secret("postgresql-tls-secret")["ca.crt"])
        assert env.postmaster_pid() == pid
    finally:
        stop.set()
        mount.cancel()


def test_bad_input_is_reported_and_nothing_is_written(env: Env, cert_manager: CertManager) -> None:
    auto_conf = env.auto_conf()
    served = env.served_serial()
    admin = env.db_secret("sql")
    # an issuer that does not exist
    env.resource("no-issuer", base_spec(admin, {"mode": "sql"}, certificate={
        "secretName": "never", "issuerRef": {"name": "missing-issuer", "kind": "ClusterIssuer"}}))
    # a Secret without tls.key
    ca = make_ca()
    data = secret_data(issue(ca, [NAME]), ca)
    del data["tls.key"]
    no_key = secret_manifest("no-key", env.ns, data)
    no_key["type"] = "Opaque"  # the API server itself refuses a kubernetes.io/tls Secret without tls.key
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(no_key))
    env.resource("no-key", base_spec(admin, {"mode": "sql"}, secretName="no-key"))
    # a role without the privileges of the mode
    ca2 = make_ca()
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(
        secret_manifest("fine", env.ns, secret_data(issue(ca2, [NAME]), ca2))))
    bare = env.db_secret(None, name="pg-bare")
    env.resource("no-privs", base_spec(bare, {"mode": "sql"}, secretName="fine"))
    # renewBefore longer than duration: the API server refuses it (the CRD carries the model's rule)
    refused = apply(env.cluster, env.ns, {"apiVersion": "pgcurator.io/v1alpha1", "kind": "DbTlsCert",
                                          "metadata": {"name": "bad-spec"},
                                          "spec": base_spec(admin, {"mode": "sql"}, certificate={
                                              "secretName": "x", "issuerRef": {"name": "ca"}, "duration": "24h",
                                              "renewBefore": "48h"})}, check=False)
    assert refused.returncode != 0 and "renewBefore must be shorter" in refused.stderr, refused.stderr
    # DNS names that are not names: the API server refuses them (the CRD schema has the pattern)
    refused = apply(env.cluster, env.ns, {"apiVersion": "pgcurator.io/v1alpha1", "kind": "DbTlsCert",
                                          "metadata": {"name": "bad-name"},
                                          "spec": base_spec(admin, {"mode": "sql"}, dnsNames=["Not_Valid"],
                                                            secretName="fine")}, check=False)
    assert refused.returncode != 0 and "dnsNames" in refused.stderr

    # dryRun: the plan is shown, nothing runs
    env.resource("dry", base_spec(admin, {"mode": "sql"}, secretName="fine", dryRun=True))

    def degraded(o: dict[str, Any]) -> bool:
        return condition(o, "Degraded").get("status") == "True"

    msg = condition(env.wait("no-issuer", degraded, "IssuerNotFound"), "Degraded")
    assert msg["reason"] == "IssuerNotFound" and "missing-issuer" in msg["message"]
    assert env.cluster.kubectl("get", "certificate", "no-issuer", "-n", env.ns, check=False).returncode != 0
    msg = condition(env.wait("no-key", degraded, "SecretIncomplete"), "Degraded")
    assert msg["reason"] == "SecretIncomplete" and "tls.key" in msg["message"]
    msg = condition(env.wait("no-privs", degraded, "InsufficientPrivilege"), "Degraded")
    assert msg["reason"] == "InsufficientPrivilege" and "pg_execute_server_program" in msg["message"]
    assert "GRANT ALTER SYSTEM ON PARAMETER" in msg["message"] and "nothing was written" in msg["message"]
    dry = env.wait("dry", lambda o: o.get("status", {}).get("reason") == "DryRun", "DryRun")
    plan = dry["status"]["plan"]
    assert plan[0].startswith("-- write tls.key to pgcurator-tls/tls-") and "SELECT pg_reload_conf()" in plan
    assert any(p.startswith("ALTER SYSTEM SET ssl_cert_file = ") for p in plan)
    assert not any("PRIVATE KEY" in p for p in plan)
    assert env.auto_conf() == auto_conf and env.served_serial() == served
    assert not (env.pg.datadir / "pgcurator-tls").exists()
