"""The embedded PostgreSQL 18 behaves like the server the operator talks to in production."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pgcurator_devenv.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_connects_over_tcp_with_password(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(
        host=pg.host, port=pg.port, user="postgres", password=pg.password, database="postgres"
    )
    try:
        assert await conn.fetchval("SELECT current_user") == "postgres"
        assert await conn.fetchval("SHOW server_version_num") >= "180000"
        assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
        assert await conn.fetchval("SHOW max_connections") == "200"
        assert await conn.fetchval("SHOW fsync") == "off"
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg.dsn())
    await conn.close()


async def test_wrong_password_is_refused(pg: EmbeddedPostgres) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=pg.host, port=pg.port, user="postgres", password="not-the-password", database="postgres"
        )


async def test_no_password_is_refused(pg: EmbeddedPostgres) -> None:
    # TCP is scram-sha-256, never trust
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        await asyncpg.connect(host=pg.host, port=pg.port, user="postgres", password="", database="postgres")


async def test_pg_stat_statements_is_preloaded(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert "pg_stat_statements" in await conn.fetchval("SHOW shared_preload_libraries")
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        # only works when the library was preloaded
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_statements") >= 0
    finally:
        await conn.close()


async def test_create_extension_vector(pg: EmbeddedPostgres) -> None:
    pg.create_database("vectors")
    conn = await asyncpg.connect(pg.dsn("vectors"))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert version is not None
        assert await conn.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector") == 1.0
    finally:
        await conn.close()
    assert set(pg.extension_versions("vectors")) == {"vector", "pg_stat_statements"}


async def test_role_and_database_helpers(pg: EmbeddedPostgres) -> None:
    pg.create_role("app", "s3cret'quote")
    pg.create_database("appdb", owner="app")
    pg.create_database("appdb", owner="app")  # idempotent
    conn = await asyncpg.connect(pg.dsn("appdb", user="app", password="s3cret'quote"))
    try:
        assert await conn.fetchval("SELECT current_user") == "app"
    finally:
        await conn.close()
    assert pg.psql("SELECT datname FROM pg_database WHERE datname = 'appdb'").strip() == "appdb"


async def test_restart_reuses_datadir_and_password(pg: EmbeddedPostgres) -> None:
    port, password = pg.port, pg.password
    pg.restart()
    assert (pg.port, pg.password) == (port, password)
    # a second instance on the same datadir (as `pgcurator dev up` re-run) only starts it
    pg.stop()
    again = EmbeddedPostgres(pg.datadir)
    again.start()
    try:
        assert again.password == password
        conn = await asyncpg.connect(again.dsn())
        await conn.close()
    finally:
        again.stop()
    pg.start()
    pg.stop()
    pg.stop()  # idempotent
    pg.start()


def test_long_datadir_puts_socket_in_short_tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    deep = tmp_path_factory.mktemp("long") / ("d" * 60) / ("e" * 60)
    with EmbeddedPostgres(deep, password="given-password") as server:
        assert server.socket_dir != deep
        assert len(str(server.socket_dir)) < 40
        assert server.password == "given-password"
        assert server.psql("SELECT 1").strip() == "1"
        socket_dir = server.socket_dir
    assert not Path(socket_dir).exists()
