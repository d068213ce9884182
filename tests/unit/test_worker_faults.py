"""Fault injection at the Kubernetes-client edge (issue 12 item 4): whatever the official client
raises, from any call a worker makes (Secret reads, finalizers, status, Events, calls inside a
reconcile), the worker survives, the resource converges once the faults stop, and no two runs of
one resource ever overlap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcurator.kube import FINALIZER
from pgcurator.models.common import CommonSpec
from pgcurator.reconcile.outcome import Event, Outcome
from pgcurator.runtime import KindHandler, Runtime
from pgcurator.settings import overridden

from ..figures import FIGURES, record
from .kube_faults import FAULTS, FakePools, FaultPlan, faulty_kube

FIGURE = "state-space faults injected (kube client)"
DEADLINE = 30.0  # generous: every retry below waits milliseconds


class FakeSpec(CommonSpec):
    pass


class Probe:
    """A reconcile that touches the API the way real ones do, and counts overlapping runs."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0
        self.runs = 0
        self.cleaned = 0

    async def reconcile(self, ctx: Any, spec: FakeSpec) -> Outcome:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            self.runs += 1
            await ctx.event(Event("Normal", "StepApplied", f"run {self.runs}"))
            await ctx.progress({"run": self.runs}, force=True)
            await ctx.kube.get_object("cert-manager.io", "v1", "certificates", "c", ctx.namespace)
            await asyncio.sleep(0)
            return Outcome.ready("Applied", f"run {self.runs}")
        finally:
            try:
                await asyncio.sleep(0)  # as an advisory unlock awaits
            finally:
                self.running -= 1

    async def cleanup(self, ctx: Any, spec: FakeSpec) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await ctx.kube.get_object("cert-manager.io", "v1", "certificates", "c", ctx.namespace)
            self.cleaned += 1
        finally:
            try:
                await asyncio.sleep(0)
            finally:
                self.running -= 1

    def handler(self) -> KindHandler[FakeSpec]:
        return KindHandler(kind="Fake", plural="fakes", model=FakeSpec, reconcile=self.reconcile,
                           schedule_seconds=lambda spec: 3600.0, table_of=lambda spec: "t", cleanup=self.cleanup)


def body(generation: int = 1, uid: str = "u1", finalizers: list[str] | None = None,
         deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r", "namespace": "ns", "uid": uid, "generation": generation,
                            "resourceVersion": str(generation), "finalizers": finalizers or []}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    return {"apiVersion": "pgcurator.io/v1alpha1", "kind": "Fake", "metadata": meta,
            "spec": {"database": {"secretName": "db"}, "deletionPolicy": "Delete"}}


@contextlib.contextmanager
def fast_retries() -> Iterator[None]:
    with overridden(retry_min=0.001, retry_max=0.01):
        yield


async def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


def converged(api: Any, generation: int) -> bool:
    if not api.statuses:
        return False
    last = api.statuses[-1]
    return bool(last.get("ready") == "True" and last.get("reason") == "Applied"
                and last.get("observedGeneration") == generation)


def count_faults(plan: FaultPlan) -> None:
    record(FIGURE, FIGURES.get(FIGURE, 0) + plan.injected)


# --- regression: one fault, the worker must survive it ----------------------------------------


async def test_worker_survives_max_retry_error_from_the_api() -> None:
    """Before: the MaxRetryError of an unreachable API server ended the worker task silently."""
    plan = FaultPlan(["MaxRetryError"] * 3)
    kube, api = faulty_kube(plan)
    probe = Probe()
    with fast_retries():
        rt = Runtime(kube, [probe.handler()], pools=FakePools(), prepare=None)  # type: ignore[arg-type]
        rt.observe("fakes", "ADDED", body())
        worker = rt.workers[("fakes", "ns", "r")]
        try:
            await wait_until(lambda: converged(api, 1) or (worker.task is not None and worker.task.done()),
                             "the status or the worker's end")
            assert worker.task is not None and not worker.task.done(), "the worker task ended"
            assert converged(api, 1)
        finally:
            await rt.stop()
    count_faults(plan)


async def test_unreachable_api_is_reported_on_the_status_with_its_reason() -> None:
    # The finalizer patch fails (MaxRetryError), the status write after it succeeds: the failure
    # reaches the status with a typed reason, then the resource converges.
    plan = FaultPlan(["MaxRetryError"])
    kube, api = faulty_kube(plan)
    probe = Probe()
    with fast_retries():
        rt = Runtime(kube, [probe.handler()], pools=FakePools(), prepare=None)  # type: ignore[arg-type]
        rt.observe("fakes", "ADDED", body())
        try:
            await wait_until(lambda: converged(api, 1), "convergence")
        finally:
            await rt.stop()
    reasons = [s["reason"] for s in api.statuses if "reason" in s]
    assert "ApiUnreachable" in reasons, reasons
    count_faults(plan)


# --- generated fault sequences ---------------------------------------------------------------

fault_names = st.lists(st.one_of(st.none(), st.sampled_from(sorted(FAULTS))), max_size=40)
actions = st.lists(st.sampled_from(["update", "replace", "leadership", "tick"]), max_size=8)


async def drive(faults: list[str | None], steps: list[str], delete: bool) -> None:
    plan = FaultPlan(faults)
    kube, api = faulty_kube(plan)
    probe = Probe()
    rt = Runtime(kube, [probe.handler()], pools=FakePools(), prepare=None)  # type: ignore[arg-type]
    generation, uid = 1, "u1"
    rt.observe("fakes", "ADDED", body(generation, uid))
    try:
        for step in steps:
            if step == "update":
                generation += 1
                rt.observe("fakes", "MODIFIED", body(generation, uid))
            elif step == "replace":  # deleted and re-created under the same name
                uid, generation = uid + "x", 1
                rt.observe("fakes", "ADDED", body(generation, uid))
            elif step == "leadership":
                rt.deactivate()
                await asyncio.sleep(0)
                rt.activate()
            for _ in range(3):
                await asyncio.sleep(0)
        worker = rt.workers[("fakes", "ns", "r")]
        await wait_until(lambda: converged(api, generation), f"convergence after {plan.injected} faults")
        assert worker.task is not None and not worker.task.done()
        if delete:
            rt.observe("fakes", "MODIFIED", body(generation, uid, finalizers=[FINALIZER], deleting=True))
            await wait_until(lambda: worker.task is not None and worker.task.done(), "the end of deletion")
            assert worker.task.exception() is None
            assert probe.cleaned >= 1 and api.finalizer_patches[-1] == []
    finally:
        await rt.stop()
    assert probe.max_running == 1, "two runs of one resource overlapped"
    count_faults(plan)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faults=fault_names, steps=actions, delete=st.booleans())
def test_any_fault_sequence_converges_without_overlap(faults: list[str | None], steps: list[str],
                                                       delete: bool) -> None:
    with fast_retries():
        asyncio.run(drive(faults, steps, delete))


def test_a_cancelled_worker_ends_even_when_its_wait_ends_at_the_same_moment() -> None:
    """Found by the generated sequences: on Python 3.11, asyncio.wait_for swallowed a cancel that
    arrived as the worker's wait ended, so a replaced worker ran on and its successor (waiting for
    it to end) never started. Repeated because the race needs the two to meet."""
    with fast_retries():
        for _ in range(20):
            asyncio.run(drive([None, "ReadTimeoutError", "MaxRetryError", "MaxRetryError"],
                              ["leadership", "replace", "update", "replace"], False))
