"""The few Kubernetes API calls the operator makes outside kopf: Secrets, status, Events,
finalizers. The official client is synchronous, so calls run in worker threads."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP = "pgcurator.io"
VERSION = "v1alpha1"
FINALIZER = "pgcurator.io/cleanup"
COMPONENT = "pgcurator"


def load_config() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise TypeError(f"the API returned {type(obj).__name__}, not an object")
    return obj


class Kube:
    def __init__(self) -> None:
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data, or None when it does not exist."""
        try:
            secret = await asyncio.to_thread(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {str(k): str(v) for k, v in (secret.data or {}).items()}

    async def get_object(self, group: str, version: str, plural: str, name: str,
                         namespace: str | None = None) -> dict[str, Any] | None:
        """Any custom object (e.g. a cert-manager Certificate); None when it does not exist.
        Without a namespace, a cluster-scoped one (e.g. a ClusterIssuer)."""
        try:
            obj: object
            if namespace is None:
                obj = await asyncio.to_thread(self.custom.get_cluster_custom_object, group, version, plural, name)
            else:
                obj = await asyncio.to_thread(
                    self.custom.get_namespaced_custom_object, group, version, namespace, plural, name
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _as_dict(obj)

    async def create_object(self, group: str, version: str, plural: str, namespace: str,
                            body: dict[str, Any]) -> dict[str, Any]:
        obj = await asyncio.to_thread(
            self.custom.create_namespaced_custom_object, group, version, namespace, plural, body
        )
        return _as_dict(obj)

    async def patch_object(self, group: str, version: str, plural: str, namespace: str, name: str,
                           patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of a namespaced custom object."""
        obj = await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object, group, version, namespace, plural, name, patch
        )
        return _as_dict(obj)

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP, VERSION, namespace, plural, name, {"status": status},
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    async def set_finalizer(self, plural: str, body: dict[str, Any], present: bool) -> None:
        meta = body["metadata"]
        current = list(meta.get("finalizers") or [])
        if (FINALIZER in current) == present:
            return
        new = [*current, FINALIZER] if present else [f for f in current if f != FINALIZER]
        # resourceVersion makes this a compare-and-swap: never clobber another controller's finalizer.
        patch = {"metadata": {"finalizers": new, "resourceVersion": meta["resourceVersion"]}}
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object,
                GROUP, VERSION, meta["namespace"], plural, meta["name"], patch,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        now = datetime.now(UTC)
        ev = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=body.get("apiVersion", f"{GROUP}/{VERSION}"),
                kind=body.get("kind"),
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=os.environ.get("POD_NAME", "pgcurator"),
        )
        try:
            await asyncio.to_thread(self.core.create_namespaced_event, meta["namespace"], ev)
        except ApiException:
            pass  # events are best effort: never fail a reconcile over one
