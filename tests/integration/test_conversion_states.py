"""The conversion from every phase it can be left in (issue 12, item 2): the machine is run until
it has committed the transition that reaches the phase (a hook stops it there, exactly as a crash
after that commit would), rows are written, an object is removed by hand, the spec is changed,
and then the policy is reconciled to completion. Explored: phase reached x object removed by hand
x spec change. Checked each time: no exception other than a typed CuratorError, only the
Degraded reasons the case allows (each followed by what its message tells a person to do), rows
conserved (count and checksum of whole rows), nothing of the conversion left behind, the number
of swaps in pgcurator.history, and that a further reconcile changes nothing.

Quick form: every phase x removal pair and every phase x spec change pair.
PGCURATOR_RELIABILITY_FULL=1: the whole product."""

from __future__ import annotations

import itertools
import json
from typing import Any

import asyncpg
import pytest

from pgcurator.db.metadata import ensure_metadata
from pgcurator.errors import CuratorError
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.conversion_machine import Phase
from pgcurator.planner.partition_convert import batch_rows
from pgcurator.reconcile.partition import reconcile_partition_policy
from pgcurator.reconcile.partition_convert import convert_if_needed

from ..figures import FULL, record

pytestmark = pytest.mark.integration
RESOURCE = "PartitionPolicy/default/events"
SHADOW = "events__pgcurator_new"

PHASES = {  # name -> the committed transition (action, phase after it) that reaches it
    "prepared": ("prepare", Phase.COPYING),
    "copying": ("copy", Phase.COPYING),
    "catching_up": ("copy", Phase.CATCHING_UP),
    "swapped": ("swap", Phase.SWAPPED),
    "done": ("drop_original", Phase.DONE),
}
BEFORE_SWAP = ("prepared", "copying", "catching_up")
REMOVALS = {  # name -> phases it applies to
    "nothing": tuple(PHASES),
    "shadow table": BEFORE_SWAP,
    "change log": BEFORE_SWAP,
    "capture trigger": BEFORE_SWAP,
    "capture trigger disabled": BEFORE_SWAP,
    "capture trigger off for a while": BEFORE_SWAP,
    "capture function": BEFORE_SWAP,
    "the table itself": BEFORE_SWAP,
    "conversion record": tuple(PHASES),
    "converted by hand": BEFORE_SWAP,
    "original": ("swapped",),
}
CHANGES = ("none", "convert disabled", "dropOriginal toggled", "batchMemory", "layout", "suspended for a run",
           "dryRun for a run")


def _cases() -> list[tuple[str, str, str]]:
    every = [(p, r, c) for p, r, c in itertools.product(PHASES, REMOVALS, CHANGES) if p in REMOVALS[r]
             and not (c == "layout" and p not in BEFORE_SWAP)]
    if FULL:
        return every
    wanted = {(p, r) for p, r, _ in every} | {(p, c) for p, _, c in every}
    out = []
    for p, r, c in every:  # the first case covering each pair
        if (p, r) in wanted or (p, c) in wanted:
            out.append((p, r, c))
            wanted -= {(p, r), (p, c)}
    return out


CASES = _cases()
_EXPLORED: list[str] = []
_TRANSITIONS: list[int] = []


class _Stop(Exception):
    pass


def _spec(drop: bool, change: str = "none", after: bool = False) -> PartitionPolicySpec:
    body: dict[str, Any] = {
        "database": {"secretName": "db"}, "table": {"name": "events"},
        "range": {"column": "created_at", "interval": "1 month", "premake": 2},
        "convert": {"enabled": True, "batchMemory": "1Mi", "dropOriginal": drop},
        "timeouts": {"lockTimeout": "2s"},
    }
    if after:
        if change == "convert disabled":
            body["convert"]["enabled"] = False
        elif change == "dropOriginal toggled":
            body["convert"]["dropOriginal"] = not drop
        elif change == "batchMemory":
            body["convert"]["batchMemory"] = "3Mi"
        elif change == "layout":
            body["range"]["timeZone"] = "Asia/Tokyo"
    return PartitionPolicySpec.model_validate(body)


async def _fingerprint(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text "
                              "FROM events t")
    return int(row[0]), row[1]


async def _write(conn: asyncpg.Connection, n: int) -> None:
    """What an application does meanwhile: inserts, updates and deletes."""
    await conn.execute(
        "INSERT INTO events (created_at, payload) SELECT now() - g * interval '1 hour', 'w' FROM generate_series(1, $1) g;",
        n)
    await conn.execute("UPDATE events SET payload = payload || 'u' WHERE id % 97 = 0")
    await conn.execute("DELETE FROM events WHERE id % 89 = 0")


async def _remove(conn: asyncpg.Connection, removal: str, oid: int) -> None:
    sql = {
        "nothing": "",
        "shadow table": f"DROP TABLE {SHADOW}",
        "change log": f"DROP TABLE pgcurator.conversion_log_{oid}",
        "capture trigger": "DROP TRIGGER pgcurator_capture_events ON events",
        "capture trigger disabled": "ALTER TABLE events DISABLE TRIGGER pgcurator_capture_events",
        # invisible by the time of the next run: only the copy's checksum can tell
        "capture trigger off for a while": """
            ALTER TABLE events DISABLE TRIGGER pgcurator_capture_events;
            UPDATE events SET payload = 'unseen' WHERE id % 7 = 0;
            ALTER TABLE events ENABLE ALWAYS TRIGGER pgcurator_capture_events""",
        "capture function": f"DROP FUNCTION pgcurator.capture_{oid}() CASCADE",
        "the table itself": "DROP TABLE events",
        "conversion record": "DELETE FROM pgcurator.conversions",
        "original": "DROP TABLE events_unpartitioned",
        "converted by hand": """
            DROP TRIGGER pgcurator_capture_events ON events;
            CREATE TABLE events_byhand (LIKE events INCLUDING DEFAULTS) PARTITION BY RANGE (created_at);
            ALTER TABLE events_byhand ADD PRIMARY KEY (id, created_at);
            DO $$ DECLARE m timestamptz; BEGIN
              FOR m IN SELECT generate_series(date_trunc('month', (SELECT min(created_at) FROM events)),
                                              date_trunc('month', now()) + interval '3 months', interval '1 month')
              LOOP EXECUTE format('CREATE TABLE %I PARTITION OF events_byhand FOR VALUES FROM (%L) TO (%L)',
                                  'events_byhand_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
              END LOOP; END $$;
            INSERT INTO events_byhand SELECT * FROM events;
            ALTER TABLE events RENAME TO events_old;
            ALTER TABLE events_byhand RENAME TO events;""",
    }[removal]
    if sql:
        await conn.execute(sql)


async def _reach(conn: asyncpg.Connection, spec: PartitionPolicySpec, phase: str) -> None:
    target = PHASES[phase]

    async def hook(action: str, after: Phase | None) -> None:
        if (action, after) == target:
            raise _Stop

    await ensure_metadata(conn)  # what the runtime does before every reconcile
    for _ in range(50):
        try:
            out = await convert_if_needed(conn, spec, resource=RESOURCE, on_transition=hook)
        except _Stop:
            return
        assert out is not None, f"the conversion finished without reaching {phase}"
    pytest.fail(f"{phase} not reached")


async def _leftovers(conn: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await conn.fetch(
        "SELECT relname::text FROM pg_class WHERE relname = $1 OR relname LIKE 'conversion\\_log\\_%' "
        "UNION ALL SELECT proname::text FROM pg_proc WHERE proname LIKE 'capture\\_%' "
        "UNION ALL SELECT tgname::text FROM pg_trigger WHERE tgname LIKE 'pgcurator\\_capture%'", SHADOW)]


def _expect(phase: str, removal: str, change: str) -> tuple[str, set[str], int]:
    """(the table at the end: partitioned | plain | absent, Degraded reasons allowed on the way,
    swaps in the history)."""
    if removal == "the table itself":
        return "absent", {"ConversionSourceMissing", "TableNotFound"}, 0
    if removal == "converted by hand":
        return "partitioned", {"ConversionConflict"}, 0
    if phase in BEFORE_SWAP and change == "convert disabled":
        # the record lost: nothing says a conversion was running; the shadow is refused by name
        reasons = {"ConversionLeftover"} if removal == "conversion record" else set()
        return "plain", reasons | {"TableNotPartitioned"}, 0
    if removal == "conversion record" and phase in BEFORE_SWAP:
        return "partitioned", {"ConversionRefused"}, 1
    return "partitioned", set(), 1


async def _reconcile(conn: asyncpg.Connection, spec: PartitionPolicySpec) -> tuple[bool, str]:
    try:
        out = await reconcile_partition_policy(conn, spec, resource=RESOURCE)
    except CuratorError as err:  # typed; anything else fails the test (it would be an InternalError)
        return False, err.reason
    ready = next(c for c in out.conditions if c.type == "Ready")
    degraded = next(c for c in out.conditions if c.type == "Degraded")
    return ready.status, ready.reason if degraded.status else ("" if ready.status else "progressing")


@pytest.mark.parametrize(("phase", "removal", "change"), CASES)
async def test_conversion_completes_from_any_state(conn: asyncpg.Connection, phase: str, removal: str,
                                                   change: str) -> None:
    await conn.execute("""
        CREATE TABLE events (id bigint GENERATED BY DEFAULT AS IDENTITY, created_at timestamptz NOT NULL,
                             payload text, PRIMARY KEY (id, created_at));
        CREATE INDEX events_payload ON events (payload);
        INSERT INTO events (created_at, payload) SELECT now() - (g % 80) * interval '1 day', 'p' || g
          FROM generate_series(1, 9000) g;
        ANALYZE events""")
    drop = phase == "done"
    oid = await conn.fetchval("SELECT 'events'::regclass::oid")
    await _reach(conn, _spec(drop), phase)
    if phase in BEFORE_SWAP:
        await _write(conn, 40)  # logged by the capture trigger
    await _remove(conn, removal, oid)
    if phase in BEFORE_SWAP and removal not in ("change log", "the table itself", "converted by hand"):
        await _write(conn, 40)  # e.g. not logged at all once the trigger is gone
    expected = await _fingerprint(conn) if removal != "the table itself" else None
    history = await conn.fetchval("SELECT count(*) FROM pgcurator.history")
    if change in ("suspended for a run", "dryRun for a run"):
        field = "suspend" if change.startswith("suspended") else "dry_run"
        await _reconcile(conn, _spec(drop).model_copy(update={field: True}))
        assert await conn.fetchval("SELECT count(*) FROM pgcurator.history") == history, f"{field}, yet it acted"
    final, allowed, swaps = _expect(phase, removal, change)
    spec = _spec(drop, change, after=True)
    seen: list[str] = []
    for _ in range(30):
        ready, reason = await _reconcile(conn, spec)
        if ready:
            break
        if reason not in ("progressing", "WaitingForLock"):
            seen.append(reason)
            assert reason in allowed, f"unexpected {reason} on the way (seen: {seen})"
            if reason in ("ConversionSourceMissing", "ConversionConflict", "ConversionRefused", "ConversionLeftover"):
                await conn.execute(f"DROP TABLE IF EXISTS {SHADOW}")  # what the message tells a person to do
            elif len(seen) > 3 and seen[-1] == seen[-2]:
                break  # settled in the state the case expects (checked below)
    kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass('events')")
    assert {"p": "partitioned", "r": "plain", None: "absent"}[kind] == final, (kind, seen)
    if final == "partitioned":
        assert ready, seen
    if expected is not None and final != "absent":
        assert await _fingerprint(conn) == expected, "rows not conserved"
    assert await _leftovers(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.conversions WHERE phase NOT IN ('swapped', 'done')") == 0
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step = 'convert_swap'") == swaps
    if final == "partitioned" and swaps and removal not in ("conversion record", "original"):
        dropped = _spec(drop, change, after=True).convert.drop_original and change != "convert disabled"  # type: ignore[union-attr]
        assert (await conn.fetchval("SELECT to_regclass('events_unpartitioned')") is None) == (dropped or drop)
    if change == "batchMemory" and removal == "nothing" and phase in ("prepared", "copying"):
        width = json.loads(await conn.fetchval("SELECT details FROM pgcurator.conversions"))["width"]
        last_copy = await conn.fetchval("SELECT statement FROM pgcurator.history WHERE step = 'convert_copy' "
                                        "ORDER BY id DESC LIMIT 1")
        assert last_copy.endswith(f"batches of {batch_rows('3Mi', width)}"), last_copy  # the new size applies
    # Settled: one more run does nothing the history would record.
    history = await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step LIKE 'convert%'")
    await _reconcile(conn, spec)
    assert await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step LIKE 'convert%'") == history
    _EXPLORED.append(f"{phase}/{removal}/{change}")
    _TRANSITIONS.append(int(await conn.fetchval("SELECT count(*) FROM pgcurator.history WHERE step LIKE 'convert%'")))
    record("state-space conversion: states explored",
           f"{len(_EXPLORED)} of {len(CASES)} (phase x removed by hand x spec change; "
           f"{len(list(itertools.product(PHASES, REMOVALS, CHANGES)))} combinations before pruning), "
           f"{sum(_TRANSITIONS)} recorded transitions")
