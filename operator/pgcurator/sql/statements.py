"""What a planner produces: ordered steps, each one or more statements."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One idempotent unit of change.

    `transactional` steps run their statements in one transaction; the others (anything
    CONCURRENTLY) run one statement at a time outside a transaction.
    """

    kind: str
    target: str
    statements: tuple[str, ...]
    transactional: bool = True
    description: str = ""
    # Steps sharing a non-empty group depend on each other: after one fails, the rest of
    # its group is skipped (other groups still run).
    group: str = ""
    # Run the (single) statement again and again, each time in its own transaction, until it
    # reports zero rows: bounded batches of a data move.
    repeat_until_zero: bool = False
    # Run in one transaction when the step fails or cannot get its lock: puts back what earlier
    # steps of the group left half-way (e.g. moved rows in a table not attached yet).
    undo: tuple[str, ...] = ()


@dataclass(frozen=True)
class Blocked:
    """A change the planner will not attempt. `reason` is the condition reason, chosen by the
    code path that decided it (never derived from the message)."""

    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    # Things the planner saw but will not change, for the status (e.g. a range already
    # covered by a wider legacy partition).
    notes: list[str] = field(default_factory=list)
    # Changes the planner will not attempt, with the reason (e.g. rows in the DEFAULT partition
    # inside a range to create): reported as Degraded while every other step still runs.
    blocked: list[Blocked] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps

    def statements(self) -> list[str]:
        return [s for step in self.steps for s in step.statements]
