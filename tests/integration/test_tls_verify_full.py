"""DbTlsCert against Debian's PostgreSQL (OpenSSL) and libpq's own client: what pgcurator calls
Serving, `psql "sslmode=verify-full"` accepts; what it refuses never reaches the server.

One server for the module; each case is a reconcile through `sql` mode with a fake Kubernetes
client (the only fake: the Secret read)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from pgcurator.db.params import ConnParams
from pgcurator.db.pools import PoolRegistry
from pgcurator.models.tls import DbTlsCertSpec
from pgcurator.planner import tls as planner
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.reconcile.outcome import Outcome
from pgcurator.reconcile.tls import reconcile_db_tls_cert
from pgcurator.tls.handshake import fetch_served_certificate
from pgcurator.tls.validate import fingerprint, validate_secret
from pgcurator_devenv.debian_postgres import DebianPostgres, create_tls_role

from .. import tls_corpus
from ..figures import record
from ..tls_corpus import NAME, Case, Node, cases, inter, make, root, secret

pytestmark = pytest.mark.integration
DIRECTORY = "pgcurator-tls"
DER = Encoding.DER


@pytest.fixture(scope="module")
def shared_tmp() -> Iterator[Path]:
    """Reachable by the server's unprivileged user (pytest resets its own basetemp root to 0700)."""
    d = Path(tempfile.mkdtemp(prefix="pgcurator-tls-vf-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_pg(shared_tmp: Path) -> Iterator[DebianPostgres]:
    server = DebianPostgres(shared_tmp / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def role(tls_pg: DebianPostgres) -> tuple[str, str]:
    name, password = "tls_sql", secrets.token_urlsafe(12)
    create_tls_role(tls_pg, name, password, "sql")
    return name, password


class FakeKube:
    """The Kubernetes-client edge: a Secret store."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, str]] = {}

    def put(self, name: str, data: dict[str, bytes]) -> None:
        self.secrets[name] = {k: base64.b64encode(v).decode() for k, v in data.items()}

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)


class Operator:
    def __init__(self, pg: DebianPostgres, conn: asyncpg.Connection, user: str, password: str) -> None:
        self.pg, self.conn, self.kube = pg, conn, FakeKube()
        self.params = ConnParams(pg.host, pg.port, "postgres", user, password, ssl_mode="disable")
        self.pools = PoolRegistry()

    def spec(self, dns_names: tuple[str, ...] = (NAME,), ip_addresses: tuple[str, ...] = ()) -> DbTlsCertSpec:
        return DbTlsCertSpec.model_validate({
            "database": {"secretName": "db"}, "secretName": "tls", "dnsNames": list(dns_names),
            "ipAddresses": list(ip_addresses), "delivery": {"mode": "sql", "sql": {"directory": DIRECTORY}}})

    async def reconcile(self, data: dict[str, bytes], **names: tuple[str, ...]) -> Outcome:
        self.kube.put("tls", data)
        ctx = ReconcileContext(conn=self.conn, resource="DbTlsCert/default/vf", namespace="default", name="vf",
                               body={"metadata": {"uid": "vf-uid"}}, params=self.params, pools=self.pools,
                               kube=self.kube)  # type: ignore[arg-type]
        return await reconcile_db_tls_cert(ctx, self.spec(**names))

    async def served_fingerprint(self) -> str:
        return fingerprint((await fetch_served_certificate(self.pg.host, self.pg.port)).der)


@pytest.fixture
async def operator(tls_pg: DebianPostgres, role: tuple[str, str]) -> AsyncIterator[Operator]:
    conn = await asyncpg.connect(tls_pg.dsn("postgres", user=role[0], password=role[1]))
    op = Operator(tls_pg, conn, *role)
    yield op
    await conn.close()
    await op.pools.close()


def condition(outcome: Outcome, type_: str) -> Any:
    return next(c for c in outcome.conditions if c.type == type_)


def psql_verify_full(pg: DebianPostgres, role: tuple[str, str], ca_pem: bytes, host: str,
                     directory: Path) -> subprocess.CompletedProcess[str]:
    return tls_corpus.psql_verify_full(host, pg.host, pg.port, role[0], role[1], ca_pem, directory)


async def _serve_leaf_only(pg: DebianPostgres, leaf: Node, ca_pem: bytes, spec: DbTlsCertSpec) -> None:
    """As an earlier delivery might have left it: the files named for this leaf, but tls.crt without
    the intermediate (written by the superuser the way sql mode writes them)."""
    files = planner.sql_file_set(DIRECTORY, fingerprint(leaf.cert.public_bytes(DER)), True)
    su = await asyncpg.connect(pg.dsn())
    try:
        for path, text in ((files.key, leaf.key_pem()), (files.cert, leaf.pem), (files.ca, ca_pem)):
            assert path is not None
            async with su.transaction():
                await su.execute("SELECT set_config($1, $2, true)", planner.PEM_SETTING, text.decode().rstrip("\n"))
                await su.execute(planner.write_file_statement(path))
        for name, value in planner.desired_settings(spec, files).items():
            await su.execute(planner.alter_system(name, value))
        await su.execute(planner.RELOAD)
    finally:
        await su.close()


async def _wait_fingerprint(op: Operator, want: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while await op.served_fingerprint() != want:
        assert asyncio.get_running_loop().time() < deadline, "the server did not take the certificate"
        await asyncio.sleep(0.05)


async def test_a_served_leaf_whose_chain_clients_refuse_is_not_serving(
        operator: Operator, role: tuple[str, str], shared_tmp: Path) -> None:
    """The fingerprint matches but the server does not send the intermediate: verify-full clients fail.
    pgcurator used to call that Serving; now it delivers the full chain and proves it with libpq."""
    r = root()
    i1 = inter("Served Intermediate", r)
    leaf = make(NAME, i1)
    data = secret(leaf, [i1], [r])
    await _serve_leaf_only(operator.pg, leaf, r.pem, operator.spec())
    await _wait_fingerprint(operator, fingerprint(leaf.cert.public_bytes(DER)))
    before = psql_verify_full(operator.pg, role, r.pem, NAME, shared_tmp)
    assert before.returncode != 0, before.stdout  # libpq refuses what is served now

    out = await operator.reconcile(data)
    assert condition(out, "Serving").status, condition(out, "Serving").message
    after = psql_verify_full(operator.pg, role, r.pem, NAME, shared_tmp)
    assert after.returncode == 0 and after.stdout.strip() == "t", after.stderr
    assert validate_secret(data, dns_names=[NAME]).ok


def _hosts(case: Case) -> list[str]:
    """The names a client would connect with: the declared ones, else the certificate's first name."""
    return [*case.dns_names, *case.ip_addresses] or [NAME]


def _server_state(pg: DebianPostgres) -> tuple[str, list[str]]:
    directory = pg.datadir / DIRECTORY
    files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    return (pg.datadir / "postgresql.auto.conf").read_text(), files


async def test_every_good_chain_is_served_and_psql_verify_full_accepts_it(
        operator: Operator, role: tuple[str, str], shared_tmp: Path) -> None:
    good = cases(lambda c: c.accept)
    accepted = 0
    for case in good:
        out = await operator.reconcile(case.data, dns_names=case.dns_names, ip_addresses=case.ip_addresses)
        serving = condition(out, "Serving")
        assert serving.status, f"{case.name}: {serving.message}"
        assert await operator.served_fingerprint() == out.status["secretFingerprint"], case.name
        for host in _hosts(case):
            done = psql_verify_full(operator.pg, role, case.data["ca.crt"], host, shared_tmp)
            assert done.returncode == 0 and done.stdout.strip() == "t", f"{case.name} as {host}: {done.stderr}"
        accepted += 1
    record("accepted and verified by a verify-full client",
           f"{accepted} of {len(good)} good chains served by Debian's PostgreSQL, psql sslmode=verify-full")


async def test_a_refused_secret_changes_nothing_on_the_server(
        operator: Operator, role: tuple[str, str], shared_tmp: Path) -> None:
    r = root("Baseline Root")
    baseline = secret(make(NAME, r), ca=[r])
    assert condition(await operator.reconcile(baseline), "Serving").status
    served, state = await operator.served_fingerprint(), _server_state(operator.pg)
    refused = cases(lambda c: not c.accept)
    for case in refused:
        out = await operator.reconcile(case.data, dns_names=case.dns_names, ip_addresses=case.ip_addresses)
        degraded, serving = condition(out, "Degraded"), condition(out, "Serving")
        assert degraded.status and degraded.reason == case.reason, f"{case.name}: {degraded.message}"
        assert not serving.status and "was not delivered" in serving.message, case.name
        assert await operator.served_fingerprint() == served, case.name  # still the previous certificate
        assert _server_state(operator.pg) == state, case.name  # no file written, no setting changed
    done = psql_verify_full(operator.pg, role, r.pem, NAME, shared_tmp)
    assert done.returncode == 0, done.stderr  # clients still get the previous, good certificate
    record("refused Secrets that left the server untouched", f"{len(refused)} of {len(refused)}")
