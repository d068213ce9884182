"""Converting a live plain table into a partitioned one (seed 004's partition_table), with a
concurrent writer and a SIGKILLed converter: every row must be there exactly once afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pgcurator.db.metadata import ensure_metadata
from pgcurator.errors import LockBusy, PlanError
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.conversion_machine import Phase
from pgcurator.reconcile.outcome import Event
from pgcurator.reconcile.partition import reconcile_partition_policy
from pgcurator.reconcile.partition_convert import convert_if_needed

from ..live_table import Writer, make_plain_table

pytestmark = pytest.mark.integration
ROWS = int(os.environ.get("PGCURATOR_CONVERT_TEST_ROWS", "1000000"))
RESOURCE = "PartitionPolicy/default/events"

SPEC: dict[str, Any] = {
    "database": {"secretName": "db"},
    "table": {"name": "events"},
    "range": {"column": "created_at", "interval": "1 month", "premake": 2},
    "convert": {"enabled": True, "batchMemory": "16Mi"},
    "timeouts": {"lockTimeout": "2s"},
}

# Runs the conversion in its own process so the test can SIGKILL it mid-copy: a real crash.
CONVERTER = """
import asyncio, json, sys
import asyncpg
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.reconcile.partition import reconcile_partition_policy
async def main():
    conn = await asyncpg.connect(sys.argv[1], server_settings={"TimeZone": "UTC"})
    spec = PartitionPolicySpec.model_validate(json.loads(sys.argv[2]))
    while True:
        await reconcile_partition_policy(conn, spec, resource="PartitionPolicy/default/events")
asyncio.run(main())
"""


async def test_refuses_what_cannot_be_converted(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL)")
    await conn.execute("CREATE TABLE refs (id bigint REFERENCES events (id))")
    spec = PartitionPolicySpec.model_validate(SPEC)
    with pytest.raises(PlanError) as err:
        await reconcile_partition_policy(conn, spec, resource=RESOURCE)
    assert err.value.reason == "ConversionRefused"
    assert "does not include the partition key" in err.value.message
    assert "foreign keys point at" in err.value.message
    # Nothing was changed.
    assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'events'") == "r"
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'events\\_\\_pgcurator%'") == 0


async def test_convert_live_table_with_crash_and_resume(conn: asyncpg.Connection, db_url: str) -> None:
    await make_plain_table(conn, ROWS)
    before = await conn.fetchrow("SELECT count(*), sum(id) FROM events")
    writer = Writer(db_url)
    wtask = asyncio.create_task(writer.run(ROWS))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CONVERTER, db_url, json.dumps(SPEC))
    try:
        # Let it copy part of the table, then kill it without warning.
        for _ in range(600):
            await asyncio.sleep(0.1)
            copied = await conn.fetchval(
                "SELECT rows_copied FROM pgcurator.conversions WHERE table_name = 'events'"
            ) if await conn.fetchval("SELECT to_regclass('pgcurator.conversions') IS NOT NULL") else None
            if copied and copied > ROWS // 4:
                break
        assert copied and copied < ROWS, "the converter should be mid-copy when killed"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed_at = copied
        kill_time = await conn.fetchval("SELECT now()")
        # Resume in this process: it continues from the recorded key, never from zero.
        spec = PartitionPolicySpec.model_validate(SPEC)
        statuses = []
        for _ in range(200):
            try:
                out = await reconcile_partition_policy(conn, spec, resource=RESOURCE)
            except LockBusy:
                # The killed converter's server session still holds the table's advisory lock until
                # the server notices its client is gone: the operator retries, and so do we.
                await asyncio.sleep(0.5)
                continue
            statuses.append(out.status.get("conversion"))
            if any(c.type == "Ready" and c.status for c in out.conditions):
                break
        else:
            pytest.fail(f"conversion did not finish: {statuses[-3:]}")
        resumed = [r[0] for r in await conn.fetch(
            "SELECT statement FROM pgcurator.history WHERE step = 'convert_copy' AND started_at > $1", kill_time)]
        starts = [int(x.split("copied rows ")[1].split("..")[0]) for x in resumed]
        assert starts and min(starts) >= killed_at  # resumed from the recorded key, not from zero
    finally:
        writer.stop.set()
        await wtask
        if proc.returncode is None:
            proc.kill()
    assert writer.ops > 50 and writer.inserted and writer.payload
    assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'events'") == "p"
    await writer.verify(conn, (before[0], before[1]))
    # New rows keep getting fresh ids from the carried-over identity sequence.
    new_id = await conn.fetchval("INSERT INTO events (created_at, player_id) VALUES (now(), 1) RETURNING id")
    assert new_id > max(writer.inserted)
    # The original is kept, the scaffolding is gone, the history says what happened.
    assert await conn.fetchval("SELECT to_regclass('events_unpartitioned') IS NOT NULL")
    assert await conn.fetchval("SELECT pg_get_serial_sequence('events', 'id')") == "public.events_id_seq"
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE '%pgcurator\\_new%'") == 0
    assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgcurator_capture%'") == 0
    assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgcurator' "
                               "AND tablename LIKE 'conversion_log%'") == 0
    steps = {r[0] for r in await conn.fetch("SELECT step FROM pgcurator.history")}
    assert {"convert_prepare", "convert_copy", "convert_swap"} <= steps
    # The partitioned table's indexes carry the original names; the original's moved aside.
    assert {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")} == {
        "events_pkey", "events_player"}
    assert {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = "
                                           "'events_unpartitioned'")} == {"events_pkey_unpartitioned",
                                                                          "events_player_unpartitioned"}


async def test_keyset_copy_advances_by_key_order_not_text_order(conn: asyncpg.Connection) -> None:
    """Regression: the batch's last key was once taken in text order ('999' > '1000'), so the
    copy never advanced past id 999 when the second key column cycled."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT timestamptz "
                       "'2026-03-01' + (g % 200) * interval '1 day' FROM generate_series(1, 5000) g")
    spec = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": True, "batchMemory": "1Mi"}})
    for _ in range(10):
        out = await reconcile_partition_policy(conn, spec, resource=RESOURCE)
        if out.conditions[0].status:
            break
    assert out.conditions[0].reason == "UpToDate"
    copied = await conn.fetchval("SELECT rows_copied FROM pgcurator.conversions WHERE table_name = 'events'")
    assert copied == 5000 and await conn.fetchval("SELECT count(*) FROM events") == 5000


def _month_start(when: datetime, months: int) -> datetime:
    index = when.year * 12 + when.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def test_drop_original_leaves_a_policy_that_keeps_maintaining(conn: asyncpg.Connection) -> None:
    """Regression (issue 12, item 2): with dropOriginal the conversion ended in phase `done`, which
    was not terminal; every later reconcile failed on the dropped change log and premake and
    retention never ran again."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT now() - "
                       "(g % 80) * interval '1 day' FROM generate_series(1, 3000) g")
    spec = PartitionPolicySpec.model_validate({
        **SPEC, "retention": {"keep": 2, "action": "drop"},
        "convert": {"enabled": True, "batchMemory": "1Mi", "dropOriginal": True}})
    for _ in range(20):
        out = await reconcile_partition_policy(conn, spec, resource=RESOURCE)
        if out.conditions[0].status:
            break
    assert out.conditions[0].status, out.conditions
    assert await conn.fetchval("SELECT to_regclass('events_unpartitioned') IS NULL")
    base = datetime.now(UTC)
    for months in (1, 2, 3):
        later = _month_start(base, months) + timedelta(days=3)
        out = await reconcile_partition_policy(conn, spec, resource=RESOURCE, now=later)
        assert out.conditions[0].type == "Ready" and out.conditions[0].status, out.conditions
        children = {r[0] for r in await conn.fetch(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass")}
        ahead = _month_start(later, 2)
        assert f"events_p{ahead.year:04d}_{ahead.month:02d}" in children  # premake ran
        gone = _month_start(later, -3)
        assert f"events_p{gone.year:04d}_{gone.month:02d}" not in children  # retention ran


async def _convert_until(conn: asyncpg.Connection, spec: PartitionPolicySpec, action: str) -> None:
    """Run the conversion until it has committed `action`, then stop as a crash there would."""

    class Stop(Exception):
        pass

    async def hook(done: str, _phase: object) -> None:
        if done == action:
            raise Stop

    await ensure_metadata(conn)  # what the runtime does before every reconcile
    for _ in range(50):
        try:
            await convert_if_needed(conn, spec, resource=RESOURCE, on_transition=hook)
        except Stop:
            return
    pytest.fail(f"{action} never happened")


async def _until_ready(conn: asyncpg.Connection, spec: PartitionPolicySpec, events: list[Event] | None = None) -> None:
    async def emit(e: Event) -> None:
        if events is not None:
            events.append(e)

    for _ in range(30):
        out = await reconcile_partition_policy(conn, spec, resource=RESOURCE, on_event=emit)
        if out.conditions[0].status:
            return
    pytest.fail(f"not Ready: {out.conditions}")


async def test_a_row_written_outside_the_shadows_partitions_restarts_the_copy(conn: asyncpg.Connection) -> None:
    """A row written during the conversion with a key no partition of the shadow holds (the shadow
    covers the oldest row to now + premake): the re-sync cannot place it; the conversion starts
    again with a shadow that covers it, instead of failing on every run."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT now() - "
                       "(g % 80) * interval '1 day' FROM generate_series(1, 3000) g")
    spec = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": True, "batchMemory": "1Mi"}})
    await _convert_until(conn, spec, "prepare")
    await conn.execute("INSERT INTO events (created_at) VALUES ('1990-01-15')")
    await _until_ready(conn, spec)
    assert await conn.fetchval("SELECT count(*) FROM events") == 3001
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'convert_restart'") == 1
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'convert_swap'") == 1


async def test_an_original_in_use_is_kept_and_maintenance_goes_on(conn: asyncpg.Connection) -> None:
    """dropOriginal while a view reads the original: the drop waits for a person (a Warning event),
    the partitioned table is maintained meanwhile; once the view is gone the original is dropped."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT now() - "
                       "(g % 80) * interval '1 day' FROM generate_series(1, 3000) g")
    spec = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": True, "dropOriginal": True}})
    await _convert_until(conn, spec, "swap")
    await conn.execute("CREATE VIEW old_events AS SELECT * FROM events_unpartitioned")
    events: list[Event] = []
    await _until_ready(conn, spec, events)
    assert any(e.reason == "OriginalInUse" and "old_events" in e.message for e in events), events
    assert await conn.fetchval("SELECT phase FROM pgcurator.conversions") == "swapped"
    await conn.execute("DROP VIEW old_events")
    await _until_ready(conn, spec)
    assert await conn.fetchval("SELECT to_regclass('events_unpartitioned') IS NULL")
    assert await conn.fetchval("SELECT phase FROM pgcurator.conversions") == "done"


async def test_writes_the_capture_keeps_missing_block_the_swap(conn: asyncpg.Connection) -> None:
    """Writes made while the capture trigger is off (and on again by the next run) are invisible to
    every check of the objects; the whole-row checksum before the swap finds them: a fresh copy,
    twice, then Degraded with what to do; turning convert off and on starts over and converges."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, payload text, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT "
                       "now() - (g % 80) * interval '1 day' FROM generate_series(1, 3000) g")
    await ensure_metadata(conn)
    spec = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": True, "batchMemory": "1Mi"}})
    sneaky = 0

    async def unseen_write(action: str, phase: object) -> None:
        nonlocal sneaky
        if (action, phase) == ("copy", Phase.CATCHING_UP):
            sneaky += 1
            await conn.execute("ALTER TABLE events DISABLE TRIGGER pgcurator_capture_events; "
                               f"UPDATE events SET payload = 'unseen {sneaky}' WHERE id = 10; "
                               "ALTER TABLE events ENABLE ALWAYS TRIGGER pgcurator_capture_events")

    for _ in range(20):
        out = await convert_if_needed(conn, spec, resource=RESOURCE, on_transition=unseen_write)
        assert out is not None
        if out.conditions[2].status:
            break
    assert out.conditions[2].reason == "VerificationFailed", out.conditions
    assert "convert.enabled to false and back to true" in out.conditions[2].message
    assert sneaky == 3  # the first copy and two fresh ones
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'convert_restart'") == 2
    assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'events'") == "r"
    expected = await conn.fetchval("SELECT sum(hashtextextended(t::text, 0)) FROM events t")
    off = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": False}})
    with pytest.raises(PlanError):  # cancelled; the maintenance path then says the table is not partitioned
        await reconcile_partition_policy(conn, off, resource=RESOURCE)
    await _until_ready(conn, spec)
    assert await conn.fetchval("SELECT sum(hashtextextended(t::text, 0)) FROM events t") == expected
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'convert_swap'") == 1


async def test_a_lock_on_the_original_does_not_hold_up_maintenance(conn: asyncpg.Connection, db_url: str) -> None:
    """dropOriginal while a long report reads the original: the drop cannot get its lock within
    lockTimeout; the partitioned table is maintained all the same, and the drop happens later."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT now() - "
                       "(g % 80) * interval '1 day' FROM generate_series(1, 3000) g")
    spec = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": True, "dropOriginal": True},
                                               "timeouts": {"lockTimeout": "200ms"}})
    await _convert_until(conn, spec, "swap")
    report = await asyncpg.connect(db_url)
    try:
        tx = report.transaction()
        await tx.start()
        await report.execute("SELECT count(*) FROM events_unpartitioned")  # holds ACCESS SHARE until the end
        events: list[Event] = []
        await _until_ready(conn, spec, events)
        assert any(e.reason == "WaitingForLock" for e in events), events
        assert await conn.fetchval("SELECT phase FROM pgcurator.conversions") == "swapped"
        await tx.rollback()
    finally:
        await report.close()
    await _until_ready(conn, spec)
    assert await conn.fetchval("SELECT phase FROM pgcurator.conversions") == "done"


async def test_whole_row_checksum_agrees_for_awkward_column_shapes(conn: asyncpg.Connection) -> None:
    """The proof before the swap compares the text of whole rows: it must agree between a table and
    its copy for dropped and generated columns, floats, json (kept as written), arrays, enums,
    domains, NULLs and identity columns."""
    await conn.execute("""
        CREATE TYPE mood AS ENUM ('sad', 'ok');
        CREATE DOMAIN small AS int CHECK (VALUE < 1000);
        CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY, gone text, created_at timestamptz NOT NULL,
            f double precision, r real, j json, jb jsonb, a int[], m mood, s small, n numeric,
            g bigint GENERATED ALWAYS AS (id * 2) STORED, PRIMARY KEY (id, created_at));
        INSERT INTO events (gone, created_at, f, r, j, jb, a, m, s, n)
        SELECT 'x', now() - (i % 60) * interval '1 day', i / 7.0, i / 3.0, '{"b": 1,  "a": [1, 2]}',
               '{"b": 1, "a": 2}', ARRAY[i, NULL], CASE WHEN i % 2 = 0 THEN 'ok'::mood END,
               (i % 999)::small, i / 11.0
          FROM generate_series(1, 2000) i;
        ALTER TABLE events DROP COLUMN gone""")
    before = await conn.fetchval("SELECT sum(hashtextextended(t::text, 0)) FROM events t")
    spec = PartitionPolicySpec.model_validate({**SPEC, "convert": {"enabled": True, "batchMemory": "1Mi"}})
    await _until_ready(conn, spec)
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'convert_restart'") == 0
    assert await conn.fetchval("SELECT sum(hashtextextended(t::text, 0)) FROM events t") == before


async def test_converting_into_years_split_into_months_keeps_every_old_row(conn: asyncpg.Connection) -> None:
    """A range sub-level on the first level's own column: the shadow's yearly partitions for past
    years had leaves only from the current month on, so the copy of older rows had nowhere to go."""
    await conn.execute("CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT "
                       "NULL, PRIMARY KEY (id, created_at)); INSERT INTO events (created_at) SELECT now() - "
                       "(g % 500) * interval '1 day' FROM generate_series(1, 3000) g")
    spec = PartitionPolicySpec.model_validate({
        **SPEC, "range": {"column": "created_at", "interval": "1 year", "premake": 1},
        "subpartition": {"strategy": "range", "range": {"column": "created_at", "interval": "1 month"}},
        "convert": {"enabled": True, "batchMemory": "1Mi"}})
    await _until_ready(conn, spec)
    assert await conn.fetchval("SELECT count(*) FROM events") == 3000
    # Every month of every year partition has its leaf: a row for any day of them goes in.
    await conn.execute("INSERT INTO events (created_at) SELECT d FROM generate_series("
                       "date_trunc('year', now() - interval '500 days'), date_trunc('year', now()) + "
                       "interval '2 years' - interval '1 day', interval '1 day') d")
