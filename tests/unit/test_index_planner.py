"""IndexPolicy planning: definition comparison, the plan for each observed state, overlaps, usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from pgcurator.catalog.indexes import IndexInfo, IndexObservation, PartitionTable
from pgcurator.errors import PlanError
from pgcurator.models.index import IndexPolicySpec
from pgcurator.planner.index import (
    child_name,
    new_name,
    old_name,
    plan_indexes,
    reference_statements,
    render_create,
    same_definition,
    shape,
)
from pgcurator.planner.index_analysis import find_overlaps, usage_over_window

REF = "CREATE INDEX pgcurator_shape_i0 ON pg_temp_3.pgcurator_shape USING btree (status, last_active_at) " \
      "WHERE (status = 'active'::text)"


def spec(**kw: Any) -> IndexPolicySpec:
    body: dict[str, Any] = {
        "database": {"secretName": "db"},
        "table": {"name": "sessions"},
        "indexes": [{"name": "idx_a", "columns": [{"column": "status"}, {"column": "last_active_at"}],
                     "where": "status = 'active'"}],
    }
    body.update(kw)
    return IndexPolicySpec.model_validate(body)


def info(name: str, definition: str, **kw: Any) -> IndexInfo:
    base: dict[str, Any] = {"oid": 1, "schema": "public", "name": name, "table": "sessions",
                            "definition": definition, "method": "btree"}
    base.update(kw)
    return IndexInfo(**base)


def existing(name: str = "idx_a", tail: str = "USING btree (status, last_active_at) WHERE (status = 'active'::text)",
             **kw: Any) -> IndexInfo:
    return info(name, f"CREATE INDEX {name} ON public.sessions {tail}", **kw)


def observe(*indexes: IndexInfo, **kw: Any) -> IndexObservation:
    return IndexObservation(schema="public", name="sessions", exists=True, relkind="r", indexes=list(indexes), **kw)


def kinds(plan: Any) -> list[str]:
    return [s.kind for s in plan.before.steps] + [s.kind for j in plan.jobs for s in j.steps] + \
        [s.kind for s in plan.after.steps]


# --- definition comparison ----------------------------------------------------------------------


def test_shape_ignores_names_schema_and_only() -> None:
    a = 'CREATE UNIQUE INDEX "My Index" ON ONLY "odd schema"."Ar.ticles" USING btree (a DESC NULLS LAST) INCLUDE (b)'
    b = "CREATE UNIQUE INDEX pgcurator_shape_i3 ON pg_temp_7.pgcurator_shape USING btree (a DESC NULLS LAST) INCLUDE (b)"
    assert shape(a) == shape(b)
    assert shape(a).unique and shape(a).tail == "USING btree (a DESC NULLS LAST) INCLUDE (b)"


@pytest.mark.parametrize(
    "other",
    [
        "CREATE INDEX x ON public.sessions USING btree (status, last_active_at)",  # predicate dropped
        "CREATE INDEX x ON public.sessions USING btree (last_active_at, status) WHERE (status = 'active'::text)",
        "CREATE UNIQUE INDEX x ON public.sessions USING btree (status, last_active_at) WHERE (status = 'active'::text)",
        "CREATE INDEX x ON public.sessions USING hash (status, last_active_at) WHERE (status = 'active'::text)",
        "CREATE INDEX x ON public.sessions USING btree (status text_pattern_ops, last_active_at) "
        "WHERE (status = 'active'::text)",
        "CREATE INDEX x ON public.sessions USING btree (status, last_active_at) WITH (fillfactor='70') "
        "WHERE (status = 'active'::text)",
        "CREATE INDEX x ON public.sessions USING btree (status, last_active_at DESC) WHERE (status = 'active'::text)",
    ],
)
def test_any_difference_in_the_definition_is_drift(other: str) -> None:
    assert not same_definition(other, REF)


def test_same_definition_under_another_name_and_table_matches() -> None:
    assert same_definition(
        "CREATE INDEX idx_a ON public.sessions USING btree (status, last_active_at) WHERE (status = 'active'::text)",
        REF)


def test_not_an_index_definition_is_refused() -> None:
    with pytest.raises(ValueError):
        shape("DROP TABLE x")


def test_render_quotes_everything_and_orders_clauses() -> None:
    s = spec(indexes=[{"name": 'We ird', "columns": [{"column": "Status", "opclass": "text_pattern_ops",
                                                      "order": "desc", "nulls": "last"},
                                                     {"expression": "lower(email)"}],
                       "unique": True, "include": ["x"], "storageParameters": {"fillfactor": "80"},
                       "tablespace": "fast", "where": "deleted_at IS NULL"}])
    sql = render_create(s.indexes[0], '"public"."t"', name='We ird', concurrently=True)
    assert sql == ('CREATE UNIQUE INDEX CONCURRENTLY "We ird" ON "public"."t" USING btree '
                   '("Status" "text_pattern_ops" DESC NULLS LAST, (lower(email))) INCLUDE ("x") '
                   'WITH (fillfactor = 80) TABLESPACE "fast" WHERE (deleted_at IS NULL)')
    assert "TABLESPACE" not in reference_statements(s)['We ird']


@pytest.mark.parametrize(
    "index",
    [
        {"name": "x", "columns": [{"column": "a"}], "where": "a > 0; DROP TABLE t"},
        {"name": "x", "columns": [{"expression": "(SELECT 1)"}]},
        {"name": "x", "columns": [{"column": "a", "expression": "lower(a)"}]},
        {"name": "x", "columns": [{"column": "a"}], "storageParameters": {"fillfactor": "1); DROP TABLE t; --"}},
        {"name": "x", "method": "gin", "columns": [{"column": "a", "order": "desc"}]},
        {"name": "x", "method": "hash", "unique": True, "columns": [{"column": "a"}]},
        {"name": "x" * 64, "columns": [{"column": "a"}]},
        {"name": "x", "columns": []},
    ],
)
def test_bad_declarations_are_refused_by_the_model(index: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        spec(indexes=[index])


# --- the plan -----------------------------------------------------------------------------------


def test_missing_table() -> None:
    with pytest.raises(PlanError) as exc:
        plan_indexes(spec(), IndexObservation("public", "sessions"), {})
    assert exc.value.reason == "TableNotFound"


def test_missing_index_is_built_concurrently_outside_a_transaction() -> None:
    plan = plan_indexes(spec(), observe(), {"idx_a": REF})
    assert kinds(plan) == ["create_index"]
    step = plan.jobs[0].steps[0]
    assert not step.transactional
    assert step.statements == ('CREATE INDEX CONCURRENTLY "idx_a" ON "public"."sessions" USING btree '
                               '("status", "last_active_at") WHERE (status = \'active\')',)


def test_matching_index_plans_nothing() -> None:
    plan = plan_indexes(spec(), observe(existing()), {"idx_a": REF})
    assert plan.empty and plan.statements() == []


def test_invalid_index_is_dropped_and_rebuilt() -> None:
    plan = plan_indexes(spec(), observe(existing(valid=False)), {"idx_a": REF})
    assert kinds(plan) == ["drop_invalid", "create_index"]
    assert plan.jobs[0].steps[0].statements == ('DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_a"',)


def test_drift_builds_replacement_then_swaps_then_drops() -> None:
    plan = plan_indexes(spec(), observe(existing(tail="USING btree (status)")), {"idx_a": REF})
    assert kinds(plan) == ["create_replacement", "swap_index", "drop_replaced"]
    steps = plan.jobs[0].steps
    assert steps[0].statements[0].startswith(f'CREATE INDEX CONCURRENTLY "{new_name("idx_a")}"')
    assert steps[1].transactional and steps[1].statements == (
        f'ALTER INDEX "public"."idx_a" RENAME TO "{old_name("idx_a")}"',
        f'ALTER INDEX "public"."{new_name("idx_a")}" RENAME TO "idx_a"')
    assert all(s.group == "idx_a" for s in steps)  # a failed build skips the swap


def test_drift_resumes_after_a_crash_with_the_replacement_built() -> None:
    tmp = new_name("idx_a")
    plan = plan_indexes(spec(), observe(existing(tail="USING btree (status)"), existing(tmp)), {"idx_a": REF})
    assert kinds(plan) == ["swap_index", "drop_replaced"]


def test_crash_after_swap_finishes_the_drop() -> None:
    plan = plan_indexes(spec(), observe(existing(), existing(old_name("idx_a"), tail="USING btree (status)")),
                        {"idx_a": REF})
    assert kinds(plan) == ["drop_replaced"]


def test_crash_between_rename_steps_renames_the_replacement() -> None:
    plan = plan_indexes(spec(), observe(existing(new_name("idx_a"))), {"idx_a": REF})
    assert kinds(plan) == ["rename_index"]


def test_stale_invalid_replacement_is_rebuilt() -> None:
    tmp = new_name("idx_a")
    plan = plan_indexes(spec(), observe(existing(tail="USING btree (status)"), existing(tmp, valid=False)),
                        {"idx_a": REF})
    assert kinds(plan) == ["drop_leftover", "create_replacement", "swap_index", "drop_replaced"]


def test_constraint_backing_index_is_never_replaced() -> None:
    plan = plan_indexes(spec(), observe(existing(tail="USING btree (status)", constraint="sessions_uq")),
                        {"idx_a": REF})
    assert plan.empty and "sessions_uq" in plan.notes[0]


def test_prune_only_when_asked_and_never_constraints() -> None:
    obs = observe(existing(), existing("stray", tail="USING btree (x)"),
                  existing("sessions_pkey", tail="USING btree (id)", constraint="sessions_pkey"))
    off = plan_indexes(spec(), obs, {"idx_a": REF})
    assert off.empty and off.prunable == ["stray"]
    on = plan_indexes(spec(prune=True), obs, {"idx_a": REF})
    assert on.statements() == ['DROP INDEX CONCURRENTLY IF EXISTS "public"."stray"']


def test_prune_never_drops_what_another_resource_manages() -> None:
    obs = observe(existing(), existing("idx_other", tail="USING btree (x)"),
                  existing("idx_other_pgc_new", tail="USING btree (x, y)"),
                  existing("vec_hnsw_idx", tail="USING hnsw (embedding vector_l2_ops)",
                           comment="pgcurator VectorIndex 0123456789abcdef"),
                  existing("stray", tail="USING btree (y)"))
    foreign = {("public", "idx_other"): "IndexPolicy/ns/b", ("public", "idx_other_pgc_new"): "IndexPolicy/ns/b"}
    plan = plan_indexes(spec(prune=True), obs, {"idx_a": REF}, foreign)
    assert plan.statements() == ['DROP INDEX CONCURRENTLY IF EXISTS "public"."stray"']
    assert plan.prunable == ["stray"]
    assert any("idx_other is managed by IndexPolicy/ns/b" in n for n in plan.notes)
    assert any("vec_hnsw_idx is managed by a VectorIndex" in n for n in plan.notes)


def test_prune_on_a_partition_leaves_indexes_attached_to_the_parents_index() -> None:
    obs = observe(existing(), existing("sessions_p1_idx_parent", tail="USING btree (x)", parent_index="idx_parent"))
    plan = plan_indexes(spec(prune=True), obs, {"idx_a": REF})
    assert plan.empty and plan.prunable == []


def test_a_partition_index_another_resource_manages_is_not_attached() -> None:
    theirs = PartitionTable("public", "p0", "r", 5, [existing("p0_theirs")])
    plan = plan_indexes(spec(), partitioned(parts=[theirs]), {"idx_a": REF}, {("public", "p0_theirs"): "X/ns/x"})
    (job,) = plan.jobs
    assert [s.kind for s in job.steps] == ["create_index", "attach_index"]
    assert "p0_theirs" not in " ".join(job.steps[1].statements)


def partitioned(*parent: IndexInfo, parts: list[PartitionTable]) -> IndexObservation:
    return IndexObservation(schema="public", name="sessions", exists=True, relkind="p", indexes=list(parent),
                            partitions=parts)


def test_partitioned_parent_on_only_then_one_job_per_partition() -> None:
    parts = [PartitionTable("public", f"p{i}", "r", 10 * i) for i in range(3)]
    plan = plan_indexes(spec(), partitioned(parts=parts), {"idx_a": REF})
    assert [s.kind for s in plan.before.steps] == ["create_parent_index"]
    assert plan.before.steps[0].statements[0].startswith('CREATE INDEX IF NOT EXISTS "idx_a" ON ONLY')
    assert [j.partition for j in plan.jobs] == ["p0", "p1", "p2"]
    assert len({j.lane for j in plan.jobs}) == 3  # separate lanes: built in parallel
    for j in plan.jobs:
        assert [s.kind for s in j.steps] == ["create_index", "attach_index"]
        assert j.steps[0].statements[0].startswith(f'CREATE INDEX CONCURRENTLY "{child_name("idx_a", j.partition)}"')
        assert j.steps[1].statements[0] == (f'ALTER INDEX "public"."idx_a" ATTACH PARTITION '
                                            f'"public"."{child_name("idx_a", j.partition)}"')


def test_partitioned_resume_attaches_adopts_and_rebuilds() -> None:
    parent = existing(valid=False, partitioned=True)
    attached = PartitionTable("public", "p0", "r", 5, [existing("c0", parent_index="idx_a")])
    built = PartitionTable("public", "p1", "r", 5, [existing(child_name("idx_a", "p1"))])
    by_hand = PartitionTable("public", "p2", "r", 5, [existing("hand_made")])
    broken = PartitionTable("public", "p3", "r", 5, [existing(child_name("idx_a", "p3"), valid=False)])
    plan = plan_indexes(spec(), partitioned(parent, parts=[attached, built, by_hand, broken]), {"idx_a": REF})
    assert plan.before.empty
    jobs = {j.partition: [s.kind for s in j.steps] for j in plan.jobs}
    assert jobs == {"p1": ["attach_index"], "p2": ["attach_index"], "p3": ["drop_leftover", "create_index",
                                                                           "attach_index"]}
    assert "hand_made" in plan.jobs[1].steps[0].statements[0]
    assert plan.present == [{"partition": "p0", "index": "idx_a", "childIndex": "c0", "success": True,
                             "state": "present", "rows": 5}]


def test_partitioned_invalid_with_no_partitions_is_recreated_in_one_transaction() -> None:
    # No partition is left whose ATTACH could validate it (made ON ONLY, then the partitions detached).
    plan = plan_indexes(spec(), partitioned(existing(valid=False, partitioned=True), parts=[]), {"idx_a": REF})
    assert kinds(plan) == ["create_parent_index"]
    step = plan.before.steps[0]
    assert step.transactional
    assert step.statements[0] == 'DROP INDEX IF EXISTS "public"."idx_a"'
    assert step.statements[1].startswith('CREATE INDEX "idx_a" ON ONLY "public"."sessions"')
    # A valid one, or an INVALID one backing a constraint, is left alone.
    assert plan_indexes(spec(), partitioned(existing(partitioned=True), parts=[]), {"idx_a": REF}).empty
    backing = existing(valid=False, partitioned=True, constraint="sessions_key")
    assert plan_indexes(spec(), partitioned(backing, parts=[]), {"idx_a": REF}).empty


def test_partitioned_drift_swaps_after_all_partitions() -> None:
    parent = existing(tail="USING btree (status)", partitioned=True)
    parts = [PartitionTable("public", "p0", "r", 5, [existing("c0", tail="USING btree (status)",
                                                              parent_index="idx_a")])]
    plan = plan_indexes(spec(), partitioned(parent, parts=parts), {"idx_a": REF})
    assert plan.before.steps[0].statements[0].startswith(f'CREATE INDEX IF NOT EXISTS "{new_name("idx_a")}" ON ONLY')
    assert [j.steps[0].kind for j in plan.jobs] == ["create_index"]
    assert [s.kind for s in plan.after.steps] == ["swap_index", "drop_replaced"]
    assert plan.after.steps[1].statements == (f'DROP INDEX IF EXISTS "public"."{old_name("idx_a")}"',)


# --- overlaps and usage -------------------------------------------------------------------------


def idx(name: str, keys: list[str], *, include: list[str] | None = None, unique: bool = False,
        constraint: str | None = None, predicate: str | None = None, method: str = "btree",
        opts: tuple[str, ...] | None = None) -> IndexInfo:
    n = len(keys)
    return info(name, f"CREATE INDEX {name} ON t USING {method} (x)", method=method, key_columns=keys,
                include_columns=include or [], unique=unique, constraint=constraint, predicate=predicate,
                key_options=opts or (" ".join(["1978"] * n), " ".join(["0"] * n), " ".join(["0"] * n)))


def test_duplicates_and_redundant_prefixes() -> None:
    found = find_overlaps([
        idx("a", ["user_id"]), idx("a2", ["user_id"]),
        idx("ab", ["user_id", "is_read"]),
        idx("uq", ["email"], unique=True, constraint="uq"), idx("email_plain", ["email"]),
        idx("partial", ["user_id"], predicate="(x > 1)"),
        idx("gin", ["tags"], method="gin"), idx("gin_tags_more", ["tags", "x"], method="gin"),
        idx("desc", ["user_id"], opts=("1978", "3", "0")),
    ])
    got = {(o.index, o.other, o.kind) for o in found}
    assert ("a2", "a", "duplicate") in got and ("a", "a2", "duplicate") not in got
    assert ("a", "ab", "redundant") in got and ("a2", "ab", "redundant") in got
    assert ("email_plain", "uq", "redundant") in got
    assert not any(o.index == "uq" for o in found)  # the constraint index is never the one to go
    assert not any("partial" in (o.index, o.other) for o in found)  # different predicate
    assert not any(o.index == "gin" for o in found)  # prefixes only count for btree
    assert not any("desc" in (o.index, o.other) and o.kind == "duplicate" for o in found)


def test_include_superset_makes_the_smaller_redundant() -> None:
    found = find_overlaps([idx("feed", ["feed_id"]), idx("feed_tags", ["feed_id"], include=["tags"])])
    assert [(o.index, o.other, o.kind) for o in found] == [("feed", "feed_tags", "redundant")]


NOW = datetime(2026, 11, 22, tzinfo=UTC)
WEEK = timedelta(days=7)


def test_unused_needs_a_full_window_of_history() -> None:
    assert usage_over_window([], 0, NOW, WEEK).scans_in_window is None
    young = usage_over_window([(NOW - timedelta(days=2), 0)], 0, NOW, WEEK)
    assert not young.unused and young.scans_in_window is None


def test_unused_survives_a_statistics_reset() -> None:
    snaps = [(NOW - timedelta(days=10), 500), (NOW - timedelta(days=6), 500), (NOW - timedelta(days=3), 0)]
    assert usage_over_window(snaps, 0, NOW, WEEK).unused  # counter reset to 0, no scans since
    # A reset that hid real scans: 500 -> (reset) 40 means 40 new scans, not -460.
    used = usage_over_window([(NOW - timedelta(days=10), 500), (NOW - timedelta(days=2), 40)], 40, NOW, WEEK)
    assert not used.unused and used.scans_in_window == 40
    busy = usage_over_window([(NOW - timedelta(days=8), 10)], 25, NOW, WEEK)
    assert busy.scans_in_window == 15
