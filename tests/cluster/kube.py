"""The one-node cluster of hack/cluster-up.sh as the tests see it: kubectl and helm against it,
the node's containerd for the host PIDs of containers, images moved from podman into it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pgcurator_devenv.controlplane import find_kubectl

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("PGCURATOR_CLUSTER_DIR", "/var/lib/pgcurator-cluster"))
T = TypeVar("T")


def run(argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def wait_until(pred: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2,
               explain: Callable[[], str] | None = None) -> T:
    """Poll for a state (never a fixed sleep); the deadline is generous, only a hang fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f}s" + (f"\n{explain()}" if explain else ""))
        time.sleep(interval)


class Cluster:
    def __init__(self, kubeconfig: Path, env: dict[str, str], helm: str) -> None:
        self.kubeconfig = kubeconfig
        self.env = env
        self.helm_bin = helm
        self.node_ip = env["PGCURATOR_CLUSTER_NODE_IP"]
        self.containerd = env["PGCURATOR_CLUSTER_CONTAINERD"]

    # ---------------------------------------------------------------- kubectl / helm
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([str(find_kubectl()), f"--kubeconfig={self.kubeconfig}", *args], input=input, check=check,
                   timeout=timeout)

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([self.helm_bin, f"--kubeconfig={self.kubeconfig}", *args], timeout=timeout)

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(list(objs)))

    def apply_crds(self, directory: Path) -> None:  # what pgcurator_devenv.certmanager expects
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def get(self, kind: str, name: str = "", namespace: str | None = None, selector: str | None = None,
            check: bool = True) -> dict[str, Any]:
        args = ["get", kind, *([name] if name else []), *(["-n", namespace] if namespace else []),
                *(["-l", selector] if selector else []), "-o", "json"]
        proc = self.kubectl(*args, check=check)
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items = self.get("pods", namespace=namespace, selector=selector).get("items") or []
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    # ---------------------------------------------------------------- node
    def ctr(self, *args: str) -> str:
        return run(["ctr", "--address", self.containerd, "-n", "k8s.io", *args]).stdout

    def host_pid(self, pod: dict[str, Any], container: str) -> int:
        """The PID on this machine of a container's main process (containerd's task list)."""
        status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
        cid = status["containerID"].split("://", 1)[1]
        for line in self.ctr("tasks", "ls").splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == cid:
                return int(parts[1])
        raise LookupError(f"no task for container {cid}")

    def import_image(self, source: str, target: str) -> None:
        """Tag a podman image and move it into the node's containerd (no registry)."""
        run(["podman", "tag", source, target])
        save = subprocess.Popen(["podman", "save", target], stdout=subprocess.PIPE)
        try:
            subprocess.run(["ctr", "--address", self.containerd, "-n", "k8s.io", "images", "import", "-"],
                           stdin=save.stdout, check=True, capture_output=True, timeout=300)
        finally:
            if save.stdout is not None:
                save.stdout.close()
            save.wait(60)
        run(["podman", "untag", target], check=False)  # it lives in the node's containerd now


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)
