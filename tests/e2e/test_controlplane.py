"""The local control plane: a real etcd + kube-apiserver on loopback, driven with kubectl."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgcurator_devenv.controlplane import ControlPlane, KubectlError, binaries_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return binaries_dir()


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def test_readyz(cp: ControlPlane) -> None:
    assert cp.server.startswith("https://127.0.0.1:")
    assert cp.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_namespace_round_trip(cp: ControlPlane) -> None:
    cp.kubectl("create", "namespace", "cp-ns")
    got = json.loads(cp.kubectl("get", "namespace", "cp-ns", "-o", "json").stdout)
    assert got["metadata"]["name"] == "cp-ns"
    assert got["status"]["phase"] == "Active"


def test_configmap_round_trip(cp: ControlPlane) -> None:
    cp.kubectl("create", "namespace", "cp-cm")
    data = {"plain": "value", "multi": "line one\nline two\n", "unicode": "größe ✓"}
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "round-trip", "namespace": "cp-cm", "labels": {"app": "pgcurator"}},
        "data": data,
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    got = json.loads(cp.kubectl("get", "configmap", "round-trip", "-n", "cp-cm", "-o", "json").stdout)
    assert got["data"] == data
    assert got["metadata"]["labels"] == {"app": "pgcurator"}

    cp.kubectl("delete", "configmap", "round-trip", "-n", "cp-cm")
    missing = cp.kubectl("get", "configmap", "round-trip", "-n", "cp-cm", check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr


def test_kubectl_error_carries_stderr(cp: ControlPlane) -> None:
    with pytest.raises(KubectlError, match="NotFound"):
        cp.kubectl("get", "namespace", "does-not-exist")


def test_apply_crds(cp: ControlPlane, tmp_path: Path) -> None:
    (tmp_path / "widget.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata:
              name: widgets.test.pgcurator.io
            spec:
              group: test.pgcurator.io
              scope: Namespaced
              names: {plural: widgets, singular: widget, kind: Widget}
              versions:
                - name: v1
                  served: true
                  storage: true
                  schema:
                    openAPIV3Schema:
                      type: object
                      properties:
                        spec:
                          type: object
                          properties:
                            size: {type: integer}
            """
        )
    )
    applied = cp.apply_crds(tmp_path)
    assert applied == ["customresourcedefinition.apiextensions.k8s.io/widgets.test.pgcurator.io"]
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "test.pgcurator.io/v1",
                "kind": "Widget",
                "metadata": {"name": "w1", "namespace": "default"},
                "spec": {"size": 3},
            }
        ),
    )
    got = json.loads(cp.kubectl("get", "widget", "w1", "-n", "default", "-o", "json").stdout)
    assert got["spec"] == {"size": 3}
    # Idempotent: applying again is fine.
    cp.apply_crds(tmp_path)


def test_service_account_kubeconfig_is_subject_to_rbac(cp: ControlPlane, tmp_path: Path) -> None:
    sa_config = cp.write_service_account_kubeconfig("cp-rbac", "robot", tmp_path / "robot.kubeconfig")
    as_robot = ["--kubeconfig", str(sa_config)]

    whoami = json.loads(cp.kubectl(*as_robot, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:cp-rbac:robot"

    denied = cp.kubectl(*as_robot, "get", "configmaps", "-n", "cp-rbac", check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr

    cp.kubectl("create", "role", "cm-reader", "-n", "cp-rbac", "--verb=get,list", "--resource=configmaps")
    cp.kubectl(
        "create", "rolebinding", "robot-cm", "-n", "cp-rbac", "--role=cm-reader",
        "--serviceaccount=cp-rbac:robot",
    )  # fmt: skip
    cp.kubectl(*as_robot, "get", "configmaps", "-n", "cp-rbac")


def test_context_manager_stops_processes(tmp_path: Path, bin_dir: Path) -> None:
    with ControlPlane(tmp_path, bin_dir) as plane:
        pids = [plane.apiserver_pid, plane.etcd_pid]
        assert all(pids)
        assert plane.kubeconfig.is_file()
    for pid in pids:
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    plane.stop()  # idempotent
    assert (tmp_path / "kube-apiserver.log").stat().st_size > 0
    assert (tmp_path / "etcd.log").exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_kubeconfig_is_private(cp: ControlPlane) -> None:
    assert os.stat(cp.kubeconfig).st_mode & 0o077 == 0
