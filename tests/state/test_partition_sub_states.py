"""Range PartitionPolicy with and without a second level (on another column or on its own),
in generated states, run twice with `now` (or the highest key) moved on in between; every
invariant of partition_checks.py after each run."""

from __future__ import annotations

import pytest
from hypothesis import given

from . import exploring
from .exploring import explore_settings
from .harness import Harness
from .partition_checks import KIND, reconcile_and_check
from .range_sub_states import RangeSubCase, build_range_sub, raise_highest_key, range_sub_cases
from .tally import bump, distinct

pytestmark = pytest.mark.integration


def run_range_sub(h: Harness, case: RangeSubCase) -> None:
    async def go() -> None:
        await build_range_sub(h, case)
        distinct(KIND, "states explored", case.label())
        bump(KIND, f"range sub-level cases: {case.sub}")
        b = case.base
        await reconcile_and_check(h, b, b.spec, b.now)
        if b.key_type == "bigint":
            await raise_highest_key(h, case)
        later = b.now + case.later
        bump(KIND, "second runs later")
        await reconcile_and_check(h, b, b.spec, later)

    h.run(go(), timeout=240)


@explore_settings(100)
@given(case=range_sub_cases())
def test_range_partition_policy_with_and_without_a_sub_level_in_every_state(harness: Harness, case: RangeSubCase) -> None:
    exploring.explore(run_range_sub, KIND, harness, case)
