"""`pgcurator suggest`: index advice printed as IndexPolicy YAML (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pgcurator.cli import main
from pgcurator.models.index import IndexPolicySpec
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..conftest import APP_ROLE

pytestmark = pytest.mark.integration


def test_suggest_prints_policies_to_commit_and_the_missing_grant(
        pg: EmbeddedPostgres, dbname: str, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"
            "CREATE TABLE tickets (id bigint PRIMARY KEY, status text NOT NULL, owner_id int NOT NULL, "
            "opened_at timestamptz NOT NULL);"
            "INSERT INTO tickets SELECT g, CASE WHEN g % 100 = 0 THEN 'open' ELSE 'closed' END, g % 3000, "
            "now() - g * interval '1 minute' FROM generate_series(1, 40000) g;"
            f"ALTER TABLE tickets OWNER TO {APP_ROLE}; ANALYZE tickets", dbname)
    workload = ["SELECT id FROM tickets WHERE owner_id = 7",
                "SELECT id FROM tickets WHERE status = 'open' ORDER BY opened_at LIMIT 20"]
    pg.psql(";".join(workload * 12), dbname)  # the application, as another role

    assert main(["suggest", "--database-url", db_url, "--min-calls", "5"]) == 0
    out = capsys.readouterr().out
    assert f'GRANT pg_read_all_stats TO "{APP_ROLE}";' in out, out

    (tmp_path / "workload.sql").write_text(";\n".join(workload) + ";\n")
    assert main(["suggest", "--database-url", db_url, "--statements", str(tmp_path / "workload.sql"),
                 "--table", "public.tickets", "--secret-name", "tickets-db"]) == 0
    out = capsys.readouterr().out
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in docs] == ["IndexPolicy"], out
    spec = IndexPolicySpec.model_validate(docs[0]["spec"])
    assert spec.database.secret_name == "tickets-db" and spec.table.name == "tickets"
    got = {(tuple(c.column for c in i.columns), i.where) for i in spec.indexes}
    assert got == {(("owner_id",), None), (("opened_at",), "status = 'open'")}, out
    assert "% less" in out  # the estimated gain, as a comment
