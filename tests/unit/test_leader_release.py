"""A clean shutdown hands the Lease over at once, whatever the leader was doing at that moment.

The Kubernetes client is faked at its edge (LeaseApi): a Lease record with compare-and-swap on
resourceVersion, like the API server's."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pgcurator.leader import ElectionConfig, LeaderElector


class FakeLeaseApi:
    """One Lease with the API server's optimistic concurrency. A write can be held after it is
    applied and before its answer arrives (`hold_next_answer`), as a slow API server would."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.hold_next_answer: asyncio.Event | None = None
        self.applied = asyncio.Event()

    def _store(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        self.lease = {"metadata": {"name": "l", "namespace": "ns", "resourceVersion": str(self.rv)},
                      "spec": copy.deepcopy(spec)}
        return copy.deepcopy(self.lease)

    async def _answer(self, written: dict[str, Any]) -> dict[str, Any]:
        gate, self.hold_next_answer = self.hold_next_answer, None
        self.applied.set()
        if gate is not None:
            await gate.wait()
        return written

    async def get(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    async def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return await self._answer(self._store(spec))

    async def replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        if self.lease is None:
            raise ApiException(status=404, reason="NotFound")
        if lease["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return await self._answer(self._store(spec))


def _elector(api: FakeLeaseApi) -> LeaderElector:
    cfg = ElectionConfig(namespace="ns", name="l", identity="replica-a", lease_duration=30,
                         renew_deadline=20, renew_interval=10, retry_period=2)
    elector = LeaderElector(cfg, client.ApiClient(client.Configuration()),
                            on_started_leading=lambda: None, on_stopped_leading=lambda: None)
    elector.api = api  # type: ignore[assignment]
    return elector


def test_release_while_a_renewal_is_in_flight_frees_the_lease() -> None:
    """SIGTERM arrives while a renewal's answer is still on its way (a loaded API server): the
    release must not be written against the pre-renewal resourceVersion, get a conflict and
    leave the Lease held until it expires (the 30 s hand-over of issue 16)."""

    async def scenario() -> dict[str, Any]:
        api = FakeLeaseApi()
        elector = _elector(api)
        assert await elector._try_acquire_or_renew()
        elector._set_leader(True)
        gate = asyncio.Event()
        api.hold_next_answer, api.applied = gate, asyncio.Event()
        renewal = asyncio.create_task(elector._try_acquire_or_renew())
        await api.applied.wait()  # the renewal is written; its answer has not arrived
        stopping = asyncio.create_task(elector.stop())
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(asyncio.gather(renewal, stopping), 10)
        assert api.lease is not None
        return api.lease["spec"]

    spec = asyncio.run(scenario())
    assert not spec.get("holderIdentity"), f"the Lease is still held after a clean shutdown: {spec}"
    assert spec["leaseDurationSeconds"] == 1


def test_release_after_a_conflict_rereads_and_frees_the_lease() -> None:
    """The leader's copy of the Lease is stale when it shuts down (a write it never saw the answer
    of): the release reads the Lease again and, since it is still the holder, frees it."""

    async def scenario() -> dict[str, Any]:
        api = FakeLeaseApi()
        elector = _elector(api)
        assert await elector._try_acquire_or_renew()
        elector._set_leader(True)
        stale = copy.deepcopy(elector._lease)
        assert stale is not None and api.lease is not None
        api._store(api.lease["spec"])  # our own renewal, applied, answer lost
        elector._lease = stale
        await asyncio.wait_for(elector.stop(), 10)
        return api.lease["spec"]

    spec = asyncio.run(scenario())
    assert not spec.get("holderIdentity"), f"the Lease is still held after a clean shutdown: {spec}"


def test_release_leaves_a_lease_someone_else_took() -> None:
    async def scenario() -> dict[str, Any]:
        api = FakeLeaseApi()
        elector = _elector(api)
        assert await elector._try_acquire_or_renew()
        elector._set_leader(True)
        assert api.lease is not None
        api._store({**api.lease["spec"], "holderIdentity": "replica-b"})
        await asyncio.wait_for(elector.stop(), 10)
        return api.lease["spec"]

    assert asyncio.run(scenario())["holderIdentity"] == "replica-b"
