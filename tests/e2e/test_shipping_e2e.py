"""Shipping, proven against a real API server (a control plane of this module's own, so the session
operator of the other e2e tests never acts on these resources):

* every object the chart renders is accepted by a server-side dry-run apply;
* the operator, run with the chart's ServiceAccount token and exactly the chart's RBAC (the API
  server authorizes with RBAC), takes PartitionPolicies to Ready, posts Events, handles a
  finalizer; /metrics is scraped and parsed during that run;
* two replicas: one leader; the follower takes over when the leader is killed (timed);
* liveness fails when the watch stops delivering (the API server frozen with SIGSTOP), and
  recovers after.

Hand check of least privilege: PGCURATOR_RBAC_DROP="secrets:get,events:create" (resource:verb,
comma-separated) removes those verbs from the rendered rules before they are applied.
Fixtures for the Argo CD health test: PGCURATOR_CAPTURE_FIXTURES=1 writes the observed objects to
tests/fixtures/argocd/.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.ports import free_port
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..chart import find, render
from ..conftest import APP_ROLE, REPO
from ..figures import record
from ..integration.scenarios import EVENT_LOGS
from .conftest import OPERATOR_ENV, apply, condition, get, put_secret

pytestmark = pytest.mark.e2e

RELEASE, SYSTEM_NS = "pgc", "pgcurator-system"
SA = f"{RELEASE}-pgcurator"
FIXTURES = REPO / "tests" / "fixtures" / "argocd"
# Short leader-election timings so failover and liveness finish in seconds (production: 30/20/10).
FAST_LEASE = {"PGCURATOR_LEASE_DURATION": "4", "PGCURATOR_LEASE_RENEW_DEADLINE": "3",
              "PGCURATOR_LEASE_RENEW_INTERVAL": "1", "PGCURATOR_LEASE_RETRY_PERIOD": "0.5"}


# ----------------------------------------------------------------------------- helpers


def http_get(url: str, timeout: float = 3) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = http_get(url)
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /,
           **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for (n, ls), v in metrics.items() if n == metric and want <= set(ls)]
    return sum(found) if found else None


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, log: Path | None = None,
               interval: float = 0.1) -> float:
    """Seconds it took; AssertionError with the log tail on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def capture(name: str, obj: dict[str, Any]) -> None:
    """Keep a real object as an Argo CD health fixture (tests/unit/test_argocd_health.py)."""
    if os.environ.get("PGCURATOR_CAPTURE_FIXTURES") != "1":
        return
    FIXTURES.mkdir(parents=True, exist_ok=True)
    meta = obj["metadata"]
    keep = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": meta["name"], "namespace": "demo", "generation": meta["generation"]},
            "spec": obj["spec"], "status": obj.get("status")}
    (FIXTURES / f"{name}.json").write_text(json.dumps(keep, indent=1, sort_keys=True) + "\n")


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    name: str

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return scrape(self.url + "/metrics")

    def is_leader(self) -> bool:
        status, text = http_get(self.url + "/metrics")
        return status == 200 and "\npgcurator_leader 1.0" in text

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_operator(kubeconfig: Path, workdir: Path, name: str, env: dict[str, str],
                   args: list[str] | None = None) -> Operator:
    port = free_port()
    log = workdir / f"{name}.log"
    full_env = {**os.environ, **OPERATOR_ENV, **env, "KUBECONFIG": str(kubeconfig), "POD_NAME": name,
                "POD_NAMESPACE": SYSTEM_NS, "PGCURATOR_HTTP_ADDRESS": f"127.0.0.1:{port}"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pgcurator.cli", *(args or ["run"])], env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    op = Operator(proc, log, f"http://127.0.0.1:{port}", name)
    wait_until(lambda: http_get(op.url + "/readyz")[0] == 200 or proc.poll() is not None, 60,
               f"{name} ready", log)
    assert proc.poll() is None, log.read_text()[-4000:]
    return op


def sql(url: str, statement: str) -> list[Any]:
    async def run() -> list[Any]:
        c = await asyncpg.connect(url)
        try:
            return list(await c.fetch(statement))
        finally:
            await c.close()

    return asyncio.run(run())


def policy(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
        "schedule": {"interval": "1h"},
    }
    body.update(spec)
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy", "metadata": {"name": name},
            "spec": body}


def ready(obj: dict[str, Any]) -> bool:
    c = condition(obj, "Ready")
    return c.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def wait_obj(cluster: ControlPlane, ns: str, name: str, predicate: Callable[[dict[str, Any]], bool],
             timeout: float, what: str, log: Path) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def check() -> bool:
        box["obj"] = get(cluster, ns, "partitionpolicy", name)
        return predicate(box["obj"])

    try:
        wait_until(check, timeout, what, log, interval=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast status: {json.dumps(box.get('obj', {}).get('status'), indent=1)}") from None
    return dict(box["obj"])


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ship_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("ship-cluster"))
    cp.start()
    cp.apply_crds(REPO / "crds")
    cp.kubectl("create", "namespace", SYSTEM_NS)
    yield cp
    cp.stop()


def drop_rules(objs: list[dict[str, Any]], spec: str) -> list[str]:
    """Remove `resource:verb` pairs from every rendered rule (for the hand check of least privilege)."""
    dropped = []
    for pair in filter(None, spec.split(",")):
        resource, verb = pair.split(":")
        for o in objs:
            for rule in o.get("rules", []):
                if resource in rule["resources"] and verb in rule["verbs"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
                    dropped.append(pair)
            o["rules"] = [r for r in o.get("rules", []) if r["verbs"]] if "rules" in o else o.get("rules")
            if o.get("rules") is None:
                o.pop("rules", None)
    return dropped


@pytest.fixture(scope="module")
def installed(ship_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The chart's ServiceAccount and RBAC applied for real; a kubeconfig with that account's token."""
    tmp = tmp_path_factory.mktemp("chart")
    objs = render(release=RELEASE, namespace=SYSTEM_NS, tmp=tmp)
    dropped = drop_rules(objs, os.environ.get("PGCURATOR_RBAC_DROP", ""))
    if dropped:
        print(f"\n[least-privilege check] dropped {dropped}")
    keep = [o for o in objs if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                               "RoleBinding")]
    ship_cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(keep))
    kubeconfig = ship_cluster.write_service_account_kubeconfig(SYSTEM_NS, SA, tmp / "sa.kubeconfig")
    container = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    # The Deployment's own settings, minus what the downward API fills in a pod.
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.pop("PGCURATOR_HTTP_ADDRESS")
    return {"kubeconfig": kubeconfig, "env": env, "args": container["args"], "workdir": tmp}


@pytest.fixture
def app_ns(ship_cluster: ControlPlane) -> str:
    ns = "app-" + secrets.token_hex(3)
    ship_cluster.kubectl("create", "namespace", ns)
    return ns


@pytest.fixture
def event_logs_db(pg: EmbeddedPostgres, app_password: str) -> str:
    name = "ship_" + secrets.token_hex(4)
    pg.create_database(name, owner=APP_ROLE)
    url = pg.dsn(name, user=APP_ROLE, password=app_password)

    async def setup() -> None:
        c = await asyncpg.connect(url)
        for table in ("event_logs", "event_logs_b", "event_logs_c"):  # one table per policy
            await c.execute(EVENT_LOGS.replace("event_logs", table))
        await c.close()

    asyncio.run(setup())
    return url


# ----------------------------------------------------------------------------- tests


def test_rendered_chart_is_accepted_by_the_api_server(ship_cluster: ControlPlane, tmp_path: Path) -> None:
    for ns in ("team-a", "team-b"):
        ship_cluster.kubectl("create", "namespace", ns)
    for values in ({}, {"watchNamespaces": ["team-a", "team-b"], "replicas": 1, "rbac": {"certManager": False}}):
        objs = render(values, release="dry", namespace=SYSTEM_NS, include_crds=True, tmp=tmp_path)
        out = ship_cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-o", "name",
                                   "-f", "-", input=yaml.safe_dump_all(objs), check=False)
        assert out.returncode == 0, out.stderr
        accepted = out.stdout.split()
        assert len(accepted) == len(objs), (accepted, [o["kind"] for o in objs])
        assert any(a.startswith("deployment.apps/") for a in accepted)
        assert sum(a.startswith("customresourcedefinition.") for a in accepted) == len(list((REPO / "crds").glob("*.yaml")))


def test_kind_path_manifests_are_accepted_as_typed(ship_cluster: ControlPlane) -> None:
    """The kind path (README, docs/operations.md) applies examples/kind/*.yaml: every object must pass the API server's
    validation (CRD schemas and CEL rules included), cert-manager's kinds against its real CRDs."""
    cm = subprocess.run(["bash", str(REPO / "hack" / "cert-manager-binaries.sh")], capture_output=True, text=True,
                        check=True).stdout.strip().splitlines()[-1]
    ship_cluster.apply_crds(Path(cm) / "crds")
    kind_dir = REPO / "examples" / "kind"
    ship_cluster.kubectl("create", "namespace", "demo")  # the dry run does not create it
    for name in ("postgres.yaml", "issuer.yaml", "resources.yaml"):
        docs = [d for d in yaml.safe_load_all((kind_dir / name).read_text()) if d]
        out = ship_cluster.kubectl("apply", "--server-side", "--dry-run=server", "-o", "name", "-f",
                                   str(kind_dir / name), check=False)
        assert out.returncode == 0, f"{name}: {out.stderr}"
        assert len(out.stdout.split()) == len(docs), out.stdout
    kinds = {d["kind"] for d in yaml.safe_load_all((kind_dir / "resources.yaml").read_text())}
    crd_kinds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in (REPO / "crds").glob("*.yaml")}
    assert kinds == crd_kinds, "one sample of each kind"


def test_operator_with_the_charts_service_account_and_metrics(
    ship_cluster: ControlPlane, installed: dict[str, Any], app_ns: str, event_logs_db: str
) -> None:
    op = start_operator(installed["kubeconfig"], installed["workdir"], "rbac-op", installed["env"], installed["args"])
    try:
        put_secret(ship_cluster, app_ns, "app-db", event_logs_db)
        apply(ship_cluster, app_ns, policy("kept"))
        apply(ship_cluster, app_ns, policy("deletable", deletionPolicy="Delete", table={"name": "event_logs_b"}))
        kept = wait_obj(ship_cluster, app_ns, "kept", ready, 60, "kept Ready", op.log)
        capture("partitionpolicy-ready", kept)
        assert kept["status"]["partitionCount"] == 4
        deletable = wait_obj(ship_cluster, app_ns, "deletable",
                             lambda o: ready(o) and o["metadata"].get("finalizers") == ["pgcurator.io/cleanup"],
                             60, "deletable Ready with its finalizer", op.log)
        assert deletable["status"]["partitionCount"] == 4

        # Events were posted (events: create).
        events = json.loads(ship_cluster.kubectl("get", "events", "-n", app_ns, "-o", "json").stdout)["items"]
        assert any(e["reason"] == "DDLApplied" and e["involvedObject"]["name"] == "kept" for e in events)

        # Metrics, scraped and parsed while it runs.
        m = op.metrics()
        assert (sample(m, "pgcurator_reconciles_total", kind="PartitionPolicy", outcome="ready") or 0) >= 2
        assert (sample(m, "pgcurator_ddl_statements_total", outcome="ok") or 0) >= 4
        assert (sample(m, "pgcurator_ddl_duration_seconds_count", kind="create_partition") or 0) >= 1
        assert sample(m, "pgcurator_partitions_ahead", namespace=app_ns, name="kept") == 3
        assert sample(m, "pgcurator_resources", kind="PartitionPolicy") == 2
        assert sample(m, "pgcurator_leader") == 1
        assert sample(m, "pgcurator_pool_connections_in_use") is not None
        assert any(n == "pgcurator_pool_connections_in_use" and dict(ls)["database"].endswith(
            "/" + event_logs_db.rsplit("/", 1)[-1].split("?")[0]) for n, ls in m)
        assert (sample(m, "pgcurator_reconcile_duration_seconds_count", kind="PartitionPolicy") or 0) >= 2
        assert (sample(m, "pgcurator_watch_events_total", kind="PartitionPolicy") or 0) >= 2
        assert sample(m, "process_resident_memory_bytes")
        assert http_get(op.url + "/healthz")[0] == 200

        # Deletion runs the cleanup and removes the finalizer (patch), then the series goes too.
        ship_cluster.kubectl("delete", "partitionpolicy", "deletable", "-n", app_ns, "--timeout=60s")
        wait_until(lambda: sample(op.metrics(), "pgcurator_partitions_ahead", namespace=app_ns,
                                  name="deletable") is None, 10, "series of the deleted policy removed", op.log)

        # Statuses for the Argo CD fixtures, from this same run.
        apply(ship_cluster, app_ns, policy("dry", dryRun=True, table={"name": "event_logs_c"}))
        capture("partitionpolicy-dryrun", wait_obj(
            ship_cluster, app_ns, "dry", lambda o: bool((o.get("status") or {}).get("plan")), 30, "dry", op.log))
        apply(ship_cluster, app_ns, policy("no-secret", database={"secretName": "missing"}))
        capture("partitionpolicy-secret-not-found", wait_obj(
            ship_cluster, app_ns, "no-secret", lambda o: condition(o, "Degraded").get("status") == "True", 30,
            "SecretNotFound", op.log))
        put_secret(ship_cluster, app_ns, "down-db", "postgresql://app:pw@127.0.0.1:9/app")
        apply(ship_cluster, app_ns, policy("unreachable", database={"secretName": "down-db"}))
        capture("partitionpolicy-unreachable-transient", wait_obj(
            ship_cluster, app_ns, "unreachable", lambda o: condition(o, "Degraded").get("reason") == "DatabaseUnreachable",
            30, "DatabaseUnreachable", op.log))
        apply(ship_cluster, app_ns, policy("missing-table", table={"name": "nope"}))
        capture("partitionpolicy-table-not-found", wait_obj(
            ship_cluster, app_ns, "missing-table", lambda o: condition(o, "Degraded").get("reason") == "TableNotFound",
            30, "TableNotFound", op.log))
    finally:
        op.stop()
    log = op.log.read_text()
    assert "Forbidden" not in log and " 403" not in log, log[-4000:]
    # With the operator stopped, a spec change stays unobserved: the object Argo CD sees mid-rollout.
    apply(ship_cluster, app_ns, policy("kept", range={"column": "server_timestamp", "interval": "1 month",
                                                      "premake": 5}))
    capture("partitionpolicy-new-generation", get(ship_cluster, app_ns, "partitionpolicy", "kept"))


def test_one_leader_and_failover(
    ship_cluster: ControlPlane, installed: dict[str, Any], app_ns: str, event_logs_db: str
) -> None:
    env = {**installed["env"], **FAST_LEASE, "PGCURATOR_HEARTBEAT_STALE": "10"}
    a = start_operator(installed["kubeconfig"], installed["workdir"], "replica-a", env)
    b = start_operator(installed["kubeconfig"], installed["workdir"], "replica-b", env)
    try:
        wait_until(lambda: a.is_leader() or b.is_leader(), 15, "a leader")
        time.sleep(1.5)  # a few renewals: the other one must stay a follower
        assert a.is_leader() != b.is_leader(), "exactly one leader"
        leader, follower = (a, b) if a.is_leader() else (b, a)
        put_secret(ship_cluster, app_ns, "app-db", event_logs_db)
        apply(ship_cluster, app_ns, policy("ha"))
        wait_obj(ship_cluster, app_ns, "ha", ready, 60, "Ready", leader.log)
        # Only the leader ran DDL (the history table names the replica), the follower ran nothing.
        ran_by = {r[0] for r in sql(event_logs_db, "SELECT DISTINCT operator FROM pgcurator.history")}
        assert ran_by == {leader.name}
        assert sample(follower.metrics(), "pgcurator_reconciles_total") is None

        # Kill the leader outright (no Lease release): the follower waits out the Lease.
        leader.stop(signal.SIGKILL)
        took = wait_until(follower.is_leader, 20, "takeover after SIGKILL", follower.log, interval=0.05)
        print(f"\n[failover] follower took over {took:.2f}s after the leader was killed (lease 4s)")
        record("failover after SIGKILL of the leader", f"{took:.2f} s (test lease 4 s; production 30 s)")
        assert took < 4 + 3, took
        apply(ship_cluster, app_ns, policy("ha", range={"column": "server_timestamp", "interval": "1 month",
                                                        "premake": 5}))
        wait_obj(ship_cluster, app_ns, "ha", lambda o: ready(o) and o["status"]["partitionCount"] == 6, 60,
                 "new leader applies premake 5", follower.log)
        ran_by = {r[0] for r in sql(event_logs_db, "SELECT DISTINCT operator FROM pgcurator.history "
                                    "WHERE statement LIKE '%ATTACH PARTITION%'")}
        assert ran_by == {leader.name, follower.name}

        # A clean shutdown hands the Lease over at once.
        c = start_operator(installed["kubeconfig"], installed["workdir"], "replica-c", env)
        try:
            follower.proc.send_signal(signal.SIGTERM)
            took = wait_until(c.is_leader, 10, "takeover after SIGTERM", c.log, interval=0.05)
            t0 = time.monotonic()
            follower.stop()
            print(f"[failover] after SIGTERM of the leader (Lease released): {took:.2f}s; the old leader "
                  f"exited {time.monotonic() - t0:.2f}s later")
            assert took < 2.0, took
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()


def test_liveness_fails_when_the_watch_stops(ship_cluster: ControlPlane, installed: dict[str, Any]) -> None:
    env = {**installed["env"], **FAST_LEASE, "PGCURATOR_HEARTBEAT_STALE": "6"}
    op = start_operator(installed["kubeconfig"], installed["workdir"], "liveness", env)
    pid = ship_cluster.apiserver_pid
    assert pid is not None
    try:
        wait_until(op.is_leader, 15, "leader")
        assert http_get(op.url + "/healthz")[0] == 200
        os.kill(pid, signal.SIGSTOP)  # the API server freezes: connections open, nothing answers
        try:
            took = wait_until(lambda: http_get(op.url + "/healthz")[0] == 503, 20, "liveness to fail", op.log)
            status, body = http_get(op.url + "/healthz")
            assert status == 503 and "leader-Lease watch" in body, body
            print(f"\n[liveness] failing {took:.1f}s after the API server froze (limit 6s)")
            record("watch stall (API server SIGSTOP): liveness fails after", f"{took:.1f} s (heartbeat threshold 6 s in the "
                   "test, 60 s by default)")
            assert 5 < took < 12, took
            # It stopped acting too: it could not renew the Lease within the renew deadline.
            assert not op.is_leader()
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: http_get(op.url + "/healthz")[0] == 200, 30, "liveness to recover", op.log)
        wait_until(op.is_leader, 30, "leader again", op.log)
    finally:
        op.stop()
