"""Index advice with hypothetical indexes: Debian's PostgreSQL with HypoPG (hack/setup.sh installs
postgresql-<major>-hypopg). The real table is planned against, nothing is copied or built."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pgcurator.catalog.advice import TAG, Statement
from pgcurator.reconcile.advice import AdviceOptions, advise
from pgcurator_devenv.debian_postgres import DebianPostgres, debian_bin_dir
from pgcurator_devenv.postgres import EmbeddedPostgresError

from .counting import Counting

pytestmark = pytest.mark.integration


def _hypopg_installed() -> bool:
    try:
        _, major = debian_bin_dir()
    except EmbeddedPostgresError:
        return False
    return Path(f"/usr/share/postgresql/{major}/extension/hypopg.control").is_file()


@pytest.fixture(scope="module")
def hypo_pg() -> Iterator[DebianPostgres]:
    if not _hypopg_installed():
        pytest.skip("Debian's PostgreSQL with HypoPG is not installed (hack/setup.sh)")
    d = Path(tempfile.mkdtemp(prefix="pgcurator-hypopg-"))
    d.chmod(0o755)  # reachable by the server's unprivileged user
    server = DebianPostgres(d / "data", extra_settings={"shared_preload_libraries": "pg_stat_statements"})
    server.start()
    yield server
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def hconn(hypo_pg: DebianPostgres) -> AsyncIterator[asyncpg.Connection]:
    hypo_pg.psql("DROP DATABASE IF EXISTS advice; CREATE DATABASE advice")
    hypo_pg.psql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg", "advice")
    c = await asyncpg.connect(hypo_pg.dsn("advice"))
    yield c
    await c.close()


async def test_hypothetical_indexes_suggest_without_building_on_the_table(hconn: asyncpg.Connection) -> None:
    await hconn.execute("CREATE TABLE chunks (id bigint PRIMARY KEY, source_id int NOT NULL, note text, "
                        "embedding real[], doc jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now())")
    await hconn.execute("INSERT INTO chunks (id, source_id, note, embedding, doc) SELECT g, g % 3000, 'n' || (g % 5000), "
                        "CASE WHEN g % 100 = 0 THEN NULL ELSE ARRAY[1, 2]::real[] END, jsonb_build_object('k', g % 4000) "
                        "FROM generate_series(1, 60000) g")
    await hconn.execute("ANALYZE chunks")
    texts = ("SELECT id FROM chunks WHERE source_id = $1 AND embedding IS NOT NULL ORDER BY created_at",
             "SELECT id FROM chunks WHERE embedding IS NULL ORDER BY id LIMIT 10",
             "SELECT id FROM chunks WHERE note = $1",
             "SELECT id FROM chunks WHERE doc @> $1")
    counting = Counting(hconn)
    report = await advise(counting, AdviceOptions(statements=tuple(Statement(t, 10) for t in texts)))
    # HypoPG simulates no GIN: that candidate is checked on a sample instead of failing
    assert report.mode == "hypopg+sample" and report.failures == [], report.to_status()
    got = {s.candidate.definition(concurrently=False) for s in report.suggestions}
    assert got == {
        "CREATE INDEX ON public.chunks USING gin (doc jsonb_path_ops)",
        "CREATE INDEX ON public.chunks (source_id, created_at) WHERE embedding IS NOT NULL",
        "CREATE INDEX ON public.chunks (id) WHERE embedding IS NULL",
        "CREATE INDEX ON public.chunks (note)"}, report.to_status()
    assert all(0 < s.cost_after < s.cost_before for s in report.suggestions)
    built = [s for s in counting.sent if s.replace(TAG, "").lstrip().startswith("CREATE INDEX")]
    # B-trees were only hypothetical; the GIN and the existing PK were built on the sample only
    assert built and all(" ON pg_temp." in s for s in built), built
    assert sum("USING gin" in s for s in built) == 2, built  # checked alone, then with all kept ones
    # nothing hypothetical is left behind in the session
    assert await hconn.fetchval("SELECT count(*) FROM hypopg_list_indexes") == 0
