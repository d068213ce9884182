"""IndexPolicy against generated states x specs (plain and partitioned tables; indexes absent,
INVALID, differently defined, declared by another resource; database-level settings changed)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import exploring, known
from .exploring import explore_settings
from .harness import Harness
from .index_states import IndexCase, build_index_case, index_cases, step_index
from .invariants import Broken
from .tally import distinct

pytestmark = pytest.mark.integration
KIND = "IndexPolicy"


def run_index_case(h: Harness, case: IndexCase) -> None:
    async def go() -> None:
        await build_index_case(h, case)
        distinct(KIND, "states explored", dataclasses.asdict(case))
        await step_index(h, case)

    h.run(go(), timeout=180)


def explore_index(h: Harness, case: IndexCase) -> None:
    def prune_only(b: Broken) -> known.Known | None:
        if case.prune and case.other_resource and not exploring.breaks(
                run_index_case, h, dataclasses.replace(case, prune=False), b.invariant):
            return known.PRUNE_OTHERS
        return None

    exploring.explore(run_index_case, KIND, h, case, also=prune_only)


@explore_settings(25)
@given(case=index_cases())
def test_index_policy_in_every_state(harness: Harness, case: IndexCase) -> None:
    explore_index(harness, case)
