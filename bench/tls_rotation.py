"""How long from cert-manager writing a renewed Secret to the server serving it?

Real components: the local API server, cert-manager's controller, Debian's PostgreSQL with TLS,
the operator as its own process. For each delivery mode (`sql`, `mount`), ROTATIONS renewals are
triggered the way `cmctl renew` does; the bench watches the Secret (API polling every 20 ms) and the
server (SSLRequest handshake every 20 ms) and reports, per rotation, the time from the Secret's new
`tls.crt` appearing to the server presenting it. In `mount` mode the kubelet stand-in projects the
Secret KUBELET_DELAY seconds later; that delay is excluded (time from the `..data` swap instead).

Baseline, side by side: the same rotation done by hand as fast as possible (write the files as
the server's user, ALTER SYSTEM, pg_reload_conf(), handshake until served) — the floor any
automation could reach on this machine.

    .venv/bin/python bench/tls_rotation.py [--rotations 20] [--check-interval 1s]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from pgcurator.tls.handshake import HandshakeError, fetch_served_certificate
from pgcurator.tls.validate import info_of_der, leaf_of_pem
from pgcurator_devenv.certmanager import CertManager
from pgcurator_devenv.certs import issue, make_ca
from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.debian_postgres import DebianPostgres, create_tls_role
from pgcurator_devenv.kubelet_volume import ProjectedSecret
from pgcurator_devenv.up import secret_manifest, start_operator

NAME = "postgresql.alt-database.svc.cluster.local"
SECRET = "postgresql-tls-secret"
KUBELET_DELAY = 2.0
POLL = 0.02


def served_serial(port: int) -> str | None:
    try:
        served = asyncio.run(fetch_served_certificate("127.0.0.1", port, within=2))
    except HandshakeError:
        return None
    return info_of_der(served.der).serial


def wait_served(port: int, serial: str, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_serial(port) == serial:
            return time.time()
        time.sleep(POLL)
    raise TimeoutError(f"serial {serial} not served within {timeout}s")


class SecretWatch:
    """Records when each new tls.crt appears in the Secret."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core, self.ns = core, namespace
        self.seen: dict[str, float] = {}  # serial -> time first seen
        self.data: dict[str, dict[str, bytes]] = {}
        self._stop = threading.Event()
        self.listeners: list[Any] = []
        self._reported: set[str] = set()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                s = self.core.read_namespaced_secret(SECRET, self.ns)
                data = {k: base64.b64decode(v) for k, v in (s.data or {}).items()}
                if "tls.crt" in data:
                    serial = leaf_of_pem(data["tls.crt"]).serial
                    if serial not in self.seen:
                        self.seen[serial] = time.time()
                        self.data[serial] = data
                        for listener in self.listeners:
                            listener(data)
            except Exception:  # not created yet
                pass
            self._stop.wait(POLL)

    def wait_new(self, known: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [s for s in self.seen if s != known and s not in self._reported]
            if new:
                self._reported.add(new[0])
                return new[0]
            time.sleep(POLL)
        raise TimeoutError("cert-manager wrote no new Secret")

    def stop(self) -> None:
        self._stop.set()


def kubectl_apply(cp: ControlPlane, obj: dict[str, Any]) -> None:
    cp.kubectl("apply", "-f", "-", input=json.dumps(obj))


def run_mode(mode: str, cp: ControlPlane, cm: CertManager, core: client.CoreV1Api, work: Path,
             rotations: int, check_interval: str) -> list[float]:
    ns = f"bench-{mode}-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", ns)
    cm.ca_issuer(ns)
    pg = DebianPostgres(work / f"pg-{mode}")
    pg.start()
    mount: ProjectedSecret | None = None
    watch = SecretWatch(core, ns)
    try:
        password = secrets.token_urlsafe(12)
        create_tls_role(pg, f"tls_{mode}", password, mode)
        cp.kubectl("apply", "-f", "-", input=secret_manifest("pg-admin", ns, pg.dsn("postgres", user=f"tls_{mode}",
                                                                                      password=password)))
        delivery: dict[str, Any] = {"mode": mode}
        if mode == "mount":
            vol = work / f"volume-{mode}"
            mount = ProjectedSecret(vol, pg.run_uid, pg.run_gid)
            m = mount
            watch.listeners.append(lambda data: m.write_later(data, KUBELET_DELAY))
            delivery["mount"] = {"certFile": str(vol / "tls.crt"), "keyFile": str(vol / "tls.key"),
                                 "caFile": str(vol / "ca.crt")}
        kubectl_apply(cp, {"apiVersion": "pgcurator.io/v1alpha1", "kind": "DbTlsCert",
                           "metadata": {"name": "pg", "namespace": ns},
                           "spec": {"database": {"secretName": "pg-admin"}, "dnsNames": [NAME],
                                    "checkInterval": check_interval, "delivery": delivery,
                                    "certificate": {"secretName": SECRET, "issuerRef": {"name": "ca-issuer"}}}})
        first = watch.wait_new("", timeout=60)
        wait_served(pg.port, first)
        current = first
        out = []
        for i in range(rotations):
            cm.renew(ns, "pg")
            new = watch.wait_new(current)
            written = watch.seen[new]
            served_at = wait_served(pg.port, new)
            start = written
            if mount is not None:
                # exclude the kubelet stand-in's delay: count from the ..data swap
                while mount.last_swap is None or mount.last_swap < written:
                    time.sleep(POLL)
                start = mount.last_swap
            out.append(served_at - start)
            print(f"  {mode} rotation {i + 1:2d}: {out[-1] * 1000:7.0f} ms", flush=True)
            current = new
        cp.kubectl("delete", "dbtlscert", "pg", "-n", ns, "--wait=true")
        return out
    finally:
        watch.stop()
        if mount is not None:
            mount.cancel()
        pg.stop()


def manual_baseline(work: Path, rotations: int) -> list[float]:
    """Rotate by hand: files written as the server's user, ALTER SYSTEM, reload, handshake until served."""
    pg = DebianPostgres(work / "pg-manual")
    pg.start()
    ca = make_ca()
    out = []
    try:
        for i in range(rotations):
            leaf = issue(ca, [NAME])
            t0 = time.time()
            d = pg.datadir / "manual"
            d.mkdir(exist_ok=True)
            crt, key = d / f"{i}.crt", d / f"{i}.key"
            crt.write_bytes(leaf.cert_pem)
            key.write_bytes(leaf.key_pem())
            for f in (d, crt, key):
                os.chmod(f, 0o700 if f == d else 0o600)
                if pg.run_uid is not None and pg.run_gid is not None:
                    os.chown(f, pg.run_uid, pg.run_gid)
            pg.psql(f"ALTER SYSTEM SET ssl_cert_file = '{crt}';\nALTER SYSTEM SET ssl_key_file = '{key}';\n"
                    "SELECT pg_reload_conf();")
            out.append(wait_served(pg.port, format(leaf.cert.serial_number, "X")) - t0)
    finally:
        pg.stop()
    return out


def fmt(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.0f} ms   worst {max(values) * 1000:7.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--check-interval", default="1s")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgcurator-bench-tls-"))
    os.chmod(work, 0o755)
    cp = ControlPlane(work / "cp")
    cp.start()
    operator: subprocess.Popen[bytes] | None = None
    cm = CertManager(cp, work / "cm")
    try:
        cp.apply_crds(Path(__file__).resolve().parents[1] / "crds")
        cm.start()
        config.load_kube_config(str(cp.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api()
        operator = start_operator(cp.kubeconfig, work / "operator.log")
        results = {}
        print(f"baseline: manual rotation x{args.rotations}", flush=True)
        results["manual (floor)"] = manual_baseline(work, args.rotations)
        for mode in ("sql", "mount"):
            print(f"{mode} mode: {args.rotations} renewals by cert-manager, checkInterval {args.check_interval}",
                  flush=True)
            results[mode] = run_mode(mode, cp, cm, core, work, args.rotations, args.check_interval)
        base = statistics.median(results["manual (floor)"])
        print("\nSecret written -> served (mount: ..data swap -> served), "
              f"{args.rotations} rotations, checkInterval {args.check_interval}")
        for name, values in results.items():
            ratio = statistics.median(values) / base if base else float("nan")
            print(f"  {name:15s} {fmt(values)}   x{ratio:5.1f} of the manual floor")
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
        cm.stop()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
