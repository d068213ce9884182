"""The state-space suite (issue 12): generated database states x generated specs, reconciled through
the operator's own entry point (harness.py) against the session's embedded PostgreSQL, with the
invariants of invariants.py checked after every step.

Runs in the default `pytest` (quick form, about two minutes). The long form explores about twenty
times as many examples: `PGCURATOR_STATE_FULL=1 pytest tests/state`. A failure prints the shrunk
state and spec and a `@reproduce_failure` blob; known.py lists the defects being fixed elsewhere
(each pinned by a strict xfail in test_known_defects.py or test_locks.py)."""
