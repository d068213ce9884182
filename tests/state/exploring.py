"""What every explorer does with a broken invariant: excuse a known defect (counted in the
figures), or find out by experiment whether a database-level setting alone causes it, and say so."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

from . import known
from .harness import Harness
from .invariants import Broken
from .tally import bump, examples

Run = Callable[[Harness, Any], None]


def explore_settings(quick: int) -> settings:
    return settings(max_examples=examples(quick), deadline=None, print_blob=True, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def breaks(run: Run, h: Harness, case: Any, invariant: str) -> bool:
    """Does `case` break `invariant`? (Another invariant breaking does not count: the variant is
    asked about one symptom only.)"""
    try:
        run(h, case)
    except Broken as b:
        return b.invariant == invariant
    return False


def explore(run: Run, kind: str, h: Harness, case: Any,
            also: Callable[[Broken], known.Known | None] | None = None) -> None:
    """Run the case; a broken invariant fails the test unless it is a known defect."""
    try:
        run(h, case)
    except Broken as b:
        k = known.by_symptom(b)
        if k is None and case.settings and not breaks(run, h, dataclasses.replace(case, settings={}), b.invariant):
            culprits = [n for n, v in case.settings.items()
                        if breaks(run, h, dataclasses.replace(case, settings={n: v}), b.invariant)]
            raise Broken(b.invariant, f"{b.detail} [only with ALTER DATABASE SET "
                         f"{ {n: case.settings[n] for n in culprits} or case.settings}]", b.result) from b
        if k is None and also is not None:
            k = also(b)
        if k is None:
            raise
        bump(kind, f"known defects hit: {k.key}")
