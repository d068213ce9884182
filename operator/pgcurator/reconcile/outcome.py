"""What one reconcile produced: a status fragment, conditions and when to run again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..db.executor import StepResult
from ..limits import SHOWN_ITEMS


@dataclass
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # Seconds until the next run; None = the resource's own schedule.
    requeue_after: float | None = None

    @classmethod
    def ready(cls, reason: str, message: str, status: dict[str, Any] | None = None) -> Outcome:
        return cls(
            status=status or {},
            conditions=[
                Condition("Ready", True, reason, message),
                Condition("Progressing", False, reason, ""),
                Condition("Degraded", False, reason, ""),
            ],
        )

    @classmethod
    def progressing(cls, reason: str, message: str, status: dict[str, Any] | None = None,
                    requeue_after: float | None = None) -> Outcome:
        return cls(
            status=status or {},
            conditions=[
                Condition("Ready", False, reason, message),
                Condition("Progressing", True, reason, message),
                Condition("Degraded", False, reason, ""),
            ],
            requeue_after=requeue_after,
        )

    @classmethod
    def degraded(cls, reason: str, message: str, status: dict[str, Any] | None = None,
                 requeue_after: float | None = None) -> Outcome:
        return cls(
            status=status or {},
            conditions=[
                Condition("Ready", False, reason, message),
                Condition("Progressing", False, reason, ""),
                Condition("Degraded", True, reason, message),
            ],
            events=[Event("Warning", reason, message)],
            requeue_after=requeue_after,
        )


def step_event(sr: StepResult) -> Event:
    """The Event for one step run: every kind reports its DDL the same way."""
    stmts = "; ".join(s.statement for s in sr.statements[:SHOWN_ITEMS]) or "; ".join(sr.step.statements)
    if sr.outcome == "ok":
        return Event("Normal", "DDLApplied", f"{sr.step.kind} {sr.step.target} in {sr.duration_ms:.0f} ms: {stmts}")
    if sr.outcome == "lock_timeout":
        return Event("Warning", "WaitingForLock", f"{sr.step.kind} {sr.step.target}: {sr.error}")
    if sr.outcome == "skipped":
        return Event("Warning", "DDLSkipped", f"{sr.step.kind} {sr.step.target}: {sr.error}")
    return Event("Warning", "DDLFailed", f"{sr.step.kind} {sr.step.target} failed: {sr.error}; statements: {stmts}")
