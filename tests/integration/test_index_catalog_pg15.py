"""IndexPolicy's catalog read on PostgreSQL 15 (Debian bookworm's), where pg_stat_all_indexes has
no last_idx_scan column yet (PostgreSQL 16 added it). Found by the one-node cluster suite: every
IndexPolicy against a PostgreSQL 15 was InternalError ("column s2.last_idx_scan does not exist")."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pgcurator.catalog.indexes import observe_indexes
from pgcurator_devenv.debian_postgres import DebianPostgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg15() -> Iterator[DebianPostgres]:
    shared = Path(tempfile.mkdtemp(prefix="pgcurator-pg15-"))
    shared.chmod(0o755)  # reachable by the server's unprivileged user
    server = DebianPostgres(shared / "data")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(shared, ignore_errors=True)


async def test_indexes_of_plain_and_partitioned_tables_observed_before_postgresql_16(pg15: DebianPostgres) -> None:
    password = secrets.token_urlsafe(12)
    pg15.create_role("app15", password)
    pg15.create_database("idx15", owner="app15")
    conn = await asyncpg.connect(pg15.dsn("idx15", user="app15", password=password))
    try:
        if conn.get_server_version().major >= 16:
            pytest.skip("this Debian PostgreSQL already has last_idx_scan")
        await conn.execute("""
            CREATE TABLE articles (id bigint PRIMARY KEY, user_id bigint NOT NULL);
            CREATE INDEX articles_user ON articles (user_id);
            CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);
            CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            CREATE INDEX events_at ON events (at);
            SELECT * FROM articles WHERE user_id = 1;
        """)
        plain = await observe_indexes(conn, "public", "articles")
        assert {i.name for i in plain.indexes} == {"articles_pkey", "articles_user"}
        assert all(i.last_scan is None for i in plain.indexes)  # not known before PostgreSQL 16
        parted = await observe_indexes(conn, "public", "events")
        assert [i.name for i in parted.indexes] == ["events_at"] and parted.indexes[0].partitioned
        assert [i.name for p in parted.partitions for i in p.indexes] == ["events_2026_at_idx"]
    finally:
        await conn.close()
