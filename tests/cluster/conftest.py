"""The one-node cluster (hack/cluster-up.sh) for this package's tests: up once when the first test
needs it, down after the last (hack/cluster-down.sh), so the rest of the session runs without it.

It needs root (network, mounts, cgroups) and cgroups; without them the tests are skipped with the
reason. PGCURATOR_SKIP_CLUSTER=1 skips them on purpose (say why in the environment, not here)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..figures import record
from .kube import CLUSTER_DIR, REPO, Cluster, run


def _cannot() -> str | None:
    if os.environ.get("PGCURATOR_SKIP_CLUSTER") == "1":
        return "PGCURATOR_SKIP_CLUSTER=1"
    if os.geteuid() != 0:
        return "the one-node cluster needs root (bridge, iptables, mounts, cgroups)"
    if not (Path("/sys/fs/cgroup/memory").is_dir() or Path("/sys/fs/cgroup/cgroup.controllers").exists()):
        return "no cgroups on this machine: a kubelet cannot run"
    return None


def _up() -> float:
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "hack" / "cluster-up.sh")], capture_output=True, text=True,
                          timeout=3600, check=False)
    if proc.returncode != 0:
        down = subprocess.run(["bash", str(REPO / "hack" / "cluster-down.sh")], capture_output=True, text=True,
                              timeout=600, check=False)
        raise RuntimeError(f"hack/cluster-up.sh failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n"
                           f"(cluster-down: {down.returncode})")
    return time.monotonic() - t0


def _down() -> float:
    t0 = time.monotonic()
    run(["bash", str(REPO / "hack" / "cluster-down.sh")], timeout=600)
    return time.monotonic() - t0


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    reason = _cannot()
    if reason:
        pytest.skip(reason)
    helm = run(["bash", str(REPO / "hack" / "helm-binary.sh")], timeout=3600).stdout.strip().splitlines()[-1]
    # The operator image from this checkout (podman's layer cache: seconds when nothing changed).
    t0 = time.monotonic()
    run(["bash", str(REPO / "hack" / "image-build.sh"), "dev"], timeout=3600)
    record("image build, this session (layer cache)", f"{time.monotonic() - t0:.1f} s")
    if (CLUSTER_DIR / "cluster.env").exists():
        _down()  # left by an interrupted run, with its releases: start from a clean machine
    first = _up()
    record("cluster-up, first of the session", f"{first:.1f} s")
    # Measured again on a warm machine (binaries, images and containerd's store cached): what a
    # contributor's second `hack/cluster-up.sh` costs.
    down = _down()
    warm = _up()
    record("cluster-down / cluster-up warm", f"{down:.1f} s / {warm:.1f} s")
    for name, path in (("node binaries build (cold, s each)",
                        Path.home() / ".cache/pgcurator/bin/k8s-node-1.36.3/build-seconds.txt"),):
        if path.exists():
            record(name, ", ".join(line.replace(" ", " ") for line in path.read_text().splitlines()))
    images = Path.home() / ".cache/pgcurator/images/build-dev.json"
    if images.exists():
        info = json.loads(images.read_text())
        record("image build (s: base/operator/postgres/pause)",
               "/".join(str(info["seconds"][k]) for k in ("base", "operator", "postgres", "pause")))
        record("operator image size", f"{info['bytes']['operator'] / 2**20:.0f} MiB "
                                      f"(base {info['bytes']['base'] / 2**20:.0f} MiB)")
    env = dict(line.split("=", 1) for line in (CLUSTER_DIR / "cluster.env").read_text().splitlines() if "=" in line)
    try:
        yield Cluster(Path(env["KUBECONFIG"]), env, helm)
    finally:
        _down()
