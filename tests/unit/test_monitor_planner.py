"""DatabaseMonitor: the spec, and the pure decisions about changes and statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest

from pgcurator.crdgen import render_all
from pgcurator.models.monitor import DatabaseMonitorSpec
from pgcurator.planner.monitor import (
    UNKNOWN_WHO,
    Diff,
    Peer,
    change_entry,
    change_events,
    diff,
    due,
    explain,
    is_ours,
    managers,
    peer_names,
    schema_version,
    touched,
    who,
)
from pgcurator.planner.monitor_stats import (
    column_entry,
    growth_per_day,
    missing_privileges,
    statement_deltas,
    top_statements,
    trigger_state,
)
from pgcurator.planner.monitor_trigger import TRIGGER_VERSION, install_sql

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DB = {"secretName": "app-db"}


def spec(**extra: Any) -> DatabaseMonitorSpec:
    return DatabaseMonitorSpec.model_validate({"database": DB, **extra})


# --- spec ----------------------------------------------------------------------------------------


def test_defaults_are_sane() -> None:
    s = spec()
    assert s.changes.enabled and s.changes.event_trigger and s.changes.fingerprint_interval == "5m"
    assert s.statistics.interval == "15m" and s.statistics.columns.largest_tables == 10
    assert s.slow_statements.top == 10 and s.retention.snapshots == "720h"
    assert s.schedule_seconds() == 300  # the fingerprint, the more frequent of the two


@pytest.mark.parametrize(("extra", "needle"), [
    ({"changes": {"fingerprintInterval": "1s"}}, "at least 5s"),
    ({"statistics": {"interval": "2s"}}, "at least 10s"),
    ({"retention": {"snapshots": "10m"}}, "at least 3600s"),
    ({"schemas": {"include": ["a"], "exclude": ["a"]}}, "both included and excluded"),
    ({"schemas": {"include": ["a;b"]}}, "schemas.include"),
    ({"slowStatements": {"top": 0}}, "slowStatements.top"),
    ({"changes": {"typo": True}}, "changes.typo"),
])
def test_bad_specs_are_refused(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        spec(**extra)
    from pgcurator.runtime import format_validation_error

    assert needle in format_validation_error(err.value) or needle in str(err.value)


def test_schema_selection_never_observes_system_schemas() -> None:
    sel = spec(schemas={"include": ["pgcurator", "app"]}).schemas
    assert sel.observed("app") and not sel.observed("pgcurator") and not sel.observed("pg_temp_3")
    assert not spec(schemas={"exclude": ["audit"]}).schemas.observed("audit")


def test_crd_has_the_printer_columns_and_the_cel_rule() -> None:
    import yaml

    crd = yaml.safe_load(render_all()["pgcurator.io_databasemonitors.yaml"])
    version = crd["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:2] == ["Schema-Version", "Changes"] and names[-3:] == ["Ready", "Reason", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["dbmon"]
    assert version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]


# --- fingerprint diff and attribution ------------------------------------------------------------


def defs(**objects: tuple[str, str | None]) -> dict[str, list[Any]]:
    return {k.replace("__", "\t").replace("_dot_", "."): [h, p] for k, (h, p) in objects.items()}


def test_schema_version_changes_with_any_definition_and_only_then() -> None:
    a = {"table\tpublic.t": ["h1", None], "index\tpublic.i": ["h2", "public.t"]}
    assert schema_version(a) == schema_version(dict(reversed(list(a.items()))))
    assert schema_version(a) != schema_version({**a, "index\tpublic.i": ["h3", "public.t"]})


def test_diff_finds_added_removed_and_changed() -> None:
    before = {"table\tpublic.t": ["h1", None], "index\tpublic.i": ["h2", "public.t"]}
    after = {"table\tpublic.t": ["h9", None], "index\tpublic.j": ["h3", "public.t"]}
    got = {(d.action, d.identity) for d in diff(before, after)}
    assert got == {("changed", "public.t"), ("removed", "public.i"), ("added", "public.j")}
    assert Diff("removed", "index", "public.i", "public.t").command_tag == "DROP INDEX"


def row(id_: int, tag: str, ident: str | None, otype: str = "table") -> dict[str, Any]:
    return {"id": id_, "command_tag": tag, "object_identity": ident, "object_type": otype}


def test_trigger_rows_explain_the_objects_their_tables_and_grants() -> None:
    diffs = [Diff("added", "index", "public.i", "public.t"),
             Diff("added", "table constraint", "c on public.t", "public.t"),
             Diff("changed", "table", "public.t", None),
             Diff("changed", "sequence", "public.s", None),
             Diff("changed", "database", "shop", None)]
    rows = [row(1, "CREATE INDEX", "public.i", "index"), row(2, "ALTER TABLE", "public.t"),
            row(3, "GRANT", None, "TABLE")]
    left, confirmed = explain(diffs, rows)
    assert [d.identity for d in left] == ["shop"]  # a shared object: only the fingerprint saw it
    assert confirmed == {1, 2, 3}


def test_a_column_comment_explains_its_tables_change() -> None:
    left, confirmed = explain([Diff("changed", "table", "public.t", None)],
                              [row(7, "COMMENT", "public.t.a", "table column")])
    assert left == [] and confirmed == {7}


def test_a_rename_is_one_change_not_three() -> None:
    diffs = [Diff("removed", "table", "public.old", None), Diff("added", "table", "public.new", None),
             Diff("removed", "table constraint", "pk on public.old", "public.old"),
             Diff("added", "table constraint", "pk on public.new", "public.new")]
    left, _ = explain(diffs, [row(1, "ALTER TABLE", "public.new")])
    assert left == []


def test_a_created_table_does_not_hide_an_unseen_drop_of_another() -> None:
    diffs = [Diff("added", "table", "public.a", None), Diff("removed", "table", "public.b", None)]
    left, _ = explain(diffs, [row(1, "CREATE TABLE", "public.a")])
    assert [d.identity for d in left] == ["public.b"]


def test_without_trigger_rows_every_difference_is_a_fingerprint_change() -> None:
    diffs = [Diff("removed", "index", "public.i", "public.t")]
    assert explain(diffs, []) == (diffs, set())


# --- who manages what changed --------------------------------------------------------------------


def body(kind: str, name: str, spec_: dict[str, Any], database: dict[str, Any] = DB) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": "ns", "name": name}, "spec": {"database": database, **spec_}}


def test_peer_names_from_the_specs_of_the_same_database() -> None:
    bodies = [
        body("IndexPolicy", "ip", {"table": {"name": "orders"}, "indexes": [{"name": "o_idx",
                                                                             "columns": [{"column": "c"}]}]}),
        body("VectorIndex", "vi", {"table": {"name": "docs"}, "column": "emb", "type": "vector", "dimensions": 3,
                                   "metric": "cosine"}),
        body("PartitionPolicy", "pp", {"table": {"name": "events"}, "range": {"column": "at", "interval": "1 month"}}),
        body("IndexPolicy", "other-db", {"table": {"name": "orders"}}, database={"secretName": "other"}),
        body("IndexPolicy", "broken", {"table": {}}),
    ]
    got = {r: (t, i) for r, t, i in peer_names(bodies, DB)}
    assert set(got) == {"IndexPolicy/ns/ip", "VectorIndex/ns/vi", "PartitionPolicy/ns/pp"}
    assert got["IndexPolicy/ns/ip"] == ([("public", "orders")], [("public", "o_idx")])
    assert got["VectorIndex/ns/vi"][1] == [("public", "docs_emb_hnsw_idx")]


def test_a_partition_change_reaches_the_partitioned_tables_manager() -> None:
    known = {"table\tpublic.events_2025": ["h", "public.events"], "index\tpublic.events_2025_pkey":
             ["h", "public.events_2025"]}
    reached = touched({"object_identity": "public.events_2025_pkey", "object_type": "index"}, known)
    assert reached == {"public.events_2025_pkey", "public.events_2025", "public.events"}
    peers = [Peer("PartitionPolicy/ns/pp", tables={"public.events"}), Peer("IndexPolicy/ns/x", tables={"public.y"})]
    assert managers(reached, peers, []) == ["PartitionPolicy/ns/pp"]


def test_a_dropped_index_reaches_its_policy_by_name_and_owners_count_too() -> None:
    reached = touched({"object_identity": "public.o_idx", "object_type": "index"}, {})
    peers = [Peer("IndexPolicy/ns/ip", tables={"public.orders"}, indexes={"public.o_idx"})]
    assert managers(reached, peers, [("public.o_idx", "VectorIndex/other/v")]) == \
        ["IndexPolicy/ns/ip", "VectorIndex/other/v"]
    assert touched({"object_identity": "c on public.orders", "object_type": "table constraint"}, {}) == \
        {"c on public.orders", "public.orders"}


def test_the_operators_own_ddl_wakes_nobody() -> None:
    ours = {"session_user_name": "curator", "application_name": "pgcurator"}
    assert is_ours(ours, "curator")
    assert not is_ours({**ours, "application_name": "psql"}, "curator")  # the same role by hand
    assert not is_ours(ours, "operator")


# --- reporting -----------------------------------------------------------------------------------


def test_who_and_the_status_entry() -> None:
    change = {"id": 3, "changed_at": NOW, "mechanism": "event_trigger", "command_tag": "DROP INDEX",
              "object_type": "index", "object_identity": "public.i", "session_user_name": "alice",
              "application_name": "psql", "client_addr": "10.0.0.1/32", "transaction_id": 812, "confirmed": True,
              "statement": "DROP INDEX i", "woke": ["IndexPolicy/ns/ip"], "repaired_by": 55}
    entry = change_entry(change)
    assert entry["who"] == "alice (psql, 10.0.0.1/32)" and entry["at"] == "2026-11-27T12:00:00Z"
    assert entry["confirmedByFingerprint"] and entry["repairedBy"] == 55 and entry["transaction"] == 812
    assert who({"mechanism": "fingerprint"}) == UNKNOWN_WHO


def test_events_are_capped_and_the_rest_summed_up() -> None:
    events = change_events([f"c{i}" for i in range(8)], 5)
    assert len(events) == 6 and events[-1][1].startswith("and 3 more")
    assert change_events(["a"], 0) == [("SchemaChanged", "and 1 more schema changes (see pgcurator.schema_changes)")]


def test_due() -> None:
    assert due(None, 60, NOW) and due(NOW - timedelta(seconds=60), 60, NOW)
    assert not due(NOW - timedelta(seconds=30), 60, NOW)


# --- statistics ----------------------------------------------------------------------------------


def test_growth_needs_an_hour_of_history() -> None:
    assert growth_per_day(None, 100, NOW) is None
    assert growth_per_day((NOW - timedelta(minutes=30), 0), 100, NOW) is None
    assert growth_per_day((NOW - timedelta(hours=12), 1000), 2000, NOW) == 2000


def test_negative_n_distinct_is_a_fraction_of_the_rows() -> None:
    r = {"schema_name": "public", "table_name": "t", "column_name": "id", "null_frac": 0.0, "n_distinct": -1.0}
    assert column_entry(r, 5000)["distinct"] == 5000
    assert column_entry({**r, "n_distinct": 12.0}, 5000)["distinct"] == 12


def test_statement_deltas_between_snapshots_and_after_a_reset() -> None:
    prev = {(1, 10): {"calls": 100, "total_ms": 1000.0, "rows": 100}, (2, 10): {"calls": 50, "total_ms": 900.0,
                                                                               "rows": 5}}
    cur = [{"queryid": 1, "userid": 10, "calls": 110, "total_ms": 1500.0, "rows": 110, "query": "a"},
           {"queryid": 2, "userid": 10, "calls": 5, "total_ms": 50.0, "rows": 1, "query": "b"},  # reset
           {"queryid": 3, "userid": 10, "calls": 1, "total_ms": 10.0, "rows": 1, "query": "c"}]
    deltas = {d["query"]: d for d in statement_deltas(prev, cur, min_calls=2)}
    assert deltas["a"]["calls"] == 10 and deltas["a"]["totalMs"] == 500 and deltas["a"]["meanMs"] == 50
    assert deltas["b"]["calls"] == 5 and "c" not in deltas
    top = top_statements(list(deltas.values()), 1)
    assert top["byTotalTime"][0]["query"] == "a" and top["byMeanTime"][0]["query"] == "a"


def abilities(**extra: Any) -> SimpleNamespace:
    base = {"role": "curator", "superuser": False, "read_all_stats": False, "pgss_schema": "public",
            "pgss_available": True, "triggers": {}, "trigger_version": None, "server_version": 180006,
            "event_triggers_setting": "on"}
    return SimpleNamespace(**{**base, **extra})


def test_missing_privileges_name_the_fix() -> None:
    missing = {m.reason: m for m in missing_privileges(abilities(pgss_schema=None), True, True, ["public.secret"])}
    assert set(missing) == {"EventTriggerNeedsSuperuser", "PgStatStatementsMissing", "NeedsPgReadAllStats",
                            "ColumnStatisticsHidden"}
    assert missing["NeedsPgReadAllStats"].fix == 'GRANT pg_read_all_stats TO "curator"'
    assert "monitor-trigger-sql" in missing["EventTriggerNeedsSuperuser"].fix
    assert missing_privileges(abilities(superuser=True), True, True, []) == []


def test_trigger_state() -> None:
    both = {"pgcurator_ddl": "O", "pgcurator_drop": "O"}
    assert trigger_state(abilities(), TRIGGER_VERSION)[0] == "Missing"
    assert trigger_state(abilities(triggers=both, trigger_version=TRIGGER_VERSION), TRIGGER_VERSION)[0] == "Active"
    assert trigger_state(abilities(triggers={**both, "pgcurator_drop": "D"}), TRIGGER_VERSION)[0] == "Disabled"
    assert trigger_state(abilities(triggers=both, trigger_version="old"), TRIGGER_VERSION)[0] == "Outdated"


def test_the_documented_install_sql_is_the_one_the_operator_runs() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "databasemonitor.md").read_text()
    assert install_sql().strip() in doc


def test_statements_that_may_hold_a_password_never_reach_the_status() -> None:
    change = {"id": 1, "mechanism": "event_trigger", "command_tag": "CREATE USER MAPPING",
              "statement": "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'a', password 'hunter2')"}
    assert "hunter2" not in str(change_entry(change))
    cur = [{"queryid": 1, "userid": 1, "calls": 3, "total_ms": 3.0, "rows": 0,
            "query": "ALTER ROLE app PASSWORD 'hunter2'"}]
    assert "hunter2" not in str(statement_deltas({}, cur, 1))


def test_monitor_metrics_replace_their_table_series_and_go_with_the_resource() -> None:
    from pgcurator import metrics

    def tables(*names: str) -> list[dict[str, Any]]:
        return [{"table": n, "tableBytes": 1, "indexBytes": 2, "toastBytes": 0, "rows": 5, "deadRows": 1,
                 "growthBytesPerDay": 10, "heapHitRatio": 0.9, "indexHitRatio": None} for n in names]

    db = {"sizeBytes": 100, "cacheHitRatio": 0.99, "xidAge": 1000}
    metrics.observe_monitor_statistics("ns-m", "mon", tables("public.a", "public.b"), db)
    metrics.observe_monitor_statistics("ns-m", "mon", tables("public.b"), db)
    metrics.observe_monitor_changes("ns-m", "mon", "v1", {"fingerprint": 2}, {"event_trigger": False})
    metrics.observe_monitor_changes("ns-m", "mon", "v2", {"fingerprint": 3}, {"event_trigger": True})
    text = metrics.exposition().decode()
    assert 'pgcurator_table_rows{name="mon",namespace="ns-m",table="public.b"} 5.0' in text
    assert 'table="public.a"' not in text  # gone from the largest tables: no stale series
    assert 'version="v2"' in text and 'version="v1"' not in text
    assert 'pgcurator_schema_changes{mechanism="fingerprint",name="mon",namespace="ns-m"} 3.0' in text
    metrics.forget_resource("ns-m", "mon")
    assert 'namespace="ns-m"' not in metrics.exposition().decode()
