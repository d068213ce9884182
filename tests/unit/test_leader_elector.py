"""LeaderElector against an in-memory Lease with compare-and-swap on resourceVersion (the
Kubernetes client edge is faked; the election logic is the real one)."""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pgcurator.leader import ElectionConfig, LeaderElector

MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class FakeLeaseApi:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.error: BaseException | None = None

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _store(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        self.lease = {"metadata": {"name": "pgcurator-leader", "resourceVersion": str(self.rv)}, "spec": dict(spec)}
        return copy.deepcopy(self.lease)

    async def get(self) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    async def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(spec)

    async def replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is None or lease["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(spec)

    def held_by(self, holder: str, duration: int = 30) -> None:
        self._store({"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": "2026-11-22T10:00:00.000000Z", "leaseTransitions": 4})


class NoWatch:
    def start(self) -> None: ...

    def stop(self) -> None: ...


class Calls:
    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0


def _elector(api: FakeLeaseApi, calls: Calls, **timing: float) -> LeaderElector:
    cfg = ElectionConfig(namespace="ns", identity="me", **timing)
    e = LeaderElector(cfg, client.ApiClient(), on_started_leading=lambda: setattr(calls, "started", calls.started + 1),
                      on_stopped_leading=lambda: setattr(calls, "stopped", calls.stopped + 1))
    e.api = api  # type: ignore[assignment]
    e.watch = NoWatch()  # type: ignore[assignment]
    return e


async def _until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 30.0  # generous: the machine may be busy
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_free_lease_is_created_and_held() -> None:
    api, calls = FakeLeaseApi(), Calls()
    e = _elector(api, calls)
    assert await e._try_acquire_or_renew()
    assert api.lease is not None
    spec = api.lease["spec"]
    assert spec["holderIdentity"] == "me" and spec["leaseDurationSeconds"] == 30
    assert MICRO.match(spec["renewTime"]) and spec["acquireTime"] == spec["renewTime"]


async def test_a_lease_renewed_by_another_is_not_taken() -> None:
    api, calls = FakeLeaseApi(), Calls()
    api.held_by("other")
    e = _elector(api, calls)
    assert not await e._try_acquire_or_renew()
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "other"


async def test_an_expired_lease_is_taken_over_and_counted() -> None:
    api, calls = FakeLeaseApi(), Calls()
    api.held_by("other", duration=30)
    e = _elector(api, calls)
    assert not await e._try_acquire_or_renew()  # first sight: the clock starts now
    e._observed_at -= 31  # our own clock: 31 s without a change from the holder
    assert await e._try_acquire_or_renew()
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "me" and api.lease["spec"]["leaseTransitions"] == 5


async def test_leader_that_cannot_renew_steps_down_and_release_hands_over() -> None:
    api, calls = FakeLeaseApi(), Calls()
    e = _elector(api, calls, lease_duration=3.0, renew_deadline=1.0, renew_interval=0.05, retry_period=0.05)
    task = asyncio.create_task(e.run())
    try:
        await _until(lambda: e.is_leader, "leadership")
        assert calls.started == 1
        api.error = ConnectionError("API server away")
        await _until(lambda: not e.is_leader, "stepping down after the renew deadline")
        assert calls.stopped == 1
        api.error = None
        await _until(lambda: e.is_leader, "leadership again once the API server answers")
        assert calls.started == 2 and e.transitions == 2
    finally:
        await e.stop()
        await asyncio.wait_for(task, 30)
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] is None and api.lease["spec"]["leaseDurationSeconds"] == 1
    assert calls.stopped == 2


async def test_leader_sees_another_holder_and_steps_down() -> None:
    api, calls = FakeLeaseApi(), Calls()
    e = _elector(api, calls, lease_duration=3.0, renew_deadline=1.0, renew_interval=0.05, retry_period=0.05)
    task = asyncio.create_task(e.run())
    try:
        await _until(lambda: e.is_leader, "leadership")
        api.held_by("usurper")  # written behind our back: our cached resourceVersion is stale
        await _until(lambda: not e.is_leader, "stepping down for the new holder")
        assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "usurper"
    finally:
        await e.stop()
        await asyncio.wait_for(task, 30)
    assert api.lease["spec"]["holderIdentity"] == "usurper"  # a follower releases nothing
