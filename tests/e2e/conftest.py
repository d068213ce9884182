"""End-to-end fixtures: a real API server with our CRDs, a real PostgreSQL, and the operator
running as its own process (`pgcurator run`), exactly as a user runs it."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.ports import free_port
from pgcurator_devenv.postgres import EmbeddedPostgres
from pgcurator_devenv.up import secret_manifest, start_operator

from ..conftest import REPO

# Short retry intervals so recovery tests finish quickly; the defaults are for production.
OPERATOR_ENV = {"PGCURATOR_RETRY_MIN": "1", "PGCURATOR_RETRY_MAX": "3", "PGCURATOR_PLAN_ERROR_RETRY": "3",
                "PGCURATOR_CONNECT_TIMEOUT": "3"}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("cluster"))
    cp.start()
    cp.apply_crds(REPO / "crds")
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def operator_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator") / "operator.log"


@pytest.fixture(scope="session")
def operator_http(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the session operator serves /healthz, /readyz and /metrics."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def operator_process(cluster: ControlPlane, pg: EmbeddedPostgres, operator_log: Path,
                     operator_http: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_operator(cluster.kubeconfig, operator_log, {**OPERATOR_ENV, "PGCURATOR_HTTP_ADDRESS": operator_http})
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def namespace(cluster: ControlPlane, operator_process: subprocess.Popen[bytes]) -> str:
    ns = "e2e-" + secrets.token_hex(4)
    cluster.kubectl("create", "namespace", ns)
    return ns


def apply(cluster: ControlPlane, namespace: str, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=check)


def put_secret(cluster: ControlPlane, namespace: str, name: str, uri: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=secret_manifest(name, namespace, uri))


def get(cluster: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_for(
    cluster: ControlPlane, namespace: str, name: str, predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 60, what: str = "condition", operator_log: Path | None = None, kind: str = "partitionpolicy",
) -> dict[str, Any]:
    """Poll `kind`/`name` until `predicate(obj)`; on timeout the error shows the status and the operator log."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = get(cluster, namespace, kind, name)
        if predicate(obj):
            return obj
        time.sleep(0.5)
    log_tail = operator_log.read_text()[-3000:] if operator_log and operator_log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(obj.get('status'), indent=1)}\n"
                         f"operator log tail:\n{log_tail}")
