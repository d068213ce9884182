"""One backoff formula for every retry in the operator (kopf's throttler habit): the worker's
retries after a failed reconcile and the executor's retries after a lock timeout use it."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: bool = False,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry): base, 2*base,
    4*base, ... never more than `cap`. With `jitter`, scaled by a factor in [0.5, 1.5), so
    replicas retrying the same lock do not retry in step."""
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 already exceeds any cap; keeps the float finite
    delay = min(cap, base * 2.0**exponent)
    return delay * (0.5 + rand()) if jitter else delay


class Backoff:
    """Consecutive failures of one thing (e.g. one resource's reconciles) and the delay each earns."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def failure(self) -> float:
        """Count one more failure; the delay before the next attempt."""
        self.failures += 1
        return backoff_delay(self.failures, base=self.base, cap=self.cap)

    def success(self) -> None:
        self.failures = 0
