"""`./hack/dev-up.sh` (`python -m pgcurator_devenv.up`), as a person runs it: it says how to point kubectl at the cluster, the example
becomes Ready, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ..conftest import REPO

pytestmark = pytest.mark.e2e


def test_dev_up_prints_kubeconfig_and_tears_down_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "dev"
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pgcurator_devenv.up", "--workdir", str(workdir)],
                                cwd=REPO, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 180
        while "export KUBECONFIG=" not in out_path.read_text():
            assert proc.poll() is None, out_path.read_text() + err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.5)
        stdout = out_path.read_text()
        kubeconfig = stdout.split("export KUBECONFIG=", 1)[1].split()[0]
        assert Path(kubeconfig) == workdir / "controlplane" / "kubeconfig"
        assert "event-logs" in stdout and "True" in stdout  # `kubectl get partitionpolicies` of the example
        # The line works as typed: kubectl with that KUBECONFIG sees the example.
        kubectl = Path(sys.executable).parent / "kubectl"
        got = subprocess.run([str(kubectl), "get", "partitionpolicies", "-A"], env={**os.environ, "KUBECONFIG": kubeconfig},
                             capture_output=True, text=True, check=False)
        assert got.returncode == 0 and "event-logs" in got.stdout, got.stderr
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "kube-apiserver" in names and "etcd" in names and "pgcurator.cli run" in names and "postgres" in names
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    assert "[dev up] stopped" in err_path.read_text()
