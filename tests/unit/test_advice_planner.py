"""Index advice, pure part: candidates from statements and statistics (issue 15)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parse_sql

from pgcurator.catalog.advice import ColumnStats, ExistingIndex, TableStats
from pgcurator.planner.advice import Candidate, Key, candidates_for, distinct_name, propose, served_by
from pgcurator.planner.advice_parse import (
    measurable,
    parameter_count,
    quote_name,
    referenced_columns,
    rewrite_table,
    single_statement,
    usages,
)

T = ("public", "t")
U = ("public", "u")
COLUMNS = {
    "id": ColumnStats("bigint", n_distinct=-1),
    "status": ColumnStats("text", n_distinct=2, mcv={"archived": 0.95, "active": 0.05}),
    "is_read": ColumnStats("boolean", n_distinct=2, mcv={"t": 0.7, "f": 0.3}),
    "user_id": ColumnStats("integer", n_distinct=20000),
    "kind": ColumnStats("text", n_distinct=5),
    "u_id": ColumnStats("bigint", n_distinct=3),
    "created_at": ColumnStats("timestamp with time zone", n_distinct=-1),
    "retry_count": ColumnStats("integer", n_distinct=6, mcv={"0": 0.98}),
    "embedding": ColumnStats("halfvec(1536)", null_frac=0.01, avg_width=3080),
    "body": ColumnStats("text", avg_width=900),
    "metadata": ColumnStats("jsonb", avg_width=60),
    "tags": ColumnStats("text[]", avg_width=40),
}
STATS = {T: TableStats(1_000_000, COLUMNS), U: TableStats(3, {"id": ColumnStats("bigint", n_distinct=-1)})}
KNOWN = {t: set(s.columns) for t, s in STATS.items()}


def cands(sql: str) -> list[Candidate]:
    return [c for u in usages(sql, KNOWN) if u.table == T for c in candidates_for(u, STATS[T])]


def defs(sql: str) -> list[str]:
    return [c.definition(concurrently=False) for c in cands(sql)]


def test_equality_columns_lead_most_selective_first_whatever_the_text_order() -> None:
    assert defs("SELECT id FROM t WHERE kind = $1 AND user_id = $2") == [
        "CREATE INDEX ON public.t (user_id, kind)"]


def test_a_join_key_with_few_values_does_not_lead() -> None:
    assert defs("SELECT t.id FROM t JOIN u ON u.id = t.u_id WHERE t.user_id = $1") == [
        "CREATE INDEX ON public.t (user_id, u_id)"]


def test_null_tests_are_predicates_never_keys() -> None:
    assert defs("SELECT id FROM t WHERE embedding IS NULL AND retry_count < 3 ORDER BY id LIMIT 10") == [
        "CREATE INDEX ON public.t (id) WHERE embedding IS NULL AND retry_count < 3"]
    assert defs("SELECT id FROM t WHERE embedding IS NOT NULL") == []


def test_rare_constants_go_to_where_common_ones_stay_keys() -> None:
    assert defs("SELECT id FROM t WHERE status = 'active' AND created_at < now() - interval '1 hour'") == [
        "CREATE INDEX ON public.t (created_at) WHERE status = 'active'"]
    assert defs("SELECT id FROM t WHERE user_id = $1 AND is_read = false ORDER BY created_at DESC LIMIT 20") == [
        "CREATE INDEX ON public.t (user_id, is_read, created_at DESC)"]
    # alone, a rare constant is the key itself (a partial index with no key serves nothing more)
    assert defs("SELECT count(*) FROM t WHERE status = 'active'") == ["CREATE INDEX ON public.t (status)"]


def test_range_and_sort_each_propose_their_shape() -> None:
    assert defs("SELECT id FROM t WHERE user_id = $1 AND retry_count > $2 ORDER BY created_at") == [
        "CREATE INDEX ON public.t (user_id, created_at)", "CREATE INDEX ON public.t (user_id, retry_count)"]


def test_json_operators() -> None:
    assert defs("SELECT id FROM t WHERE metadata->>'channel' = $1") == [
        "CREATE INDEX ON public.t ((metadata ->> 'channel'))"]
    assert defs("SELECT id FROM t WHERE metadata @> $1") == [
        "CREATE INDEX ON public.t USING gin (metadata jsonb_path_ops)"]
    assert defs("SELECT id FROM t WHERE metadata ? 'k'") == ["CREATE INDEX ON public.t USING gin (metadata)"]
    assert defs("SELECT id FROM t WHERE tags @> ARRAY['a'] AND user_id = $1") == [
        "CREATE INDEX ON public.t (user_id)", "CREATE INDEX ON public.t USING gin (tags)"]


def test_wide_and_vector_columns_are_never_keys() -> None:
    assert defs("SELECT id FROM t WHERE body = $1") == []
    assert defs("SELECT id FROM t ORDER BY embedding <=> $1 LIMIT 5") == []
    [u] = usages("SELECT id FROM t ORDER BY embedding <=> $1 LIMIT 5", KNOWN)
    assert u.vector_order


def test_or_and_not_are_not_conjuncts() -> None:
    assert defs("SELECT id FROM t WHERE user_id = $1 OR kind = $2") == []


def test_subqueries_and_unknown_tables() -> None:
    assert defs("SELECT * FROM other WHERE x = 1") == []
    assert defs("SELECT id FROM t WHERE id IN (SELECT id FROM t WHERE user_id = $1)") == [
        "CREATE INDEX ON public.t (user_id)"]
    assert defs("not sql at all") == []


@settings(max_examples=60, deadline=None)
@given(st.permutations(["user_id = $1", "kind = $2", "embedding IS NOT NULL", "retry_count < 3",
                        "status = 'active'", "u_id = $3"]))
def test_the_candidate_does_not_depend_on_the_order_of_the_conjuncts(conjuncts: list[str]) -> None:
    assert defs("SELECT id FROM t WHERE " + " AND ".join(conjuncts) + " ORDER BY created_at LIMIT 5") == [
        "CREATE INDEX ON public.t (user_id, kind, u_id, created_at) "
        "WHERE embedding IS NOT NULL AND retry_count < 3 AND status = 'active'"]


_COLS = sorted(COLUMNS)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_COLS), st.sampled_from(["= $1", "< $1", "IS NULL", "IS NOT NULL",
                                                                     "= 'x'", "> 3", "@> $1"])),
                min_size=1, max_size=6),
       st.lists(st.sampled_from(_COLS), max_size=2), st.booleans())
def test_any_filter_gives_valid_indexes_with_btree_keys_only_from_narrow_columns(
        tests: list[tuple[str, str]], order: list[str], limit: bool) -> None:
    sql = "SELECT id FROM t WHERE " + " AND ".join(f"{c} {o}" for c, o in tests)
    sql += (" ORDER BY " + ", ".join(order) if order else "") + (" LIMIT 3" if limit else "")
    null_only = ({c for c, o in tests if o.startswith("IS")} - {c for c, o in tests if not o.startswith("IS")}
                 - set(order))
    for c in cands(sql):
        parse_sql(c.definition("x"))  # PostgreSQL's parser accepts every suggestion
        assert 1 <= len(c.keys) <= 4
        if c.method == "btree":
            for k in c.keys:
                if k.column is not None:
                    s = COLUMNS[k.column]
                    assert s.avg_width <= 200 and not s.type.endswith("[]") and "vec" not in s.type
                    assert k.column not in null_only


def test_an_existing_index_serves_the_same_or_a_longer_key_with_the_same_predicate() -> None:
    cand = Candidate(T, (Key("user_id"),))
    partial = Candidate(T, (Key("id"),), where="embedding IS NULL")
    existing = [ExistingIndex("by_user_kind", T, "btree", ("user_id", "kind")),
                ExistingIndex("t_pkey", T, "btree", ("id",))]
    assert served_by(cand, existing) == "by_user_kind"
    assert served_by(partial, existing) is None  # smaller and skips rows: the planner decides
    assert served_by(partial, [ExistingIndex("q", T, "btree", ("id",), "(embedding IS NULL)")]) == "q"
    assert served_by(Candidate(T, (Key("kind"),)), existing) is None
    assert served_by(cand, [ExistingIndex("bad", T, "btree", ("user_id",), valid=False)]) is None


def test_propose_merges_statements_and_ranks_by_time() -> None:
    work = [(usages("SELECT id FROM t WHERE user_id = $1", KNOWN), 10.0),
            (usages("SELECT id FROM t WHERE kind = $1", KNOWN), 50.0),
            (usages("SELECT id, kind FROM t WHERE user_id = $1 ", KNOWN), 5.0)]
    proposals, served = propose(work, STATS, [ExistingIndex("k", T, "btree", ("kind",))])
    assert [(p.candidate.keys[0].column, p.statements, p.weight) for p in proposals] == [("user_id", [0, 2], 15.0)]
    assert list(served.values()) == ["k"]


def test_only_harmless_statements_are_run_on_the_copy() -> None:
    assert measurable("SELECT count(*) FROM t WHERE status = 'active' AND created_at < now()")
    assert not measurable("SELECT id FROM t WHERE user_id = $1")  # no value to invent
    assert not measurable("SELECT id FROM t WHERE status = 'x' FOR UPDATE SKIP LOCKED")
    assert not measurable("SELECT pg_terminate_backend(42) FROM t")
    assert not measurable("SELECT id FROM t JOIN u ON u.id = t.u_id")
    assert not measurable("DELETE FROM t WHERE id = 1")
    assert not measurable("SELECT id FROM t WHERE id IN (SELECT nextval('s'))")
    assert not measurable("WITH d AS (DELETE FROM t RETURNING id) SELECT 1")
    assert not measurable("SELECT * INTO copy FROM t")
    assert single_statement("SELECT 1; DROP TABLE t") is None
    assert single_statement("DROP TABLE t") is None
    assert single_statement("select id from t where a = $1") == "SELECT id FROM t WHERE a = $1"


def test_names_are_quoted_only_when_needed() -> None:
    assert quote_name("user_id") == "user_id"
    assert quote_name("order") == '"order"' and quote_name("User") == '"User"' and quote_name('a"b') == '"a""b"'


def test_texts_for_the_sample() -> None:
    assert referenced_columns("SELECT id FROM t WHERE user_id = $1", T, KNOWN) == {"id", "user_id"}
    assert referenced_columns("SELECT * FROM t", T, KNOWN) is None
    assert parameter_count("SELECT id FROM t WHERE a = $1 AND b = $3") == 3
    assert rewrite_table("SELECT id FROM t WHERE user_id = $1", T, "s", KNOWN) == \
        "SELECT id FROM pg_temp.s AS t WHERE user_id = $1"


def test_a_long_multibyte_suggestion_name_fits_63_bytes_and_stays_distinct() -> None:
    from pgcurator.planner.advice import _short

    a, b = _short("idx_" + "é" * 40 + "_a"), _short("idx_" + "é" * 40 + "_b")
    assert len(a.encode()) <= 63 and len(b.encode()) <= 63 and a != b


@given(st.text(alphabet="aé日😀_", min_size=1, max_size=70), st.integers(min_value=1, max_value=12))
@settings(max_examples=200)
def test_suggestion_names_stay_distinct_within_63_bytes(stem: str, count: int) -> None:
    # What PostgreSQL keeps of a name: its first 63 bytes. Every name given must survive that cut
    # and still differ from the others (a cut by characters let a multi-byte name collide).
    base = stem.encode()[:63].decode(errors="ignore") or "i"
    names: set[str] = set()
    for _ in range(count):
        names.add(distinct_name(base, names))
    assert len(names) == count
    assert all(len(n.encode()) <= 63 for n in names)
