"""Hostile input (issue 8.5): a hand-written corpus of specs and Secrets, each refused with a
clear message, with nothing executed against the database and no crash; plus property-based
tests over the models and the quoting every planner relies on."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import asyncpg
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parse_sql

from pgcurator.db.params import params_from_secret, params_from_url
from pgcurator.db.pools import PoolRegistry
from pgcurator.errors import CuratorError
from pgcurator.kinds import ALL_KINDS
from pgcurator.models.common import DatabaseRef, check_identifier
from pgcurator.reconcile.context import ReconcileContext
from pgcurator.runtime import format_validation_error
from pgcurator.sql.quote import ident, qualified
from pgcurator_devenv.postgres import EmbeddedPostgres

from ..integration.scenarios import EVENT_LOGS
from .conftest import record
from .hostile import BAD_SECRETS, corpus
from .hostile_specs import BASE

pytestmark = pytest.mark.integration

HANDLERS = {h.kind: h for h in ALL_KINDS}


def merged(kind: str, patch: dict[str, Any]) -> dict[str, Any]:
    body = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE[kind].items()}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {k: v for k, v in body.items() if v is not None}


SNAPSHOT = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcurator') AND n.nspname NOT LIKE 'pg_toast%'),
       (SELECT count(*) FROM pg_namespace WHERE nspname <> 'pgcurator')
"""


async def snapshot(conn: asyncpg.Connection) -> tuple[int, ...]:
    """User objects and schemas, and statements in the history: none may change."""
    objects, schemas = await conn.fetchrow(SNAPSHOT)
    history = 0
    if await conn.fetchval("SELECT to_regclass('pgcurator.history') IS NOT NULL"):
        history = await conn.fetchval("SELECT count(*) FROM pgcurator.history")
    return objects, schemas, history


async def test_hostile_corpus_is_refused_and_nothing_runs(conn: asyncpg.Connection, db_url: str, pg: EmbeddedPostgres,
                                                          dbname: str) -> None:
    await conn.execute(EVENT_LOGS)
    pg.psql("CREATE EXTENSION IF NOT EXISTS vector", database=dbname)
    await conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, embedding vector(3))")
    before = await snapshot(conn)
    pools = PoolRegistry(max_size=4)
    params = params_from_url(db_url)
    by_schema = by_operator = 0
    accepted: list[str] = []
    cases = corpus()
    try:
        for case_id, kind, patch in cases:
            body = merged(kind, patch)
            handler = HANDLERS[kind]
            try:
                spec = handler.model.model_validate(body)
            except pydantic.ValidationError as exc:
                msg = format_validation_error(exc)
                # `spec.<field>:`, or `spec:` for a rule over several fields (never `spec.spec:`).
                assert msg.startswith(("spec.", "spec:")) and "spec.spec" not in msg, (case_id, msg)
                assert "Traceback" not in msg and "should match" not in msg, (case_id, msg)
                by_schema += 1
                continue
            ctx = ReconcileContext(conn=conn, resource=f"{kind}/hostile/{case_id}", namespace="hostile",
                                   name=case_id, body={}, params=params, pools=pools)
            try:
                outcome = await asyncio.wait_for(handler.reconcile(ctx, spec), 60)
            except CuratorError as exc:
                assert exc.message and exc.reason, case_id
                by_operator += 1
                continue
            if any(c.type == "Degraded" and c.status for c in outcome.conditions):
                by_operator += 1
            else:
                accepted.append(f"{case_id}: {outcome.conditions[0].reason}")
    finally:
        await pools.close()
    after = await snapshot(conn)
    if after[2] != before[2]:
        ran = [tuple(r) for r in await conn.fetch("SELECT resource, step, statement, outcome FROM pgcurator.history")]
        pytest.fail(f"statements ran for hostile input: {ran}")
    record("hostile specs refused (schema / operator / total)", f"{by_schema} / {by_operator} / {len(cases)}")
    assert not accepted, f"hostile specs that were not refused: {accepted}"
    assert after == before, f"something changed in the database: {before} -> {after}"
    assert len(cases) >= 200


def test_hostile_secrets_are_refused_clearly() -> None:
    ref = DatabaseRef.model_validate({"secretName": "app-db"})
    refused = 0
    for case_id, data in BAD_SECRETS:
        if data is None:
            refused += 1  # a missing Secret: the runtime reports SecretNotFound (covered end to end)
            continue
        with pytest.raises(CuratorError) as err:
            params_from_secret("ns/app-db", data, ref)
        assert err.value.reason in ("SecretInvalid", "SecretNotFound") and "Secret ns/app-db" in err.value.message, (
            case_id, err.value.message)
        refused += 1
    record("hostile secrets refused", f"{refused} / {len(BAD_SECRETS)}")


# Property-based: for any identifier the models accept, every planner quotes it so that
# PostgreSQL's own parser sees exactly one statement naming exactly that relation.

idents = st.text(min_size=1, max_size=63)


@settings(max_examples=300, deadline=None)
@given(schema=idents, table=idents)
def test_any_accepted_identifier_parses_back_to_itself(schema: str, table: str) -> None:
    try:
        check_identifier(schema)
        check_identifier(table)
    except ValueError:
        return
    stmts = parse_sql(f"DROP TABLE {qualified(schema, table)}")
    assert len(stmts) == 1
    obj = stmts[0].stmt.objects[0]  # type: ignore[union-attr]
    assert [n.sval for n in obj] == [schema, table]


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=80))
def test_identifier_validation_never_crashes_and_explains(name: str) -> None:
    try:
        assert check_identifier(name) == name
        assert ident(name).startswith('"')
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["table", "range", "retention", "premake", "strategy", "list", "hash",
                                             "schedule", "timeouts", "template", "convert"]),
                            st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                      st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(
                                          max_size=10)), max_size=3)), max_size=5))
def test_partition_model_never_crashes_on_garbage(body: dict[str, Any]) -> None:
    handler = HANDLERS["PartitionPolicy"]
    try:
        handler.model.model_validate({"database": {"secretName": "x"}, **body})
    except pydantic.ValidationError as exc:
        assert format_validation_error(exc)


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["uri", "host", "port", "user", "username", "password", "dbname"]),
                            st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                                      st.text(max_size=30)), max_size=6))
def test_secret_parsing_never_crashes(data: dict[str, str]) -> None:
    try:
        p = params_from_secret("ns/s", data, DatabaseRef.model_validate({"secretName": "s"}))
    except CuratorError as exc:
        assert exc.message
        return
    assert p.password not in p.display and p.password not in p.pool_key if p.password else True
