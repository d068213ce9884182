"""DatabaseMonitor benchmarks, printed side by side in one run (embedded PostgreSQL 18):

1. detection: a corpus of DDL (the command tags of PostgreSQL's event-trigger firing matrix,
   plus GRANT/REVOKE, ownership changes, and changes made by another role): detected fraction by
   the event trigger, by the catalog fingerprint, and by both together; who/when where the
   trigger fired;
2. overhead: pgbench TPS without a monitor, with one at its default intervals, and with one at
   aggressive intervals (fingerprint 5s, statistics 10s), interleaved runs, medians;
3. drift: a hand DROP INDEX to the owning IndexPolicy starting its rebuild, through the operator's
   runtime (NOTIFY -> listener -> monitor -> IndexPolicy woken), median of several drops.

    .venv/bin/python bench/database_monitor.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monitor_corpus import CORPUS, SKIPPED

from pgcurator.catalog.fingerprint import read_fingerprint
from pgcurator.db.metadata import ensure_metadata
from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.kinds import ALL_KINDS
from pgcurator.models.monitor import SYSTEM_SCHEMAS, DatabaseMonitorSpec
from pgcurator.planner.monitor import definitions, diff
from pgcurator.planner.monitor_trigger import install_sql
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.monitor import reconcile_database_monitor
from pgcurator.runtime import Runtime
from pgcurator_devenv.postgres import BIN_DIR, EmbeddedPostgres

CURATOR, ALICE = "curator", "alice"


async def _fp(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    return definitions(await read_fingerprint(conn, list(SYSTEM_SCHEMAS), []))


async def detection(pg: EmbeddedPostgres, passwords: dict[str, str]) -> dict[str, Any]:
    db = "bench_detect"
    pg.create_database(db, owner=CURATOR)
    su = await asyncpg.connect(pg.dsn(db))
    conns = {"postgres": su}
    for role in (CURATOR, ALICE):
        conns[role] = await asyncpg.connect(pg.dsn(db, user=role, password=passwords[role]),
                                            server_settings={"application_name": "bench-" + role})
    await ensure_metadata(conns[CURATOR])
    await su.execute(install_sql())
    await su.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {ALICE}; CREATE SCHEMA app AUTHORIZATION {CURATOR}; "
                     f"GRANT CREATE, USAGE ON SCHEMA app TO {ALICE}")
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for case in CORPUS:
        if case.get("setup"):
            await su.execute(case["setup"])
        before = await _fp(conns[CURATOR])
        mark = await su.fetchval("SELECT coalesce(max(id), 0) FROM pgcurator.schema_changes")
        try:
            await conns[case.get("role", CURATOR)].execute(case["sql"])
        except asyncpg.PostgresError as exc:
            errors.append(f"{case['tag']}: {exc}")
            continue
        after = await _fp(conns[CURATOR])
        recorded = await su.fetch("SELECT command_tag, session_user_name, changed_at FROM pgcurator.schema_changes "
                                  "WHERE id > $1", mark)
        trig = bool(recorded)
        fp = bool(diff(before, after))
        rows.append({"tag": case["tag"], "trigger": trig, "fingerprint": fp,
                     "who": trig and all(r["session_user_name"] and r["changed_at"] for r in recorded),
                     "role": case.get("role", CURATOR)})
    for c in conns.values():
        await c.close()
    n = len(rows)
    fired = [r for r in rows if r["trigger"]]
    return {
        "cases": n, "tags": len({r["tag"] for r in rows}),
        "trigger": sum(r["trigger"] for r in rows) / n,
        "fingerprint": sum(r["fingerprint"] for r in rows) / n,
        "combined": sum(r["trigger"] or r["fingerprint"] for r in rows) / n,
        "who_when_where_fired": sum(r["who"] for r in fired) / max(1, len(fired)),
        "missed_by_trigger": [r["tag"] for r in rows if not r["trigger"]],
        "missed_by_fingerprint": [r["tag"] for r in rows if not r["fingerprint"]],
        "missed_by_both": [r["tag"] for r in rows if not (r["trigger"] or r["fingerprint"])],
        "errors": errors,
    }


def _pgbench(pg: EmbeddedPostgres, db: str, seconds: int) -> float:
    # Without -n pgbench vacuums its tables first: each run starts from the same state instead of
    # inheriting the previous run's bloat (which would favour whichever mode runs first).
    out = subprocess.run([str(BIN_DIR / "pgbench"), "-c", "4", "-j", "2", "-T", str(seconds), "-h", pg.host,
                          "-p", str(pg.port), "-U", pg.superuser, db], capture_output=True, text=True, check=True,
                         env={"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"})
    return float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]


async def _monitor_loop(params: ConnParams, spec: DatabaseMonitorSpec, stop: asyncio.Event) -> int:
    pools = PoolRegistry(max_size=2)
    runs = 0
    try:
        while not stop.is_set():
            async with pools.connection(params, spec.timeouts) as conn:
                ctx = ReconcileContext(conn=conn, resource="DatabaseMonitor/bench/mon", namespace="bench",
                                       name="mon", body={}, params=params, pools=pools)
                await reconcile_database_monitor(ctx, spec)
            runs += 1
            try:  # the operator's scheduler: the next run at the monitor's own interval
                await asyncio.wait_for(stop.wait(), spec.schedule_seconds())
            except TimeoutError:
                pass
    finally:
        await pools.close()
    return runs


async def overhead(pg: EmbeddedPostgres, passwords: dict[str, str], seconds: int, rounds: int) -> dict[str, Any]:
    db = "bench_pgbench"
    pg.create_database(db, owner=CURATOR)
    await asyncio.to_thread(subprocess.run, [str(BIN_DIR / "pgbench"), "-i", "-q", "-s", "10", "-h", pg.host, "-p",
                                             str(pg.port), "-U", pg.superuser, db], capture_output=True, check=True,
                            env={"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"})
    su = await asyncpg.connect(pg.dsn(db))
    await su.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; "
                     f"GRANT pg_read_all_stats TO {CURATOR}")
    params = ConnParams(pg.host, pg.port, db, CURATOR, passwords[CURATOR], ssl_mode="disable")
    await ensure_metadata(await asyncpg.connect(pg.dsn(db, user=CURATOR, password=passwords[CURATOR])))
    await su.execute(install_sql())
    await su.close()
    specs = {"default": DatabaseMonitorSpec.model_validate({"database": {"secretName": "x"}}),
             "aggressive": DatabaseMonitorSpec.model_validate({
                 "database": {"secretName": "x"}, "changes": {"fingerprintInterval": "5s"},
                 "statistics": {"interval": "10s", "columns": {"interval": "1m"}}})}
    tps: dict[str, list[float]] = {"none": [], "default": [], "aggressive": []}
    runs: dict[str, int] = {"default": 0, "aggressive": 0}
    modes = ("none", "default", "aggressive")
    ratios: dict[str, list[float]] = {"default": [], "aggressive": []}
    for round_ in range(rounds):
        got: dict[str, float] = {}
        # the order rotates each round, so a drift of the machine's load favours no mode
        for mode in modes[round_ % 3:] + modes[:round_ % 3]:
            stop = asyncio.Event()
            task = asyncio.create_task(_monitor_loop(params, specs[mode], stop)) if mode != "none" else None
            got[mode] = await asyncio.to_thread(_pgbench, pg, db, seconds)
            tps[mode].append(got[mode])
            stop.set()
            if task is not None:
                runs[mode] += await task
        for mode in ratios:
            ratios[mode].append(got[mode] / got["none"])
    # What a monitor run costs the server, independent of the machine's load: the execution time
    # of the operator role's statements (pg_stat_statements), per run, against the interval.
    su = await asyncpg.connect(pg.dsn(db))
    server_ms = await su.fetchval("SELECT sum(total_exec_time) FROM pg_stat_statements s JOIN pg_roles r "
                                  "ON r.oid = s.userid WHERE r.rolname = $1", CURATOR)
    await su.close()
    per_run_ms = float(server_ms or 0) / max(1, runs["default"] + runs["aggressive"])
    med = {m: statistics.median(v) for m, v in tps.items()}
    return {"per_run_ms": per_run_ms,
            "duty_default": per_run_ms / 1000 / specs["default"].schedule_seconds(),
            "tps": med, "all": tps, "monitor_runs": runs,
            "ratio_default": statistics.median(ratios["default"]),
            "ratio_aggressive": statistics.median(ratios["aggressive"]), "ratios": ratios}


class _FakeKube:
    """The Kubernetes edge only: the Secret, and nowhere to write status or Events."""

    def __init__(self, uri: str) -> None:
        self.data = {"uri": base64.b64encode(uri.encode()).decode()}

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        return self.data

    async def patch_status(self, *args: Any) -> None:
        return None

    async def set_finalizer(self, *args: Any) -> None:
        return None

    async def event(self, *args: Any) -> None:
        return None

    async def get_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}


async def drift(pg: EmbeddedPostgres, passwords: dict[str, str], drops: int) -> dict[str, Any]:
    db = "bench_drift"
    pg.create_database(db, owner=CURATOR)
    url = pg.dsn(db, user=CURATOR, password=passwords[CURATOR])
    app = await asyncpg.connect(url)
    await app.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer int); "
                      "INSERT INTO orders SELECT g, g % 1000 FROM generate_series(1, 100000) g")
    await ensure_metadata(app)
    su = await asyncpg.connect(pg.dsn(db))
    await su.execute(install_sql())
    runtime = Runtime(_FakeKube(url), ALL_KINDS)  # type: ignore[arg-type]
    ref = {"secretName": "app-db"}
    runtime.observe("databasemonitors", "ADDED", {
        "kind": "DatabaseMonitor", "metadata": {"namespace": "b", "name": "mon", "uid": "1", "generation": 1},
        "spec": {"database": ref}})
    runtime.observe("indexpolicies", "ADDED", {
        "kind": "IndexPolicy", "metadata": {"namespace": "b", "name": "orders", "uid": "2", "generation": 1},
        "spec": {"database": ref, "table": {"name": "orders"}, "schedule": {"interval": "1h"},
                 "analysis": {"enabled": False}, "indexes": [{"name": "orders_customer_idx",
                                                              "columns": [{"column": "customer"}]}]}})
    times = []
    try:
        await _until(app, "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                          "WHERE c.relname = 'orders_customer_idx' AND i.indisvalid)")
        from pgcurator.reconcile.monitor_listen import listening

        await _until_true(lambda: listening("DatabaseMonitor/b/mon"))
        # the initial build's history row is written when its statement ends: wait for it, so the
        # first drop's mark is after it
        await _until(app, "SELECT count(*) FROM pgcurator.history WHERE resource = 'IndexPolicy/b/orders' "
                          "AND step = 'create_index'")
        for _ in range(drops):
            mark = await app.fetchval("SELECT coalesce(max(id), 0) FROM pgcurator.history")
            await asyncio.sleep(0.5)  # spacing between drops, not a wait for a state
            t0 = time.time()
            await su.execute("DROP INDEX orders_customer_idx")
            started = await _until(app, "SELECT extract(epoch FROM started_at) FROM pgcurator.history WHERE id > $1 "
                                        "AND resource = 'IndexPolicy/b/orders' AND step = 'create_index' "
                                        "AND started_at >= to_timestamp($2) ORDER BY id LIMIT 1", mark, t0)
            times.append(float(started) - t0)
            await _until(app, "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                              "WHERE c.relname = 'orders_customer_idx' AND i.indisvalid)")
    finally:
        await runtime.stop()
        await app.close()
        await su.close()
    return {"median_s": statistics.median(times), "all_s": [round(t, 3) for t in times], "drops": drops}


async def _until(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        value = await conn.fetchval(sql, *args)
        if value:
            return value
        await asyncio.sleep(0.02)
    raise TimeoutError(sql)


async def _until_true(check: Any) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("listener")
        await asyncio.sleep(0.05)


async def main(quick: bool) -> None:
    seconds = 10 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "data")
        pg.start()
        passwords = {CURATOR: secrets.token_urlsafe(12), ALICE: secrets.token_urlsafe(12)}
        for role, pw in passwords.items():
            pg.create_role(role, pw)
        try:
            det = await detection(pg, passwords)
            dr = await drift(pg, passwords, 3 if quick else 7)
            ov = await overhead(pg, passwords, seconds, 3 if quick else 6)
        finally:
            pg.stop()
    print("\n== DatabaseMonitor benchmarks (PostgreSQL 18, embedded) ==")
    print(f"detection: {det['cases']} DDL cases, {det['tags']} command tags")
    print(f"  {'mechanism':<22}{'detected':>10}")
    for m in ("trigger", "fingerprint", "combined"):
        print(f"  {m:<22}{det[m]:>10.1%}")
    print(f"  who+when where the trigger fired: {det['who_when_where_fired']:.1%}")
    print(f"  missed by the trigger: {', '.join(det['missed_by_trigger']) or '-'}")
    print(f"  missed by the fingerprint: {', '.join(det['missed_by_fingerprint']) or '-'}")
    print(f"  missed by both: {', '.join(det['missed_by_both']) or '-'}")
    print(f"  not run here: {', '.join(SKIPPED)}; failed to run: {'; '.join(det['errors']) or '-'}")
    t = ov["tps"]
    print(f"overhead: pgbench -c4 -j2 scale 10, {seconds}s runs, order rotated per round; TPS {ov['all']}; "
          "ratio = median of per-round ratios to the round's run without a monitor")
    print(f"  {'no monitor':<22}{t['none']:>10.1f}")
    print(f"  {'default intervals':<22}{t['default']:>10.1f}  x{ov['ratio_default']:.3f}  "
          f"({ov['monitor_runs']['default']} monitor runs)")
    print(f"  {'5s/10s intervals':<22}{t['aggressive']:>10.1f}  x{ov['ratio_aggressive']:.3f}  "
          f"({ov['monitor_runs']['aggressive']} monitor runs)")
    print(f"  server time per monitor run (pg_stat_statements, role {CURATOR}): {ov['per_run_ms']:.1f} ms; at the "
          f"default 5m interval {ov['duty_default']:.5%} of one core")
    print(f"drift: hand DROP INDEX -> IndexPolicy create_index started: median {dr['median_s']:.3f}s "
          f"over {dr['drops']} drops {dr['all_s']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
