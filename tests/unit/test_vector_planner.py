"""VectorIndex: pgvector's rules, operator classes, the memory estimate and the build plan (pure)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from pgcurator.catalog.vectors import ExistingVectorIndex, VectorColumn, VectorObservation
from pgcurator.errors import PlanError
from pgcurator.models.pgvector import select_opclass
from pgcurator.models.vector import VectorIndexSpec, parse_quantity
from pgcurator.planner.vector import COMMENT_PREFIX, fingerprint, index_names, plan_vector_index
from pgcurator.planner.vector_memory import (
    WORKER_RESERVE,
    MiB,
    auto_lists,
    build_settings,
    fewer_workers,
    hnsw_element_bytes,
    is_dsm_failure,
)
from pgcurator.planner.vector_recall import percentile, recall_at_k, recommend, search_values

TYPES = ["vector", "halfvec", "bit", "sparsevec"]
METRICS = ["l2", "innerProduct", "cosine", "l1", "hamming", "jaccard"]
METHODS = ["hnsw", "ivfflat"]

# Written out from pgvector 0.8's README, independently of the planner's table.
EXPECTED_OPCLASS: dict[tuple[str, str, str], str] = {}
for _t in ("vector", "halfvec"):
    for _m, _suffix in (("l2", "l2"), ("innerProduct", "ip"), ("cosine", "cosine")):
        EXPECTED_OPCLASS[(_t, _m, "hnsw")] = f"{_t}_{_suffix}_ops"
        EXPECTED_OPCLASS[(_t, _m, "ivfflat")] = f"{_t}_{_suffix}_ops"
    EXPECTED_OPCLASS[(_t, "l1", "hnsw")] = f"{_t}_l1_ops"
EXPECTED_OPCLASS[("bit", "hamming", "hnsw")] = "bit_hamming_ops"
EXPECTED_OPCLASS[("bit", "hamming", "ivfflat")] = "bit_hamming_ops"
EXPECTED_OPCLASS[("bit", "jaccard", "hnsw")] = "bit_jaccard_ops"
for _m, _suffix in (("l2", "l2"), ("innerProduct", "ip"), ("cosine", "cosine"), ("l1", "l1")):
    EXPECTED_OPCLASS[("sparsevec", _m, "hnsw")] = f"sparsevec_{_suffix}_ops"


def vspec(**overrides: Any) -> VectorIndexSpec:
    body: dict[str, Any] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "knowledge_chunks"},
        "column": "embedding",
        "type": "halfvec",
        "dimensions": 1536,
        "metric": "cosine",
    }
    body.update(overrides)
    return VectorIndexSpec.model_validate(body)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("type_", TYPES)
def test_opclass_for_every_type_metric_method(type_: str, metric: str, method: str) -> None:
    expected = EXPECTED_OPCLASS.get((type_, metric, method))
    if expected is None:
        with pytest.raises(PlanError) as err:
            select_opclass(type_, metric, method)
        assert err.value.reason == "InvalidSpec"
        with pytest.raises(pydantic.ValidationError):
            vspec(type=type_, metric=metric, method=method, dimensions=8)
    else:
        assert select_opclass(type_, metric, method) == expected
        assert vspec(type=type_, metric=metric, method=method, dimensions=8).metric.value == metric


def test_refusal_says_what_would_work() -> None:
    with pytest.raises(PlanError, match="use method hnsw"):
        select_opclass("vector", "l1", "ivfflat")
    with pytest.raises(PlanError, match="bit supports hamming, jaccard"):
        select_opclass("bit", "cosine", "hnsw")


@pytest.mark.parametrize(
    ("type_", "ok", "too_many"),
    [("vector", 2000, 2001), ("halfvec", 4000, 4001), ("bit", 64000, 64001)],
)
def test_maximum_indexable_dimensions(type_: str, ok: int, too_many: int) -> None:
    metric = "hamming" if type_ == "bit" else "l2"
    assert vspec(type=type_, metric=metric, dimensions=ok).dimensions == ok
    with pytest.raises(pydantic.ValidationError, match=f"at most {ok} dimensions"):
        vspec(type=type_, metric=metric, dimensions=too_many)


def test_sparsevec_dimensions_are_not_limited_by_the_index_but_nonzeros_are() -> None:
    s = vspec(type="sparsevec", metric="l2", dimensions=30000)
    obs = observation(base_type="sparsevec", dims=30000)
    obs.max_nonzero = 1200
    with pytest.raises(PlanError, match="at most 1000") as err:
        plan_vector_index(s, obs)
    assert err.value.reason == "DimensionMismatch"


@pytest.mark.parametrize(
    ("hnsw", "needle"),
    [
        ({"m": 1}, "greater than or equal to 2"),
        ({"m": 101}, "less than or equal to 100"),
        ({"m": 4, "efConstruction": 3}, "greater than or equal to 4"),
        ({"m": 16, "efConstruction": 1001}, "less than or equal to 1000"),
        ({"m": 16, "efConstruction": 31}, "at least 2\\*m \\(32\\)"),
        ({"m": 48}, "at least 2\\*m \\(96\\)"),  # the default ef_construction 64 is too small for m=48
    ],
)
def test_hnsw_parameter_rules(hnsw: dict[str, int], needle: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=needle):
        vspec(hnsw=hnsw)


def test_hnsw_bounds_accepted() -> None:
    assert vspec(hnsw={"m": 2, "efConstruction": 4}).hnsw_params.m == 2
    assert vspec(hnsw={"m": 100, "efConstruction": 200}).hnsw_params.ef_construction == 200
    assert vspec(hnsw={"m": 16, "efConstruction": 32}).hnsw_params.ef_construction == 32


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"method": "ivfflat", "ivfflat": {"lists": 0}}, "between 1 and 32768"),
        ({"method": "ivfflat", "ivfflat": {"lists": 32769}}, "between 1 and 32768"),
        ({"method": "ivfflat", "ivfflat": {"lists": "many"}}, "'auto'"),
        ({"method": "ivfflat", "hnsw": {"m": 16}}, "hnsw parameters given for method ivfflat"),
        ({"ivfflat": {"lists": 10}}, "ivfflat parameters given for method hnsw"),
        ({"build": {"memoryBudget": "lots"}}, "memoryBudget"),
        ({"build": {"memoryBudget": "512Ki"}}, "at least 1Mi"),
        ({"where": "embedding IS NOT NULL; DROP TABLE x"}, "where"),
        ({"where": "(SELECT true)"}, "where"),
        ({"recall": {"sampleFilter": "pg_sleep(10) IS NOT NULL"}}, "sampleFilter"),
        ({"recall": {"targetRecall": 1.5}}, "targetRecall"),
        ({"dimensions": 0}, "dimensions"),
        ({"column": "x" * 64}, "column"),
    ],
)
def test_bad_input_is_refused(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=needle):
        vspec(**overrides)


def test_predicate_is_normalised_by_the_expression_checker() -> None:
    assert vspec(where="embedding is not null").where == "embedding IS NOT NULL"


def test_quantities() -> None:
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("2G") == 2 * 10**9
    assert parse_quantity("1048576") == 2**20


# ----------------------------------------------------------------------------- memory estimate

# Measured on pgvector 0.8.6 (PostgreSQL 18.6, x86-64): serial builds with maintenance_work_mem =
# 1 MB; the NOTICE "hnsw graph no longer fits into maintenance_work_mem after N tuples" gives the
# real in-memory bytes per element as 1048576 / N. (type, dims, m, N)
MEASURED_SPILL_POINTS = [
    ("vector", 32, 8, 1779), ("vector", 32, 16, 1248), ("vector", 32, 32, 773), ("vector", 32, 64, 442),
    ("vector", 384, 8, 526), ("vector", 384, 16, 467), ("vector", 384, 32, 380), ("vector", 384, 64, 278),
    ("halfvec", 384, 8, 851), ("halfvec", 384, 16, 708), ("halfvec", 384, 32, 525), ("halfvec", 384, 64, 348),
    ("vector", 1536, 8, 159), ("vector", 1536, 16, 153), ("vector", 1536, 32, 143), ("vector", 1536, 64, 125),
    ("halfvec", 1536, 8, 298), ("halfvec", 1536, 16, 278), ("halfvec", 1536, 32, 244), ("halfvec", 1536, 64, 198),
    ("bit", 1024, 8, 1775), ("bit", 1024, 16, 1245), ("bit", 1024, 32, 777), ("bit", 1024, 64, 441),
]
# Documented tolerance: the estimate is within 3% of every measured size (the largest deviation in
# the table above is 1.5%; N itself is an integer, so small N carries up to 1% rounding).
ESTIMATE_TOLERANCE = 0.03


@pytest.mark.parametrize(("type_", "dims", "m", "tuples"), MEASURED_SPILL_POINTS)
def test_memory_estimate_matches_measured_builds(type_: str, dims: int, m: int, tuples: int) -> None:
    measured = 1048576 / tuples
    estimated = hnsw_element_bytes(type_, dims, m)
    assert abs(estimated - measured) / measured <= ESTIMATE_TOLERANCE, (estimated, measured)


def test_budget_fits_the_graph_with_workers() -> None:
    # bench scenario: 100k x 384-dim vectors, m=16, 1 GiB budget
    est = 100_000 * hnsw_element_bytes("vector", 384, 16)
    s = build_settings(est, 2**30, 100_000, max_workers=8)
    assert s.fits
    assert s.maintenance_work_mem >= est * 1.1
    assert s.total <= 2**30
    assert s.workers == 8
    assert s.maintenance_work_mem % MiB == 0
    assert s.statements() == (f"SET maintenance_work_mem = '{s.maintenance_work_mem // 1024}kB'",
                              "SET max_parallel_maintenance_workers = 8")


def test_budget_trades_workers_for_memory() -> None:
    est = 200 * MiB
    s = build_settings(est, 256 * MiB, 1_000_000, max_workers=8)
    assert s.fits
    assert s.maintenance_work_mem >= int(est * 1.1) + 3 * MiB  # pgvector keeps 3 MB for other shared objects
    assert s.total <= 256 * MiB
    assert 0 < s.workers < 8


def test_graph_larger_than_budget_spills_serially_within_budget() -> None:
    est = 3 * 2**30
    s = build_settings(est, 2**30, 5_000_000, max_workers=4)
    assert not s.fits
    assert s.maintenance_work_mem == 2**30 and s.workers == 0
    assert "raise build.memoryBudget" in s.reason


def test_small_tables_build_serially_and_never_below_the_server_default_without_need() -> None:
    s = build_settings(2 * MiB, 2**30, 2000, max_workers=8)
    assert s.workers == 0 and s.fits
    assert s.maintenance_work_mem == 64 * MiB
    tiny = build_settings(2 * MiB, 2 * MiB, 2000, max_workers=8)
    assert not tiny.fits and tiny.maintenance_work_mem == 2 * MiB


@pytest.mark.parametrize("budget_mib", [1, 2, 17, 64, 100, 333, 1024, 4096])
@pytest.mark.parametrize("est_mib", [1, 50, 300, 2000])
def test_settings_never_exceed_the_budget(budget_mib: int, est_mib: int) -> None:
    s = build_settings(est_mib * MiB, budget_mib * MiB, 10**6, max_workers=16)
    assert s.maintenance_work_mem + s.workers * WORKER_RESERVE <= budget_mib * MiB
    assert s.maintenance_work_mem >= MiB


def test_auto_lists() -> None:
    assert auto_lists(500) == 1
    assert auto_lists(100_000) == 100
    assert auto_lists(1_000_000) == 1000
    assert auto_lists(4_000_000) == 2000
    assert auto_lists(10**12) == 32768


def test_dsm_failure_detection_and_worker_backoff() -> None:
    msg = 'could not resize shared memory segment "/PostgreSQL.123" to 1073741824 bytes: No space left on device'
    assert is_dsm_failure("53100", msg)
    assert is_dsm_failure("53200", msg)
    assert not is_dsm_failure("53100", 'could not extend file "base/1/2": No space left on device')
    assert not is_dsm_failure("XX000", "some other failure")
    assert not is_dsm_failure("53200", "out of memory")  # a plain OOM is not fixed by fewer workers
    assert [fewer_workers(w) for w in (8, 4, 2, 1)] == [4, 2, 1, 0]


# ----------------------------------------------------------------------------- plan

def observation(base_type: str = "halfvec", dims: int | None = 1536, rows: int = 10_000,
                indexes: list[ExistingVectorIndex] | None = None, **kw: Any) -> VectorObservation:
    obs = VectorObservation(
        extension_version="0.8.6", extension_available="0.8.6", table_exists=True, relkind="r",
        column=VectorColumn("embedding", f"{base_type}({dims})" if dims else base_type, base_type, dims),
        estimated_rows=rows, max_parallel_workers=8,
    )
    for idx in indexes or []:
        obs.indexes[idx.name] = idx
    for k, v in kw.items():
        setattr(obs, k, v)
    return obs


def existing(spec: VectorIndexSpec, name: str | None = None, valid: bool = True, marked: bool = True,
             **options: str) -> ExistingVectorIndex:
    opts = {"m": "16", "ef_construction": "64"}
    opts.update(options)
    return ExistingVectorIndex(
        name=name or index_names(spec).target, valid=valid, method=spec.method.value,
        opclass=select_opclass(spec.type.value, spec.metric.value, spec.method.value), column=spec.column,
        options=opts, predicate=spec.where, comment=COMMENT_PREFIX + fingerprint(spec) if marked else None,
    )


def kinds(plan: Any) -> list[tuple[str, str]]:
    return [(s.kind, s.target) for s in plan.plan.steps]


def test_create_then_nothing_to_do() -> None:
    s = vspec(where="embedding IS NOT NULL", indexName="idx_chunks_embedding")
    p = plan_vector_index(s, observation())
    assert p.action == "create"
    assert kinds(p) == [("build_index", "idx_chunks_embedding"), ("mark_index", "idx_chunks_embedding")]
    build = p.plan.steps[0]
    assert not build.transactional
    assert build.statements[-1] == (
        'CREATE INDEX CONCURRENTLY "idx_chunks_embedding" ON "public"."knowledge_chunks" USING hnsw '
        '("embedding" halfvec_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE embedding IS NOT NULL')
    assert build.statements[0].startswith("SET maintenance_work_mem = ")
    again = plan_vector_index(s, observation(indexes=[existing(s)]))
    assert again.action == "none" and again.plan.empty


def test_hand_made_index_with_the_same_definition_is_adopted_not_rebuilt() -> None:
    s = vspec(where="embedding IS NOT NULL", indexName="idx_chunks_embedding")
    idx = existing(s, marked=False)
    idx.predicate = "(embedding IS NOT NULL)"  # as pg_get_expr prints it
    p = plan_vector_index(s, observation(indexes=[idx]))
    assert p.action == "adopt" and kinds(p) == [("mark_index", "idx_chunks_embedding")]


def test_invalid_index_is_dropped_and_rebuilt() -> None:
    s = vspec()
    name = index_names(s).target
    p = plan_vector_index(s, observation(indexes=[existing(s, valid=False)]))
    assert p.action == "rebuild_invalid"
    assert kinds(p) == [("drop_index", name), ("build_index", name), ("mark_index", name)]
    assert p.plan.steps[0].statements == (f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{name}"',)


def test_parameter_change_builds_beside_and_swaps() -> None:
    old = vspec()
    new = vspec(hnsw={"m": 24, "efConstruction": 100})
    names = index_names(new)
    p = plan_vector_index(new, observation(indexes=[existing(old)]))
    assert p.action == "replace"
    assert kinds(p) == [("build_index", names.temp), ("swap_index", names.target), ("drop_index", names.old)]
    assert "m 16 -> 24" in p.reasons and "ef_construction 64 -> 100" in p.reasons
    swap = p.plan.steps[1]
    assert swap.transactional
    assert swap.statements[0] == f'ALTER INDEX "public"."{names.target}" RENAME TO "{names.old}"'
    assert swap.statements[1] == f'ALTER INDEX "public"."{names.temp}" RENAME TO "{names.target}"'


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"metric": "l2"}, "operator class halfvec_cosine_ops -> halfvec_l2_ops"),
     ({"where": "embedding IS NOT NULL"}, "predicate or parameters changed")],
)
def test_metric_or_predicate_change_is_a_replacement(change: dict[str, Any], needle: str) -> None:
    old = vspec()
    p = plan_vector_index(vspec(**change), observation(indexes=[existing(old)]))
    assert p.action == "replace" and needle in p.reasons


def test_interrupted_replacement_resumes() -> None:
    old, new = vspec(), vspec(hnsw={"m": 24, "efConstruction": 100})
    names = index_names(new)
    # crashed during the new build: INVALID temp is dropped and built again
    p = plan_vector_index(new, observation(indexes=[existing(old), existing(new, names.temp, valid=False)]))
    assert kinds(p)[:2] == [("drop_index", names.temp), ("build_index", names.temp)]
    # crashed after the build: go straight to the swap
    p = plan_vector_index(new, observation(indexes=[existing(old), existing(new, names.temp, m="24",
                                                                              ef_construction="100")]))
    assert kinds(p) == [("swap_index", names.target), ("drop_index", names.old)]
    # crashed after the swap: only the old index is left to drop
    p = plan_vector_index(new, observation(indexes=[existing(new, m="24", ef_construction="100"),
                                                    existing(old, names.old)]))
    assert kinds(p) == [("drop_index", names.old)]


def test_auto_lists_follow_rows_without_rebuilding_on_growth() -> None:
    s = vspec(type="vector", dimensions=384, metric="l2", method="ivfflat")
    p = plan_vector_index(s, observation("vector", 384, rows=250_000))
    assert "WITH (lists = 250)" in p.plan.steps[0].statements[-1]
    built = existing(s, lists="250")
    built.options = {"lists": "250"}
    assert plan_vector_index(s, observation("vector", 384, rows=900_000, indexes=[built])).plan.empty


@pytest.mark.parametrize(
    ("obs_kw", "reason", "needle"),
    [
        ({"table_exists": False}, "TableNotFound", "does not exist"),
        ({"relkind": "p"}, "TablePartitioned", "partitioned"),
        ({"column": None}, "ColumnNotFound", "column embedding does not exist"),
        ({"column": VectorColumn("embedding", "text", "text", None)}, "WrongColumnType", "not a pgvector type"),
        ({"column": VectorColumn("embedding", "vector(1536)", "vector", 1536)}, "WrongColumnType", "not halfvec"),
        ({"column": VectorColumn("embedding", "halfvec(768)", "halfvec", 768)}, "DimensionMismatch", "1536"),
        ({"column": VectorColumn("embedding", "halfvec", "halfvec", None)}, "DimensionMismatch", "without dim"),
        ({"extension_version": "0.8.3"}, "PgvectorTooOld", "ALTER EXTENSION vector UPDATE"),
        ({"extension_version": None, "extension_available": None}, "ExtensionMissing", "not available"),
        ({"extension_version": None, "extension_available": "0.7.4"}, "PgvectorTooOld", "0.8.4 or newer"),
    ],
)
def test_database_problems_stop_before_any_ddl(obs_kw: dict[str, Any], reason: str, needle: str) -> None:
    with pytest.raises(PlanError, match=needle) as err:
        plan_vector_index(vspec(), observation(**obs_kw))
    assert err.value.reason == reason


def test_missing_extension_is_created_first() -> None:
    p = plan_vector_index(vspec(), observation(extension_version=None, column=None))
    assert p.action == "create_extension"
    assert p.plan.statements() == ["CREATE EXTENSION IF NOT EXISTS vector"]


def test_long_names_stay_within_63_bytes() -> None:
    s = vspec(table={"name": "t" * 60}, column="c" * 60)
    names = index_names(s)
    assert all(len(n.encode()) <= 63 for n in (names.target, names.temp, names.old))
    assert len({names.target, names.temp, names.old}) == 3


# ----------------------------------------------------------------------------- recall arithmetic

def test_recall_at_k_and_recommendation() -> None:
    exact = [[1, 2, 3, 4], [5, 6, 7, 8]]
    approx = [[1, 2, 3, 9], [5, 6, 7, 8]]
    assert recall_at_k(exact, approx, 4) == pytest.approx((0.75 + 1.0) / 2)
    assert recommend([(10, 0.8), (20, 0.94), (40, 0.96), (80, 0.99)], 0.95) == 40
    assert recommend([(10, 0.8)], 0.95) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


def test_search_values() -> None:
    assert search_values("hnsw", None, None) == [10, 20, 40, 80, 160, 320]
    assert search_values("hnsw", [2000, 40], None) == [40, 1000]
    assert search_values("ivfflat", None, 100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert search_values("ivfflat", [1, 500], 50) == [1, 50]
