"""Liveness, readiness and /metrics on one small HTTP server.

"The process is up" proves nothing for a watch-driven operator: a known failure of long-running
kopf operators is a watch task that ends (its error logged once) while the process carries on,
deaf. So liveness checks what actually has to keep working:

* every kopf watch-stream task for our kinds that was once running is still running (kopf does
  not restart a watcher that failed);
* a heartbeat arrived recently: each event on the leader-Lease watch (the leader renews the
  Lease every few seconds, every replica watches it). On an idle cluster this is what proves
  that the API server answers, that watch streams deliver events to this process, and that the
  event loop runs (the event is handled on it). A frozen API server, a dead stream or a stuck
  loop all stop the heartbeat.

Readiness: a watcher is running for every kind and the first heartbeat has arrived.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from . import metrics
from .kube import GROUP, VERSION

log = logging.getLogger("pgcurator.health")


def watcher_task_name(plural: str, namespace: str | None) -> str:
    """kopf's name for the task that streams one resource kind in one namespace (None: all)."""
    return f"watcher for {plural}.{VERSION}.{GROUP}@{namespace}"


@dataclass
class Health:
    plurals: list[str]
    namespaces: list[str] | None  # None: cluster-wide
    stale_after: float = 60.0  # PGCURATOR_HEARTBEAT_STALE (settings.py)
    started: float = field(default_factory=time.monotonic)
    last_heartbeat: float | None = None
    _seen_watchers: set[str] = field(default_factory=set)

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def expected_watchers(self) -> list[str]:
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        return [watcher_task_name(p, ns) for p in self.plurals for ns in scopes]

    def _running_watchers(self) -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks() if not t.done()}

    def heartbeat_age(self) -> float:
        return time.monotonic() - (self.last_heartbeat if self.last_heartbeat is not None else self.started)

    def liveness(self) -> list[str]:
        """Problems that a restart would fix; empty when alive."""
        problems = []
        running = self._running_watchers()
        for name in self.expected_watchers():
            if name in running:
                self._seen_watchers.add(name)
            elif name in self._seen_watchers:
                problems.append(f"the {name!r} task has ended: events for it are no longer processed")
        age = self.heartbeat_age()
        metrics.HEARTBEAT_AGE.set(age)
        if age > self.stale_after:
            problems.append(f"no event from the leader-Lease watch for {age:.0f}s (limit {self.stale_after:.0f}s): "
                            "the API server or the watch stream is not delivering")
        return problems

    def readiness(self) -> list[str]:
        problems = self.liveness()
        running = self._running_watchers()
        missing = [n for n in self.expected_watchers() if n not in running and n not in self._seen_watchers]
        if missing:
            problems.append("not watching yet (is the CRD installed?): " + ", ".join(missing))
        if self.last_heartbeat is None:
            problems.append("no heartbeat from the leader-Lease watch yet")
        return problems


def parse_address(address: str) -> tuple[str, int]:
    """`0.0.0.0:8080`, `:8080` or a URL such as `http://0.0.0.0:8080/healthz`."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"cannot read a port from {address!r} (expected host:port)")
    return host or "0.0.0.0", int(port)


async def serve(health: Health, address: str) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        problems = health.liveness()
        if problems:
            log.warning("liveness failing: %s", "; ".join(problems))
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        problems = health.readiness()
        return web.Response(status=503 if problems else 200, text="\n".join(problems or ["ok"]) + "\n")

    async def metrics_handler(_: web.Request) -> web.Response:
        health.liveness()  # refreshes the heartbeat-age gauge
        return web.Response(body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_address(address)
    await web.TCPSite(runner, host, port).start()
    log.info("serving /healthz, /readyz and /metrics on %s:%d", host, port)
    return runner
