"""Fakes at the Kubernetes-client edge for worker tests: the real `Kube` class on top of fake
CoreV1Api / CustomObjectsApi objects whose every call may raise what the official client raises
(urllib3 connection, protocol and timeout errors, OSError, ApiException with any status)."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from pgcurator.kube import Kube

API_STATUSES = (409, 410, 429, 500, 503, 504)


def max_retry() -> BaseException:
    return urllib3.exceptions.MaxRetryError(
        None, "/api/v1/namespaces/ns/secrets/db",
        reason=urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111]"))


def protocol_error() -> BaseException:
    return urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))


def read_timeout() -> BaseException:
    return urllib3.exceptions.ReadTimeoutError(None, "/apis/pgcurator.io", "Read timed out. (read timeout=60)")


def refused() -> BaseException:
    return ConnectionRefusedError(111, "Connection refused")


def api_status(status: int) -> Callable[[], BaseException]:
    return lambda: ApiException(status=status, reason=f"status {status}")


# Every kind of failure the official client raises, by name (hypothesis draws names).
FAULTS: dict[str, Callable[[], BaseException]] = {
    "MaxRetryError": max_retry,
    "ProtocolError": protocol_error,
    "ReadTimeoutError": read_timeout,
    "ConnectionRefusedError": refused,
    **{f"ApiException{s}": api_status(s) for s in API_STATUSES},
}


class FaultPlan:
    """Which call fails how: `faults[i]` is raised by the i-th call (None: the call succeeds);
    every call after the plan succeeds."""

    def __init__(self, faults: list[str | None]) -> None:
        self._next: Iterator[str | None] = itertools.chain(faults, itertools.repeat(None))
        self.injected = 0
        self.calls = 0

    def maybe_raise(self) -> None:
        self.calls += 1
        name = next(self._next)
        if name is not None:
            self.injected += 1
            raise FAULTS[name]()


class FakeApi:
    """Both CoreV1Api and CustomObjectsApi: the handful of methods `Kube` calls."""

    def __init__(self, plan: FaultPlan, secrets: dict[tuple[str, str], dict[str, str]]) -> None:
        self.plan = plan
        self.secrets = secrets
        self.statuses: list[dict[str, Any]] = []
        self.finalizer_patches: list[list[str]] = []
        self.events: list[Any] = []

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.plan.maybe_raise()
        data = self.secrets.get((namespace, name))
        if data is None:
            raise ApiException(status=404, reason="Not Found")

        class Secret:
            pass

        s = Secret()
        s.data = data  # type: ignore[attr-defined]
        return s

    def create_namespaced_event(self, namespace: str, body: Any) -> Any:
        self.plan.maybe_raise()
        self.events.append(body)
        return body

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: dict[str, Any]) -> Any:
        self.plan.maybe_raise()
        self.statuses.append(copy.deepcopy(body["status"]))
        return body

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: dict[str, Any]) -> Any:
        self.plan.maybe_raise()
        self.finalizer_patches.append(list(body["metadata"]["finalizers"]))
        return body

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                     name: str) -> Any:
        self.plan.maybe_raise()
        return {"metadata": {"name": name}}


def faulty_kube(plan: FaultPlan, secrets: dict[tuple[str, str], dict[str, str]] | None = None) -> tuple[Kube, FakeApi]:
    """The real Kube (so its one translation of client errors is what is tested) on a fake API."""
    api = FakeApi(plan, secrets if secrets is not None else {("ns", "db"): secret_data()})
    kube = Kube.__new__(Kube)
    kube.core = api  # type: ignore[assignment]
    kube.custom = api  # type: ignore[assignment]
    return kube, api


def secret_data(url: str = "postgresql://app:pw@db.example:5432/app") -> dict[str, str]:
    return {"uri": base64.b64encode(url.encode()).decode()}


class FakeConn:
    """Stands in for a pooled connection where the reconcile under test never queries."""

    def add_query_logger(self, callback: Any) -> None:
        pass

    def remove_query_logger(self, callback: Any) -> None:
        pass


class FakePools:
    """The PoolRegistry seen from the runtime; no database behind it (workers only)."""

    def __init__(self) -> None:
        self.closed = False

    @asynccontextmanager
    async def connection(self, params: Any, timeouts: Any = None) -> AsyncIterator[FakeConn]:
        await asyncio.sleep(0)
        yield FakeConn()
        await asyncio.sleep(0)  # as a real release awaits

    def in_use(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        self.closed = True
