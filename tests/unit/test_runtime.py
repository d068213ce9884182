"""Worker and Runtime with fakes that raise (issue 14): what each failure puts on the status,
when the next attempt comes, and that the scheduling itself (leadership, replacement, deletion,
a task that ends unexpectedly) never loses a resource."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from pgcurator.backoff import Backoff
from pgcurator.db.params import params_from_url
from pgcurator.engine import outcome_for
from pgcurator.errors import (
    ApiUnavailable,
    ConnectionFailed,
    CuratorError,
    LockBusy,
    PlanError,
    SecretProblem,
)
from pgcurator.kube import FINALIZER
from pgcurator.models.common import CommonSpec
from pgcurator.reconcile.outcome import Outcome
from pgcurator.runtime import KindHandler, Runtime, Worker
from pgcurator.settings import overridden

from .kube_faults import FakePools, FaultPlan, faulty_kube

KEY = ("fakes", "ns", "r")


class Spec(CommonSpec):
    pass


def body(generation: int = 1, uid: str = "u1", spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    m = {"name": "r", "namespace": "ns", "uid": uid, "generation": generation, "resourceVersion": "1", **meta}
    return {"kind": "Fake", "metadata": m,
            "spec": spec if spec is not None else {"database": {"secretName": "db"}}}


class Scripted:
    """A reconcile whose n-th call does what `script[n]` says: raise an exception or return an Outcome."""

    def __init__(self, *script: BaseException | Outcome, schedule: float = 3600.0) -> None:
        self.script = list(script)
        self.calls = 0
        self.schedule = schedule
        self.cleanups: list[BaseException | None] = []

    async def reconcile(self, ctx: Any, spec: Spec) -> Outcome:
        self.calls += 1
        step = self.script.pop(0) if self.script else Outcome.ready("Applied", "ok")
        if isinstance(step, BaseException):
            raise step
        return step

    async def cleanup(self, ctx: Any, spec: Spec) -> None:
        step = self.cleanups.pop(0) if self.cleanups else None
        if step is not None:
            raise step

    def handler(self) -> KindHandler[Spec]:
        return KindHandler(kind="Fake", plural="fakes", model=Spec, reconcile=self.reconcile,
                           schedule_seconds=lambda s: self.schedule, table_of=lambda s: "t", cleanup=self.cleanup)


@pytest.fixture(autouse=True)
def fast() -> Iterator[None]:
    with overridden(retry_min=0.001, retry_max=0.004, plan_error_retry=0.002, lock_wait_retry=0.002):
        yield


async def until(cond: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


def reasons(api: Any) -> list[str]:
    return [s["reason"] for s in api.statuses if "reason" in s]


async def start(probe: Scripted, faults: list[str | None] | None = None, **kw: Any) -> tuple[Runtime, Any]:
    kube, api = faulty_kube(FaultPlan(faults or []), **kw)
    rt = Runtime(kube, [probe.handler()], pools=FakePools(), prepare=None)  # type: ignore[arg-type]
    return rt, api


async def test_every_failure_of_a_run_is_reported_then_the_resource_converges() -> None:
    probe = Scripted(ValueError("a bug"), SecretProblem("bad secret"), LockBusy("busy"),
                     ConnectionRefusedError(111, "refused"), asyncpg.InsufficientPrivilegeError("no"))
    rt, api = await start(probe)
    rt.observe("fakes", "ADDED", body())
    try:
        await until(lambda: "Applied" in reasons(api), "Applied")
    finally:
        await rt.stop()
    assert reasons(api) == ["InternalError", "SecretInvalid", "WaitingForLock", "DatabaseUnreachable",
                            "InsufficientPrivilege", "Applied"]
    assert rt.workers[KEY].backoff.failures == 0  # reset by the success


async def test_invalid_spec_waits_for_a_new_generation() -> None:
    probe = Scripted()
    rt, api = await start(probe)
    rt.observe("fakes", "ADDED", body(spec={"database": {"secretName": "db"}, "bogus": 1}))
    try:
        await until(lambda: "InvalidSpec" in reasons(api), "InvalidSpec")
        await asyncio.sleep(0.05)
        assert probe.calls == 0 and reasons(api) == ["InvalidSpec"]  # no retry loop on a bad spec
        rt.observe("fakes", "MODIFIED", body(generation=2))
        await until(lambda: "Applied" in reasons(api), "Applied after the fix")
    finally:
        await rt.stop()


async def test_missing_secret_backs_off_exponentially() -> None:
    probe = Scripted()
    rt, api = await start(probe, secrets={})
    rt.observe("fakes", "ADDED", body())
    try:
        await until(lambda: rt.workers[KEY].backoff.failures >= 4, "four failures")
    finally:
        await rt.stop()
    assert set(reasons(api)) == {"SecretNotFound"} and probe.calls == 0


async def test_a_status_that_cannot_be_written_is_written_again_soon() -> None:
    # the reconcile succeeds; writing its status fails twice (API away); the schedule is an hour
    probe = Scripted()
    rt, api = await start(probe, faults=[None, "ApiException503", None, "MaxRetryError"])
    rt.observe("fakes", "ADDED", body())
    try:
        await until(lambda: "Applied" in reasons(api), "the status written")
    finally:
        await rt.stop()
    assert probe.calls == 3


async def test_schedule_that_raises_is_guarded() -> None:
    probe = Scripted()
    calls = {"n": 0}

    def schedule(_: Spec) -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("bad cron")
        return 3600.0

    kube, api = faulty_kube(FaultPlan([]))
    handler = KindHandler(kind="Fake", plural="fakes", model=Spec, reconcile=probe.reconcile,
                          schedule_seconds=schedule, table_of=lambda s: "t")
    rt = Runtime(kube, [handler], pools=FakePools(), prepare=None)  # type: ignore[arg-type]
    rt.observe("fakes", "ADDED", body())
    try:
        await until(lambda: "Applied" in reasons(api), "Applied")
    finally:
        await rt.stop()
    assert reasons(api)[0] == "InternalError"


async def test_cleanup_failure_is_retried_and_the_finalizer_goes_after_success() -> None:
    probe = Scripted()
    probe.cleanups = [RuntimeError("disk full"), ApiUnavailable("away"), None]
    rt, api = await start(probe)
    spec = {"database": {"secretName": "db"}, "deletionPolicy": "Delete"}
    rt.observe("fakes", "ADDED", body(spec=spec, finalizers=[FINALIZER], deletionTimestamp="2026-01-01T00:00:00Z"))
    worker = rt.workers[KEY]
    try:
        await until(lambda: worker.task is not None and worker.task.done(), "the end of deletion")
    finally:
        await rt.stop()
    assert api.finalizer_patches == [[]]
    assert [e.reason for e in api.events].count("CleanupFailed") == 2


async def test_followers_run_nothing_until_they_lead() -> None:
    probe = Scripted()
    kube, _ = faulty_kube(FaultPlan([]))
    rt = Runtime(kube, [probe.handler()], pools=FakePools(), active=False, prepare=None)  # type: ignore[arg-type]
    rt.observe("fakes", "ADDED", body())
    await asyncio.sleep(0.02)
    assert probe.calls == 0 and rt.workers[KEY].task is None
    rt.activate()
    try:
        await until(lambda: probe.calls == 1, "the first run once leading")
        rt.deactivate()
        await until(lambda: rt.workers[KEY].task is not None and rt.workers[KEY].task.done(), "the stop")
        rt.observe("fakes", "MODIFIED", body(generation=2))
        await asyncio.sleep(0.02)
        assert probe.calls == 1, "a follower ran a reconcile"
        rt.activate()
        await until(lambda: probe.calls == 2, "the run of generation 2")
    finally:
        await rt.stop()
    assert rt.pools.closed  # type: ignore[attr-defined]


async def test_deleted_resource_stops_its_worker() -> None:
    probe = Scripted(schedule=0.001)
    rt, _ = await start(probe)
    rt.observe("fakes", "ADDED", body())
    await until(lambda: probe.calls >= 2, "runs")
    worker = rt.workers[KEY]
    rt.observe("fakes", "DELETED", body())
    await until(lambda: worker.task is not None and worker.task.done(), "the worker's end")
    calls = probe.calls
    await asyncio.sleep(0.02)
    assert probe.calls == calls and KEY not in rt.workers
    await rt.stop()


async def test_a_worker_task_that_dies_anyway_is_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = Scripted()
    rt, api = await start(probe)
    real_run = Worker.run
    died = {"n": 0}

    async def run_once_broken(self: Worker) -> None:
        if died["n"] == 0:
            died["n"] += 1
            raise RuntimeError("a bug in the guard itself")
        await real_run(self)

    monkeypatch.setattr(Worker, "run", run_once_broken)
    rt.observe("fakes", "ADDED", body())
    try:
        await until(lambda: "Applied" in reasons(api), "Applied after the restart")
    finally:
        await rt.stop()
    assert died["n"] == 1


@pytest.mark.parametrize(("exc", "reason", "degraded", "counts_failure"), [
    (LockBusy("x"), "WaitingForLock", False, False),
    (PlanError("x"), "CannotPlan", True, False),
    (CuratorError("x", reason="Odd"), "Odd", True, True),
    (ConnectionFailed("x"), "DatabaseUnreachable", True, True),
    (OSError("x"), "DatabaseUnreachable", True, True),
    (asyncpg.InsufficientPrivilegeError("x"), "InsufficientPrivilege", True, True),
    (KeyError("x"), "InternalError", True, True),
])
def test_outcome_for_each_failure(exc: Exception, reason: str, degraded: bool, counts_failure: bool) -> None:
    b = Backoff(1, 8)
    out = outcome_for(exc, params=params_from_url("postgresql://u:p@h/d"), schedule=600, backoff=b,
                      resource="Fake/ns/r", plan_retry=60)
    ready = next(c for c in out.conditions if c.type == "Ready")
    assert ready.reason == reason and not ready.status
    assert next(c for c in out.conditions if c.type == "Degraded").status == degraded
    assert b.failures == (1 if counts_failure else 0)
    assert out.requeue_after is not None


def test_outcome_without_params_blames_the_api() -> None:
    out = outcome_for(OSError("refused"), params=None, schedule=600, backoff=Backoff(1, 8), resource="r",
                      plan_retry=60)
    assert out.conditions[0].reason == "ApiUnreachable"


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"\xff\xfe").decode(),
                                   base64.b64encode(b"hello").decode()])
def test_a_broken_ca_secret_is_secret_invalid_not_internal_error(value: str) -> None:
    from pgcurator.errors import SecretProblem
    from pgcurator.runtime import ca_pem_of

    with pytest.raises(SecretProblem) as err:
        ca_pem_of("ns/ca", "ca.crt", value)
    assert err.value.reason == "SecretInvalid" and "'ca.crt'" in err.value.message


def test_a_ca_secret_is_read() -> None:
    from pgcurator.runtime import ca_pem_of

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert ca_pem_of("ns/ca", "ca.crt", base64.b64encode(pem.encode()).decode()) == pem


async def test_deleting_a_manager_wakes_the_resources_it_refused() -> None:
    """A second manager refused with ConflictingManager used to wait for its next schedule (an hour
    by default) after the first was deleted; it is woken at the deletion instead."""
    runs: dict[str, int] = {"r": 0, "s": 0}

    async def reconcile(ctx: Any, spec: Spec) -> Outcome:
        name = ctx.resource.rsplit("/", 1)[-1]
        runs[name] += 1
        if name == "s" and "r" in holders:
            return Outcome.degraded("ConflictingManager", "table t is managed by Fake/ns/r")
        return Outcome.ready("Applied", "ok")

    holders = {"r"}
    handler = KindHandler(kind="Fake", plural="fakes", model=Spec, reconcile=reconcile,
                          schedule_seconds=lambda s: 3600.0, table_of=lambda s: "t")
    kube, _ = faulty_kube(FaultPlan([]))
    rt = Runtime(kube, [handler], pools=FakePools(), prepare=None)  # type: ignore[arg-type]
    rt.observe("fakes", "ADDED", body())
    second = body(uid="u2")
    second["metadata"]["name"] = "s"
    rt.observe("fakes", "ADDED", second)
    await until(lambda: runs["s"] == 1 and rt.workers[("fakes", "ns", "s")].last_reason == "ConflictingManager",
                "the refusal")
    holders.clear()
    rt.observe("fakes", "DELETED", body())
    await until(lambda: runs["s"] == 2, "the refused resource's next run")
    assert rt.workers[("fakes", "ns", "s")].last_reason == "Applied"
    await rt.stop()
