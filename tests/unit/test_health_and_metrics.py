"""Liveness logic (a kopf watcher task that ends, a stale heartbeat), leader-election settings and
the metrics helpers, in-process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgcurator import metrics
from pgcurator.health import Health, parse_address, watcher_task_name
from pgcurator.leader import ElectionConfig


async def test_liveness_fails_when_a_watcher_task_ends() -> None:
    health = Health(["partitionpolicies"], None, stale_after=60)
    health.heartbeat()
    assert health.readiness() == [f"not watching yet (is the CRD installed?): {watcher_task_name('partitionpolicies', None)}"]
    # kopf names its watch-stream tasks like this; a failed one ends and is never restarted.
    watcher = asyncio.create_task(asyncio.sleep(3600), name="watcher for partitionpolicies.v1alpha1.pgcurator.io@None")
    await asyncio.sleep(0)
    assert health.liveness() == [] and health.readiness() == []
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    problems = health.liveness()
    assert len(problems) == 1 and "has ended" in problems[0]


async def test_namespaced_watchers_and_stale_heartbeat() -> None:
    health = Health(["partitionpolicies"], ["a", "b"], stale_after=0.05)
    assert health.expected_watchers() == [watcher_task_name("partitionpolicies", "a"),
                                          watcher_task_name("partitionpolicies", "b")]
    health.heartbeat()
    assert not [p for p in health.liveness() if "Lease watch" in p]
    await asyncio.sleep(0.1)
    assert any("no event from the leader-Lease watch" in p for p in health.liveness())
    health.heartbeat()
    assert not [p for p in health.liveness() if "Lease watch" in p]


def test_parse_address() -> None:
    assert parse_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_address(":9") == ("0.0.0.0", 9)
    assert parse_address("http://127.0.0.1:8080/healthz") == ("127.0.0.1", 8080)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("localhost")


def test_election_timings_must_nest() -> None:
    ElectionConfig("ns", renew_interval=1, renew_deadline=2, lease_duration=3).validate()
    with pytest.raises(ValueError, match="renew interval < renew deadline < lease duration"):
        ElectionConfig("ns", renew_interval=5, renew_deadline=20, lease_duration=15).validate()


@dataclass
class _Stmt:
    outcome: str
    duration_ms: float


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_helpers_and_forgetting_a_resource() -> None:
    metrics.observe_statements("unit_step", [_Stmt("ok", 12.0), _Stmt("lock_timeout", 500.0)])
    metrics.observe_status("PartitionPolicy", "unit-ns", "p1", {"partitionsAhead": 3})
    metrics.BUILD_PROGRESS.labels("unit-ns", "p1", "idx").set(0.5)
    metrics.CERT_EXPIRY.labels("unit-ns", "other").set(86400)
    metrics.watch_pools(lambda: {"db:5432/app": 2})
    s = _samples()
    assert s[("pgcurator_ddl_statements_total", (("kind", "unit_step"), ("outcome", "ok")))] == 1
    assert s[("pgcurator_ddl_duration_seconds_sum", (("kind", "unit_step"), ("outcome", "lock_timeout")))] == 0.5
    assert s[("pgcurator_partitions_ahead", (("name", "p1"), ("namespace", "unit-ns")))] == 3
    assert s[("pgcurator_pool_connections_in_use", (("database", "db:5432/app"),))] == 2
    metrics.forget_resource("unit-ns", "p1")
    s = _samples()
    assert not [k for k in s if ("name", "p1") in k[1]]
    assert s[("pgcurator_certificate_expiry_seconds", (("name", "other"), ("namespace", "unit-ns")))] == 86400
