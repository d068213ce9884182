"""kopf wiring: watch the custom resources and hand every event to the runtime; leader election
decides whether the runtime acts; health and metrics are served next to it."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from . import metrics
from .health import Health, serve
from .kinds import ALL_KINDS
from .kube import GROUP, VERSION, Kube, load_config
from .leader import ElectionConfig, LeaderElector
from .runtime import Runtime
from .settings import current as current_settings

log = logging.getLogger("pgcurator")

def build_registry(runtime_box: dict[str, Runtime]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post our own Events, one per change
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        # No watching of Namespaces or CRDs (kopf's runtime scanning): the CRDs exist before the
        # operator starts (chart, kubectl), and least privilege keeps the ClusterRole to our kinds.
        settings.scanning.disabled = True

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        runtime = runtime_box.get("runtime")
        if runtime is not None:
            await runtime.stop()

    kinds = {h.plural: h.kind for h in ALL_KINDS}
    for handler in ALL_KINDS:
        plural = handler.plural

        def make(plural: str) -> Any:
            async def on_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
                runtime = runtime_box.get("runtime")
                metrics.WATCH_EVENTS.labels(kinds[plural]).inc()
                if runtime is not None:
                    runtime.observe(plural, event.get("type"), dict(_plain(body)))

            return on_event

        kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"watch-{plural}")(make(plural))
    return registry


def _plain(body: Any) -> Any:
    """kopf bodies are live views; the runtime keeps snapshots."""
    if hasattr(body, "items"):
        return {k: _plain(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_plain(v) for v in body]
    return body


async def run_operator(namespaces: list[str], http_address: str | None, election: ElectionConfig) -> None:
    """Runs until SIGTERM/SIGINT."""
    # The official Kubernetes client is synchronous: its calls (Secrets, status, Events) run in
    # threads, and the default pool of cpu+4 threads throttles hundreds of resources.
    settings = current_settings()
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=settings.api_threads))
    load_config()
    kube = Kube()
    runtime = Runtime(kube, ALL_KINDS, active=False)  # a follower until the Lease is ours
    metrics.watch_pools(runtime.pools.in_use)

    def count_resources() -> None:
        for kind, n in runtime.count_by_kind().items():
            metrics.RESOURCES.labels(kind).set(n)

    metrics.on_scrape(count_resources)
    health = Health([h.plural for h in ALL_KINDS], namespaces or None, stale_after=settings.heartbeat_stale)

    def started_leading() -> None:
        metrics.LEADER.set(1)
        runtime.activate()

    def stopped_leading() -> None:
        metrics.LEADER.set(0)
        runtime.deactivate()

    elector = LeaderElector(election, kube.api, on_started_leading=started_leading,
                            on_stopped_leading=stopped_leading, on_heartbeat=health.heartbeat)
    stop_flag = asyncio.Event()
    handover: list[asyncio.Task[None]] = []

    async def hand_over() -> None:
        # Stop acting and release the Lease first, so the next leader starts at once rather than
        # after kopf's own shutdown (which drains every watch stream).
        runtime.deactivate()
        await elector.stop()
        stop_flag.set()

    def on_signal() -> None:
        if handover:
            stop_flag.set()  # a second signal: no more waiting
        else:
            handover.append(asyncio.create_task(hand_over(), name="leader hand-over"))

    kopf_ready = asyncio.Event()

    async def take_signals() -> None:
        # kopf installs its SIGTERM/SIGINT handlers while starting; once it is up, ours replace them.
        await kopf_ready.wait()
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)

    signals_task = asyncio.create_task(take_signals(), name="signal hand-over")

    runner = await serve(health, http_address) if http_address else None
    election_task = asyncio.create_task(elector.run(), name="leader election")
    election_task.add_done_callback(_report_crash)
    try:
        await kopf.operator(
            registry=build_registry({"runtime": runtime}),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            stop_flag=stop_flag,
            ready_flag=kopf_ready,
        )
    finally:
        election_task.cancel()
        signals_task.cancel()
        await asyncio.gather(election_task, signals_task, return_exceptions=True)
        await runtime.stop()  # before the Lease goes: the next leader must not overlap with us
        await elector.stop()
        if runner is not None:
            await runner.cleanup()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leader election stopped: %r; this replica will not act (liveness fails)", task.exception())


def main(namespaces: list[str], http_address: str | None, log_format: str, verbose: bool,
         election_namespace: str | None = None) -> None:
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN)
    logging.getLogger("pgcurator").setLevel(logging.DEBUG if verbose else logging.INFO)
    election = ElectionConfig.from_settings(current_settings(), election_namespace)  # validated at start
    asyncio.run(run_operator(namespaces, http_address, election))
