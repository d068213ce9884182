"""What a conversion refuses, and the shadow table it builds (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from pgcurator.catalog.partitions import ColumnInfo, TableObservation
from pgcurator.planner.partition_convert import PlainTable, refusals, shadow_name, shadow_statements

from .factories import spec

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def plain_obs() -> TableObservation:
    cols = [ColumnInfo("id", "bigint"), ColumnInfo("server_timestamp", "timestamp with time zone"),
            ColumnInfo("player_id", "bigint")]
    return TableObservation(schema="public", name="event_logs", exists=True, relkind="r", columns=cols,
                            column_types={c.name: c.type for c in cols})


def convert_spec(**kw: object) -> object:
    return spec(convert={"enabled": True}, **kw)


def test_clean_table_is_accepted() -> None:
    plain = PlainTable(primary_key=["id", "server_timestamp"])
    assert refusals(convert_spec(), plain_obs(), plain) == []  # type: ignore[arg-type]


def test_every_unsafe_shape_is_refused_with_what_to_change() -> None:
    plain = PlainTable(primary_key=["id"], unique_indexes={"uq_player": ["player_id"]}, inbound_fks=["orders.fk"],
                       dependent_views=["v_recent"], user_triggers=["audit"], rls=True)
    problems = refusals(convert_spec(), plain_obs(), plain)  # type: ignore[arg-type]
    text = " | ".join(problems)
    for needle in ("does not include the partition key", "uq_player", "foreign keys point at", "views depend",
                   "triggers (audit)", "row-level security"):
        assert needle in text
    assert "no primary key" in refusals(convert_spec(), plain_obs(), PlainTable())[0]  # type: ignore[arg-type]


def test_sub_partition_key_must_be_in_the_primary_key_too() -> None:
    s = convert_spec(subpartition={"strategy": "hash", "hash": {"column": "player_id", "modulus": 4}})
    problems = refusals(s, plain_obs(), PlainTable(primary_key=["id", "server_timestamp"]))  # type: ignore[arg-type]
    assert "player_id" in problems[0]


def test_shadow_covers_every_row_from_the_oldest_and_keeps_final_names() -> None:
    plain = PlainTable(primary_key=["id", "server_timestamp"],
                       min_key=datetime(2026, 8, 17, tzinfo=UTC), max_key=datetime(2026, 11, 20, tzinfo=UTC),
                       outbound_fks=[("fk_player", "FOREIGN KEY (player_id) REFERENCES players(id)")],
                       grants=[("SELECT", "reporting", False)])
    stmts = shadow_statements(convert_spec(range={"premake": 1}), plain_obs(), plain, NOW)  # type: ignore[arg-type]
    shadow = f'"public"."{shadow_name("event_logs")}"'
    assert stmts[0] == (f'CREATE TABLE {shadow} (LIKE "public"."event_logs" INCLUDING ALL) '
                        'PARTITION BY RANGE ("server_timestamp")')
    attached = [s.split(" ATTACH PARTITION ")[1].split(" ")[0] for s in stmts if " ATTACH PARTITION " in s]
    assert attached == [f'"public"."event_logs_p2026_{m:02d}"' for m in (8, 9, 10, 11, 12)]
    assert stmts[-2] == f'ALTER TABLE {shadow} ADD CONSTRAINT "fk_player" FOREIGN KEY (player_id) REFERENCES players(id)'
    assert stmts[-1] == f'GRANT SELECT ON {shadow} TO "reporting"'


def test_a_date_table_with_rows_past_the_window_gets_partitions_for_them() -> None:
    # Found by the state-space suite: for a date column the highest key is a date, not a datetime, and was
    # ignored; the shadow stopped at now's window and the copy of a later row failed ("a row written during
    # the conversion fits no partition of the copy"), restarting the conversion on every run.
    from datetime import date

    obs = plain_obs()
    obs.columns = [ColumnInfo("id", "bigint"), ColumnInfo("server_timestamp", "date")]
    obs.column_types = {c.name: c.type for c in obs.columns}
    plain = PlainTable(primary_key=["id", "server_timestamp"], min_key=date(2026, 1, 5), max_key=date(2027, 3, 1))
    s = convert_spec(range={"interval": "1 year", "premake": 0})
    stmts = shadow_statements(s, obs, plain, NOW)  # type: ignore[arg-type]
    assert any("FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')" in sql for sql in stmts), stmts
