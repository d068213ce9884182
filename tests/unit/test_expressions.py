"""The user-SQL expression validator: plain expressions pass (normalised), hostile ones are refused."""

import pytest

from pgcurator.errors import SpecError
from pgcurator.sql.expressions import validate_expression, validate_predicate

HOSTILE = [
    # statements and statement separators
    "1=1; DROP TABLE x",
    "true; DELETE FROM users",
    "true;",
    "status = 'a'; COMMIT; DROP TABLE x",
    "x = ';'",  # no semicolons even in literals
    "1=1) ; DROP TABLE x; SELECT (1",
    # closing our wrapper early and changing the statement
    "true) UNION SELECT 1 FROM pg_authid WHERE (true",
    "true) OR EXISTS (SELECT 1",
    "true ) ORDER BY (1",
    "true) GROUP BY 1 HAVING (true",
    "true) LIMIT (1",
    "true) FOR UPDATE --",
    "true) INTO evil FROM x WHERE (true",
    # comments
    "1=1 -- ; DROP TABLE x",
    "1=1 /* ; DROP TABLE x */",
    "1=1 /* nested /* comment */ */",
    "a = 1 --\n OR true",
    "a /**/= 1",
    # dollar quoting
    "$$x$$ = 'x'",
    "a = $tag$; DROP TABLE x; $tag$",
    "$a$ $b$ $a$ = b",
    # parameters
    "a = $1",
    # sub-queries of every kind
    "(SELECT 1) = 1",
    "EXISTS (SELECT 1 FROM pg_class)",
    "a IN (SELECT id FROM x)",
    "a = ANY (SELECT id FROM x)",
    "a > ALL (SELECT 1)",
    "ARRAY(SELECT 1) IS NOT NULL",
    "(WITH q AS (DELETE FROM x RETURNING 1) SELECT 1) = 1",
    # volatile / stable / side-effecting functions
    "random() > 0.5",
    "now() > created_at",
    "created_at > current_timestamp",
    "created_at > current_date",
    "owner = current_user",
    "owner = session_user",
    "nextval('s') > 0",
    "pg_sleep(10) IS NULL",
    "set_config('role', 'postgres', false) IS NOT NULL",
    "dblink('host=x', 'select 1') IS NOT NULL",
    "lo_export(1, '/tmp/x') = 1",
    "lo_import('/etc/passwd') > 0",
    "pg_read_file('/etc/passwd') <> ''",
    "pg_terminate_backend(1)",
    "pg_cancel_backend(1)",
    "txid_current() > 0",
    "clock_timestamp() > a",
    "gen_random_uuid() = id",
    "pg_advisory_lock(1) IS NULL",
    "query_to_xml('select 1', true, true, '') IS NOT NULL",
    "pg_catalog.pg_sleep(1) IS NULL",
    # user-defined / qualified functions and operators
    "public.lower(a) = 'x'",
    "evil.f(a) > 0",
    "my_function(a) > 0",
    "a OPERATOR(public.===) b",
    "a === b",
    # aggregates and windows
    "count(*) > 1",
    "sum(a) OVER () > 1",
    "max(a) FILTER (WHERE true) > 1",
    "string_agg(a, ',' ORDER BY a) = 'x'",
    # casts to catalog-reading types, row/star and other node kinds
    "'pg_authid'::regclass IS NOT NULL",
    "'now'::text::regproc IS NOT NULL",
    "CAST(a AS public.mytype) IS NOT NULL",
    "x.* IS NOT NULL",
    "ROW(a, b) IS NOT NULL",
    "a IS DOCUMENT",
    "GROUPING(a) = 0",
    "a = DEFAULT",
    # not an expression at all / garbage
    "",
    "   ",
    "DROP TABLE x",
    "SELECT 1",
    "a = ",
    "a = 'unterminated",
    "a\x00 = 1",
    "x" * 5000,
    "COPY x TO PROGRAM 'id'",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t[:40]) for t in HOSTILE])
def test_hostile_input_is_refused(text: str) -> None:
    with pytest.raises(SpecError):
        validate_predicate(text)


def test_corpus_is_large() -> None:
    assert len(HOSTILE) >= 50


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("status = 'active'", "status = 'active'"),
        ("deleted_at IS NULL", "deleted_at IS NULL"),
        ("status IN ('queued','retry') AND attempts < 5", "status IN ('queued', 'retry') AND attempts < 5"),
        ("NOT archived", "NOT archived"),
        ("(payload->>'kind') = 'doc'", "payload ->> 'kind' = 'doc'"),
        ("score BETWEEN 0 AND 1", "score BETWEEN 0 AND 1"),
        ("name LIKE 'a%'", "name LIKE 'a%'"),
        ("coalesce(a, b) > 0", "COALESCE(a, b) > 0"),
        ("tags && ARRAY['x']", "tags && ARRAY['x']"),
    ],
)
def test_plain_predicates_pass_and_are_normalised(text: str, normalised: str) -> None:
    assert validate_predicate(text) == normalised


@pytest.mark.parametrize(
    "text",
    [
        "lower(email)",
        "(payload->>'kind')",
        "date_trunc('day', created_at)",
        "to_tsvector('english', body)",
        "trim(name)",
        "a::int + 1",
        "CASE WHEN a > 0 THEN 1 ELSE 0 END",
        "extract(year FROM created_at)",
        "name COLLATE \"C\"",
        "tags[1]",
    ],
)
def test_index_expressions_pass(text: str) -> None:
    out = validate_expression(text)
    assert out
    # The output is itself valid (idempotent normalisation).
    assert validate_expression(out) == out


def test_message_names_the_function() -> None:
    with pytest.raises(SpecError, match=r"random\(\)"):
        validate_predicate("random() > 0.5")


def test_custom_allowlist() -> None:
    assert validate_expression("my_fn(a)", allowed_functions=frozenset({"my_fn"})) == "my_fn(a)"
    with pytest.raises(SpecError):
        validate_expression("lower(a)", allowed_functions=frozenset({"my_fn"}))
