"""PartitionPolicy against generated database states x generated specs (issue 12, "a suite that
explores states"). Quick form by default; PGCURATOR_STATE_FULL=1 for the long form."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings

from . import known
from .harness import Harness
from .invariants import Broken, same_plan
from .partition_checks import KIND, reconcile_and_check
from .partition_states import PartitionCase, build, partition_cases
from .tally import bump, distinct, examples

pytestmark = pytest.mark.integration

def explore_settings(quick: int) -> settings:
    return settings(max_examples=examples(quick), deadline=None, print_blob=True, derandomize=False,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.data_too_large, HealthCheck.filter_too_much])



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


def _breaks(h: Harness, case: PartitionCase, invariant: str) -> bool:
    """Does `case` break `invariant`? (Another invariant breaking does not count: the variant is
    asked about one symptom only.)"""
    try:
        run_case(h, case)
    except Broken as b:
        return b.invariant == invariant
    return False


def attribute(h: Harness, case: PartitionCase, b: Broken) -> known.Known | None:
    """Is this failure one already being fixed elsewhere? Decided by experiment where possible."""
    k = known.by_symptom(b)
    if k is not None:
        return k
    if case.settings and not _breaks(h, dataclasses.replace(case, settings={}), b.invariant):
        culprits = [n for n, v in case.settings.items()
                    if _breaks(h, dataclasses.replace(case, settings={n: v}), b.invariant)]
        raise Broken(b.invariant, f"{b.detail} [only with ALTER DATABASE SET "
                     f"{ {n: case.settings[n] for n in culprits} or case.settings}]", b.result) from b
    return None


def explore(h: Harness, case: PartitionCase) -> None:
    try:
        run_case(h, case)
    except Broken as b:
        k = attribute(h, case, b)
        if k is None:
            raise
        bump(KIND, f"known defects hit: {k.key}")


@explore_settings(150)
@given(case=partition_cases())
def test_partition_policy_in_every_state(harness: Harness, case: PartitionCase) -> None:
    explore(harness, case)


@explore_settings(6)
@given(case=partition_cases(big=True))
def test_partition_policy_with_extreme_specs(harness: Harness, case: PartitionCase) -> None:
    explore(harness, case)
