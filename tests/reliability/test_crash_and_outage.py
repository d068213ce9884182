"""Crash anywhere, resume correctly (issue 8.1) and PostgreSQL outages (8.2), against a real API
server, a real PostgreSQL and the operator as its own process, which is SIGKILLed at random
moments. Each trial is reproducible from its printed seed:
    PGCURATOR_CRASH_SEEDS=17 .venv/bin/pytest tests/reliability/test_crash_and_outage.py
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.debian_postgres import DebianPostgres
from pgcurator_devenv.postgres import EmbeddedPostgres
from pgcurator_devenv.up import secret_manifest, start_operator

from ..conftest import APP_ROLE, REPO
from .conftest import FULL, record
from .crash_scenarios import SCENARIOS, Trial, run_sql, wait

pytestmark = pytest.mark.e2e

TRIALS = 60 if FULL else 5  # the quick form: one of each scenario
SEEDS = [int(s) for s in os.environ.get("PGCURATOR_CRASH_SEEDS", "").split(",") if s] or list(range(1, TRIALS + 1))
OUTAGE_SECONDS = 60 if FULL else 15
FAST_LEASE = {"PGCURATOR_LEASE_DURATION": "4", "PGCURATOR_LEASE_RENEW_DEADLINE": "3",
              "PGCURATOR_LEASE_RENEW_INTERVAL": "1", "PGCURATOR_LEASE_RETRY_PERIOD": "0.5"}


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of our own: the operator here is killed on purpose and must not meet the
    shared e2e operator."""
    cp = ControlPlane(tmp_path_factory.mktemp("crash-cluster"))
    cp.start()
    cp.apply_crds(REPO / "crds")
    yield cp
    cp.stop()


class Operator:
    def __init__(self, cluster: ControlPlane, log: Path, env: dict[str, str] | None = None) -> None:
        self.cluster, self.log, self.env = cluster, log, env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_operator(self.cluster.kubeconfig, self.log, self.env)

    def wait_leader(self, timeout: float = 60) -> None:
        """Until the log says the (first) operator process has become the leader."""
        wait(lambda: self.log.exists() and "became the leader" in self.log.read_text(errors="replace"), timeout)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def status_of(cluster: ControlPlane, ns: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def is_ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    return st.get("ready") == "True" and st.get("observedGeneration") == obj.get("metadata", {}).get("generation")


@pytest.fixture(scope="module")
def tls_server() -> Iterator[Callable[[], DebianPostgres]]:
    """Debian's PostgreSQL with OpenSSL, started only when a certificate trial runs. Not under
    pytest's basetemp, which is 0700: the server runs as an unprivileged user."""
    started: list[DebianPostgres] = []
    root = Path(tempfile.mkdtemp(prefix="pgcurator-crash-tls-"))
    root.chmod(0o755)

    def get() -> DebianPostgres:
        if not started:
            server = DebianPostgres(root / "pgdata")
            server.start()
            started.append(server)
        return started[0]

    yield get
    for server in started:
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_at_a_random_moment_then_resume(seed: int, own_cluster: ControlPlane, pg: EmbeddedPostgres,
                                                app_password: str, tls_server: Callable[[], DebianPostgres],
                                                tmp_path: Path) -> None:
    rnd = random.Random(seed)
    name = sorted(SCENARIOS)[seed % len(SCENARIOS)]
    scenario = SCENARIOS[name]
    ns = f"crash-{seed}-{secrets.token_hex(2)}"
    own_cluster.kubectl("create", "namespace", ns)
    trial = Trial(seed, own_cluster, ns, pg, app_password, tls_server)
    spec = scenario.setup(trial)
    own_cluster.kubectl("apply", "-f", "-", input=secret_manifest("app-db", ns, trial.url))
    body = {"apiVersion": "pgcurator.io/v1alpha1", "kind": scenario.kind,
            "metadata": {"name": "subject", "namespace": ns},
            "spec": {"database": {"secretName": "app-db"}, **spec}}
    if scenario.kind != "DbTlsCert":  # certificates have their own checkInterval
        body["spec"]["schedule"] = {"interval": "3s"}  # type: ignore[index]
    # a 4 s Lease, as in the failover test: the restarted process waits out the killed one's Lease
    op = Operator(own_cluster, tmp_path / "operator.log", {"WATCH_NAMESPACES": ns, "PGCURATOR_RETRY_MAX": "3",
                                                            **FAST_LEASE})
    delay = rnd.uniform(0.2, scenario.window)
    interrupted = "not killed yet"
    try:
        op.start()
        own_cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        scenario.start(trial)
        op.wait_leader()  # the random moment is counted from when the operator can act
        time.sleep(delay)
        op.kill()
        interrupted = scenario.phase(trial)
        op.start()
        t0 = time.monotonic()
        if scenario.settle_first:
            time.sleep(2)  # the restarted operator meets the activity too
            scenario.settle(trial)

        def done() -> bool:
            obj = status_of(own_cluster, ns, scenario.kind.lower(), "subject")
            return is_ready(obj) and scenario.ready(trial, obj)

        wait(done, 240)
        took = time.monotonic() - t0
        if not scenario.settle_first:
            scenario.settle(trial)
        rows = scenario.check(trial)
        record_trial(name, interrupted, took, rows)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed} ({name}, killed {delay:.2f}s after it led: {interrupted}) failed: {exc}; reproduce with "
                             f"PGCURATOR_CRASH_SEEDS={seed}\n{(tmp_path / 'operator.log').read_text()[-3000:]}") from exc
    finally:
        op.stop()
        own_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


_TRIALS: list[tuple[str, str, float, int]] = []


def record_trial(scenario: str, interrupted: str, took: float, rows: int) -> None:
    _TRIALS.append((scenario, interrupted, took, rows))
    names = [s for s, *_ in _TRIALS]
    by = {s: names.count(s) for s in sorted(set(names))}
    record("crash trials survived (by scenario)", f"{len(_TRIALS)} of {len(SEEDS)} run: {by}")
    record("crash trials: rows checked / worst time to Ready after restart",
           f"{sum(r for *_, r in _TRIALS):,} / {max(t for _, _, t, _ in _TRIALS):.1f} s")
    for name in sorted(set(names)):
        phases = [p for s, p, _, _ in _TRIALS if s == name]
        record(f"crash trials: {name} killed during", ", ".join(f"{p} x{phases.count(p)}" for p in sorted(set(phases))))


def test_database_outage_is_reported_and_recovered(own_cluster: ControlPlane, tmp_path: Path) -> None:
    """Stop PostgreSQL mid-reconcile: Degraded within 30 s naming the cause, Ready within 30 s of
    its return, without restarting the operator (default retry settings)."""
    server = EmbeddedPostgres(tmp_path / "outage-pg")
    server.start()
    op = Operator(own_cluster, tmp_path / "operator.log", {"WATCH_NAMESPACES": "outage"})
    try:
        password = secrets.token_urlsafe(10)
        server.create_role("app", password)
        server.create_database("app", owner="app")
        url = server.dsn("app", "app", password)
        run_sql(url, "CREATE TABLE ev (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at)")
        own_cluster.kubectl("create", "namespace", "outage")
        own_cluster.kubectl("apply", "-f", "-", input=secret_manifest("app-db", "outage", url))
        body = {"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy",
                "metadata": {"name": "ev", "namespace": "outage"},
                "spec": {"database": {"secretName": "app-db"}, "table": {"name": "ev"},
                         "range": {"column": "at", "interval": "1 day", "premake": 2}, "schedule": {"interval": "5s"}}}
        op.start()
        own_cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        wait(lambda: is_ready(status_of(own_cluster, "outage", "partitionpolicy", "ev")), 60)
        server.stop()
        down_at = time.monotonic()

        def degraded() -> bool:
            conds = (status_of(own_cluster, "outage", "partitionpolicy", "ev").get("status") or {}).get("conditions", [])
            return any(c["type"] == "Degraded" and c["status"] == "True" and c["reason"] == "DatabaseUnreachable"
                       and "127.0.0.1" in c["message"] for c in conds)

        detect = wait(degraded, 30)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        server.start()
        recover = wait(lambda: is_ready(status_of(own_cluster, "outage", "partitionpolicy", "ev")), 30)
        assert op.proc is not None and op.proc.poll() is None, "the operator must not have restarted"
        record("postgres outage: detected / recovered", f"{detect:.1f} s / {recover:.1f} s after "
                                                         f"({OUTAGE_SECONDS} s outage)")
    finally:
        op.stop()
        server.stop()


def test_api_server_outage_then_spec_change_is_applied(own_cluster: ControlPlane, pg: EmbeddedPostgres,
                                                       app_password: str, tmp_path: Path) -> None:
    """Stop the API server (etcd keeps its data): the operator resumes its watches by itself and
    a spec change made once it is back is applied, without restarting the operator."""
    db = "apiout_" + secrets.token_hex(3)
    pg.create_database(db, owner=APP_ROLE)
    url = pg.dsn(db, user=APP_ROLE, password=app_password)
    run_sql(url, "CREATE TABLE ev (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at)")
    own_cluster.kubectl("create", "namespace", "apiout")
    own_cluster.kubectl("apply", "-f", "-", input=secret_manifest("app-db", "apiout", url))
    body = {"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy",
            "metadata": {"name": "ev", "namespace": "apiout"},
            "spec": {"database": {"secretName": "app-db"}, "table": {"name": "ev"},
                     "range": {"column": "at", "interval": "1 day", "premake": 2}}}
    op = Operator(own_cluster, tmp_path / "operator.log", {"WATCH_NAMESPACES": "apiout"})
    try:
        op.start()
        own_cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        wait(lambda: is_ready(status_of(own_cluster, "apiout", "partitionpolicy", "ev")), 60)
        outage = 30 if FULL else 10
        own_cluster.restart_apiserver(down_seconds=outage)
        body["spec"]["range"]["premake"] = 5  # type: ignore[index]
        t0 = time.monotonic()
        for _ in range(20):  # the first requests after a restart may still be refused
            if own_cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False).returncode == 0:
                break
            time.sleep(1)
        applied = wait(lambda: (status_of(own_cluster, "apiout", "partitionpolicy", "ev").get("status") or {})
                       .get("partitionCount") == 6, 120)
        assert op.proc is not None and op.proc.poll() is None, "the operator must not have restarted"
        record("api server outage: change applied after return", f"{time.monotonic() - t0:.1f} s ({outage} s outage; "
                                                                 f"watch resumed in {applied:.1f} s)")
    finally:
        op.stop()
