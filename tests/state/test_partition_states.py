"""PartitionPolicy against generated database states x generated specs (issue 12, "a suite that
explores states"). Quick form by default; PGCURATOR_STATE_FULL=1 for the long form."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import exploring
from .exploring import explore_settings
from .harness import Harness
from .invariants import same_plan
from .partition_checks import KIND, reconcile_and_check
from .partition_states import PartitionCase, build, partition_cases
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
