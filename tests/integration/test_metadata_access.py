"""The operator's credentials change to another role (a rotation that also renames the role): the
pgcurator schema left by the first role is reported with the GRANT that fixes it, and that GRANT
works."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from pgcurator.db.metadata import MetadataForbidden, ensure_metadata_schema
from pgcurator_devenv.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration


async def test_foreign_metadata_schema_is_reported_with_its_fix(pg: EmbeddedPostgres, db_url: str,
                                                                dbname: str) -> None:
    first = await asyncpg.connect(db_url)
    try:
        await ensure_metadata_schema(first)  # created by, and owned by, the first role
        other, password = "curator_" + secrets.token_hex(3), secrets.token_urlsafe(12)
        pg.create_role(other, password)
        second = await asyncpg.connect(pg.dsn(dbname, user=other, password=password))
        try:
            with pytest.raises(MetadataForbidden) as err:
                await ensure_metadata_schema(second)
            msg = err.value.message
            assert f"role {other} cannot use the pgcurator schema in database {dbname}" in msg
            assert err.value.reason == "MetadataSchemaForbidden" and err.value.transient
            # the statements the message gives, run by the schema's owner, are enough
            grants = msg.split("run: ", 1)[1]
            await first.execute(grants)
            await ensure_metadata_schema(second)
            await second.execute("INSERT INTO pgcurator.history (resource, step, target, statement, started_at, "
                                 "duration_ms, outcome) VALUES ('r', 's', 't', 'x', now(), 0, 'ok')")
        finally:
            await second.close()
    finally:
        await first.close()
