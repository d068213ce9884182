"""The conversion's decision, over every combination of what it can observe (pure): it always
returns a transition allowed from the recorded phase, never raises, and a block carries a reason."""

from __future__ import annotations

import itertools

from pgcurator.catalog.conversion import ConversionFacts, ConversionRecord
from pgcurator.models.partition import PartitionPolicySpec
from pgcurator.planner.conversion_machine import TRANSITIONS, Action, Phase, decide, phase_of
from pgcurator.planner.partition_convert import layout_fingerprint

from .factories import spec

OID = 4242


def _record(phase: str, layout: str | None) -> ConversionRecord:
    details = {"keys": ["id"], "types": ["bigint"], "oid": OID, **({"layout": layout} if layout else {})}
    return ConversionRecord(phase=phase, log_table=f"conversion_log_{OID}", last_key=None, rows_copied=0,
                            rows_total=0, batch_rows=1000, details=details)


def _specs() -> list[tuple[str, PartitionPolicySpec]]:
    out = []
    for enabled, drop, suspend, dry in itertools.product((True, False), repeat=4):
        out.append((f"enabled={enabled} drop={drop} suspend={suspend} dry={dry}",
                    spec(convert={"enabled": enabled, "dropOriginal": drop}, suspend=suspend, dryRun=dry)))
    out.append(("no convert section", spec()))
    return out


def test_every_observable_state_gets_an_allowed_transition() -> None:
    base = spec(convert={"enabled": True})
    layouts = (layout_fingerprint(base), "another layout", None)
    seen: dict[Action, int] = {}
    states = 0
    for (label, s), relkind, phase, layout, same_oid, shadow, original, trigger, off, log, fn in itertools.product(
            _specs(), (None, "r", "p", "v"), (None, "copy", "catchup", "swapped", "done", "bogus"), layouts,
            (True, False), *[(True, False)] * 6):
        if phase is None and layout != layouts[0]:
            continue
        facts = ConversionFacts(
            table_oid=(OID if same_oid else OID + 1) if relkind else None, table_relkind=relkind,
            record=_record(phase, layout) if phase else None, shadow_exists=shadow, original_exists=original,
            trigger_exists=trigger and relkind is not None, trigger_disabled=trigger and off and relkind is not None,
            logs=[OID] if log else [], functions=[OID] if fn else [])
        d = decide(facts, s)
        states += 1
        seen[d.action] = seen.get(d.action, 0) + 1
        where = f"{label}, {facts}"
        if d.action is Action.BLOCK:
            assert d.reason and d.why, where
        if d.action in TRANSITIONS:
            assert phase_of(phase) in TRANSITIONS[d.action][0], (d, where)
            assert not (s.suspend or s.dry_run) or d.action is Action.PREPARE, (d, where)
        if phase == "done" and relkind == "p":
            assert d.action in (Action.NONE, Action.CLEAN), (d, where)  # terminal: never back to work
        if phase in ("copy", "catchup") and relkind == "p" and shadow:
            assert d.action is Action.BLOCK, (d, where)  # never drop what may be the last copy of rows
    assert states > 10_000 and set(seen) == set(Action), seen


def test_the_stored_phase_values_do_not_change() -> None:
    # Conversions in flight across an upgrade resume from these values.
    assert [p.value for p in Phase] == ["copy", "catchup", "swapped", "done"]


def test_premake_and_template_changes_do_not_restart_a_conversion() -> None:
    a = spec(convert={"enabled": True}, range={"premake": 1})
    b = spec(convert={"enabled": True}, range={"premake": 9}, template={"tablespace": "fast"})
    assert layout_fingerprint(a) == layout_fingerprint(b)
    assert layout_fingerprint(a) != layout_fingerprint(spec(convert={"enabled": True}, range={"interval": "1 day"}))
