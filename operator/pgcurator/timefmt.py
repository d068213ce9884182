"""Kubernetes timestamps, written one way everywhere.

Kubernetes has two wire formats (k8s.io/apimachinery metav1): `Time` is RFC 3339 in UTC with
whole seconds and a `Z` ("2026-11-22T10:00:00Z"; conditions' lastTransitionTime, status times),
and `MicroTime` has exactly six fractional digits (Lease acquireTime/renewTime, events.k8s.io).
`datetime.isoformat()` writes `+00:00` and drops the fraction when it is zero, so neither.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["k8s_micro_time", "k8s_time", "k8s_time_or_none"]


def k8s_time(at: datetime | float | None = None) -> str:
    """A Kubernetes `Time`: RFC 3339, UTC, whole seconds, Z. `at` defaults to now; a float is
    a Unix timestamp; a naive datetime is taken as UTC (what the pinned session TimeZone gives)."""
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def k8s_micro_time(at: datetime | float | None = None) -> str:
    """A Kubernetes `MicroTime`: like `Time` with exactly six fractional digits (the Lease's)."""
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def k8s_time_or_none(value: Any) -> str | None:
    """`k8s_time` of a value read from the database, None when it is not a timestamp (NULL)."""
    return k8s_time(value) if isinstance(value, datetime) else None


def _utc(at: datetime | float | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if isinstance(at, (int, float)):
        return datetime.fromtimestamp(at, UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
