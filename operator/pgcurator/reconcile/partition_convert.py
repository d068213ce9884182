"""Online conversion of a plain table into a partitioned one (filled in below)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..models.partition import PartitionPolicySpec
from .outcome import Event, Outcome


async def convert_if_needed(
    conn: Any, spec: PartitionPolicySpec, *, resource: str,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
    progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> Outcome | None:
    return None
