"""List, hash and two-level layouts; archive; templates; DEFAULT-row conflicts and moves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

from pgcurator.catalog.partitions import ColumnInfo, PartitionInfo, TableObservation
from pgcurator.errors import PlanError
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.partition import parse_list_values, plan_policy

from .factories import month, spec, table

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

CELESTIAL: dict[str, Any] = {
    "database": {"secretName": "db"},
    "table": {"name": "celestial_bodies"},
    "strategy": "list",
    "list": {"column": "body_type", "partitions": [
        {"name": "stars", "values": ["star"]},
        {"name": "planets", "values": ["planet"]},
        {"name": "moons", "values": ["moon"]},
        {"name": "small", "values": ["asteroid", "comet", "dust_cloud"]},
        {"name": "special", "values": ["black_hole"]},
    ]},
    "subpartition": {"strategy": "hash", "hash": {"column": "save_id", "modulus": 4}, "only": ["planets"]},
}


def celestial(partitions: list[PartitionInfo] | None = None) -> TableObservation:
    return TableObservation(
        schema="public", name="celestial_bodies", exists=True, relkind="p", strategy="l", key_columns=["body_type"],
        column_types={"id": "bigint", "save_id": "bigint", "body_type": "text"},
        columns=[ColumnInfo("id", "bigint"), ColumnInfo("save_id", "bigint"), ColumnInfo("body_type", "text")],
        partitions=partitions or [])


def test_seed_001_celestial_bodies_layout_exactly() -> None:
    plan, _ = plan_policy(PartitionPolicySpec.model_validate(CELESTIAL), celestial(), NOW)
    assert [s.target for s in plan.steps] == ["celestial_bodies_stars", "celestial_bodies_planets",
                                              "celestial_bodies_moons", "celestial_bodies_small",
                                              "celestial_bodies_special"]
    planets = plan.steps[1].statements
    assert planets[0].endswith('PARTITION BY HASH ("save_id")')
    # The sub-partitioned child is attached before its leaves (in the same transaction): leaves
    # attached to a detached child lack the table's identity column and block its DETACH later.
    assert [s for s in planets if "ATTACH" in s] == [
        'ALTER TABLE "public"."celestial_bodies" ATTACH PARTITION "public"."celestial_bodies_planets" '
        "FOR VALUES IN ('planet')",
        *[f'ALTER TABLE "public"."celestial_bodies_planets" ATTACH PARTITION "public"."celestial_bodies_planets_{r}" '
          f"FOR VALUES WITH (modulus 4, remainder {r})" for r in range(4)],
    ]
    small = plan.steps[3].statements
    assert small[-1].endswith("FOR VALUES IN ('asteroid', 'comet', 'dust_cloud')")
    assert all(plan.steps[i].transactional for i in range(5))


def test_complete_layout_plans_nothing_and_missing_hash_child_is_recreated() -> None:
    parts = [PartitionInfo("public", f"celestial_bodies_{n}", f"FOR VALUES IN ('{v}')") for n, v in
             [("stars", "star"), ("moons", "moon"), ("special", "black_hole")]]
    parts.append(PartitionInfo("public", "celestial_bodies_small",
                               "FOR VALUES IN ('asteroid', 'comet', 'dust_cloud')"))
    planets = PartitionInfo("public", "celestial_bodies_planets", "FOR VALUES IN ('planet')", relkind="p",
                            strategy="h", key_columns=["save_id"],
                            children=[PartitionInfo("public", f"celestial_bodies_planets_{r}",
                                                    f"FOR VALUES WITH (modulus 4, remainder {r})") for r in range(4)])
    parts.append(planets)
    spec_ = PartitionPolicySpec.model_validate(CELESTIAL)
    plan, _ = plan_policy(spec_, celestial(parts), NOW)
    assert plan.empty
    planets.children.pop(2)
    plan, _ = plan_policy(spec_, celestial(parts), NOW)
    assert [s.target for s in plan.steps] == ["celestial_bodies_planets_2"]
    assert plan.steps[0].statements[-1].endswith("FOR VALUES WITH (modulus 4, remainder 2)")


def test_list_values_held_elsewhere_are_blocked_not_forced() -> None:
    parts = [PartitionInfo("public", "legacy", "FOR VALUES IN ('star', 'planet')")]
    plan, _ = plan_policy(PartitionPolicySpec.model_validate(CELESTIAL), celestial(parts), NOW)
    assert {b.reason for b in plan.blocked} == {"ListValuesTaken"}
    assert any("already held by legacy" in b.message for b in plan.blocked)
    assert "celestial_bodies_stars" not in [s.target for s in plan.steps]


def test_parse_list_values_with_quotes() -> None:
    assert parse_list_values("FOR VALUES IN ('it''s', 'b', 3)") == {"'it''s'", "'b'", "3"}


def test_hash_layout_and_modulus_mismatch_is_left_alone() -> None:
    s = spec(strategy="hash", range=None, hash={"column": "player_id", "modulus": 4})
    obs = table(key="player_id")
    obs.strategy = "h"
    plan, _ = plan_policy(s, obs, NOW)
    assert [st.target for st in plan.steps] == [f"event_logs_{r}" for r in range(4)]
    obs.partitions = [PartitionInfo("public", "event_logs_0", "FOR VALUES WITH (modulus 8, remainder 0)")]
    plan, _ = plan_policy(s, obs, NOW)
    assert plan.empty and "modulus [8]" in plan.notes[0]


def test_range_then_hash_builds_each_month_complete() -> None:
    s = spec(range={"premake": 0}, subpartition={"strategy": "hash", "hash": {"column": "player_id", "modulus": 2}})
    plan, _ = plan_policy(s, table(), NOW)
    (step,) = plan.steps
    assert step.statements[0].endswith('PARTITION BY HASH ("player_id")')
    attaches = [x for x in step.statements if "ATTACH" in x]
    assert len(attaches) == 3 and attaches[0].startswith('ALTER TABLE "public"."event_logs" ATTACH')
    assert step.transactional  # nobody sees the month before its leaves are there


def test_list_then_range_premakes_under_each_list_partition() -> None:
    s = PartitionPolicySpec.model_validate({
        "database": {"secretName": "db"}, "table": {"name": "events"}, "strategy": "list",
        "list": {"column": "region", "partitions": [{"name": "eu", "values": ["eu"]}]},
        "subpartition": {"strategy": "range", "range": {"column": "ts", "interval": "1 month", "premake": 1}}})
    obs = TableObservation(schema="public", name="events", exists=True, relkind="p", strategy="l",
                           key_columns=["region"], column_types={"region": "text", "ts": "timestamp with time zone"})
    plan, _ = plan_policy(s, obs, NOW)
    stmts = plan.steps[0].statements
    assert any('"events_eu_p2026_12" FOR VALUES FROM' in x for x in stmts)
    eu = PartitionInfo("public", "events_eu", "FOR VALUES IN ('eu')", relkind="p", strategy="r", key_columns=["ts"],
                       children=[PartitionInfo("public", "events_eu_p2026_11", month(2026, 11)[1])])
    obs.partitions = [eu]
    plan, _ = plan_policy(s, obs, NOW)
    assert [st.target for st in plan.steps] == ["events_eu_p2026_12"]


def test_template_applied_to_new_partitions_and_drift_reported() -> None:
    tpl = {"storageParameters": {"autovacuum_vacuum_scale_factor": "0.01"},
           "indexes": [{"name": "by_type", "columns": ["event_type", "server_timestamp"]}]}
    obs = table([month(2026, 11)])
    obs.column_types["event_type"] = "text"
    plan, layout = plan_policy(spec(template=tpl, range={"premake": 1}), obs, NOW)
    create = plan.steps[0].statements
    assert create[0].endswith("WITH (autovacuum_vacuum_scale_factor = 0.01)")
    assert create[1] == ('CREATE INDEX IF NOT EXISTS "event_logs_p2026_12_by_type" ON "public"."event_logs_p2026_12" '
                         '("event_type", "server_timestamp")')
    assert layout is not None and layout.drift == [
        "event_logs_p2026_11: lacks autovacuum_vacuum_scale_factor=0.01, index by_type"]


@pytest.mark.parametrize("bad", [{"storageParameters": {"oids": "true"}},
                                 {"storageParameters": {"fillfactor": "90; DROP TABLE x"}},
                                 {"indexes": [{"name": "x", "columns": ["a"], "where": "1=1; DROP TABLE x"}]}])
def test_bad_templates_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="template"):
        spec(template=bad)


def test_default_rows_in_a_new_range_block_that_step_only() -> None:
    obs = table([month(2026, 11)], default=True, default_rows=3)
    obs.default_rows_in = {"'2027-01-01 00:00:00+00:00'": 3}
    plan, _ = plan_policy(spec(defaultPartition=True, range={"premake": 3}), obs, NOW)
    created = [s.target for s in plan.steps if s.kind == "create_partition"]
    assert created == ["event_logs_p2026_12", "event_logs_p2027_02"]
    assert [b.reason for b in plan.blocked] == ["DefaultRowsConflict"]
    assert [b.message for b in plan.blocked] == ["3 rows in event_logs_default fall in ['2027-01-01 00:00:00+00:00', "
                            "'2027-02-01 00:00:00+00:00'): partition event_logs_p2027_01 is not created (PostgreSQL "
                            "refuses it); set defaultRows.move: true to move them, or move them yourself"]


def test_default_rows_moved_in_batches_then_attached_under_lock() -> None:
    obs = table([month(2026, 11)], default=True, default_rows=3)
    obs.columns = [ColumnInfo("id", "bigint"), ColumnInfo("server_timestamp", "timestamp with time zone"),
                   ColumnInfo("total", "numeric", generated=True)]
    obs.default_rows_in = {"'2026-12-01 00:00:00+00:00'": 3}
    plan, _ = plan_policy(spec(defaultPartition=True, range={"premake": 1}, defaultRows={"move": True,
                                                                                         "batchRows": 500}), obs, NOW)
    kinds = [(s.kind, s.target) for s in plan.steps]
    assert kinds == [("create_detached", "event_logs_p2026_12"), ("check_parent_lock", "event_logs_p2026_12"),
                     ("move_default_rows", "event_logs_p2026_12"), ("attach_moved", "event_logs_p2026_12")]
    assert plan.steps[1].statements == ('LOCK TABLE ONLY "public"."event_logs" IN SHARE ROW EXCLUSIVE MODE',)
    move = plan.steps[2]
    assert move.repeat_until_zero and "LIMIT 500" in move.statements[0] and '"total"' not in move.statements[0]
    assert "OVERRIDING SYSTEM VALUE" in move.statements[0]
    final = plan.steps[3].statements
    assert final[0].startswith("LOCK TABLE") and final[-1].startswith('ALTER TABLE "public"."event_logs" ATTACH')
    # Rows moved so far go back to the DEFAULT partition when the move or the ATTACH does not finish.
    for step in plan.steps[2:]:
        assert step.undo and step.undo[0].startswith('WITH moved AS (DELETE FROM "public"."event_logs_p2026_12"')
        assert 'INSERT INTO "public"."event_logs_default"' in step.undo[0]
    assert not any("ATTACH" in x for x in plan.steps[0].statements)


def test_archive_retention_moves_to_schema_and_tablespace() -> None:
    obs = table([month(2025, 1), month(2026, 11), month(2026, 12), month(2027, 1), month(2027, 2)])
    obs.tablespaces = {"pg_default", "cold"}
    s = spec(retention={"keep": 3, "action": "archive", "archive": {"schema": "archive", "tablespace": "cold"}})
    plan, _ = plan_policy(s, obs, NOW)
    assert [x.kind for x in plan.steps] == ["mark_for_archive", "detach_partition", "archive_tablespace",
                                            "archive_move"]
    assert plan.steps[2].statements == ('ALTER TABLE "public"."event_logs_p2025_01" SET TABLESPACE "cold"',)
    assert plan.steps[3].statements[1] == 'ALTER TABLE "public"."event_logs_p2025_01" SET SCHEMA "archive"'


def test_archive_to_missing_tablespace_refused_and_interrupted_archive_finished() -> None:
    obs = table([month(2026, 11)])
    s = spec(retention={"keep": 3, "action": "archive", "archive": {"schema": "archive", "tablespace": "nope"}})
    with pytest.raises(PlanError, match="archive tablespace 'nope' does not exist"):
        plan_policy(s, obs, NOW)
    obs.pending_archives = ["event_logs_p2024_01"]
    s2 = spec(range={"premake": 0}, retention={"keep": 3, "action": "archive", "archive": {"schema": "archive"}})
    plan, _ = plan_policy(s2, obs, NOW)
    assert [(x.kind, x.target) for x in plan.steps] == [("archive_move", "event_logs_p2024_01")]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"strategy": "list", "range": None, "list": {"column": "c", "partitions": [
            {"name": "a", "values": ["x"]}, {"name": "b", "values": ["x"]}]}}, "both"),
        ({"strategy": "hash", "range": None, "hash": {"column": "c", "modulus": 0}}, "modulus"),
        ({"strategy": "hash"}, "needs the hash section"),
        ({"strategy": "hash", "range": None, "hash": {"column": "c", "modulus": 2}, "defaultPartition": True},
         "DEFAULT"),
        ({"retention": {"keep": 1, "action": "archive"}}, "archive"),
        ({"schedule": {"cron": "every day"}}, "cron"),
        ({"subpartition": {"strategy": "hash"}}, "subpartition.hash"),
    ],
)
def test_bad_layouts_refused(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=needle):
        spec(**body)


def test_sub_partition_key_must_be_a_column() -> None:
    s = spec(subpartition={"strategy": "hash", "hash": {"column": "nope", "modulus": 2}})
    with pytest.raises(PlanError, match="not a column"):
        plan_policy(s, table(), NOW)


def test_cron_schedule_gives_seconds_to_next_fire() -> None:
    from pgcurator.kinds import schedule_seconds
    from pgcurator.models.partition import Schedule

    sched = Schedule.model_validate({"cron": "0 3 * * *"})
    assert schedule_seconds(sched, datetime(2026, 11, 22, 2, 0, tzinfo=UTC)) == 3600
    assert schedule_seconds(Schedule.model_validate({"interval": "90s"})) == 90


def test_a_list_move_resumed_as_a_plain_creation_takes_its_marker_off() -> None:
    """The detached, marked table of an interrupted DEFAULT-row move, its rows all moved (none of
    its values left in the DEFAULT): attached as a plain creation, with the marker taken off (else,
    detached again some day, it would pass for a move in progress)."""
    from pgcurator.catalog.partitions import move_marker

    obs = celestial([PartitionInfo("public", "celestial_bodies_default", "DEFAULT", is_default=True)])
    obs.loose_tables = {"celestial_bodies_stars": move_marker("public", "celestial_bodies"),
                        "celestial_bodies_moons": "someone's"}
    plan, _ = plan_policy(PartitionPolicySpec.model_validate(CELESTIAL), obs, NOW)
    stars = next(s for s in plan.steps if s.target == "celestial_bodies_stars")
    assert stars.kind == "create_partition"
    assert stars.statements[1] == 'COMMENT ON TABLE "public"."celestial_bodies_stars" IS NULL'
    assert stars.statements[-1].startswith('ALTER TABLE "public"."celestial_bodies" ATTACH PARTITION')
    planets = next(s for s in plan.steps if s.target == "celestial_bodies_planets")
    assert not any(s.startswith("COMMENT ON") for s in planets.statements)
