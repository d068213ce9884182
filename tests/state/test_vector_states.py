"""VectorIndex against generated states x specs (table absent / wrong dimensions / with rows and NULLs;
index absent, INVALID, built with other parameters or another method under the declared name, a
leftover of an interrupted swap; database-level settings changed)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from . import exploring
from .exploring import explore_settings
from .harness import Harness
from .tally import distinct
from .vector_states import KIND, VectorCase, build_vector_case, step_vector, vector_cases

pytestmark = pytest.mark.integration


def run_vector_case(h: Harness, case: VectorCase) -> None:
    async def go() -> None:
        await build_vector_case(h, case)
        distinct(KIND, "states explored", dataclasses.asdict(case))
        await step_vector(h, case)

    h.run(go(), timeout=180)


@explore_settings(15)
@given(case=vector_cases())
def test_vector_index_in_every_state(harness: Harness, case: VectorCase) -> None:
    exploring.explore(run_vector_case, KIND, harness, case)
