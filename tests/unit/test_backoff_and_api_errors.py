"""The one backoff formula, and the one translation of Kubernetes-client errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from pgcurator.backoff import Backoff, backoff_delay
from pgcurator.errors import ApiError, ApiUnavailable
from pgcurator.kube import translate

from .kube_faults import FAULTS


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, base=2, cap=20) for n in range(1, 7)] == [2, 4, 8, 16, 20, 20]
    b = Backoff(1, 5)
    assert [b.failure() for _ in range(5)] == [1, 2, 4, 5, 5]
    b.success()
    assert b.failure() == 1


@given(attempt=st.integers(min_value=-5, max_value=10**9), base=st.floats(0.001, 100), cap=st.floats(0.001, 3600))
def test_backoff_is_finite_and_bounded_for_any_attempt(attempt: int, base: float, cap: float) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, jitter=True)
    assert 0 < delay < 1.5 * max(cap, base) + 1e-9


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_client_failure_becomes_ours_and_keeps_its_cause(name: str) -> None:
    cause = FAULTS[name]()
    ours = translate(cause, "reading Secret ns/db")
    assert isinstance(ours, ApiUnavailable | ApiError)
    assert ours.transient and ours.message.startswith("reading Secret ns/db")


@pytest.mark.parametrize(("status", "kind", "reason"), [
    (403, ApiError, "ApiForbidden"), (401, ApiError, "ApiUnauthorized"), (422, ApiError, "ApiRejected"),
    (409, ApiError, "ApiConflict"), (429, ApiUnavailable, "ApiUnreachable"), (503, ApiUnavailable, "ApiUnreachable"),
    (0, ApiUnavailable, "ApiUnreachable"),
])
def test_statuses_get_typed_reasons(status: int, kind: type, reason: str) -> None:
    exc = ApiException(status=status, reason="x")
    exc.body = '{"kind": "Status", "message": "secrets \\"db\\" is forbidden"}'
    ours = translate(exc, "reading Secret ns/db")
    assert isinstance(ours, kind) and ours.reason == reason
    if status:
        assert "is forbidden" in ours.message and str(status) in ours.message


def test_programming_errors_are_not_translated() -> None:
    assert translate(KeyError("spec"), "x") is None
