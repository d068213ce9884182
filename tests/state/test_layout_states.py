"""PartitionPolicy list and hash layouts, with and without a second level, in generated states."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import exploring
from .exploring import explore_settings
from .harness import Harness
from .layout_states import KIND, LayoutCase, build_layout, layout_cases, step_layout
from .tally import distinct

pytestmark = pytest.mark.integration


def run_layout(h: Harness, case: LayoutCase) -> None:
    async def go() -> None:
        await build_layout(h, case)
        distinct(KIND, "states explored", dataclasses.asdict(case))
        await step_layout(h, case)

    h.run(go(), timeout=180)


@explore_settings(40)
@given(case=layout_cases())
def test_list_and_hash_layouts_in_every_state(harness: Harness, case: LayoutCase) -> None:
    exploring.explore(run_layout, KIND, harness, case)
