"""Minimal reproductions of what the explorer attributes to known.py, each pinned as a strict xfail:
it turns red when the fix is merged, so the marker (and the explorer's entry in known.py) is
removed together. Each is the explorer's own check on one shrunk state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from .harness import Harness
from .invariants import Broken
from .partition_checks import reconcile_and_check
from .partition_states import Part, PartitionCase, build

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def spec(**range_kw: object) -> dict[str, object]:
    r: dict[str, object] = {"column": "k", "interval": "1 month", "timeZone": "UTC", "premake": 1, **range_kw}
    return {"table": {"schema": "st", "name": "events"}, "range": r,
            "timeouts": {"lockTimeout": "2s", "lockRetries": 1}}


def month(y: int, m: int, tz: str = "UTC") -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(y, m, 1, tzinfo=ZoneInfo(tz))


class OtherFailure(RuntimeError):
    """The reproduction failed, but not with its defect: the strict xfail (raises=Broken) does not
    accept it, so a reproduction cannot pass for the wrong reason."""


def run(h: Harness, case: PartitionCase, *expected: str) -> None:
    """Build the state and run the explorer's checks; the failure must be the expected invariant."""
    async def go() -> None:
        await build(h, case)
        await reconcile_and_check(h, case, case.spec, case.now)

    try:
        h.run(go(), timeout=120)
    except Broken as b:
        if b.invariant not in expected:
            raise OtherFailure(f"expected {expected!r} to break, got: {b}") from b
        raise


def known(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=Broken, reason=reason)


def test_first_contact_with_a_table_in_shape_without_metadata_schema(harness: Harness) -> None:
    s = spec()
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"],  # type: ignore[arg-type]
                         [Part(month(2026, 11), month(2026, 12), "ours"), Part(month(2026, 12), month(2027, 1), "ours")])
    run(harness, case, "no InternalError")


def test_older_metadata_schema_is_upgraded(harness: Harness) -> None:
    s = spec()
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"], [],  # type: ignore[arg-type]
                         metadata="older")
    run(harness, case, "no InternalError")


def test_time_zone_change_leaves_no_hole(harness: Harness) -> None:
    old = {"column": "k", "interval": "1 month", "timeZone": "UTC", "premake": 1}
    s = spec(timeZone="Pacific/Chatham")
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", old,
                         [Part(month(2026, 11), month(2026, 12), "ours"), Part(month(2026, 12), month(2027, 1), "ours")],
                         metadata="current")
    run(harness, case, "no gap inside the window while Ready")


def test_period_partly_covered_by_an_off_grid_partition_leaves_no_hole(harness: Harness) -> None:
    # Shrunk by hypothesis: one foreign partition [2000-01-01 12:00, 2000-01-02 12:00), daily grid, now at
    # midnight: the day [2000-01-01, 2000-01-02) is "already covered", rows at 00:00-11:59 find no partition.
    s = spec(interval="1 day", premake=0)
    s["defaultPartition"] = True
    now = datetime(2000, 1, 1, tzinfo=UTC)
    case = PartitionCase("events", "timestamptz", s, now, "partitioned", s["range"],  # type: ignore[arg-type]
                         [Part(datetime(2000, 1, 1, 12, tzinfo=UTC), datetime(2000, 1, 2, 12, tzinfo=UTC), "foreign")],
                         metadata="current")
    run(harness, case, "no gap inside the window while Ready")


def test_retention_converges_in_one_run(harness: Harness) -> None:
    # Shrunk by hypothesis: daily grid, keep 1, one partition two days old; the first run creates today's
    # partition and keeps the old one ("never the last partition"), the second run plans its drop.
    s = spec(interval="1 day", premake=0)
    s["retention"] = {"keep": 1, "action": "drop"}
    now = datetime(1969, 12, 31, 22, 59, tzinfo=UTC)
    case = PartitionCase("events", "timestamptz", s, now, "partitioned", s["range"],  # type: ignore[arg-type]
                         [Part(datetime(1969, 12, 29, tzinfo=UTC), datetime(1969, 12, 30, tzinfo=UTC), "ours")],
                         metadata="current")
    run(harness, case, "second reconcile plans nothing")


def test_a_table_that_only_has_the_partitions_name_is_not_adopted(harness: Harness) -> None:
    # Shrunk by hypothesis: rows of today in the DEFAULT partition, defaultRows.move, and someone's plain
    # table st.events_p1969_12_31 (one row of its own). The move puts the DEFAULT's row into that table.
    s = spec(interval="1 day", premake=0)
    s["defaultRows"] = {"move": True, "batchRows": 1}
    now = datetime(1969, 12, 31, 22, 59, tzinfo=UTC)
    case = PartitionCase("events", "timestamptz", s, now, "partitioned", s["range"], [],  # type: ignore[arg-type]
                         default="rows_in", loose_table=True, metadata="current")
    # The move poured the DEFAULT's rows into it, then the ATTACH failed (the table has an identity column).
    # Now the policy refuses, naming the table, and leaves it (and its rows) alone.
    async def go() -> None:
        await build(harness, case)
        step = await reconcile_and_check(harness, case, case.spec, case.now)
        assert step.real.reason == "NameConflict", step.real.describe()
        assert "st.events_p1969_12_31" in step.real.message, step.real.describe()

    harness.run(go(), timeout=120)


def test_a_detached_default_partition_is_not_reattached(harness: Harness) -> None:
    # Someone detached the DEFAULT partition, rows and all: CREATE TABLE IF NOT EXISTS + ATTACH ... DEFAULT
    # took it back with its rows. It is someone's table now: NameConflict, and it stays detached.
    s = spec(premake=0)
    s["defaultPartition"] = True
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"],  # type: ignore[arg-type]
                         [Part(month(2026, 11), month(2026, 12), "ours")], default="empty", metadata="current")

    async def go() -> None:
        await build(harness, case)
        app = await harness.app()
        await app.execute("ALTER TABLE st.events DETACH PARTITION st.events_default")
        step = await reconcile_and_check(harness, case, case.spec, case.now)
        assert step.real.reason == "NameConflict", step.real.describe()
        assert "st.events_default" in step.real.message, step.real.describe()
        assert await app.fetchval("SELECT NOT relispartition FROM pg_catalog.pg_class WHERE oid = "
                                  "'st.events_default'::regclass")

    harness.run(go(), timeout=120)


def test_database_datestyle_does_not_change_the_plan(harness: Harness) -> None:
    import dataclasses

    from .invariants import same_plan
    from .partition_checks import KIND

    s = spec()
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"],  # type: ignore[arg-type]
                         [Part(month(2026, 11), month(2026, 12), "ours")], metadata="current",
                         settings={"DateStyle": "SQL, DMY"})

    async def go() -> None:
        await build(harness, case)
        with_settings = await harness.apply(KIND, {**s, "dryRun": True}, now=NOW)
        await build(harness, dataclasses.replace(case, settings={}))
        without = await harness.apply(KIND, {**s, "dryRun": True}, now=NOW)
        same_plan(KIND, with_settings, without, case.settings)

    harness.run(go())


def test_a_spec_the_model_cannot_plan_is_refused_by_the_model(harness: Harness) -> None:
    # Issue 12 item 13: '9999 years' used to pass the model and crash the planner; the model now refuses
    # intervals it cannot plan, and says which field.
    import pydantic

    from pgcurator.models.partition import PartitionPolicySpec

    s = spec(interval="9999 years", premake=400)
    with pytest.raises(pydantic.ValidationError) as refused:
        PartitionPolicySpec.model_validate(s)
    assert "range.interval" in str(refused.value), str(refused.value)


def test_rows_stay_visible_when_a_default_move_waits_for_its_lock(harness: Harness) -> None:
    # Shrunk from the state machine: a DEFAULT partition with rows of the current month, defaultRows.move, and
    # another session holding SHARE UPDATE EXCLUSIVE on the parent while the policy runs.
    from . import invariants as inv
    from .locks import hold_lock, reconcile_under_lock
    from .partition_checks import KIND

    s = spec(premake=0)
    s["defaultRows"] = {"move": True, "batchRows": 1}
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"], [],  # type: ignore[arg-type]
                         default="rows_in", metadata="current")

    async def go() -> None:
        await build(harness, case)
        admin = await harness.admin()
        before = await inv.row_digest(admin, "st.events")
        assert before[0] > 0
        blocker = await hold_lock(harness, "st.events", "SHARE UPDATE EXCLUSIVE")
        result, _ = await reconcile_under_lock(harness, KIND, s, blocker, 2.0, now=NOW)
        assert result.reason == "WaitingForLock", result.describe()
        inv.rows_conserved(KIND, before, await inv.row_digest(admin, "st.events"), "st.events while the attach waits")

    harness.run(go())


def test_moved_rows_go_back_when_the_final_attach_cannot_get_its_lock(harness: Harness) -> None:
    # The parent's lock is free (the check before the move passes and every batch runs), but the
    # application holds ROW EXCLUSIVE on the DEFAULT partition, which the final ATTACH's SHARE ROW
    # EXCLUSIVE waits for: the rows already moved must go back, not sit in the detached table.
    from . import invariants as inv
    from .locks import hold_lock, reconcile_under_lock
    from .partition_checks import KIND

    s = spec(premake=0)
    s["defaultRows"] = {"move": True, "batchRows": 1}
    case = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"], [],  # type: ignore[arg-type]
                         default="rows_in", metadata="current")

    async def go() -> None:
        await build(harness, case)
        admin = await harness.admin()
        before = await inv.row_digest(admin, "st.events")
        assert before[0] > 0
        blocker = await hold_lock(harness, "st.events_default", "ROW EXCLUSIVE")
        result, _ = await reconcile_under_lock(harness, KIND, s, blocker, 2.0, now=NOW)
        assert result.reason == "WaitingForLock", result.describe()
        moved = await admin.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'move_default_rows' "
                                     "AND outcome = 'ok' AND statement LIKE '%-- 1 rows'")
        assert moved > 0, "no batch ran: the undo path was not exercised"
        inv.rows_conserved(KIND, before, await inv.row_digest(admin, "st.events"), "st.events after the attach gave up")

    harness.run(go())


def test_retention_and_a_new_default_partition_in_one_run(harness: Harness) -> None:
    # Shrunk by hypothesis: integer key, width 1, partitions [0,1) and [2,3) (one row at 2), keep 1,
    # defaultPartition true and no DEFAULT yet.
    s: dict[str, object] = {"table": {"schema": "st", "name": "events"},
                            "range": {"column": "k", "width": 1, "premake": 0},
                            "timeouts": {"lockTimeout": "2s", "lockRetries": 1}, "defaultPartition": True,
                            "retention": {"keep": 1, "action": "drop"}}
    case = PartitionCase("events", "bigint", s, NOW, "partitioned", s["range"],  # type: ignore[arg-type]
                         [Part(0, 1, "ours"), Part(2, 3, "ours", rows=1)], metadata="current")
    run(harness, case, "no planned statement fails")


def test_an_invalid_declared_index_on_a_partitioned_table_is_not_ready(harness: Harness) -> None:
    # Found with an INVALID partitioned index and no partitions; reached for real like this: an index created
    # ON ONLY the parent (invalid until every partition has one attached), then the partition detached.
    from .index_states import IndexCase, build_index_case, step_index

    case = IndexCase("partitioned", ["items_k_idx"], {}, metadata="current", partitions=1)

    async def go() -> None:
        await build_index_case(harness, case)
        app = await harness.app()
        await app.execute("CREATE INDEX items_k_idx ON ONLY st.items (k); "
                          "ALTER TABLE st.items DETACH PARTITION st.items_0")
        await step_index(harness, case)

    try:
        harness.run(go())
    except Broken as b:
        if b.invariant != "Ready means every declared index exists and is valid":
            raise OtherFailure(str(b)) from b
        raise


def test_a_list_partition_with_rows_in_the_default_partition_is_held_back(harness: Harness) -> None:
    # Shrunk by hypothesis: LIST (region) with a DEFAULT partition holding a row 'eu'; the spec declares r0 = ['eu'].
    from .layout_states import LayoutCase, build_layout, step_layout

    case = LayoutCase("list", {"table": {"schema": "st", "name": "orders"}, "strategy": "list",
                               "timeouts": {"lockTimeout": "2s", "lockRetries": 1},
                               "list": {"column": "region", "partitions": [{"name": "r0", "values": ["eu"]}]}},
                      default="empty")

    async def go() -> None:
        await build_layout(harness, case)
        await step_layout(harness, case)

    try:
        harness.run(go())
    except Broken as b:
        if b.invariant != "no planned statement fails":
            raise OtherFailure(str(b)) from b
        raise


@pytest.mark.parametrize("move", [False, True])
def test_list_rows_in_the_default_partition_are_held_back_or_moved(harness: Harness, move: bool) -> None:
    from .layout_states import LayoutCase, build_layout

    spec_: dict[str, object] = {"table": {"schema": "st", "name": "orders"}, "strategy": "list",
                                "timeouts": {"lockTimeout": "2s", "lockRetries": 1},
                                "list": {"column": "region", "partitions": [{"name": "r0", "values": ["eu"]}]}}
    if move:
        spec_["defaultRows"] = {"move": True, "batchRows": 1}
    case = LayoutCase("list", spec_, default="rows")

    async def go() -> None:
        await build_layout(harness, case)
        app = await harness.app()
        eu = await app.fetchval("SELECT count(*) FROM st.orders WHERE region = 'eu'")
        assert eu > 0
        result = await harness.apply("PartitionPolicy", spec_, now=NOW)
        if not move:
            assert result.reason == "DefaultRowsConflict", result.describe()
            assert await app.fetchval("SELECT to_regclass('st.orders_r0') IS NULL")
            return
        assert result.ready, result.describe()
        assert await app.fetchval("SELECT count(*) FROM st.orders_r0") == eu
        assert await app.fetchval("SELECT count(*) FROM st.orders_default WHERE region = 'eu'") == 0

    harness.run(go(), timeout=120)


def test_hourly_wall_clock_partitions_across_the_fall_back_hour(harness: Harness) -> None:
    s = spec(interval="1 hour", timeZone="America/New_York", premake=3)
    now = datetime(2026, 11, 1, 4, 30, tzinfo=UTC)  # 00:30 EDT; 01:00-02:00 happens twice this night
    case = PartitionCase("events", "timestamp", s, now, "partitioned", s["range"], [],  # type: ignore[arg-type]
                         metadata="current")
    run(harness, case, "no planned statement fails")


def test_a_declared_list_value_without_a_partition_is_not_ready(harness: Harness) -> None:
    from .layout_states import LayoutCase, build_layout, step_layout

    case = LayoutCase("list", {"table": {"schema": "st", "name": "orders"}, "strategy": "list",
                               "timeouts": {"lockTimeout": "2s", "lockRetries": 1},
                               "list": {"column": "region", "partitions": [{"name": "r0", "values": ["eu"]}]}},
                      existing=[("orders_r0", "FOR VALUES IN ('x0')", "plain")])

    async def go() -> None:
        await build_layout(harness, case)
        await step_layout(harness, case)
        result = await harness.apply("PartitionPolicy", case.spec, now=NOW)
        assert result.reason == "ListValuesDiffer", result.describe()
        assert "'eu'" in result.message and "orders_r0" in result.message, result.describe()

    harness.run(go())


def test_a_foreign_table_with_a_long_partition_name_is_not_adopted(harness: Harness) -> None:
    # Found by the explorer once the adoption was refused: a table name long enough that partition names
    # carry a hash of it (fit_identifier), so the foreign table did not start with the table's name.
    table = "ev_" + "x" * 52
    s = spec(interval="1 day", premake=0)
    s["table"] = {"schema": "st", "name": table}
    now = datetime(1969, 12, 31, 22, 59, tzinfo=UTC)
    case = PartitionCase(table, "timestamptz", s, now, "partitioned", s["range"], [],  # type: ignore[arg-type]
                         loose_table=True, metadata="current")

    async def go() -> None:
        await build(harness, case)
        step = await reconcile_and_check(harness, case, case.spec, case.now)
        assert step.real.reason == "NameConflict", step.real.describe()

    harness.run(go(), timeout=120)


def test_hash_partitions_of_another_modulus_leaving_values_uncovered_are_not_ready(harness: Harness) -> None:
    # Found by the explorer: one legacy hash partition (modulus 4, remainder 3), the spec says modulus 1;
    # 'left as is' was reported Ready while three quarters of the keys found no partition.
    from .layout_states import LayoutCase, build_layout, step_layout

    case = LayoutCase("hash", {"table": {"schema": "st", "name": "orders"}, "strategy": "hash",
                               "timeouts": {"lockTimeout": "2s", "lockRetries": 1},
                               "hash": {"column": "k", "modulus": 1}},
                      existing=[("legacy_h3", "FOR VALUES WITH (modulus 4, remainder 3)", "plain")])

    async def go() -> None:
        await build_layout(harness, case)
        await step_layout(harness, case)
        result = await harness.apply("PartitionPolicy", case.spec, now=NOW)
        assert result.reason == "HashModulusDiffers", result.describe()

    harness.run(go())


@known("a sub-partitioned first-level partition the spec has no sub-level for counts as coverage, whatever "
       "its leaves: Ready while rows of its range find no leaf (found by the range sub-level explorer)")
def test_a_partition_sub_partitioned_without_its_leaves_is_not_coverage(harness: Harness) -> None:
    # Shrunk by hypothesis: no subpartition in the spec; this year's partition exists, itself partitioned
    # by range on k with no leaf. Ready, covered until next year, and every row of this year is refused.
    from .range_sub_states import RangeSubCase, build_range_sub

    s = spec(interval="1 year", premake=0)
    base = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"],  # type: ignore[arg-type]
                         metadata="current")
    case = RangeSubCase(base, "none", shapes=[(0, "ours", "none", 0, ())])

    async def go() -> None:
        await build_range_sub(harness, case)
        await reconcile_and_check(harness, base, s, NOW)

    try:
        harness.run(go(), timeout=120)
    except Broken as b:
        if b.invariant != "no gap inside the window while Ready":
            raise OtherFailure(f"expected a gap, got: {b}") from b
        raise


def test_retention_detaches_a_sub_partitioned_partition_of_a_table_with_an_identity_column(harness: Harness) -> None:
    # Shrunk by hypothesis: years split in months, keep 1; the first run builds 2026 (leaves attached to it,
    # then it to the table), a run in 2028 detaches 2026: 55000 column "id" of relation
    # "events_p2026_p2026_01" is not an identity column, on every run.
    from .range_sub_states import RangeSubCase, build_range_sub

    s = spec(interval="1 year", premake=0)
    s["subpartition"] = {"strategy": "range", "range": {"column": "k", "interval": "1 month"}}
    s["retention"] = {"keep": 1, "action": "drop"}
    base = PartitionCase("events", "timestamptz", s, NOW, "partitioned", s["range"],  # type: ignore[arg-type]
                         metadata="current")

    async def go() -> None:
        await build_range_sub(harness, RangeSubCase(base, "same"))
        await reconcile_and_check(harness, base, s, NOW)
        await reconcile_and_check(harness, base, s, datetime(2028, 3, 1, tzinfo=UTC))

    try:
        harness.run(go(), timeout=120)
    except Broken as b:
        if "is not an identity column" not in b.detail:
            raise OtherFailure(f"expected the identity failure, got: {b}") from b
        raise


@known("the dry run after a conversion's swap omits the DROP TABLE of <table>_unpartitioned that the real run "
       "executes with convert.dropOriginal (found by the range sub-level explorer)")
def test_the_dry_run_after_a_partition_conversion_swap_lists_dropping_the_original(harness: Harness) -> None:
    # Shrunk by hypothesis: a plain table converted (Converted, phase swapped) by the first run; a year later
    # the dry run plans next year's partition only, and the real run also drops events_unpartitioned.
    from datetime import timedelta

    from .range_sub_states import RangeSubCase, build_range_sub

    s = spec(interval="1 year", premake=0)
    s["convert"] = {"enabled": True, "dropOriginal": True}
    base = PartitionCase("events", "timestamptz", s, NOW, "plain", s["range"], metadata="current")  # type: ignore[arg-type]

    async def go() -> None:
        await build_range_sub(harness, RangeSubCase(base, "none"))
        await reconcile_and_check(harness, base, s, NOW)
        await reconcile_and_check(harness, base, s, NOW + timedelta(days=366))

    try:
        harness.run(go(), timeout=120)
    except Broken as b:
        if b.invariant != "dry-run plan equals what runs" or "_unpartitioned" not in b.detail:
            raise OtherFailure(f"expected the unlisted DROP TABLE, got: {b}") from b
        raise


def test_a_partition_conversion_plans_its_layout_for_the_runs_now(harness: Harness) -> None:
    # Found by the range sub-level explorer: the conversion planned the shadow's partitions for the wall
    # clock, not for the run's `now` (the maintenance plan's): a table converted "in 1970" got a partition
    # for every year up to today (57 of them), and a dry run at a given time showed another time's layout.
    from .range_sub_states import RangeSubCase, build_range_sub

    s = spec(interval="1 year", premake=0)
    s["convert"] = {"enabled": True}
    now = datetime(1970, 6, 1, tzinfo=UTC)
    base = PartitionCase("events", "timestamptz", s, now, "plain", s["range"], metadata="current",  # type: ignore[arg-type]
                         plain_rows=2)

    async def go() -> None:
        await build_range_sub(harness, RangeSubCase(base, "none"))
        step = await reconcile_and_check(harness, base, s, now)
        assert step.real.reason == "Converted", step.real.describe()
        admin = await harness.admin()
        parts = await admin.fetch("SELECT c.relname::text FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c "
                                  "ON c.oid = i.inhrelid WHERE i.inhparent = 'st.events'::regclass ORDER BY 1")
        assert [r[0] for r in parts] == ["events_p1970"], parts

    harness.run(go(), timeout=120)


def test_a_leaf_partition_named_after_a_long_table_name_is_not_adopted(harness: Harness) -> None:
    # Found by the range sub-level explorer: a 55-character table name, years split in quarters; someone's
    # table (the table's columns, one row) is named like the first quarter's leaf. Its name carries the hash
    # of its parent's name, not of the table's, so the observation's loose tables missed it and the new
    # parent ATTACHed it, row and all. Now the parent is held back (NameConflict) and the table left alone.
    from .range_sub_states import RangeSubCase, build_range_sub

    table = "ev_" + "x" * 52
    s = spec(interval="1 year", premake=0)
    s["table"] = {"schema": "st", "name": table}
    s["subpartition"] = {"strategy": "range", "range": {"column": "k", "interval": "3 months"}}
    now = datetime(2000, 1, 1, tzinfo=UTC)
    base = PartitionCase(table, "timestamptz", s, now, "partitioned", s["range"], metadata="current")  # type: ignore[arg-type]

    async def go() -> None:
        await build_range_sub(harness, RangeSubCase(base, "same", loose_leaf=True))
        step = await reconcile_and_check(harness, base, s, now)
        assert step.real.reason == "NameConflict", step.real.describe()
        assert "_df5a0230_p2000_01" in step.real.message, step.real.describe()

    harness.run(go(), timeout=120)
