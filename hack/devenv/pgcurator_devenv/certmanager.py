"""cert-manager's real controller, run out of cluster against the local control plane.

The binary and its CRDs come from ``hack/cert-manager-binaries.sh`` (built from cert-manager's
Go module and cached). ``install`` applies the CRDs, creates the namespace for cluster-scoped
resources, a self-signed ClusterIssuer and, from it, a CA whose Secret backs a CA Issuer in
any namespace (:meth:`CertManager.ca_issuer`). Renewal is triggered the way ``cmctl renew``
does it: an ``Issuing`` condition with reason ``ManuallyTriggered`` on the Certificate status.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .controlplane import REPO_ROOT, ControlPlane

SCRIPT = REPO_ROOT / "hack" / "cert-manager-binaries.sh"
CLUSTER_NAMESPACE = "cert-manager"
SELF_SIGNED = "selfsigned"


def cert_manager_dir() -> Path:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise RuntimeError(f"{SCRIPT} failed ({proc.returncode}):\n{tail}")
    return Path(proc.stdout.strip().splitlines()[-1])


class CertManager:
    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.cp = cp
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "cert-manager.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        directory = cert_manager_dir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.apply_crds(directory / "crds")
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CLUSTER_NAMESPACE}}))
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(directory / "cert-manager-controller"), f"--kubeconfig={self.cp.kubeconfig}",
                 f"--cluster-resource-namespace={CLUSTER_NAMESPACE}", "--leader-elect=false"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.apply({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                    "metadata": {"name": SELF_SIGNED}, "spec": {"selfSigned": {}}})
        self.wait_ready("clusterissuer", SELF_SIGNED, None)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def apply(self, obj: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        out = self.cp.kubectl("get", kind, name, *ns, "-o", "json").stdout
        return dict(json.loads(out))

    def wait_ready(self, kind: str, name: str, namespace: str | None, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"cert-manager exited with {self._proc.returncode}:\n{self.log_tail()}")
            proc = self.cp.kubectl("get", kind, name, *(["-n", namespace] if namespace else []), "-o", "json",
                                   check=False)
            if proc.returncode == 0:
                obj = json.loads(proc.stdout)
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (obj.get("status") or {}).get("conditions") or []):
                    return obj
            time.sleep(0.3)
        raise TimeoutError(f"{kind}/{name} not Ready in {timeout}s: {json.dumps(obj.get('status'))}\n"
                           f"cert-manager log:\n{self.log_tail()}")

    def ca_issuer(self, namespace: str, name: str = "ca-issuer") -> None:
        """A CA (self-signed through the ClusterIssuer) and a CA Issuer signing with it, in `namespace`."""
        self.apply({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": f"{name}-root", "namespace": namespace},
            "spec": {"isCA": True, "commonName": f"{name} root", "secretName": f"{name}-root",
                     "privateKey": {"algorithm": "ECDSA", "size": 256},
                     "issuerRef": {"name": SELF_SIGNED, "kind": "ClusterIssuer", "group": "cert-manager.io"}},
        })
        self.wait_ready("certificate", f"{name}-root", namespace)
        self.apply({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"ca": {"secretName": f"{name}-root"}}})
        self.wait_ready("issuer", name, namespace)

    def renew(self, namespace: str, name: str) -> None:
        """What `cmctl renew` does: set Issuing=True (ManuallyTriggered) on the Certificate's status."""
        cert = self.get("certificate", name, namespace)
        conditions = [c for c in (cert.get("status") or {}).get("conditions") or [] if c.get("type") != "Issuing"]
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        conditions.append({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                           "message": "Certificate re-issuance manually triggered", "lastTransitionTime": now,
                           "observedGeneration": cert["metadata"].get("generation", 1)})
        self.cp.kubectl("patch", "certificate", name, "-n", namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"conditions": conditions}}))
