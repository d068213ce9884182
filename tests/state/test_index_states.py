"""IndexPolicy against generated states x specs (plain and partitioned tables; indexes absent,
INVALID, differently defined, declared by another resource; database-level settings changed)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import known
from .harness import Harness
from .index_states import IndexCase, build_index_case, index_cases, step_index
from .invariants import Broken
from .tally import bump, distinct
from .test_partition_states import explore_settings

pytestmark = pytest.mark.integration
KIND = "IndexPolicy"


def run_index_case(h: Harness, case: IndexCase) -> None:
    async def go() -> None:
        await build_index_case(h, case)
        distinct(KIND, "states explored", dataclasses.asdict(case))
        await step_index(h, case)

    h.run(go(), timeout=180)


def _breaks(h: Harness, case: IndexCase, invariant: str) -> bool:
    try:
        run_index_case(h, case)
    except Broken as b:
        return b.invariant == invariant
    return False


def explore_index(h: Harness, case: IndexCase) -> None:
    try:
        run_index_case(h, case)
    except Broken as b:
        k = known.by_symptom(b)
        if k is None and case.settings and not _breaks(h, dataclasses.replace(case, settings={}), b.invariant):
            culprits = [n for n, v in case.settings.items()
                        if _breaks(h, dataclasses.replace(case, settings={n: v}), b.invariant)]
            raise Broken(b.invariant, f"{b.detail} [only with ALTER DATABASE SET "
                         f"{ {n: case.settings[n] for n in culprits} or case.settings}]",
                         b.result) from b
        if k is None and case.prune and case.other_resource and not _breaks(
                h, dataclasses.replace(case, prune=False), b.invariant):
            k = known.PRUNE_OTHERS
        if k is None:
            raise
        bump(KIND, f"known defects hit: {k.key}")


@explore_settings(25)
@given(case=index_cases())
def test_index_policy_in_every_state(harness: Harness, case: IndexCase) -> None:
    explore_index(harness, case)
