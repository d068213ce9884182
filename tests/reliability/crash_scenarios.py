"""What the crash harness puts under the operator before killing it, and what must hold afterwards.

Each scenario prepares a database (and, for certificates, a TLS Secret), names the resource to
apply, may keep something happening while the operator runs and is killed (a writer on the table
being converted, cert-manager-style Secret rotations), and finally checks its invariants against
the catalog, the files on disk and `pgcurator.history`. `check` returns the number of rows it
checked, for the report."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pgcurator.tls.handshake import fetch_served_certificate
from pgcurator.tls.validate import info_of_der, leaf_of_pem
from pgcurator_devenv.certs import Issued, issue, make_ca, secret_data
from pgcurator_devenv.certs import secret_manifest as tls_secret_manifest
from pgcurator_devenv.controlplane import ControlPlane
from pgcurator_devenv.debian_postgres import DebianPostgres, create_tls_role
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from ..integration.vector_data import make_table
from ..live_table import Writer, make_plain_table


def run_sql(url: str, sql: str, *args: Any) -> Any:
    async def go() -> Any:
        c = await asyncpg.connect(url)
        try:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                return [tuple(r) for r in await c.fetch(sql, *args)]
            return await c.execute(sql, *args)
        finally:
            await c.close()

    return asyncio.run(go())


@dataclass
class Trial:
    seed: int
    cluster: ControlPlane
    ns: str
    pg: EmbeddedPostgres
    app_password: str
    tls_server: Callable[[], DebianPostgres]  # started on first use, shared by the module's trials
    url: str = ""  # what the resource's database Secret points at
    state: dict[str, Any] = field(default_factory=dict)

    def new_database(self) -> str:
        db = f"crash_{self.seed}_{self.ns.rsplit('-', 1)[1]}"
        self.pg.create_database(db, owner=APP_ROLE)
        self.url = self.pg.dsn(db, user=APP_ROLE, password=self.app_password)
        return db

    def history(self, where: str = "true") -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = run_sql(
            self.url, f"SELECT step, target, statement, outcome FROM pgcurator.history WHERE {where} ORDER BY id")
        return rows


class Scenario:
    kind = ""
    settle_first = False  # stop the activity before waiting for Ready (it would keep moving the goal)
    window = 5.0  # the kill comes at a random moment this many seconds after the operator can act

    def setup(self, t: Trial) -> dict[str, Any]:
        """Prepare the database; return the resource's spec (without database and schedule)."""
        raise NotImplementedError

    def start(self, t: Trial) -> None:
        """Begin whatever keeps happening while the operator runs and is killed."""

    def settle(self, t: Trial) -> None:
        """Stop it, once the restarted operator is Ready."""

    def phase(self, t: Trial) -> str:
        """What the kill interrupted, read from the database right after it (for the report)."""
        return "?"

    def ready(self, t: Trial, obj: dict[str, Any]) -> bool:
        """More than Ready for the current generation, where the scenario needs it."""
        return True

    def check(self, t: Trial) -> int:
        raise NotImplementedError


def no_leftover_indexes(url: str) -> None:
    assert run_sql(url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")[0][0] == 0, "an INVALID index is left"
    temp = run_sql(url, "SELECT relname::text FROM pg_class WHERE relname LIKE '%pgc\\_new' OR relname LIKE '%pgc\\_old'")
    assert not temp, f"temporary indexes left: {temp}"


class Convert(Scenario):
    """Live table conversion with a writer inserting, updating and deleting throughout."""

    kind = "PartitionPolicy"
    ROWS = 400_000
    window = 7.0

    def setup(self, t: Trial) -> dict[str, Any]:
        t.new_database()

        async def go() -> tuple[int, int]:
            c = await asyncpg.connect(t.url)
            try:
                await make_plain_table(c, self.ROWS)
                row = await c.fetchrow("SELECT count(*), sum(id) FROM events")
                assert row is not None
                return int(row[0]), int(row[1])
            finally:
                await c.close()

        t.state["before"] = asyncio.run(go())
        return {"table": {"name": "events"}, "range": {"column": "created_at", "interval": "1 month", "premake": 1},
                "convert": {"enabled": True, "batchMemory": "2Mi"}}

    def start(self, t: Trial) -> None:
        writer = Writer(t.url, seed=t.seed)
        errors: list[BaseException] = []

        def go() -> None:
            try:
                asyncio.run(writer.run(self.ROWS))
            except BaseException as exc:  # reported by settle(): a writer error fails the trial
                errors.append(exc)

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        t.state.update(writer=writer, thread=thread, errors=errors)

    def phase(self, t: Trial) -> str:
        if not run_sql(t.url, "SELECT to_regclass('pgcurator.conversions') IS NOT NULL")[0][0]:
            return "not started"
        row = run_sql(t.url, "SELECT phase, rows_copied FROM pgcurator.conversions")
        if not row:
            return "not started"
        phase, copied = row[0]
        return f"copy {100 * (copied or 0) // self.ROWS // 25 * 25}%+" if phase == "copy" else str(phase)

    def settle(self, t: Trial) -> None:
        t.state["writer"].stop.set()
        t.state["thread"].join(30)
        assert not t.state["errors"], f"the application's writer failed: {t.state['errors'][0]!r}"

    def check(self, t: Trial) -> int:
        writer: Writer = t.state["writer"]
        assert writer.ops > 20, f"the writer only managed {writer.ops} statements"
        assert run_sql(t.url, "SELECT relkind::text FROM pg_class WHERE relname = 'events'")[0][0] == "p"

        async def verify() -> int:
            c = await asyncpg.connect(t.url)
            try:
                return await writer.verify(c, t.state["before"])
            finally:
                await c.close()

        rows = asyncio.run(verify())
        assert run_sql(t.url, "SELECT count(*) FROM pg_class WHERE relname LIKE 'events\\_\\_pgcurator%'")[0][0] == 0
        assert run_sql(t.url, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgcurator_capture%'")[0][0] == 0
        no_leftover_indexes(t.url)
        # history: one swap, and the conversion's own record says it finished
        # history: prepared once, swapped once, each recorded in the transaction that did it
        steps = [h[0] for h in t.history("outcome = 'ok'")]
        assert steps.count("convert_prepare") == 1, f"{steps.count('convert_prepare')} recorded preparations"
        assert steps.count("convert_swap") == 1, f"{steps.count('convert_swap')} recorded swaps"
        state = run_sql(t.url, "SELECT phase FROM pgcurator.conversions WHERE table_name = 'events'")
        assert state in ([("swapped",)], [("done",)]), f"conversion state left as {state}"
        assert run_sql(t.url, "SELECT to_regclass('events_unpartitioned') IS NOT NULL")[0][0], "original not kept"
        t.state["writer_max_wait_ms"] = writer.max_wait_ms
        return rows


def day(offset: int) -> str:
    """The UTC date `offset` days from today."""
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


class Retention(Scenario):
    """200 daily partitions up to yesterday, 100 rows each; keep 30 days behind today and premake
    3: 170 partitions detached concurrently and dropped, 4 created."""

    kind = "PartitionPolicy"
    DAYS = range(-200, 0)
    KEEP = 30
    window = 6.0

    def setup(self, t: Trial) -> dict[str, Any]:
        t.new_database()
        ddl = ["CREATE TABLE logs (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at)"]
        for i, d in enumerate(self.DAYS):
            lo, hi = day(d), day(d + 1)
            ddl.append(f"CREATE TABLE logs_p{lo.replace('-', '_')} PARTITION OF logs FOR VALUES FROM ('{lo} 00:00+00') "
                       f"TO ('{hi} 00:00+00')")
            ddl.append(f"INSERT INTO logs SELECT g, '{lo} 12:00+00' FROM generate_series({i * 100}, {i * 100 + 99}) g")
        run_sql(t.url, ";\n".join(ddl))
        return {"table": {"name": "logs"}, "range": {"column": "at", "interval": "1 day", "premake": 3},
                "retention": {"keep": self.KEEP, "action": "drop"}}

    def _partitions(self, t: Trial) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = run_sql(
            t.url, "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c "
                   "ON c.oid = i.inhrelid WHERE i.inhparent = 'logs'::regclass ORDER BY 2")
        return rows

    def phase(self, t: Trial) -> str:
        left = len(self._partitions(t))
        return ("not started" if left == len(self.DAYS) else "done" if left == self.KEEP + 4
                else f"dropping ({(len(self.DAYS) - left) * 100 // (len(self.DAYS) - self.KEEP) // 25 * 25}%+)")

    def check(self, t: Trial) -> int:
        parts = self._partitions(t)
        # exactly one partition per day from KEEP days ago to 3 days ahead: none missing, none twice
        lowers = [bound.split("'")[1][:10] for _, bound in parts]
        expected = [day(d) for d in range(-self.KEEP, 4)]
        assert lowers == expected, f"partitions start on {lowers[:3]}...{lowers[-3:]} ({len(lowers)}), " \
                                   f"expected {expected[0]}..{expected[-1]} ({len(expected)})"
        leftovers = run_sql(t.url, "SELECT count(*) FROM pg_class WHERE relname LIKE 'logs\\_p%' AND relkind = 'r' "
                                   "AND NOT relispartition")[0][0]
        assert leftovers == 0, "a detached partition was left behind"
        assert run_sql(t.url, "SELECT count(*) FROM pg_inherits i WHERE i.inhdetachpending")[0][0] == 0
        # the rows of the kept days are all there, and only those
        n = len(self.DAYS)
        kept = run_sql(t.url, "SELECT count(*), sum(id) FROM logs")[0]
        assert kept == (self.KEEP * 100, sum(range((n - self.KEEP) * 100, n * 100))), kept
        # history agrees with the catalog: every removed day dropped exactly once, nothing kept dropped
        dropped = [h[1] for h in t.history("outcome = 'ok' AND statement LIKE 'DROP TABLE%'")]
        assert len(dropped) == len(set(dropped)) == n - self.KEEP, (len(dropped), len(set(dropped)))
        assert not {d.rpartition(".")[2].strip('"') for d in dropped} & {name for name, _ in parts}
        return self.KEEP * 100


class Index(Scenario):
    """Per-partition index builds, three at a time, on six 40,000-row partitions."""

    kind = "IndexPolicy"
    ROWS = 300_000  # per partition: the twelve builds take about 2 s here
    window = 2.5

    def setup(self, t: Trial) -> dict[str, Any]:
        t.new_database()
        run_sql(t.url, "CREATE TABLE articles (id bigint NOT NULL, published_at timestamptz NOT NULL, author_id bigint, "
                       "status text) PARTITION BY RANGE (published_at)")
        for m in range(1, 7):
            run_sql(t.url, f"CREATE TABLE articles_{m} PARTITION OF articles FOR VALUES FROM ('2026-{m:02d}-01') TO "
                           f"('2026-{m + 1:02d}-01'); INSERT INTO articles SELECT g, '2026-{m:02d}-02', g % 500, "
                           f"CASE WHEN g % 3 = 0 THEN 'draft' ELSE 'published' END FROM generate_series(1, {self.ROWS}) g")
        return {"table": {"name": "articles"}, "parallelism": 3, "indexes": [
            {"name": "articles_author", "columns": [{"column": "author_id"}, {"column": "published_at"}]},
            {"name": "articles_published", "columns": [{"column": "published_at"}], "where": "status = 'published'"}]}

    def phase(self, t: Trial) -> str:
        valid, invalid = run_sql(t.url, "SELECT count(*) FILTER (WHERE indisvalid), count(*) FILTER (WHERE NOT "
                                        "indisvalid) FROM pg_index WHERE indrelid::regclass::text LIKE 'articles\\_%'")[0]
        return f"{valid}/12 built" + (f", {invalid} building" if invalid else "")

    def check(self, t: Trial) -> int:
        no_leftover_indexes(t.url)
        per_part = run_sql(t.url, "SELECT tablename, count(*) FROM pg_indexes WHERE tablename LIKE 'articles\\_%' "
                                  "GROUP BY 1")
        assert len(per_part) == 6 and all(n == 2 for _, n in per_part), per_part
        # every index a history row says was built exists and is valid (a crash can leave a build
        # unrecorded, never recorded but missing)
        built = {h[1].rpartition(".")[2].strip('"') for h in t.history("outcome = 'ok' AND statement LIKE 'CREATE%'")}
        existing = {r[0] for r in run_sql(t.url, "SELECT indexrelid::regclass::text FROM pg_index")}
        assert built, "no build recorded in the history"
        assert built <= existing, f"recorded as built but missing: {built - existing}"
        rows = int(run_sql(t.url, "SELECT count(*) FROM articles")[0][0])
        assert rows == 6 * self.ROWS
        return rows


class VectorSwap(Scenario):
    """An HNSW index rebuilt with new parameters next to the old one and swapped in."""

    kind = "VectorIndex"
    ROWS = 20_000
    window = 8.0  # the build takes about 4 s; later kills meet the swap, the old index's drop, recall

    def setup(self, t: Trial) -> dict[str, Any]:
        db = t.new_database()
        t.pg.psql("CREATE EXTENSION vector", database=db)

        async def go() -> None:
            c = await asyncpg.connect(t.url)
            try:
                await make_table(c, "items", "vector", 32, self.ROWS, seed=t.seed)
                await c.execute("CREATE INDEX items_embedding ON items USING hnsw (embedding vector_l2_ops) "
                                "WITH (m = 8, ef_construction = 32)")
            finally:
                await c.close()

        asyncio.run(go())
        t.state["oid"] = run_sql(t.url, "SELECT 'items_embedding'::regclass::oid")[0][0]
        return {"table": {"name": "items"}, "column": "embedding", "type": "vector", "dimensions": 32,
                "metric": "l2", "method": "hnsw", "hnsw": {"m": 12, "efConstruction": 48},
                "indexName": "items_embedding", "build": {"memoryBudget": "128Mi"},
                "recall": {"queries": 20, "targetRecall": 0.9}}

    def phase(self, t: Trial) -> str:
        new = run_sql(t.url, "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                             "WHERE c.relname = 'items_embedding_pgc_new'")
        if new:
            return "new index built, not swapped" if new[0][0] else "building new index"
        current = run_sql(t.url, "SELECT 'items_embedding'::regclass::oid")[0][0]
        return "before build" if current == t.state["oid"] else "swapped"

    def check(self, t: Trial) -> int:
        no_leftover_indexes(t.url)
        indexes = run_sql(t.url, "SELECT c.relname::text, c.reloptions::text, c.oid FROM pg_index i JOIN pg_class c ON "
                                 "c.oid = i.indexrelid WHERE i.indrelid = 'items'::regclass AND NOT i.indisprimary")
        assert len(indexes) == 1, f"expected one vector index, found {indexes}"
        name, options, oid = indexes[0]
        assert name == "items_embedding" and "m=12" in options and "ef_construction=48" in options, indexes[0]
        assert oid != t.state["oid"], "the old index was not replaced"
        # the index answers queries: an index scan returns k rows
        rows = run_sql(t.url, "WITH q AS (SELECT embedding FROM items WHERE id = 1) SELECT count(*) FROM (SELECT id "
                              "FROM items ORDER BY embedding <-> (SELECT embedding FROM q) LIMIT 10) s")[0][0]
        assert rows == 10
        swaps = [h for h in t.history("outcome = 'ok'") if "RENAME TO" in h[2] and "_pgc_new" in h[2]]
        assert swaps, "no recorded swap"
        return int(run_sql(t.url, "SELECT count(*) FROM items")[0][0])


TLS_NAME = "postgresql.crash.svc.cluster.local"


def _serial(data: dict[str, bytes]) -> str:
    return leaf_of_pem(data["tls.crt"]).serial


class TlsDelivery(Scenario):
    """Certificates rotated in the Secret every ~0.7 s (faster than cert-manager ever would) while
    the operator delivers them through SQL and is killed."""

    kind = "DbTlsCert"
    settle_first = True
    window = 4.0

    def setup(self, t: Trial) -> dict[str, Any]:
        server = t.tls_server()
        role, password = "tls_crash", f"pw-{t.ns}"  # the same role every trial: the operator's credentials
        create_tls_role(server, role, password, "sql")
        t.url = server.dsn("postgres", user=role, password=password)
        ca = make_ca()
        t.state.update(server=server, ca=ca, pid=self._pid(server), serials=[])
        self._put(t, issue(ca, [TLS_NAME]))
        return {"secretName": "pg-tls", "dnsNames": [TLS_NAME], "delivery": {"mode": "sql"}, "checkInterval": "1s"}

    @staticmethod
    def _pid(server: DebianPostgres) -> int:
        return int((server.datadir / "postmaster.pid").read_text().splitlines()[0])

    def _put(self, t: Trial, leaf: Issued) -> None:
        data = secret_data(leaf, t.state["ca"])
        t.cluster.kubectl("apply", "-f", "-", input=json.dumps(tls_secret_manifest("pg-tls", t.ns, data)))
        t.state["serials"].append(_serial(data))

    def start(self, t: Trial) -> None:
        stop = threading.Event()

        def rotate() -> None:
            while not stop.wait(0.7):
                self._put(t, issue(t.state["ca"], [TLS_NAME]))

        thread = threading.Thread(target=rotate, daemon=True)
        thread.start()
        t.state.update(stop=stop, thread=thread)

    def settle(self, t: Trial) -> None:
        t.state["stop"].set()
        t.state["thread"].join(30)

    def phase(self, t: Trial) -> str:
        served = info_of_der(asyncio.run(fetch_served_certificate("127.0.0.1", t.state["server"].port)).der).serial
        serials = t.state["serials"]
        if served not in serials:
            return "first delivery pending"
        return "latest served" if served == serials[-1] else f"{len(serials) - 1 - serials.index(served)} behind"

    def ready(self, t: Trial, obj: dict[str, Any]) -> bool:
        """Ready is not enough here: the last rotation must have been served."""
        return bool((obj.get("status") or {}).get("servedSerial") == t.state["serials"][-1])

    def check(self, t: Trial) -> int:
        server: DebianPostgres = t.state["server"]
        final = t.state["serials"][-1]
        obj = json.loads(t.cluster.kubectl("get", "secret", "pg-tls", "-n", t.ns, "-o", "json").stdout)
        assert _serial({k: base64.b64decode(v) for k, v in obj["data"].items()}) == final
        served = asyncio.run(fetch_served_certificate("127.0.0.1", server.port))
        assert info_of_der(served.der).serial == final, "the server does not serve the Secret's certificate"
        assert self._pid(server) == t.state["pid"], "the server was restarted, not reloaded"
        errors = server.psql("SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL").strip()
        assert errors == "0", "postgresql.auto.conf holds a setting the server refuses"
        cert_file, key_file = server.psql("SELECT setting FROM pg_settings WHERE name IN ('ssl_cert_file', "
                                          "'ssl_key_file') ORDER BY name").split()
        assert leaf_of_pem((server.datadir / cert_file).read_bytes()).serial == final
        key = (server.datadir / key_file).stat()
        assert stat.S_IMODE(key.st_mode) == 0o600 and key.st_uid == server.run_uid
        files = sorted(p.name for p in (server.datadir / "pgcurator-tls").iterdir())
        assert all(f.startswith("tls-") for f in files), f"temporary files left: {files}"
        assert len(files) <= 6, f"old certificate files pile up: {files}"
        history = server.psql("SELECT string_agg(statement, ' ') FROM pgcurator.history")
        assert "PRIVATE KEY" not in history
        return len(t.state["serials"])


SCENARIOS: dict[str, Scenario] = {"convert": Convert(), "index": Index(), "retention": Retention(),
                                  "vector": VectorSwap(), "tls": TlsDelivery()}


def wait(predicate: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"condition not reached within {timeout}s")


