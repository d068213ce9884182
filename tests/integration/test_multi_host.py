"""Several hosts with target_session_attrs=read-write, as CloudNativePG and Patroni users write them,
reach the primary: a real streaming standby (pg_basebackup of an embedded primary) listed first.

asyncpg decides like libpq: a server is read-write unless it reports default_transaction_read_only
= on or in_hot_standby = on (or, for servers older than 14, pg_is_in_recovery()). A server merely
started with default_transaction_read_only would pass for a standby; a real one proves the point.
libpq itself (Debian's, through ctypes) is asked the same question with the same connection string.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from pgcurator.db.params import ConnParams, connect_kwargs, params_from_secret
from pgcurator.db.pools import PoolRegistry
from pgcurator.models.common import DatabaseRef
from pgcurator_devenv.postgres import BIN_DIR, PG_SYSTEM_USER, EmbeddedPostgres

from .. import libpq

pytestmark = pytest.mark.integration

ROLE, DB = "curator", "shop"
HBA = """local all all trust
local replication all trust
host all all 127.0.0.1/32 scram-sha-256
"""


@dataclass
class Pair:
    primary: EmbeddedPostgres
    standby: EmbeddedPostgres
    password: str


def _as_server_user() -> dict[str, int]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _wait_for(what: str, check: object, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    base = Path(tempfile.mkdtemp(prefix="pgcurator-standby-"))
    base.chmod(0o755)  # the server's own user must reach the directories below
    hba = base / "hba.conf"
    hba.write_text(HBA)
    hba.chmod(0o644)
    settings = {"hba_file": str(hba)}  # replication over the unix socket, which the default file has not
    primary = EmbeddedPostgres(base / "primary", extra_settings=settings)
    primary.start()
    standby: EmbeddedPostgres | None = None
    try:
        password = secrets.token_urlsafe(12)
        primary.create_role(ROLE, password)
        primary.create_database(DB, owner=ROLE)
        target = base / "standby"
        target.mkdir(mode=0o700)
        if os.geteuid() == 0:
            # the backup runs as the server's user, who must read every file of the data directory
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            for path in (target, primary.datadir / ".pgcurator-state.json"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        done = subprocess.run(
            [str(BIN_DIR / "pg_basebackup"), "-D", str(target), "-R", "--wal-method=stream", "--no-sync",
             "--checkpoint=fast",
             "-d", f"host={primary.socket_dir} port={primary.port} user=postgres"],
            check=False, capture_output=True, text=True, timeout=120, cwd="/", **_as_server_user(),  # type: ignore[call-overload]
        )
        assert done.returncode == 0, f"pg_basebackup failed: {done.stderr}"
        standby = EmbeddedPostgres(target, extra_settings=settings)
        standby.start(timeout=60)
        _wait_for("the standby to accept connections in recovery",
                  lambda: standby is not None and standby.psql("SELECT pg_is_in_recovery()").strip() == "t")
        yield Pair(primary, standby, password)
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)


def params(pair: Pair, hosts: list[EmbeddedPostgres], query: str) -> ConnParams:
    where = ",".join(f"{s.host}:{s.port}" for s in hosts)
    uri = f"postgresql://{ROLE}:{pair.password}@{where}/{DB}?sslmode=disable{query}"
    data = {"uri": base64.b64encode(uri.encode()).decode()}
    return params_from_secret("ns/app-db", data, DatabaseRef.model_validate({"secretName": "app-db"}))


async def landed_on(p: ConnParams) -> tuple[int, bool]:
    conn = await asyncpg.connect(**connect_kwargs(p), timeout=30)
    try:
        return await conn.fetchval("SELECT inet_server_port()"), await conn.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await conn.close()


async def test_read_write_skips_the_standby_and_reaches_the_primary(pair: Pair) -> None:
    first_standby = params(pair, [pair.standby, pair.primary], "&target_session_attrs=read-write")
    assert len(first_standby.addresses) == 2
    assert await landed_on(first_standby) == (pair.primary.port, False)
    # the standby really is a standby, and listed first: without the attribute it is where we land
    assert await landed_on(params(pair, [pair.standby, pair.primary], "")) == (pair.standby.port, True)
    assert await landed_on(params(pair, [pair.primary, pair.standby], "&target_session_attrs=read-write")) == (
        pair.primary.port, False)


async def test_a_pool_built_from_connect_kwargs_reaches_the_primary(pair: Pair) -> None:
    p = params(pair, [pair.standby, pair.primary], "&target_session_attrs=read-write")
    pool = await asyncpg.create_pool(**connect_kwargs(p), min_size=0, max_size=2, timeout=30)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT inet_server_port()") == pair.primary.port
            await conn.execute("CREATE TABLE IF NOT EXISTS written_on_primary (id int)")
    finally:
        await pool.close()


async def test_the_operators_pool_registry_reaches_the_primary(pair: Pair) -> None:
    registry = PoolRegistry(max_size=2)
    try:
        async with registry.connection(params(pair, [pair.standby, pair.primary],
                                              "&target_session_attrs=read-write")) as conn:
            assert await conn.fetchval("SELECT inet_server_port()") == pair.primary.port
    finally:
        await registry.close()


async def test_only_standbys_with_read_write_is_refused(pair: Pair) -> None:
    p = params(pair, [pair.standby], "&target_session_attrs=read-write")
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched):
        await asyncpg.connect(**connect_kwargs(p), timeout=30)


def test_libpq_lands_on_the_same_server(pair: Pair) -> None:
    """psql with the same uri: Debian's libpq picks the primary too."""
    lib = libpq.load()
    lib.PQconnectdb.restype = ctypes.c_void_p
    lib.PQconnectdb.argtypes = [ctypes.c_char_p]
    lib.PQport.restype = ctypes.c_char_p
    lib.PQport.argtypes = [ctypes.c_void_p]
    where = f"{pair.standby.host}:{pair.standby.port},{pair.primary.host}:{pair.primary.port}"
    uri = f"postgresql://{ROLE}:{pair.password}@{where}/{DB}?sslmode=disable&target_session_attrs=read-write"
    conn = lib.PQconnectdb(uri.encode())
    try:
        assert lib.PQstatus(conn) == 0, lib.PQerrorMessage(conn)
        assert int(lib.PQport(conn)) == pair.primary.port
    finally:
        lib.PQfinish(conn)
    ours = params(pair, [pair.standby, pair.primary], "&target_session_attrs=read-write")
    assert asyncio.run(landed_on(ours))[0] == pair.primary.port
