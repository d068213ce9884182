"""Issue 7 benchmark: what the operator costs to run, measured on a real API server and PostgreSQL.

* resident memory and CPU of the operator process at idle with no resources (the baseline) and
  at idle with 1,000 PartitionPolicies across 10 databases, side by side with their ratio; the
  time until all 1,000 are Ready and the peak memory while getting there;
* API requests per minute at idle, counted by the API server itself: the operator runs with the
  chart's ServiceAccount token (exactly as installed), so API Priority and Fairness files every
  one of its requests under the `service-accounts` flow schema, and nothing else in this cluster
  uses a ServiceAccount (apiserver_flowcontrol_dispatched_requests_total);
* the time a follower takes to become the leader after the leader is killed (SIGKILL: it waits
  the Lease out) and after a clean shutdown (SIGTERM: the Lease is released), with the chart's
  default timings (lease 30 s, renew deadline 20 s, renew every 10 s).

    .venv/bin/python bench/operator_footprint.py [--resources 1000] [--databases 10] [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import yaml

from pgcurator_devenv.controlplane import REPO_ROOT, ControlPlane
from pgcurator_devenv.ports import free_port
from pgcurator_devenv.postgres import EmbeddedPostgres
from pgcurator_devenv.up import secret_manifest

RELEASE, SYSTEM_NS = "pgc", "pgcurator-system"
TABLE_SQL = """
CREATE TABLE {name} (
    id bigint GENERATED ALWAYS AS IDENTITY, player_id bigint NOT NULL, event_type text NOT NULL,
    payload jsonb, server_timestamp timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, server_timestamp)
) PARTITION BY RANGE (server_timestamp);
"""


def render_chart(tmp: Path) -> list[dict[str, Any]]:
    helm = subprocess.run(["bash", str(REPO_ROOT / "hack" / "helm-binary.sh")], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    out = subprocess.run([helm, "template", RELEASE, str(REPO_ROOT / "charts" / "pgcurator"), "-n", SYSTEM_NS],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if isinstance(d, dict)]


@dataclass
class Op:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def leader(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=2) as r:
                return "\npgcurator_leader 1.0" in r.read().decode()
        except OSError:
            return False

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


def start_op(kubeconfig: Path, env: dict[str, str], workdir: Path, name: str) -> Op:
    port = free_port()
    log = workdir / f"{name}.log"
    full = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "POD_NAME": name, "POD_NAMESPACE": SYSTEM_NS,
            "PGCURATOR_HTTP_ADDRESS": f"127.0.0.1:{port}"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pgcurator.cli", "run"], env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    op = Op(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while not op.ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"operator {name} did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return op


def sa_requests(cp: ControlPlane) -> float:
    text = cp.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_flowcontrol_dispatched_requests_total{") and 'flow_schema="service-accounts"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def request_breakdown(cp: ControlPlane) -> dict[str, float]:
    """apiserver_request_total by verb/resource (all clients; used as a before/after difference)."""
    out: dict[str, float] = {}
    for line in cp.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = f"{labels.get('verb')} {labels.get('resource') or '-'}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def idle_sample(cp: ControlPlane, op: Op, seconds: float) -> dict[str, float]:
    p = psutil.Process(op.proc.pid)
    cpu0 = sum(p.cpu_times()[:2])
    req0, t0 = sa_requests(cp), time.monotonic()
    time.sleep(seconds)
    cpu1 = sum(p.cpu_times()[:2])
    req1, t1 = sa_requests(cp), time.monotonic()
    return {"rss_mib": p.memory_info().rss / 2**20, "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "req_per_min": (req1 - req0) * 60 / (t1 - t0)}


async def make_tables(url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("".join(TABLE_SQL.format(name=n) for n in names))
    finally:
        await conn.close()


def count_ready(cp: ControlPlane) -> int:
    items = json.loads(cp.kubectl("get", "partitionpolicies", "-A", "-o", "json", timeout=300).stdout)["items"]
    return sum(1 for o in items if (o.get("status") or {}).get("ready") == "True"
               and o["status"].get("observedGeneration") == o["metadata"]["generation"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resources", type=int, default=1000)
    ap.add_argument("--databases", type=int, default=10)
    ap.add_argument("--idle", type=float, default=60, help="seconds per idle measurement")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgcurator-footprint-"))
    cp = ControlPlane(work / "cp")
    pg = EmbeddedPostgres(work / "pg")
    ops: list[Op] = []
    try:
        cp.start()
        cp.apply_crds(REPO_ROOT / "crds")
        cp.kubectl("create", "namespace", SYSTEM_NS)
        objs = render_chart(work)
        rbac = [o for o in objs if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                                   "RoleBinding")]
        cp.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
        kubeconfig = cp.write_service_account_kubeconfig(SYSTEM_NS, f"{RELEASE}-pgcurator", work / "sa.kubeconfig")
        container = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env["PGCURATOR_LOG_FORMAT"] = "plain"

        pg.start()
        password = secrets.token_urlsafe(12)
        pg.create_role("bench", password)
        per_db = args.resources // args.databases
        for d in range(args.databases):
            db = f"bench_{d}"
            pg.create_database(db, owner="bench")
            url = pg.dsn(db, user="bench", password=password)
            asyncio.run(make_tables(url, [f"events_{i}" for i in range(per_db)]))
            ns = f"team-{d}"
            cp.kubectl("create", "namespace", ns)
            cp.kubectl("apply", "-f", "-", input=secret_manifest("db", ns, url))

        leader = start_op(kubeconfig, env, work, "replica-a")
        ops.append(leader)
        time.sleep(5)
        print(f"measuring idle with no resources for {args.idle:.0f}s ...", file=sys.stderr, flush=True)
        base = idle_sample(cp, leader, args.idle)

        print(f"applying {per_db * args.databases} PartitionPolicies ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        for d in range(args.databases):
            docs = [{"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy",
                     "metadata": {"name": f"events-{i}", "namespace": f"team-{d}"},
                     "spec": {"database": {"secretName": "db"}, "table": {"name": f"events_{i}"},
                              "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
                              "schedule": {"interval": "6h"}}} for i in range(per_db)]
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), timeout=600)
        peak = 0.0
        total = per_db * args.databases
        p = psutil.Process(leader.proc.pid)
        while (ready := count_ready(cp)) < total:
            peak = max(peak, p.memory_info().rss / 2**20)
            if time.monotonic() - t0 > 3600:
                raise RuntimeError(f"only {ready}/{total} Ready after an hour")
            time.sleep(2)
        all_ready = time.monotonic() - t0
        peak = max(peak, p.memory_info().rss / 2**20)
        time.sleep(10)  # let the last status patches and events settle
        before = request_breakdown(cp)
        print(f"measuring idle with {total} resources for {args.idle:.0f}s ...", file=sys.stderr, flush=True)
        loaded = idle_sample(cp, leader, args.idle)
        after = request_breakdown(cp)

        print("\noperator footprint (same run, same machine)")
        print(f"{'':34}{'no resources':>14}{f'{total} resources':>16}{'ratio':>8}")
        for key, label, fmt in (("rss_mib", "resident memory (MiB)", "{:.1f}"),
                                ("cpu_pct", "CPU at idle (% of one core)", "{:.2f}"),
                                ("req_per_min", "API requests per minute at idle", "{:.1f}")):
            ratio = loaded[key] / base[key] if base[key] else float("nan")
            print(f"{label:34}{fmt.format(base[key]):>14}{fmt.format(loaded[key]):>16}{ratio:>8.2f}")
        print(f"{'time until all Ready (s)':34}{'':>14}{all_ready:>16.1f}")
        print(f"{'peak resident memory (MiB)':34}{'':>14}{peak:>16.1f}")
        diff = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
        print("API requests during the loaded idle window, all clients (apiserver_request_total):",
              ", ".join(f"{k}: {v:.0f}" for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:8]) or "none")

        # Failover with the chart's default timings.
        follower = start_op(kubeconfig, env, work, "replica-b")
        ops.append(follower)
        time.sleep(3)
        assert leader.leader() and not follower.leader()
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        t0 = time.monotonic()
        while not follower.leader():
            time.sleep(0.05)
        killed = time.monotonic() - t0
        third = start_op(kubeconfig, env, work, "replica-c")
        ops.append(third)
        time.sleep(3)
        follower.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while not third.leader():
            time.sleep(0.05)
        released = time.monotonic() - t0
        print(f"\nfailover (lease 30 s): after SIGKILL of the leader {killed:.1f} s; after a clean shutdown "
              f"(SIGTERM, Lease released) {released:.2f} s")
        return 0
    finally:
        for op in ops:
            if op.proc.poll() is None:
                op.proc.terminate()
                try:
                    op.proc.wait(30)
                except subprocess.TimeoutExpired:
                    op.proc.kill()
        pg.stop()
        cp.stop()


if __name__ == "__main__":
    raise SystemExit(main())
