"""The state-space suite shares the session's embedded PostgreSQL; each test reuses one database
for all its examples and resets it per example (a database per example is far too slow)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE
from .harness import Harness


@pytest.fixture
def harness(pg: EmbeddedPostgres, dbname: str, app_password: str) -> Iterator[Harness]:
    h = Harness(pg, dbname, pg.dsn(dbname, user=APP_ROLE, password=app_password))
    yield h
    h.close()
