"""The range planner: premake, retention, default partition, naming, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgcurator.catalog.partitions import PartitionInfo
from pgcurator.errors import PlanError
from pgcurator.planner.partition import partition_name, plan_range

from .factories import month, spec, table

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def created(plan_steps: list) -> list[str]:  # type: ignore[type-arg]
    return [s.target for s in plan_steps if s.kind == "create_partition"]


def test_empty_table_gets_current_plus_premake() -> None:
    plan, _ = plan_range(spec(), table(), NOW)
    assert created(plan.steps) == ["event_logs_p2026_11", "event_logs_p2026_12", "event_logs_p2027_01",
                                   "event_logs_p2027_02"]
    first = plan.steps[0].statements
    assert first[0].startswith('CREATE TABLE IF NOT EXISTS "public"."event_logs_p2026_11" (LIKE "public"."event_logs"')
    assert first[1] == ('ALTER TABLE "public"."event_logs" ATTACH PARTITION "public"."event_logs_p2026_11" '
                        "FOR VALUES FROM ('2026-11-01 00:00:00+00:00') TO ('2026-12-01 00:00:00+00:00')")


def test_never_create_table_partition_of() -> None:
    plan, _ = plan_range(spec(), table(), NOW)
    assert not any("PARTITION OF" in s for s in plan.statements())


def test_second_run_plans_nothing() -> None:
    existing = [month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2)]
    plan, layout = plan_range(spec(), table(existing), NOW)
    assert plan.empty
    assert layout.covered_until == datetime(2027, 3, 1, tzinfo=UTC)


def test_premake_counts_from_now_not_newest_row() -> None:
    # A quiet table whose newest partition is a year old still gets partitions up to now + premake.
    plan, _ = plan_range(spec(), table([month(2025, 11)]), NOW)
    assert created(plan.steps)[0] == "event_logs_p2026_11"
    assert len(created(plan.steps)) == 4


def test_raising_premake_adds_partitions() -> None:
    existing = [month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2)]
    plan, _ = plan_range(spec(range={"premake": 5}), table(existing), NOW)
    assert created(plan.steps) == ["event_logs_p2027_03", "event_logs_p2027_04"]


def test_dropped_partition_is_recreated() -> None:
    existing = [month(2026, 11), month(2027, 1), month(2027, 2)]
    plan, _ = plan_range(spec(), table(existing), NOW)
    assert created(plan.steps) == ["event_logs_p2026_12"]


def test_retention_selects_only_partitions_ending_before_cutoff() -> None:
    existing = [month(2025, m) for m in range(8, 13)] + [month(2026, m) for m in range(1, 13)] + [month(2027, 1),
                                                                                                  month(2027, 2)]
    plan, _ = plan_range(spec(retention={"keep": 12, "action": "drop"}), table(existing), NOW)
    # current = 2026-11; keep 12 behind it -> cutoff 2025-11-01: 2025-08..2025-10 go.
    dropped = [s.target for s in plan.steps if s.kind == "drop_partition"]
    assert dropped == ["event_logs_p2025_08", "event_logs_p2025_09", "event_logs_p2025_10"]


def test_retention_detaches_concurrently_without_default_and_marks_before_drop() -> None:
    plan, _ = plan_range(spec(retention={"keep": 1, "action": "drop"}), table([month(2026, 1), *[month(2026, m) for m in (11, 12)], month(2027, 1), month(2027, 2)]), NOW)
    kinds = [(s.kind, s.target) for s in plan.steps]
    assert kinds == [("mark_for_drop", "event_logs_p2026_01"), ("detach_partition", "event_logs_p2026_01"),
                     ("drop_partition", "event_logs_p2026_01")]
    detach = plan.steps[1]
    assert detach.statements[0].endswith("CONCURRENTLY") and not detach.transactional


def test_retention_with_default_partition_detaches_in_a_transaction() -> None:
    obs = table([month(2026, 1), month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2)], default=True,
                default_rows=0)
    plan, _ = plan_range(spec(retention={"keep": 1, "action": "detach"}, defaultPartition=True), obs, NOW)
    detach = [s for s in plan.steps if s.kind == "detach_partition"]
    assert len(detach) == 1 and "CONCURRENTLY" not in detach[0].statements[0] and detach[0].transactional


def test_wide_legacy_partition_reaching_into_window_is_kept() -> None:
    legacy = ("event_logs_legacy", "FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2026-11-01 00:00:00+00')")
    existing = [legacy, month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2)]
    plan, _ = plan_range(spec(retention={"keep": 3, "action": "drop"}), table(existing), NOW)
    assert plan.empty


def test_never_drops_the_last_partition() -> None:
    plan, _ = plan_range(spec(range={"premake": 0}, retention={"keep": 1, "action": "drop"}),
                         table([month(2020, 1)]), datetime(2020, 1, 5, tzinfo=UTC))
    assert not [s for s in plan.steps if s.kind == "drop_partition"]


def test_interrupted_detach_and_drop_are_finished() -> None:
    obs = table([month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2)], pending_drops=["event_logs_p2025_01"])
    obs.partitions.append(PartitionInfo("public", "event_logs_p2025_02", month(2025, 2)[1], detach_pending=True))
    plan, _ = plan_range(spec(), obs, NOW)
    assert [(s.kind, s.target) for s in plan.steps] == [("finalize_detach", "event_logs_p2025_02"),
                                                        ("drop_partition", "event_logs_p2025_01")]
    assert plan.steps[0].statements[0].endswith("FINALIZE")


def test_default_partition_created_and_guarded_when_it_has_rows() -> None:
    plan, _ = plan_range(spec(defaultPartition=True), table(), NOW)
    assert plan.steps[0].kind == "create_default"
    assert plan.steps[0].statements[1].endswith("ATTACH PARTITION \"public\".\"event_logs_default\" DEFAULT")
    plan, _ = plan_range(spec(defaultPartition=True, range={"premake": 0}), table(default=True, default_rows=5), NOW)
    kinds = [s.kind for s in plan.steps]
    assert kinds == ["guard_default", "validate_default_guard", "create_partition"]
    assert "NOT VALID" in plan.steps[0].statements[1]
    assert plan.steps[2].statements[-1].startswith('ALTER TABLE "public"."event_logs_default" DROP CONSTRAINT')


def test_date_and_timestamp_columns_render_local_bounds() -> None:
    plan, _ = plan_range(spec(range={"timeZone": "Asia/Tokyo", "premake": 0}), table(column_type="date"), NOW)
    assert "FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')" in plan.steps[0].statements[1]
    plan, _ = plan_range(spec(range={"timeZone": "Asia/Tokyo", "premake": 0}),
                         table(column_type="timestamp without time zone"), NOW)
    assert "FROM ('2026-11-01 00:00:00') TO ('2026-12-01 00:00:00')" in plan.steps[0].statements[1]


def test_integer_ranges_follow_highest_key() -> None:
    s = spec(range={"column": "server_timestamp", "interval": None, "width": 1000, "premake": 2})
    obs = table(column_type="bigint", max_key=2500)
    plan, _ = plan_range(s, obs, NOW)
    assert created(plan.steps) == ["event_logs_p2000", "event_logs_p3000", "event_logs_p4000"]
    assert "FOR VALUES FROM (2000) TO (3000)" in plan.steps[0].statements[1]


def test_week_names_and_day_names() -> None:
    s = spec(range={"interval": "1 week", "premake": 0})
    plan, _ = plan_range(s, table(), NOW)
    assert created(plan.steps) == ["event_logs_p2026_11_16"]


def test_long_table_names_stay_within_63_bytes_and_distinct() -> None:
    a = spec(table={"name": "a" * 60 + "x"})
    b = spec(table={"name": "a" * 60 + "y"})
    na = partition_name(a, datetime(2026, 11, 1, tzinfo=UTC))
    nb = partition_name(b, datetime(2026, 11, 1, tzinfo=UTC))
    assert len(na.encode()) <= 63 and len(nb.encode()) <= 63 and na != nb
    assert na.endswith("_p2026_11")


def test_unusual_but_allowed_identifiers_are_quoted() -> None:
    s = spec(table={"schema": "Sales Data", "name": "Événements-2026"})
    obs = table()
    obs.schema, obs.name = "Sales Data", "Événements-2026"
    plan, _ = plan_range(s, obs, NOW)
    assert '"Sales Data"."Événements-2026"' in plan.steps[0].statements[1]


def test_quoting_escapes_quotes_whatever_reaches_it() -> None:
    from pgcurator.sql.quote import ident, literal

    assert ident('ev"ents; DROP') == '"ev""ents; DROP"'
    assert literal("it's") == "'it''s'"
    with pytest.raises(ValueError, match="NUL"):
        ident("a\x00b")


@pytest.mark.parametrize(
    ("obs_kw", "reason"),
    [
        ({"exists": False}, "TableNotFound"),
        ({"relkind": "r"}, "TableNotPartitioned"),
        ({"strategy": "l"}, "WrongPartitionKey"),
        ({"key": "player_id"}, "WrongPartitionKey"),
    ],
)
def test_refuses_tables_it_cannot_maintain(obs_kw: dict, reason: str) -> None:  # type: ignore[type-arg]
    obs = table(key=obs_kw.pop("key", "server_timestamp"))
    for k, v in obs_kw.items():
        setattr(obs, k, v)
    with pytest.raises(PlanError) as err:
        plan_range(spec(), obs, NOW)
    assert err.value.reason == reason


def test_interval_on_integer_column_refused() -> None:
    with pytest.raises(PlanError, match=r"range\.interval needs a timestamptz"):
        plan_range(spec(), table(column_type="bigint"), NOW)


def test_name_conflict_is_refused_not_overwritten() -> None:
    # A hand-made table carries the name we would use, but for other bounds.
    odd = ("event_logs_p2026_11", "FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')")
    with pytest.raises(PlanError, match="do not match"):
        plan_range(spec(range={"premake": 0}), table([odd]), datetime(2026, 11, 1, 1, tzinfo=UTC))


def test_range_covered_by_an_overlapping_partition_is_noted_not_created() -> None:
    wide = ("event_logs_2026h2", "FOR VALUES FROM ('2026-07-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')")
    plan, _ = plan_range(spec(range={"premake": 2}), table([wide]), NOW)
    assert created(plan.steps) == ["event_logs_p2027_01"]
    assert any("event_logs_2026h2" in n for n in plan.notes)
