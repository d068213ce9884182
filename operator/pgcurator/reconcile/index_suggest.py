"""IndexPolicy `suggestions`: the database's index advice (reconcile.advice) for the one table.

The advice itself is shared with the DatabaseMonitor: candidates from filters, joins, sorts, JSON
operators and constant tests, each checked on its own with the planner (HypoPG when installed,
else a small random sample of the columns the workload names), with the existing indexes
counted. Suggestions are reported, never built: declare the ones you want. A candidate that
could not be checked is listed under `failures`; a missing privilege under `missingPrivileges`.
"""

from __future__ import annotations

import logging
from typing import Any

from ..catalog.indexes import IndexObservation
from ..limits import EVENT_MESSAGE
from ..models.index import IndexPolicySpec
from .advice import AdviceOptions, advise
from .context import ReconcileContext
from .outcome import Event

log = logging.getLogger("pgcurator")


async def suggestions_status(ctx: ReconcileContext, spec: IndexPolicySpec, obs: IndexObservation) -> dict[str, Any]:
    t = spec.table
    report = await advise(ctx.conn, AdviceOptions(
        tables=((t.schema_, t.name),), min_calls=spec.suggestions.min_calls,
        max_suggestions=spec.suggestions.max_suggestions))
    out = report.to_status(max_items=spec.suggestions.max_suggestions)
    for entry in out["items"] + out["alreadyCovered"] + out["failures"]:
        entry.pop("table", None)  # one table: said by the policy
    for f in report.failures:
        log.warning("index suggestion for %s could not be checked: %s: %s", t.qualified,
                    f.candidate.definition(concurrently=False), f.error)
    if report.failures or report.privileges:
        # The declared indexes are fine (Ready stays true) but the advice is incomplete: say so
        # where people look, not only on the status.
        parts = [f"{len(report.failures)} candidate(s) could not be checked, first: "
                 f"{report.failures[0].candidate.definition(concurrently=False)}: "
                 f"{report.failures[0].error.splitlines()[0]}"] if report.failures else []
        parts += [f"missing {p['privilege']}: {p['grant']}" for p in report.privileges]
        await ctx.event(Event("Warning", "SuggestionsIncomplete", "; ".join(parts)[:EVENT_MESSAGE]))
    return out
