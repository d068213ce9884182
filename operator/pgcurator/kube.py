"""The few Kubernetes API calls the operator makes outside kopf: Secrets, status, Events,
finalizers. The official client is synchronous, so calls run in worker threads.

Every call goes through `_call`, the one place where the client's exceptions (ApiException,
urllib3's MaxRetryError/ProtocolError/ReadTimeoutError, OSError...) become the project's own
`ApiUnavailable` / `ApiError`, chained to the cause."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .errors import ApiError, ApiUnavailable
from .limits import DETAIL_TEXT, EVENT_MESSAGE, STATUS_TEXT
from .settings import current as current_settings

GROUP = "pgcurator.io"
VERSION = "v1alpha1"
FINALIZER = "pgcurator.io/cleanup"
COMPONENT = "pgcurator"

log = logging.getLogger("pgcurator")

T = TypeVar("T")

# Answers that say "not now" rather than "no": too many requests, and the server-side failures
# an API server behind a load balancer gives while it restarts (RFC 9110 15.6).
UNAVAILABLE_STATUSES = frozenset({408, 410, 429, 500, 502, 503, 504})
# Raised by the client when there is no usable answer at all (connection refused or reset,
# timeouts, TLS failures, truncated responses).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
)
_REASONS = {401: "ApiUnauthorized", 403: "ApiForbidden", 409: "ApiConflict"}


def load_config() -> None:
    if current_settings().in_cluster:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ApiError(f"the API returned {type(obj).__name__}, not an object", status=200,
                       reason="ApiInvalidAnswer")
    return obj


def _server_message(exc: ApiException) -> str:
    """The Status object's message when the server sent one, else the HTTP reason."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "no reason given")[:STATUS_TEXT]


def translate(exc: BaseException, what: str) -> ApiUnavailable | ApiError | None:
    """The project's error for an exception of the Kubernetes client; None when it is not one."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        text = f"{what}: the API server answered {status} ({_server_message(exc)})"
        if status == 0 or status in UNAVAILABLE_STATUSES or status >= 500:
            return ApiUnavailable(text, status=status or None)
        return ApiError(text, status=status, reason=_REASONS.get(status, "ApiRejected"))
    if isinstance(exc, TRANSPORT_ERRORS):
        return ApiUnavailable(f"{what}: cannot reach the Kubernetes API server ({type(exc).__name__}: {exc})"[:DETAIL_TEXT])
    return None


async def _call(what: str, fn: Callable[..., T], *args: Any, absent: Collection[int] = (), **kwargs: Any) -> T | None:
    """Run one client call in a thread. None when the server answers a status in `absent`
    (e.g. 404 for "does not exist"); every other failure is raised as ApiUnavailable/ApiError."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except Exception as exc:
        if isinstance(exc, ApiException) and exc.status in absent:
            return None
        ours = translate(exc, what)
        if ours is None:
            raise
        raise ours from exc


class Kube:
    def __init__(self) -> None:
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data, or None when it does not exist."""
        secret = await _call(f"reading Secret {namespace}/{name}", self.core.read_namespaced_secret, name,
                             namespace, absent=(404,))
        if secret is None:
            return None
        return {str(k): str(v) for k, v in (secret.data or {}).items()}

    async def get_object(self, group: str, version: str, plural: str, name: str,
                         namespace: str | None = None) -> dict[str, Any] | None:
        """Any custom object (e.g. a cert-manager Certificate); None when it does not exist.
        Without a namespace, a cluster-scoped one (e.g. a ClusterIssuer)."""
        what = f"reading {plural}.{group} {namespace + '/' if namespace else ''}{name}"
        obj: object
        if namespace is None:
            obj = await _call(what, self.custom.get_cluster_custom_object, group, version, plural, name,
                              absent=(404,))
        else:
            obj = await _call(what, self.custom.get_namespaced_custom_object, group, version, namespace, plural,
                              name, absent=(404,))
        return None if obj is None else _as_dict(obj)

    async def create_object(self, group: str, version: str, plural: str, namespace: str,
                            body: dict[str, Any]) -> dict[str, Any]:
        obj = await _call(f"creating {plural}.{group} in {namespace}", self.custom.create_namespaced_custom_object,
                          group, version, namespace, plural, body)
        return _as_dict(obj)

    async def patch_object(self, group: str, version: str, plural: str, namespace: str, name: str,
                           patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of a namespaced custom object."""
        obj = await _call(f"patching {plural}.{group} {namespace}/{name}", self.custom.patch_namespaced_custom_object,
                          group, version, namespace, plural, name, patch)
        return _as_dict(obj)

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        # 404: deleted meanwhile, nothing to report on
        await _call(f"writing the status of {plural} {namespace}/{name}",
                    self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, plural, name,
                    {"status": status}, absent=(404,))

    async def set_finalizer(self, plural: str, body: dict[str, Any], present: bool) -> None:
        meta = body["metadata"]
        current = list(meta.get("finalizers") or [])
        if (FINALIZER in current) == present:
            return
        new = [*current, FINALIZER] if present else [f for f in current if f != FINALIZER]
        # resourceVersion makes this a compare-and-swap: never clobber another controller's finalizer.
        # 409: the body changed meanwhile; the watch brings the new one and the next run tries again.
        patch = {"metadata": {"finalizers": new, "resourceVersion": meta["resourceVersion"]}}
        await _call(f"{'adding' if present else 'removing'} the finalizer of {plural} {meta['namespace']}/"
                    f"{meta['name']}", self.custom.patch_namespaced_custom_object, GROUP, VERSION,
                    meta["namespace"], plural, meta["name"], patch, absent=(404, 409))

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Best effort: an Event that cannot be posted is logged, never fails a reconcile."""
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
            message=message[:EVENT_MESSAGE],
            type=type_,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=current_settings().pod_name or COMPONENT,
        )
        try:
            await _call(f"posting an Event for {meta['namespace']}/{meta['name']}",
                        self.core.create_namespaced_event, meta["namespace"], ev)
        except (ApiUnavailable, ApiError) as exc:
            log.debug("event %s not posted: %s", reason, exc)
