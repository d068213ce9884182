"""PartitionPolicy list and hash layouts, with and without a second level, in generated states."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import known
from .harness import Harness
from .invariants import Broken
from .layout_states import KIND, LayoutCase, build_layout, layout_cases, step_layout
from .tally import bump, distinct
from .test_partition_states import explore_settings

pytestmark = pytest.mark.integration


def run_layout(h: Harness, case: LayoutCase) -> None:
    async def go() -> None:
        await build_layout(h, case)
        distinct(KIND, "states explored", dataclasses.asdict(case))
        await step_layout(h, case)

    h.run(go(), timeout=180)


def _breaks(h: Harness, case: LayoutCase, invariant: str) -> bool:
    try:
        run_layout(h, case)
    except Broken as b:
        return b.invariant == invariant
    return False


@explore_settings(40)
@given(case=layout_cases())
def test_list_and_hash_layouts_in_every_state(harness: Harness, case: LayoutCase) -> None:
    try:
        run_layout(harness, case)
    except Broken as b:
        k = known.by_symptom(b)
        if k is None and case.settings and not _breaks(harness, dataclasses.replace(case, settings={}), b.invariant):
            culprits = [n for n, v in case.settings.items()
                        if _breaks(harness, dataclasses.replace(case, settings={n: v}), b.invariant)]
            raise Broken(b.invariant, f"{b.detail} [only with ALTER DATABASE SET "
                         f"{ {n: case.settings[n] for n in culprits} or case.settings}]",
                         b.result) from b
        if k is None:
            raise
        bump(KIND, f"known defects hit: {k.key}")
