"""Shared fixtures: a real embedded PostgreSQL for the session, a fresh database per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgcurator_devenv.postgres import EmbeddedPostgres

# The operator connects as this role: a non-superuser that owns the databases and tables it manages.
APP_ROLE = "curator"


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    server.create_role(APP_ROLE, secrets.token_urlsafe(16))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app_password(pg: EmbeddedPostgres) -> str:
    password = secrets.token_urlsafe(16)
    pg.create_role(APP_ROLE, password)
    return password


@pytest.fixture
def dbname(pg: EmbeddedPostgres, app_password: str) -> str:
    name = "t_" + secrets.token_hex(6)
    pg.create_database(name, owner=APP_ROLE)
    return name


@pytest.fixture
def db_url(pg: EmbeddedPostgres, dbname: str, app_password: str) -> str:
    return pg.dsn(dbname, user=APP_ROLE, password=app_password)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db_url, server_settings={"TimeZone": "UTC"})
    yield c
    await c.close()


REPO = Path(__file__).resolve().parents[1]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .figures import FIGURES, FULL

    if not FIGURES:
        return
    terminalreporter.section("pgcurator reliability figures" + (" (full)" if FULL else " (quick)"))
    width = max(len(k) for k in FIGURES)
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key.ljust(width)}  {value}")
