"""Issue 2 benchmark: 200 PartitionPolicies over 4 databases, applied to a real API server with
the operator running as its own process. Prints the time until all are Ready and the operator's
resident memory, next to a baseline run side by side: the same maintenance done by one
sequential script (what a cron job would do), without Kubernetes.

    .venv/bin/python bench/partition_policies.py [--policies 200] [--databases 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.partition import reconcile_partition_policy
from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.postgres import EmbeddedPostgres
from pgcurator_devenv.up import secret_manifest, start_operator

TABLE_SQL = """
CREATE TABLE {name} (
    id bigint GENERATED ALWAYS AS IDENTITY, player_id bigint NOT NULL, event_type text NOT NULL,
    payload jsonb, server_timestamp timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, server_timestamp)
) PARTITION BY RANGE (server_timestamp);
CREATE INDEX ON {name} (player_id, server_timestamp DESC);
"""


def spec(table: str) -> dict[str, object]:
    return {
        "database": {"secretName": "db"},
        "table": {"name": table},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
        "retention": {"keep": 12, "action": "drop"},
        "defaultPartition": True,
    }


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def create_tables(url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        for n in names:
            await conn.execute(TABLE_SQL.format(name=n))
    finally:
        await conn.close()


async def baseline(urls: list[str], per_db: int) -> float:
    """The same 200 runs, one after another from one process: the cron-job way."""
    t0 = time.perf_counter()
    for url in urls:
        conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC"})
        try:
            for i in range(per_db):
                s = PartitionPolicySpec.model_validate(spec(f"event_logs_{i:03d}"))
                await reconcile_partition_policy(conn, s, resource=f"bench/{i}")
        finally:
            await conn.close()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--databases", type=int, default=4)
    args = ap.parse_args()
    per_db = args.policies // args.databases
    work = Path(tempfile.mkdtemp(prefix="pgcurator-bench-"))
    pg = EmbeddedPostgres(work / "pg")
    cp = ControlPlane(work / "cp")
    op = None
    try:
        pg.start()
        password = secrets.token_urlsafe(12)
        pg.create_role("bench", password)
        names = [f"event_logs_{i:03d}" for i in range(per_db)]
        urls, base_urls = [], []
        for d in range(args.databases):
            for prefix, bucket in (("op", urls), ("cron", base_urls)):
                db = f"{prefix}{d}"
                pg.create_database(db, owner="bench")
                bucket.append(pg.dsn(db, "bench", password))

        async def create_all() -> None:
            await asyncio.gather(*(create_tables(u, names) for u in urls + base_urls))

        asyncio.run(create_all())

        base_s = asyncio.run(baseline(base_urls, per_db))

        cp.start()
        cp.apply_crds(Path(__file__).resolve().parents[1] / "crds")
        items = []
        for d, url in enumerate(urls):
            ns = f"bench-{d}"
            cp.kubectl("create", "namespace", ns)
            cp.kubectl("apply", "-f", "-", input=secret_manifest("db", ns, url))
            for n in names:
                items.append({"apiVersion": "pgcurator.io/v1alpha1", "kind": "PartitionPolicy",
                              "metadata": {"name": n.replace("_", "-"), "namespace": ns}, "spec": spec(n)})
        op = start_operator(cp.kubeconfig, work / "operator.log")
        time.sleep(3)  # let the operator start and list (empty) before the clock starts
        idle_rss, _ = rss_kib(op.pid)
        t0 = time.perf_counter()
        cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                            "items": items}))
        ready = 0
        while time.perf_counter() - t0 < 600:
            out = json.loads(cp.kubectl("get", "partitionpolicies", "-A", "-o", "json").stdout)["items"]
            ready = sum(1 for o in out if (o.get("status") or {}).get("ready") == "True")
            if ready == len(items):
                break
            time.sleep(0.5)
        op_s = time.perf_counter() - t0
        rss, hwm = rss_kib(op.pid)
        print(f"policies: {len(items)} over {args.databases} databases; ready: {ready}")
        print(f"operator: all Ready after {op_s:.1f} s (from kubectl apply); RSS {rss / 1024:.0f} MiB "
              f"(peak {hwm / 1024:.0f} MiB, idle before apply {idle_rss / 1024:.0f} MiB)")
        print(f"baseline: sequential cron-style script, same 200 runs: {base_s:.1f} s")
        print(f"ratio operator/baseline time: {op_s / base_s:.2f}x "
              f"({'operator faster' if op_s < base_s else 'baseline faster'}; the operator's time includes "
              "the API round trips: watch, Secret reads, status writes, Events)")
        return 0 if ready == len(items) else 1
    finally:
        if op is not None:
            op.terminate()
            op.wait(20)
        cp.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
