"""PartitionPolicy against generated database states x generated specs (issue 12, "a suite that
explores states"). Quick form by default; PGCURATOR_STATE_FULL=1 for the long form."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given

from . import exploring
from .exploring import explore_settings
from .harness import Harness
from .invariants import same_plan
from .partition_checks import KIND, OTHER, reconcile_and_check
from .partition_states import Part, PartitionCase, build, partition_cases
from .tally import distinct

pytestmark = pytest.mark.integration

def run_case(h: Harness, case: PartitionCase) -> None:
    async def go() -> None:
        await build(h, case)
        distinct(KIND, "states explored", case.label())
        step = await reconcile_and_check(h, case, case.spec, case.now)
        if case.settings:
            # The database's own defaults never change what the operator plans: the same state
            # without them gives the same dry run.
            await build(h, dataclasses.replace(case, settings={}))
            if case.other_policy is not None:  # the same manager of the table, as in the step
                await h.apply(KIND, case.other_policy, now=case.now, name=OTHER)
            plain = await h.apply(KIND, {**case.spec, "dryRun": True}, now=case.now)
            same_plan(KIND, step.dry, plain, case.settings)

    h.run(go(), timeout=180)


def explore(h: Harness, case: PartitionCase) -> None:
    exploring.explore(run_case, KIND, h, case)


@explore_settings(150)
@given(case=partition_cases())
def test_partition_policy_in_every_state(harness: Harness, case: PartitionCase) -> None:
    explore(harness, case)


@explore_settings(6)
@given(case=partition_cases(big=True))
def test_partition_policy_with_extreme_specs(harness: Harness, case: PartitionCase) -> None:
    explore(harness, case)


def test_a_second_partition_policy_on_the_table_changes_nothing(harness: Harness) -> None:
    """The explorer's own check on one fixed state: months of 2026 with rows, a policy keeping 12
    months manages the table, a second one keeping 1 month (and premaking more) is refused."""
    def policy(keep: int, premake: int) -> dict[str, object]:
        return {"table": {"schema": "st", "name": "events"},
                "range": {"column": "k", "interval": "1 month", "timeZone": "UTC", "premake": premake},
                "retention": {"keep": keep, "action": "drop"}, "timeouts": {"lockTimeout": "2s", "lockRetries": 1}}

    mine = policy(1, 4)
    parts = [Part(datetime(2026, m, 1, tzinfo=UTC), datetime(2026, m + 1, 1, tzinfo=UTC), "ours", 1)
             for m in range(1, 11)]
    case = PartitionCase("events", "timestamptz", mine, datetime(2026, 11, 22, 10, 0, tzinfo=UTC), "partitioned",
                         mine["range"], parts, metadata="current", other_policy=policy(12, 2))  # type: ignore[arg-type]
    explore(harness, case)
