"""Another session holds a lock while a reconcile runs: the reconcile must give up within its
lockTimeout on every statement (reads included) and report WaitingForLock, or succeed.

Measured, not timed: a watchdog polls pg_stat_activity for the operator's backends waiting on a
heavyweight lock; one that has waited longer than lockTimeout plus a margin is a violation. The
watchdog then ends the blocking transaction, so a violation fails the test at once instead of
hanging it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .harness import Harness, Result
from .invariants import LOCK_MARGIN_S, Broken

LOCK_MODES = ["ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
              "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"]

_WAITING = """
SELECT pid, extract(epoch FROM clock_timestamp() - query_start) AS waited, left(query, 300) AS query
  FROM pg_catalog.pg_stat_activity
 WHERE datname = current_database() AND application_name = 'pgcurator'
   AND wait_event_type = 'Lock' AND state = 'active'
"""


@dataclass
class Watch:
    violations: list[str] = field(default_factory=list)
    longest_wait: float = 0.0
    polls: int = 0


async def hold_lock(h: Harness, relation: str, mode: str) -> asyncpg.Connection:
    """A session of 'the application' holding `mode` on `relation` until it is closed."""
    blocker = await h.connect(True, application_name="state-suite-blocker")
    await blocker.execute("BEGIN")
    await blocker.execute(f"LOCK TABLE {relation} IN {mode} MODE")
    return blocker


async def reconcile_under_lock(h: Harness, kind: str, spec: dict[str, Any], blocker: asyncpg.Connection,
                               lock_timeout_s: float, limit_s: float = 120, **kw: Any) -> tuple[Result, Watch]:
    """Run the reconcile while `blocker` holds its lock; release it only if the operator overstays."""
    watch = Watch()
    task = asyncio.ensure_future(h.apply(kind, spec, **kw))
    observer = await h.connect(True, application_name="state-suite-watchdog")
    try:
        async with asyncio.timeout(limit_s):
            while not task.done():
                watch.polls += 1
                for r in await observer.fetch(_WAITING):
                    watch.longest_wait = max(watch.longest_wait, float(r["waited"]))
                    if float(r["waited"]) > lock_timeout_s + LOCK_MARGIN_S and not blocker.is_closed():
                        watch.violations.append(f"waited {float(r['waited']):.1f} s on a lock (lockTimeout "
                                                f"{lock_timeout_s * 1000:.0f} ms): {r['query']}")
                        await blocker.close()  # let it finish: the violation is recorded
                await asyncio.sleep(0.05)
            result = await task
    except TimeoutError:
        raise Broken("returns within lockTimeout", f"the reconcile did not return within {limit_s} s") from None
    finally:
        await observer.close()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if not blocker.is_closed():
            await blocker.close()
    return result, watch
