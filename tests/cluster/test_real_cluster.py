"""pgcurator as users run it: the image built from the Dockerfile, `helm install` of the chart onto
a real node (kubelet, containerd, runc, kube-proxy, bridge CNI; hack/cluster-up.sh), PostgreSQL
in pods, cert-manager issuing and the kubelet projecting certificates. Each step asserts real
state: pods, the Lease, the databases' catalogs, the certificate served over the wire.

The tests run in file order and build on each other (one cluster, one release)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcurator.tls.handshake import fetch_served_certificate
from pgcurator.tls.validate import info_of_der, leaf_of_pem
from pgcurator_devenv.certmanager import CertManager

from ..figures import record
from ..tls_corpus import psql_verify_full
from . import manifests as m
from .kube import REPO, Cluster, http_get, run, wait_until
from .operator_pods import RELEASE, SELECTOR, SYSTEM_NS, Api, Sampler, is_leader, ready

pytestmark = pytest.mark.cluster

DATA_NS = "pgc-data"
CHART = str(REPO / "charts" / "pgcurator")
KINDS = {"PartitionPolicy": "partitionpolicies", "IndexPolicy": "indexpolicies",
         "VectorIndex": "vectorindexes", "DbTlsCert": "dbtlscerts", "DatabaseMonitor": "databasemonitors"}
NAMES = {"PartitionPolicy": "event-logs", "IndexPolicy": "articles", "VectorIndex": "knowledge-chunks",
         "DbTlsCert": "postgres", "DatabaseMonitor": "app"}


class State:
    """What one test leaves for the next."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.api = Api(cluster)
        self.ips: dict[str, str] = {}          # Service -> ClusterIP
        self.cert_manager: CertManager | None = None
        # PGCURATOR_IMAGE_TAG (also read by hack/cluster-up.sh): install another image built
        # beforehand, e.g. to measure a hand-over before a fix.
        self.tag = os.environ.get("PGCURATOR_IMAGE_TAG", "dev")

    # ------------------------------------------------------------ the operator
    def operator_pods(self) -> list[dict[str, Any]]:
        return self.cluster.pods(SYSTEM_NS, SELECTOR)

    def leader_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.operator_pods() if is_leader(p)]

    def explain(self) -> str:
        pods = self.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = self.cluster.kubectl("get", "events", "-n", SYSTEM_NS, "--sort-by=.lastTimestamp",
                                      check=False).stdout[-3000:]
        logs = ""
        for p in self.operator_pods():
            logs += f"--- {p['metadata']['name']}\n" + self.cluster.kubectl(
                "logs", "-n", SYSTEM_NS, p["metadata"]["name"], "--tail=30", check=False).stdout[-3000:]
        return f"{pods}\n{events}\n{logs}"

    def settled(self, replicas: int = 2) -> list[dict[str, Any]] | None:
        """`replicas` pods, all Ready, exactly one of them leading."""
        pods = self.operator_pods()
        if len(pods) != replicas or not all(ready(p) for p in pods):
            return None
        leaders = [p for p in pods if is_leader(p)]
        return pods if len(leaders) == 1 else None

    def helm_values(self, tag: str) -> Path:
        return m.write_values(self.workdir / f"values-{tag}.yaml", m.chart_values(tag))

    # ------------------------------------------------------------ the resources
    def resource(self, kind: str) -> dict[str, Any]:
        return self.cluster.get(KINDS[kind], NAMES[kind], DATA_NS)

    def all_ready(self) -> bool:
        for kind in KINDS:
            obj = self.resource(kind)
            status = obj.get("status") or {}
            if status.get("ready") != "True" or status.get("observedGeneration") != obj["metadata"]["generation"]:
                return False
        return True

    def dsn(self, service: str, user: str = "app", password: str = m.APP_PASSWORD, db: str = "app") -> str:
        return f"postgresql://{user}:{password}@{self.ips[service]}:5432/{db}"

    def query(self, service: str, sql: str, *args: Any, user: str = "app", password: str = m.APP_PASSWORD,
              db: str = "app") -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn(service, user, password, db), timeout=10)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(go())

    def execute(self, service: str, sql: str) -> None:
        """Several statements at once (the simple query protocol)."""
        async def go() -> None:
            conn = await asyncpg.connect(self.dsn(service), timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())


@pytest.fixture(scope="module")
def state(cluster: Cluster) -> Iterator[State]:
    workdir = Path(tempfile.mkdtemp(prefix="pgcurator-cluster-"))
    workdir.chmod(0o755)
    s = State(cluster, workdir)
    yield s
    if s.cert_manager is not None:
        s.cert_manager.stop()


def _kubectl_table(cluster: Cluster, plural: str) -> dict[str, str]:
    """`kubectl get` as a user reads it: column name -> value for the one row."""
    lines = cluster.kubectl("get", plural, "-n", DATA_NS).stdout.splitlines()
    header, row = lines[0], lines[1]
    starts = [i for i in range(len(header)) if header[i] != " " and (i == 0 or header[i - 1] == " ")]
    cols = {}
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else None
        cols[header[start:end].strip()] = row[start:end].strip()
    return cols


# =============================================================================== 1. install
def test_helm_install_restricted_namespace_two_ready_pods_one_leader(state: State) -> None:
    c = state.cluster
    c.apply(m.namespace(SYSTEM_NS, {"pod-security.kubernetes.io/enforce": "restricted",
                                    "pod-security.kubernetes.io/enforce-version": "latest"}))
    t0 = time.monotonic()
    c.helm("install", RELEASE, CHART, "-n", SYSTEM_NS, "-f", str(state.helm_values(state.tag)))
    pods = wait_until(state.settled, 300, "2 operator pods Ready with one leader", interval=0.5,
                      explain=state.explain)
    took = time.monotonic() - t0
    record("helm install to 2/2 Ready, one leader", f"{took:.1f} s")
    # The restricted Pod Security level admitted them (it would have refused the ReplicaSet's pods).
    for p in pods:
        spec = p["spec"]
        assert spec["serviceAccountName"] == f"{RELEASE}-pgcurator"
        assert spec["securityContext"]["runAsNonRoot"] is True
        container = spec["containers"][0]
        assert container["image"] == f"localhost/pgcurator:{state.tag}"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0
    # The chart's ServiceAccount is the only one with rights to the Lease: the leader wrote it.
    leader = state.leader_pods()
    assert len(leader) == 1
    assert state.api.holder().startswith(leader[0]["metadata"]["name"] + "_")
    sas = {s["metadata"]["name"] for s in c.get("serviceaccounts", namespace=SYSTEM_NS)["items"]}
    assert sas == {"default", f"{RELEASE}-pgcurator"}, sas


# =============================================================================== 2. resources
def test_postgres_pods_and_one_resource_of_each_kind_ready(state: State) -> None:
    c = state.cluster
    c.apply(m.namespace(DATA_NS), m.service(DATA_NS, "postgres"), m.service(DATA_NS, "pgvector"))
    for svc in ("postgres", "pgvector"):
        state.ips[svc] = c.get("service", svc, DATA_NS)["spec"]["clusterIP"]
    c.apply(
        m.secret(DATA_NS, "app-db", {"uri": state.dsn("postgres")}),
        m.secret(DATA_NS, "vector-db", {"uri": state.dsn("pgvector")}),
        m.secret(DATA_NS, "pg-tls-admin", {"uri": state.dsn("postgres", "tls_admin", m.TLS_PASSWORD, "postgres")}),
        *m.postgres(DATA_NS, "postgres", "debian", m.DEBIAN_INIT, tls_secret="postgres-tls"),
        *m.postgres(DATA_NS, "pgvector", "embedded", m.VECTOR_INIT, tls_secret=None),
    )

    def pg_ready() -> bool:
        pods = c.pods(DATA_NS, "app in (postgres,pgvector)")
        return len(pods) == 2 and all(ready(p) for p in pods)

    wait_until(pg_ready, 300, "both PostgreSQL pods Ready", interval=0.5, explain=state.explain)
    # Reachable through the Services' ClusterIPs (kube-proxy), from the host as from the pods.
    def answers(service: str) -> bool:
        try:
            return bool(state.query(service, "SELECT 1"))
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False  # the Service's endpoints or the server's init are not there yet

    wait_until(lambda: answers("postgres") and answers("pgvector"), 120, "PostgreSQL answering on its ClusterIP",
               explain=state.explain)

    cm = CertManager(c, state.workdir / "cert-manager")  # type: ignore[arg-type]
    cm.start()
    state.cert_manager = cm
    c.apply(*m.example_issuer(DATA_NS))
    cm.wait_ready("issuer", "ca-issuer", DATA_NS, timeout=120)

    t0 = time.monotonic()
    c.apply(*m.example_resources(DATA_NS, {"PartitionPolicy": "app-db", "IndexPolicy": "app-db",
                                           "VectorIndex": "vector-db", "DbTlsCert": "pg-tls-admin",
                                           "DatabaseMonitor": "app-db"}))
    wait_until(state.all_ready, 600, "one resource of each kind Ready", interval=1, explain=state.explain)
    record("examples applied to all five Ready (DbTlsCert via the kubelet)", f"{time.monotonic() - t0:.1f} s")

    # The columns users read say what the databases hold.
    parts = state.query("postgres", "SELECT count(*) AS n FROM pg_catalog.pg_inherits i "
                        "JOIN pg_catalog.pg_class p ON p.oid = i.inhparent WHERE p.relname = 'event_logs'")[0]["n"]
    pp = _kubectl_table(c, "partitionpolicies")
    assert pp["READY"] == "True" and pp["TABLE"] == "event_logs" and int(pp["PARTITIONS"]) == parts > 0, pp
    valid = state.query("postgres", "SELECT count(*) AS n FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i "
                        "ON i.oid = x.indexrelid WHERE i.relname IN ('idx_articles_user_read_date', "
                        "'idx_articles_feed') AND x.indisvalid")[0]["n"]
    ip = _kubectl_table(c, "indexpolicies")
    assert ip["READY"] == "True" and ip["DECLARED"] == "2" and int(ip["VALID"]) == valid == 2, ip
    vi = _kubectl_table(c, "vectorindexes")
    hnsw = state.query("pgvector", "SELECT count(*) AS n FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i "
                       "ON i.oid = x.indexrelid JOIN pg_catalog.pg_am a ON a.oid = i.relam "
                       "WHERE a.amname = 'hnsw' AND x.indisvalid")[0]["n"]
    assert vi["READY"] == "True" and vi["METHOD"] == "hnsw" and hnsw == 1, vi
    tls = _kubectl_table(c, "dbtlscerts")
    served = asyncio.run(fetch_served_certificate(state.ips["postgres"], 5432))
    assert tls["MODE"] == "mount" and tls["SERVING"] == "True", tls
    assert tls["SERIAL"] == info_of_der(served.der).serial, (tls, info_of_der(served.der).serial)


def _secret_leaf_serial(c: Cluster, name: str) -> tuple[str, bytes]:
    data = c.get("secret", name, DATA_NS)["data"]
    crt = base64.b64decode(data["tls.crt"])
    return leaf_of_pem(crt).serial, base64.b64decode(data["ca.crt"])


# =============================================================================== 2b. mount mode
def test_dbtlscert_mount_mode_rotation_through_the_kubelet(state: State) -> None:
    """cert-manager renews into the Secret; the real kubelet projects it into the PostgreSQL pod;
    pgcurator sees the file, reloads; a verify-full client is served the new certificate."""
    c, cm = state.cluster, state.cert_manager
    assert cm is not None
    old, _ = _secret_leaf_serial(c, "postgres-tls")
    cm.renew(DATA_NS, "postgres")
    t0 = time.monotonic()
    new, ca = wait_until(lambda: (s := _secret_leaf_serial(c, "postgres-tls"))[0] != old and s, 120,
                         "cert-manager's new certificate in the Secret")
    secret_changed = time.monotonic()

    def served_serial() -> str | None:
        try:
            served = asyncio.run(fetch_served_certificate(state.ips["postgres"], 5432))
        except Exception:
            return None
        return info_of_der(served.der).serial

    def projected() -> bool:  # the file in the pod, read through the server as pgcurator reads it
        rows = state.query("postgres", "SELECT pg_catalog.pg_read_binary_file('/etc/pgtls/tls.crt', 0, 1048576, "
                           "false) AS f", user="tls_admin", password=m.TLS_PASSWORD, db="postgres")
        return leaf_of_pem(bytes(rows[0]["f"])).serial == new

    wait_until(projected, 180, "the kubelet projected the new certificate", interval=0.2, explain=state.explain)
    on_disk = time.monotonic()
    wait_until(lambda: served_serial() == new, 180, "the new certificate served", interval=0.2,
               explain=state.explain)
    served = time.monotonic()
    record("mount-mode rotation: Secret changed to served", f"{served - secret_changed:.1f} s (kubelet projection "
           f"{on_disk - secret_changed:.1f} s with syncFrequency 10 s, then pgcurator {served - on_disk:.1f} s; "
           f"renewal to Secret {secret_changed - t0:.1f} s)")
    done = psql_verify_full(f"postgres.{DATA_NS}.svc", state.ips["postgres"], 5432, "tls_admin", m.TLS_PASSWORD,
                            ca, state.workdir)
    assert done.returncode == 0 and done.stdout.strip() == "t", done.stderr
    wait_until(lambda: (state.resource("DbTlsCert").get("status") or {}).get("servedSerial") == new, 120,
               "status.servedSerial = the new serial")


# =============================================================================== 6a. metrics
def test_metrics_scraped_through_the_service(state: State) -> None:
    c = state.cluster
    svc = c.get("service", f"{RELEASE}-pgcurator-metrics", SYSTEM_NS)
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
    _, text = wait_until(lambda: (r := http_get(f"http://{ip}:{port}/metrics"))[0] == 200 and r, 60,
                         "metrics through the Service")
    counts = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("pgcurator_resources{")}
    for kind in KINDS:
        assert counts.get(f'kind="{kind}"') == 1.0, counts
    assert "\npgcurator_leader " in text


# =============================================================================== 3. upgrade
def test_helm_upgrade_rolls_with_one_leader_at_a_time_and_nothing_run_twice(state: State) -> None:
    c = state.cluster
    new_tag = state.tag + "-next"
    c.import_image(f"localhost/pgcurator:{state.tag}", f"localhost/pgcurator:{new_tag}")
    history_before = state.query("postgres", "SELECT count(*) AS n FROM pgcurator.history")[0]["n"]
    old_pods = {p["metadata"]["name"] for p in state.operator_pods()}
    not_ready: list[str] = []
    with Sampler(state.api) as sampler:
        t0 = time.monotonic()
        c.helm("upgrade", RELEASE, CHART, "-n", SYSTEM_NS, "-f", str(state.helm_values(new_tag)))

        def rolled() -> bool:
            pods = state.settled()
            if pods is None:
                if not state.all_ready():
                    not_ready.append(f"{time.monotonic() - t0:.1f}s")
                return False
            return all(p["spec"]["containers"][0]["image"] == f"localhost/pgcurator:{new_tag}" for p in pods)

        wait_until(rolled, 300, "the new image rolled out, 2 Ready, one leader", interval=0.5, explain=state.explain)
        took = time.monotonic() - t0
    state.tag = new_tag
    assert not old_pods & {p["metadata"]["name"] for p in state.operator_pods()}, "the old pods were replaced"
    assert sampler.samples, "the sampler saw nothing"
    assert sampler.most_leaders_at_once() <= 1, [s for s in sampler.samples if len(s.leaders) > 1][:5]
    assert not not_ready, f"resources not Ready during the upgrade at {not_ready[:5]}"
    gap = sampler.longest_without_leader()
    record("helm upgrade (rolling, 2 replicas)", f"{took:.1f} s; longest time without a leader "
           + (f"{gap:.2f} s" if gap else f"under one sample ({len(sampler.samples)} samples, ~0.1 s apart)"))
    # No statement was run twice: every DDL in the history is there once, and a rolled operator
    # found nothing to do on converged resources.
    dup = state.query("postgres", "SELECT statement, count(*) AS n FROM pgcurator.history WHERE outcome = 'ok' "
                      "GROUP BY statement HAVING count(*) > 1")
    assert not dup, dup
    after = state.query("postgres", "SELECT count(*) AS n FROM pgcurator.history")[0]["n"]
    assert after == history_before, f"{after - history_before} statements ran during the upgrade"
    assert state.all_ready()


# =============================================================================== 4/5. failover
LOAD = int(os.environ.get("PGCURATOR_CLUSTER_LOAD", "300"))


def _new_leader_after(state: State, old_holder: str, since: float, timeout: float) -> float:
    """Seconds from `since` (the disruption) until another identity holds the Lease."""

    def taken() -> bool:
        holder = state.api.holder()
        return bool(holder) and holder != old_holder

    wait_until(taken, timeout, "a new Lease holder", interval=0.05, explain=state.explain)
    return time.monotonic() - since


def test_leader_pod_deleted_under_load_hands_over_at_once_and_loses_nothing(state: State) -> None:
    """The clean hand-over (SIGTERM from the kubelet, Lease released) while the leader is busy
    with LOAD PartitionPolicies that it just took on."""
    c = state.cluster
    tables = "".join(f"CREATE TABLE load_{i} (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);"
                     for i in range(LOAD))
    state.execute("postgres", tables)
    policies = [{"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy",
                 "metadata": {"name": f"load-{i}", "namespace": DATA_NS},
                 "spec": {"database": {"secretName": "app-db"}, "table": {"name": f"load_{i}"},
                          "range": {"column": "at", "interval": "1 month", "premake": 2}}} for i in range(LOAD)]
    c.apply(*policies)
    leader, holder = state.leader_pods()[0]["metadata"]["name"], state.api.holder()
    assert holder.startswith(leader + "_")
    t0 = time.monotonic()
    c.kubectl("delete", "pod", leader, "-n", SYSTEM_NS, "--wait=false")
    took = _new_leader_after(state, holder, t0, 120)
    record(f"failover, leader pod deleted (clean hand-over, {LOAD} resources in flight)",
           f"{took:.2f} s from the delete request (kubectl's own run included)")
    assert took <= 30, "the Lease was not released: the standby waited it out"

    def loaded_ready() -> bool:
        items = c.get("partitionpolicies", namespace=DATA_NS)["items"]
        return sum(1 for o in items if (o.get("status") or {}).get("ready") == "True") == LOAD + 1

    wait_until(loaded_ready, 900, f"all {LOAD + 1} PartitionPolicies Ready after the hand-over", interval=2,
               explain=state.explain)
    record(f"{LOAD} PartitionPolicies applied to Ready across a hand-over", f"{time.monotonic() - t0:.1f} s")
    # No work lost, none twice: every table has its partitions, each created once.
    missing = state.query("postgres", "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname LIKE 'load\\_%' "
                          "AND c.relkind = 'p' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i "
                          "WHERE i.inhparent = c.oid)")
    assert not missing, missing[:5]
    dup = state.query("postgres", "SELECT statement FROM pgcurator.history WHERE outcome = 'ok' "
                      "GROUP BY statement HAVING count(*) > 1")
    assert not dup, dup[:5]
    c.kubectl("delete", "partitionpolicies", "-n", DATA_NS, "-l", "!keep", "--field-selector",
              "metadata.name!=event-logs", "--wait=false", timeout=300)
    wait_until(state.settled, 300, "2 Ready pods, one leader", interval=0.5, explain=state.explain)


def test_leader_process_killed_on_the_node_new_leader_after_the_lease(state: State) -> None:
    c = state.cluster
    wait_until(lambda: len(c.get("partitionpolicies", namespace=DATA_NS)["items"]) == 1, 300,
               "the load's PartitionPolicies gone")
    leader = state.leader_pods()[0]
    pid = c.host_pid(leader, "operator")
    name, holder = leader["metadata"]["name"], state.api.holder()
    assert holder.startswith(name + "_")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)  # no SIGTERM, no release: the standby waits the Lease out
    took = _new_leader_after(state, holder, t0, 120)
    record("failover, leader process SIGKILLed on the node (lease 30 s)", f"{took:.1f} s")
    # The killed container was restarted by the kubelet and rejoined as a follower.
    wait_until(lambda: (p := c.get("pod", name, SYSTEM_NS)) and
               p["status"]["containerStatuses"][0]["restartCount"] >= 1 and ready(p), 180,
               "the killed container restarted and Ready", explain=state.explain)
    # No work lost: a change made now is applied by the new leader.
    c.kubectl("patch", "partitionpolicy", "event-logs", "-n", DATA_NS, "--type=merge",
              "-p", json.dumps({"spec": {"range": {"premake": 5}}}))
    wait_until(state.all_ready, 120, "the change applied by the new leader", explain=state.explain)
    assert int(_kubectl_table(c, "partitionpolicies")["PARTITIONS"]) >= 6


# =============================================================================== 6b. liveness
def test_liveness_probe_restarts_a_pod_whose_watches_are_stalled(state: State) -> None:
    """The pod's traffic to the API server is dropped on the node (its HTTP endpoint still answers):
    the Lease watch delivers nothing, /healthz fails after heartbeatStaleSeconds, the kubelet
    restarts the container."""
    c = state.cluster
    follower = next(p for p in state.operator_pods() if not is_leader(p))
    name, ip = follower["metadata"]["name"], follower["status"]["podIP"]
    restarts = follower["status"]["containerStatuses"][0]["restartCount"]
    rule = ["INPUT", "-s", ip, "-d", c.node_ip, "-p", "tcp", "--dport", "6443", "-j", "DROP"]
    run(["iptables", "-I", *rule])
    t0 = time.monotonic()
    try:
        wait_until(lambda: c.get("pod", name, SYSTEM_NS)["status"]["containerStatuses"][0]["restartCount"] > restarts,
                   300, "the kubelet restarted the stalled container", interval=1, explain=state.explain)
        took = time.monotonic() - t0
    finally:
        run(["iptables", "-D", *rule], check=False)
    pod = c.get("pod", name, SYSTEM_NS)
    last = pod["status"]["containerStatuses"][0].get("lastState", {}).get("terminated") or {}
    record("liveness: API traffic dropped to container restarted", f"{took:.1f} s (heartbeatStaleSeconds 35)")
    assert last, pod["status"]["containerStatuses"][0]
    events = c.kubectl("get", "events", "-n", SYSTEM_NS, "--field-selector", f"involvedObject.name={name}").stdout
    assert "Liveness probe failed" in events, events[-2000:]
    wait_until(state.settled, 300, "2 Ready pods, one leader again", interval=0.5, explain=state.explain)


# =============================================================================== 5. uninstall
def test_helm_uninstall_keeps_crds_and_data_and_a_reinstall_adopts(state: State) -> None:
    c = state.cluster
    c.helm("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait")
    wait_until(lambda: not state.operator_pods(), 120, "the operator pods gone")
    crds = {o["metadata"]["name"] for o in c.get("crd")["items"]}
    assert {f"{p}.pgcurator.io" for p in KINDS.values()} <= crds
    for kind in KINDS:
        assert state.resource(kind)["metadata"]["name"] == NAMES[kind]
    parts_before = state.query("postgres", "SELECT count(*) AS n FROM pg_catalog.pg_inherits i JOIN "
                               "pg_catalog.pg_class p ON p.oid = i.inhparent WHERE p.relname = 'event_logs'")[0]["n"]
    assert parts_before >= 6, "the partitions stay (Retain)"
    c.helm("install", RELEASE, CHART, "-n", SYSTEM_NS, "-f", str(state.helm_values(state.tag)))
    wait_until(state.settled, 300, "reinstalled: 2 Ready pods, one leader", interval=0.5, explain=state.explain)
    c.kubectl("patch", "partitionpolicy", "event-logs", "-n", DATA_NS, "--type=merge",
              "-p", json.dumps({"spec": {"range": {"premake": 7}}}))
    wait_until(state.all_ready, 120, "the reinstalled operator applies a change", explain=state.explain)
    assert int(_kubectl_table(c, "partitionpolicies")["PARTITIONS"]) >= parts_before + 2
