"""One leader among the operator's replicas, elected on a coordination.k8s.io/v1 Lease.

Only the leader runs reconciles; the others keep their watches warm and take over when the
leader's Lease expires (or at once when a leader that shuts down cleanly releases it).

The algorithm is client-go's: the holder renews `renewTime` every `renew_interval`; a candidate
may take the Lease when it is released, or when `lease_duration` has passed on the candidate's own
clock since it last saw the record change (never by comparing remote timestamps, so clock skew
between nodes does not matter). A leader that cannot renew for `renew_deadline` (< lease_duration)
stops acting before anyone else may start. Writes are compare-and-swap on resourceVersion.

Followers do not poll: one watch on the Lease (field selector on its name) tells every replica
about each renewal. Every event from it is also the operator's heartbeat: it proves that the API
server answers, that watch streams deliver, and that this process's event loop runs
(see health.py). The PostgreSQL advisory lock per table stays the second guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .lease import LeaseApi, LeaseWatch
from .settings import Settings
from .timefmt import k8s_micro_time

log = logging.getLogger("pgcurator.leader")

DEFAULT_LEASE_NAME = "pgcurator-leader"


def default_identity(pod_name: str = "") -> str:
    base = pod_name or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def default_namespace(configured: str = "") -> str:
    """The configured one (PGCURATOR_LEADER_ELECTION_NAMESPACE or POD_NAMESPACE, which the chart
    sets), the in-cluster namespace file, the kubeconfig's, or default."""
    if configured:
        return configured
    with contextlib.suppress(OSError):
        return open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read().strip()
    with contextlib.suppress(Exception):
        from kubernetes import config

        _, current = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        ctx_ns = (current or {}).get("context", {}).get("namespace")
        if ctx_ns:
            return str(ctx_ns)
    return "default"


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str = DEFAULT_LEASE_NAME
    identity: str = ""
    lease_duration: float = 30.0
    renew_deadline: float = 20.0
    renew_interval: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str | None = None) -> ElectionConfig:
        cfg = cls(
            namespace=namespace or default_namespace(settings.leader_election_namespace or settings.pod_namespace),
            name=settings.leader_election_name or DEFAULT_LEASE_NAME,
            identity=settings.leader_election_id or default_identity(settings.pod_name),
            lease_duration=settings.lease_duration,
            renew_deadline=settings.lease_renew_deadline,
            renew_interval=settings.lease_renew_interval,
            retry_period=settings.lease_retry_period,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not (0 < self.renew_interval < self.renew_deadline < self.lease_duration):
            raise ValueError(
                "leader election needs 0 < renew interval < renew deadline < lease duration; got "
                f"{self.renew_interval}s < {self.renew_deadline}s < {self.lease_duration}s"
            )
        if self.retry_period <= 0:
            raise ValueError("the leader election retry period must be positive")


class LeaderElector:
    def __init__(
        self,
        config: ElectionConfig,
        api_client: client.ApiClient,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        on_heartbeat: Callable[[], None] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.api = LeaseApi(api_client, config.namespace, config.name,
                            timeout=max(1.0, min(5.0, config.renew_deadline / 2)))
        self.watch = LeaseWatch(client.ApiClient(api_client.configuration), config.namespace, config.name,
                                self._on_watch_event, read_timeout=max(10.0, config.lease_duration * 2))
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_heartbeat = on_heartbeat
        self.is_leader = False
        self.leader_since: float | None = None
        self.transitions = 0
        self._lease: dict[str, Any] | None = None  # the newest record seen (from a write or the watch)
        self._observed_key: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = time.monotonic()
        self._last_renew = 0.0
        self._changed = asyncio.Event()
        self._stopping = False
        # One Lease write at a time: a release must be based on the answer of a renewal still in
        # flight, or it conflicts and the Lease stays held until it expires.
        self._writing = asyncio.Lock()

    # ------------------------------------------------------------------ observation

    def _observe(self, lease: dict[str, Any]) -> None:
        old_rv = int((self._lease or {}).get("metadata", {}).get("resourceVersion") or 0)
        new_rv = int(lease.get("metadata", {}).get("resourceVersion") or 0)
        if self._lease is not None and new_rv < old_rv:
            return  # a late event: we already know something newer
        self._lease = lease
        spec = lease.get("spec") or {}
        key = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        if key != self._observed_key:
            self._observed_key = key
            self._observed_at = time.monotonic()
        self._changed.set()

    def _on_watch_event(self, type_: str, obj: dict[str, Any]) -> None:
        if self.on_heartbeat is not None:
            self.on_heartbeat()
        if type_ in ("ADDED", "MODIFIED") and obj.get("metadata", {}).get("name") == self.config.name:
            self._observe(obj)
        elif type_ == "DELETED":
            self._lease = None
            self._observed_key = None
            self._changed.set()

    @property
    def holder(self) -> str:
        return str(((self._lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def _acquirable(self) -> bool:
        if self._lease is None:
            return True
        holder = self.holder
        if not holder or holder == self.config.identity:
            return True
        return time.monotonic() - self._observed_at > self._duration_of(self._lease)

    def _duration_of(self, lease: dict[str, Any]) -> float:
        seconds = (lease.get("spec") or {}).get("leaseDurationSeconds")
        return float(seconds) if seconds else self.config.lease_duration

    # ------------------------------------------------------------------ writes

    def _spec(self, now: datetime, lease: dict[str, Any] | None) -> dict[str, Any]:
        old = (lease or {}).get("spec") or {}
        same_holder = old.get("holderIdentity") == self.config.identity
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "acquireTime": old.get("acquireTime") if same_holder and old.get("acquireTime") else k8s_micro_time(now),
            "renewTime": k8s_micro_time(now),
            "leaseTransitions": int(old.get("leaseTransitions") or 0) + (0 if same_holder or lease is None else 1),
        }

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        async with self._writing:
            return await self._acquire_or_renew_once()

    async def _acquire_or_renew_once(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = self._lease if self.is_leader and self._lease is not None else await self.api.get()
            if lease is None:
                written = await self.api.create(self._spec(now, None))
            else:
                self._observe(lease)
                if not self._acquirable():
                    return False
                written = await self.api.replace(lease, self._spec(now, lease))
        except ApiException as exc:
            if exc.status == 409 and self.is_leader:
                # Our cached resourceVersion is stale (someone wrote meanwhile): read and retry once.
                self._lease = None
                with contextlib.suppress(Exception):
                    fresh = await self.api.get()
                    if fresh is not None:
                        self._observe(fresh)
                        if self.holder == self.config.identity:
                            written = await self.api.replace(fresh, self._spec(now, fresh))
                            self._observe(written)
                            return True
                return False
            if exc.status not in (404, 409):
                log.warning("leader election: %s %s", exc.status, exc.reason)
            return False
        except Exception as exc:  # API server unreachable or slow
            log.warning("leader election: cannot reach the API server: %s", exc)
            return False
        self._observe(written)
        return True

    async def release(self) -> None:
        """On clean shutdown: hand the Lease over at once instead of letting it expire."""
        if not self.is_leader or self._lease is None:
            return
        self._set_leader(False)
        try:
            await asyncio.wait_for(self._release(), 5)
            log.info("released the leader Lease %s/%s", self.config.namespace, self.config.name)
        except Exception as exc:
            log.warning("could not release the leader Lease (it expires by itself): %s", exc)

    async def _release(self) -> None:
        async with self._writing:  # after a renewal in flight has landed, on its resourceVersion
            lease = self._lease
            for _ in range(3):
                if lease is None or ((lease.get("spec") or {}).get("holderIdentity") != self.config.identity):
                    return  # deleted, or someone else holds it: nothing of ours to release
                spec = dict(lease.get("spec") or {})
                spec.update({"holderIdentity": None, "leaseDurationSeconds": 1,
                             "renewTime": k8s_micro_time(datetime.now(UTC))})
                try:
                    self._observe(await self.api.replace(lease, spec))
                    return
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                lease = await self.api.get()  # a write of ours we never saw the answer of
            raise RuntimeError("the Lease kept changing under the release")

    # ------------------------------------------------------------------ loop

    def _set_leader(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        if leader:
            self.leader_since = time.monotonic()
            self.transitions += 1
            log.info("became the leader (Lease %s/%s, identity %s)", self.config.namespace,
                     self.config.name, self.config.identity)
            self.on_started_leading()
        else:
            self.leader_since = None
            log.warning("stopped leading (Lease %s/%s): no reconciles until re-elected",
                        self.config.namespace, self.config.name)
            self.on_stopped_leading()

    async def _wait_change(self, seconds: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=max(0.05, seconds))

    async def run(self) -> None:
        self.watch.start()
        try:
            while not self._stopping:
                if self.is_leader:
                    await asyncio.sleep(self.config.renew_interval)
                    if self._stopping:
                        break
                    await self._renew()
                else:
                    # Only a Lease that looks free is worth a read: followers never poll.
                    if (self._lease is None or self._acquirable()) and await self._try_acquire_or_renew() \
                            and self.holder == self.config.identity:
                        self._last_renew = time.monotonic()
                        self._set_leader(True)
                        continue
                    await self._wait_change(self._follower_wait())
        finally:
            self.watch.stop()

    def _follower_wait(self) -> float:
        """Until the Lease may be taken: released, deleted or expired, or a watch event says so."""
        if self._lease is None or not self.holder:
            return self.config.retry_period
        expires_in = self._observed_at + self._duration_of(self._lease) - time.monotonic()
        return expires_in + 0.05 if expires_in > 0 else self.config.retry_period

    async def _renew(self) -> None:
        while not self._stopping:
            remaining = self._last_renew + self.config.renew_deadline - time.monotonic()
            try:
                # A hanging API server must not keep us leading past the deadline.
                renewed = await asyncio.wait_for(self._try_acquire_or_renew(), max(0.1, remaining))
            except TimeoutError:
                renewed = False
            if renewed and self.holder == self.config.identity:
                self._last_renew = time.monotonic()
                return
            if self.holder and self.holder != self.config.identity:
                break  # someone else holds it now
            if time.monotonic() - self._last_renew >= self.config.renew_deadline:
                break
            await asyncio.sleep(self.config.retry_period)
        self._set_leader(False)

    async def stop(self) -> None:
        self._stopping = True
        self._changed.set()
        await self.release()
        self.watch.stop()
