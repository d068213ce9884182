"""The conversion as an explicit state machine (pure): its phases, the transitions between them,
and the one decision, from what the database looks like now, of what to do next.

Phases (the value stored in pgcurator.conversions.phase; kept from the first release so that a
conversion in flight across an upgrade resumes):

  (no record) --prepare--> copy --copy--> catchup --catch_up (verify, swap)--> swapped --drop_original--> done

- no record: nothing converted, or a conversion cancelled.
- copy (COPYING): shadow, change log and capture trigger exist; keyset batches fill the shadow.
- catchup (CATCHING_UP): every row was copied once; the change log is re-synced until it is small,
  then the copy is proven equal (count and checksum of whole rows) without blocking anyone, and one short
  transaction under lockTimeout re-syncs the last keys, checks them, swaps the names and drops the
  change capture. "Preparing" and "verifying" happen inside one transaction each and are never
  observed from outside, so they are transitions, not stored phases.
- swapped: the table is partitioned; the original is kept as <table>_unpartitioned. It is a
  resting phase: left only when the original is dropped (dropOriginal, or by someone else).
- done: terminal. The original is gone.

Every transition is idempotent and recorded (phase, and a pgcurator.history row) in the
transaction that does its work. From any phase and any state of the objects, decide() returns a
transition that makes progress, nothing (the maintenance path follows), a pause, or a block: a
typed Degraded reason with what a person must do. It never assumes an object it did not see.

Objects removed by hand, and spec changes between runs:
- shadow, change log, capture function or trigger missing (or the trigger disabled: writes went
  unlogged) before the swap, the table replaced by
  another plain table, or the partitioning layout changed (strategy, key, interval, time zone,
  list values, hash modulus, sub-partitions, DEFAULT): restart. The original has every row, so
  what was built is discarded and the conversion starts again from the first row.
- the table dropped, or already partitioned by someone else, before the swap: what the
  conversion built that holds no rows is removed and the record forgotten; if the shadow (the
  only copy of rows the conversion made) is still there, a person decides (blocked).
- the record lost while the change capture is still in place: the capture is removed and the
  conversion prepared again (refused, with what to do, if the shadow table is still there); with
  convert.enabled off, the capture is removed and a shadow left is reported (blocked).
- convert.enabled turned off (or the convert section removed) before the swap: the conversion
  is cancelled: capture, log and shadow dropped, the original untouched. After the swap nothing
  is undone and the original is not dropped.
- the copy found different from the original at the swap (a write the capture missed): restart,
  twice at most; then blocked (VerificationFailed), since something keeps writing unseen.
- suspend or dryRun: nothing changes (a dryRun before the start shows the plan).
- dropOriginal turned on after the swap: the original is dropped on the next run. Turned off
  after done: nothing (a dropped table does not come back).
- the original dropped by someone else after the swap: recorded, done.
- batchMemory changed: the next batch uses the new size.
- premake, retention, template, schedule changed: nothing for the conversion; the maintenance
  path applies them after the swap.
- a table plain again after swapped or done (recreated, or renamed back): a new conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..catalog.conversion import ConversionFacts
from ..models.partition import PartitionPolicySpec
from .partition_convert import layout_fingerprint, original_name, shadow_name


class Phase(StrEnum):
    COPYING = "copy"
    CATCHING_UP = "catchup"
    SWAPPED = "swapped"
    DONE = "done"


class Action(StrEnum):
    NONE = "none"  # nothing for the conversion to do: the maintenance path follows
    PREPARE = "prepare"
    RESTART = "restart"
    COPY = "copy"
    CATCH_UP = "catch_up"
    CLEAN = "clean"  # change capture left behind by an earlier version after its swap
    DROP_ORIGINAL = "drop_original"
    ORIGINAL_GONE = "original_gone"
    CANCEL = "cancel"
    ABANDON = "abandon"
    PAUSE = "pause"
    BLOCK = "block"


IN_PROGRESS = frozenset({Phase.COPYING, Phase.CATCHING_UP})
COMPLETE = frozenset({Phase.SWAPPED, Phase.DONE})
TERMINAL = frozenset({Phase.DONE})
NO_RECORD = None

# Action -> (phases it starts from, phases it may end in). None = no record.
TRANSITIONS: dict[Action, tuple[frozenset[Phase | None], frozenset[Phase | None]]] = {
    Action.PREPARE: (frozenset({None}), frozenset({Phase.COPYING})),
    Action.RESTART: (frozenset({None, *IN_PROGRESS, *COMPLETE}), frozenset({Phase.COPYING})),
    Action.COPY: (frozenset({Phase.COPYING}), frozenset({Phase.COPYING, Phase.CATCHING_UP})),
    Action.CATCH_UP: (frozenset({Phase.CATCHING_UP}), frozenset({Phase.CATCHING_UP, Phase.SWAPPED})),
    Action.CLEAN: (frozenset(COMPLETE), frozenset(COMPLETE)),
    Action.DROP_ORIGINAL: (frozenset({Phase.SWAPPED}), frozenset({Phase.DONE})),
    Action.ORIGINAL_GONE: (frozenset({Phase.SWAPPED}), frozenset({Phase.DONE})),
    Action.CANCEL: (frozenset(IN_PROGRESS), frozenset({None})),
    Action.ABANDON: (frozenset({None, *IN_PROGRESS}), frozenset({None})),
}
AFTER_SWAP = frozenset({Action.CLEAN, Action.DROP_ORIGINAL, Action.ORIGINAL_GONE})
# Actions that change the database: none of them runs while the resource is suspended or in dryRun.
CHANGING = frozenset(TRANSITIONS)


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str = ""
    reason: str = ""  # the Degraded reason, for BLOCK
    drop_shadow: bool = False  # RESTART: the shadow is a partial copy of this conversion


def phase_of(text: str | None) -> Phase | None:
    return Phase(text) if text is not None else None


def decide(facts: ConversionFacts, spec: PartitionPolicySpec) -> Decision:
    d = _decide(facts, spec)
    if d.action in CHANGING and (spec.suspend or spec.dry_run):
        if d.action is Action.PREPARE and not spec.suspend:
            return d  # a dryRun before the start shows the statements it would run
        if d.action in AFTER_SWAP:
            return Decision(Action.NONE)  # the table is partitioned: the maintenance path reports suspend/dryRun
        return Decision(Action.PAUSE, f"{'suspended' if spec.suspend else 'dryRun'}: would {d.action.value}"
                                      + (f" ({d.why})" if d.why else ""))
    return d


def _decide(facts: ConversionFacts, spec: PartitionPolicySpec) -> Decision:
    t = spec.table
    enabled = spec.convert is not None and spec.convert.enabled
    rec = facts.record
    if rec is None:
        if facts.table_relkind != "r":
            return Decision(Action.NONE)
        capture = facts.trigger_exists or facts.logs or facts.functions
        if enabled:
            if capture:
                return Decision(Action.RESTART, "the change capture of an earlier conversion is left without its "
                                "record")
            return Decision(Action.PREPARE)
        if capture:
            return Decision(Action.ABANDON, "the change capture of an earlier conversion is left without its record")
        if facts.shadow_exists:
            return Decision(Action.BLOCK, f"{t.schema_}.{shadow_name(t.name)}, a partial copy made by an earlier "
                            f"conversion of {t.qualified}, is left; drop it (DROP TABLE {t.schema_}."
                            f"{shadow_name(t.name)}) or set convert.enabled to convert again",
                            reason="ConversionLeftover")
        return Decision(Action.NONE)
    if rec.phase not in set(Phase):
        return Decision(Action.BLOCK, f"pgcurator.conversions records an unknown phase {rec.phase!r} for "
                        f"{t.qualified}; delete that row to start the conversion again",
                        reason="ConversionStateUnknown")
    phase = Phase(rec.phase)
    if phase in IN_PROGRESS:
        return _in_progress(facts, spec, enabled)
    if facts.table_relkind == "r":
        if enabled:
            return Decision(Action.RESTART, f"{t.qualified} is a plain table again after a finished conversion")
        return Decision(Action.NONE)
    if rec.oid is not None and (rec.oid in facts.logs or rec.oid in facts.functions):
        return Decision(Action.CLEAN, "the change capture of the finished conversion is still there")
    if phase is Phase.SWAPPED:
        if not facts.original_exists:
            return Decision(Action.ORIGINAL_GONE, f"{original_name(t.name)} was dropped by someone else")
        if enabled and spec.convert is not None and spec.convert.drop_original:
            return Decision(Action.DROP_ORIGINAL)
    return Decision(Action.NONE)


def _in_progress(facts: ConversionFacts, spec: PartitionPolicySpec, enabled: bool) -> Decision:
    t = spec.table
    rec = facts.record
    assert rec is not None
    shadow = shadow_name(t.name)
    if facts.table_relkind != "r":
        what = ("was dropped" if facts.table_relkind is None
                else "is no longer a plain table (someone converted or replaced it)")
        if facts.shadow_exists:
            return Decision(
                Action.BLOCK,
                f"{t.qualified} {what} during its conversion; the rows copied so far are in {t.schema_}.{shadow}. "
                f"Keep what you need from it, then DROP TABLE {t.schema_}.{shadow}; the next run clears the "
                "rest of the conversion",
                reason="ConversionSourceMissing" if facts.table_relkind is None else "ConversionConflict")
        return Decision(Action.ABANDON, f"{t.qualified} {what} during its conversion")
    # After the checks above: cancelling drops the shadow, which must not be the last copy of any row.
    if not enabled:
        return Decision(Action.CANCEL, "convert.enabled is off: the conversion is cancelled, the original untouched")
    if rec.oid is not None and facts.table_oid != rec.oid:
        return Decision(Action.RESTART, f"{t.qualified} was replaced by another table during its conversion",
                        drop_shadow=True)
    missing = [name for name, present in (
        (f"the shadow table {shadow}", facts.shadow_exists),
        ("the capture trigger", facts.trigger_exists),
        ("the change log", rec.oid is None or rec.oid in facts.logs),
        ("the capture function", rec.oid is None or rec.oid in facts.functions)) if not present]
    if missing:
        return Decision(Action.RESTART, f"{', '.join(missing)} went missing during the conversion",
                        drop_shadow=True)
    if facts.trigger_disabled:
        return Decision(Action.RESTART, "the capture trigger was disabled during the conversion: writes may have "
                        "gone unlogged", drop_shadow=True)
    layout = rec.details.get("layout")
    if layout is not None and layout != layout_fingerprint(spec):
        return Decision(Action.RESTART, "the partitioning layout changed during the conversion", drop_shadow=True)
    if rec.phase == Phase.COPYING:
        return Decision(Action.COPY)
    return Decision(Action.CATCH_UP)
