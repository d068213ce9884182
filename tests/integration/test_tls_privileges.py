"""The privileges docs/dbtlscert.md documents per delivery mode, checked against Debian's PostgreSQL with TLS:
sufficient for the mode's own operations, and what is missing is named."""

from __future__ import annotations

import secrets
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgcurator.catalog.tls import TLS_SETTINGS, observe_privileges, observe_settings, read_server_file
from pgcurator.models.tls import DbTlsCertSpec
from pgcurator.planner import tls as planner
from pgcurator_devenv.debian_postgres import DebianPostgres, create_tls_role

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_tmp() -> Iterator[Path]:
    """Reachable by the server's unprivileged user (pytest resets its own basetemp root to 0700)."""
    d = Path(tempfile.mkdtemp(prefix="pgcurator-tls-int-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_pg(shared_tmp: Path) -> Iterator[DebianPostgres]:
    server = DebianPostgres(shared_tmp / "data")
    server.start()
    yield server
    server.stop()


async def connect(pg: DebianPostgres, mode: str | None) -> asyncpg.Connection:
    role, password = f"priv_{mode or 'bare'}", secrets.token_urlsafe(12)
    create_tls_role(pg, role, password, mode)
    return await asyncpg.connect(pg.dsn("postgres", user=role, password=password))


@pytest.fixture
async def sql_conn(tls_pg: DebianPostgres) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(tls_pg, "sql")
    yield c
    await c.close()


def spec(mode: str) -> DbTlsCertSpec:
    delivery = {"mode": mode, "mount": {"certFile": "/m/tls.crt", "keyFile": "/m/tls.key"}}
    return DbTlsCertSpec.model_validate({"database": {"secretName": "x"}, "secretName": "s", "delivery": delivery})


@pytest.mark.parametrize("mode", ["sql", "mount"])
async def test_documented_grants_suffice_for_their_mode_only(tls_pg: DebianPostgres, mode: str) -> None:
    conn = await connect(tls_pg, mode)
    try:
        privs = await observe_privileges(conn)
        assert not privs.superuser and privs.version_num >= 150000
        assert planner.missing_privileges(spec(mode), privs, list(TLS_SETTINGS)) == []
        other = "mount" if mode == "sql" else "sql"
        assert planner.missing_privileges(spec(other), privs, list(TLS_SETTINGS)) != []
    finally:
        await conn.close()


async def test_a_bare_role_is_told_every_grant(tls_pg: DebianPostgres) -> None:
    conn = await connect(tls_pg, None)
    try:
        missing = planner.missing_privileges(spec("sql"), await observe_privileges(conn), list(TLS_SETTINGS))
        text = "\n".join(missing)
        for needle in ("pg_execute_server_program", "ALTER SYSTEM ON PARAMETER ssl, ssl_cert_file",
                       "pg_reload_conf()", "CREATE ON DATABASE", "pg_read_all_settings"):
            assert needle in text
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.3'")
    finally:
        await conn.close()


async def test_sql_role_writes_a_0600_key_and_alters_and_reloads(tls_pg: DebianPostgres,
                                                                  sql_conn: asyncpg.Connection) -> None:
    path = "pgcurator-tls/tls-test.key"
    async with sql_conn.transaction():
        await sql_conn.execute("SELECT set_config($1, $2, true)", planner.PEM_SETTING, "line one\nline two")
        await sql_conn.execute(planner.write_file_statement(path))
    f = tls_pg.datadir / path
    assert f.read_text() == "line one\nline two\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_uid == tls_pg.run_uid
    assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
    # the setting is gone with the transaction: no key text lingers in the session
    assert await sql_conn.fetchval("SELECT current_setting($1, true)", planner.PEM_SETTING) in (None, "")
    await sql_conn.execute("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.3'")
    await sql_conn.execute(planner.RELOAD)
    settings = None
    for _ in range(100):
        settings = await observe_settings(sql_conn)
        if settings.get("ssl_min_protocol_version") == "TLSv1.3":
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert settings is not None and settings.get("ssl_min_protocol_version") == "TLSv1.3"
    await sql_conn.execute("ALTER SYSTEM RESET ssl_min_protocol_version")
    await sql_conn.execute(planner.RELOAD)


async def test_mount_role_reads_a_certificate_outside_the_data_directory(tls_pg: DebianPostgres,
                                                                          shared_tmp: Path) -> None:
    f = shared_tmp / "tls.crt"
    f.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    f.chmod(0o644)
    conn = await connect(tls_pg, "mount")
    try:
        assert await read_server_file(conn, str(f)) == f.read_bytes()
        assert await read_server_file(conn, str(shared_tmp / "absent.crt")) is None
    finally:
        await conn.close()
    bare = await connect(tls_pg, None)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await read_server_file(bare, str(f))
    finally:
        await bare.close()
