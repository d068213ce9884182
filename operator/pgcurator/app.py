"""kopf wiring: watch the custom resources and hand every event to the runtime."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from .kinds import ALL_KINDS
from .kube import GROUP, VERSION, Kube, load_config
from .runtime import Runtime

API_THREADS = int(os.environ.get("PGCURATOR_API_THREADS", "16"))


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
        load_config()
        # The official Kubernetes client is synchronous: its calls (Secrets, status, Events) run in
        # threads, and the default pool of cpu+4 threads throttles hundreds of resources.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=API_THREADS))
        runtime_box["runtime"] = Runtime(Kube(), ALL_KINDS)

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        runtime = runtime_box.get("runtime")
        if runtime is not None:
            await runtime.stop()

    for handler in ALL_KINDS:
        plural = handler.plural

        def make(plural: str) -> Any:
            async def on_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
                runtime = runtime_box.get("runtime")
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


async def run_operator(namespaces: list[str], liveness: str | None) -> None:
    runtime_box: dict[str, Runtime] = {}
    registry = build_registry(runtime_box)
    await kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=liveness,
    )


def main(namespaces: list[str], liveness: str | None, log_format: str, verbose: bool) -> None:
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN)
    logging.getLogger("pgcurator").setLevel(logging.DEBUG if verbose else logging.INFO)
    asyncio.run(run_operator(namespaces, liveness))
