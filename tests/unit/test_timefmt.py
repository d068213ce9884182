"""Kubernetes timestamps: one format for `Time`, one for `MicroTime`, whatever the input."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from pgcurator.timefmt import k8s_micro_time, k8s_time, k8s_time_or_none

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_time_is_utc_whole_seconds_with_z() -> None:
    cet = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 22, 11, 0, 0, 123456, tzinfo=cet)
    assert k8s_time(at) == "2026-11-22T10:00:00Z"
    assert k8s_time(datetime(2026, 11, 22, 10, 0, 0)) == "2026-11-22T10:00:00Z"  # naive: UTC
    assert k8s_time(at.timestamp()) == "2026-11-22T10:00:00Z"  # Unix seconds
    assert TIME.match(k8s_time())


def test_micro_time_keeps_six_digits_even_when_zero() -> None:
    assert k8s_micro_time(datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)) == "2026-11-22T10:00:00.000000Z"
    assert k8s_micro_time(datetime(2026, 11, 22, 10, 0, 0, 5, tzinfo=UTC)) == "2026-11-22T10:00:00.000005Z"
    assert MICRO.match(k8s_micro_time())


def test_database_values() -> None:
    assert k8s_time_or_none(None) is None
    assert k8s_time_or_none("2026-11-22") is None
    assert k8s_time_or_none(datetime(2026, 11, 22, 10, 0, 0, 999999, tzinfo=UTC)) == "2026-11-22T10:00:00Z"
