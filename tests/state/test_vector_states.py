"""VectorIndex against generated states x specs (table absent / wrong dimensions / with rows and NULLs;
index absent, INVALID, built with other parameters or another method under the declared name, a
leftover of an interrupted swap; database-level settings changed)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import known
from .harness import Harness
from .invariants import Broken
from .tally import bump, distinct
from .test_partition_states import explore_settings
from .vector_states import KIND, VectorCase, build_vector_case, step_vector, vector_cases

pytestmark = pytest.mark.integration


def run_vector_case(h: Harness, case: VectorCase) -> None:
    async def go() -> None:
        await build_vector_case(h, case)
        distinct(KIND, "states explored", dataclasses.asdict(case))
        await step_vector(h, case)

    h.run(go(), timeout=180)


def _breaks(h: Harness, case: VectorCase, invariant: str) -> bool:
    try:
        run_vector_case(h, case)
    except Broken as b:
        return b.invariant == invariant
    return False


@explore_settings(15)
@given(case=vector_cases())
def test_vector_index_in_every_state(harness: Harness, case: VectorCase) -> None:
    try:
        run_vector_case(harness, case)
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
