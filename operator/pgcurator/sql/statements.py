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


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    # Things the planner saw but will not change, for the status (e.g. a range already
    # covered by a wider legacy partition).
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps

    def statements(self) -> list[str]:
        return [s for step in self.steps for s in step.statements]
