"""The named limits are the ones applied: a condition message is cut at CONDITION_MESSAGE."""

from __future__ import annotations

from pgcurator.limits import CONDITION_MESSAGE, EVENT_MESSAGE, K8S_NAME
from pgcurator.reconcile.outcome import Condition
from pgcurator.runtime import merge_conditions


def test_condition_message_is_cut_at_the_named_limit() -> None:
    [c] = merge_conditions([], [Condition("Ready", False, "Failed", "x" * (CONDITION_MESSAGE + 50))], 1)
    assert len(c["message"]) == CONDITION_MESSAGE


def test_kubernetes_limits_are_the_api_servers() -> None:
    assert EVENT_MESSAGE == 1024 and K8S_NAME == 63
