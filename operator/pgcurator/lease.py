"""The Lease calls and the Lease watch of leader election (leader.py), each in threads of its own:
the official Kubernetes client is synchronous, and under load the shared thread pool is full of
reconciles' API calls."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("pgcurator.leader")


class LeaseApi:
    """The four Lease calls, as plain dicts (no model (de)serialisation), run in threads of their
    own: under load the shared pool is full of reconciles' API calls, and a renewal or the release
    queued behind them would come too late."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, timeout: float) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lease")

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def _json(self, resp: Any) -> dict[str, Any]:
        return dict(json.loads(resp.data))

    async def get(self) -> dict[str, Any] | None:
        try:
            resp = await self._call(
                self.api.read_namespaced_lease, self.name, self.namespace,
                _preload_content=False, _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._json(resp)

    async def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        body: Any = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        resp = await self._call(
            self.api.create_namespaced_lease, self.namespace, body,
            _preload_content=False, _request_timeout=self.timeout,
        )
        return self._json(resp)

    async def replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        body: Any = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": self.namespace,
                                  "resourceVersion": lease["metadata"]["resourceVersion"]},
                     "spec": spec}
        resp = await self._call(
            self.api.replace_namespaced_lease, self.name, self.namespace, body,
            _preload_content=False, _request_timeout=self.timeout,
        )
        return self._json(resp)


class LeaseWatch:
    """A watch on the one Lease, in its own thread (the official client is synchronous; a
    blocking stream must not occupy the shared executor). Every event is handed to the event
    loop, so the callback running proves the loop is alive too."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str,
                 on_event: Callable[[str, dict[str, Any]], None], read_timeout: float) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.on_event = on_event
        self.read_timeout = read_timeout
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _deliver(self, type_: str, obj: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(self.on_event, type_, obj)

    def _run(self) -> None:
        while not self._stop.is_set():
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for ev in w.stream(  # type: ignore[no-untyped-call]
                    self.api.list_namespaced_lease, self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    # A frozen API server sends nothing: give up on the stream and reconnect.
                    _request_timeout=(5, self.read_timeout),
                ):
                    if self._stop.is_set():
                        break
                    raw = ev.get("raw_object") or {}
                    self._deliver(str(ev.get("type")), raw if isinstance(raw, dict) else {})
            except Exception as exc:  # the API server may be away: retry, the heartbeat tells
                if not self._stop.is_set():
                    log.debug("lease watch interrupted: %s", exc)
                    self._stop.wait(1.0)
            finally:
                w.stop()  # type: ignore[no-untyped-call]
