"""Watching the chart's operator pods from the host: which pod leads (its own /metrics, scraped on
the pod's address), who holds the Lease, and a sampler that records both over a disruption."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config

from .kube import Cluster, http_get

SYSTEM_NS = "pgcurator-system"
RELEASE = "pgc"
SELECTOR = "app.kubernetes.io/name=pgcurator"
LEASE = f"{RELEASE}-pgcurator-leader"


def is_leader(pod: dict[str, Any]) -> bool:
    ip = pod.get("status", {}).get("podIP")
    if not ip:
        return False
    status, text = http_get(f"http://{ip}:8080/metrics", timeout=2)
    return status == 200 and "\npgcurator_leader 1.0" in text


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class Api:
    """The official client on the admin kubeconfig: polling the Lease every 50 ms with kubectl
    would measure kubectl."""

    def __init__(self, cluster: Cluster) -> None:
        self.api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self.coordination = client.CoordinationV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def holder(self) -> str:
        lease = self.coordination.read_namespaced_lease(LEASE, SYSTEM_NS, _request_timeout=5)
        return str(lease.spec.holder_identity or "")

    def pods(self) -> list[Any]:
        return [p for p in self.core.list_namespaced_pod(SYSTEM_NS, label_selector=SELECTOR, _request_timeout=5).items
                if p.metadata.deletion_timestamp is None or p.status.pod_ip]


@dataclass
class Sample:
    at: float
    leaders: list[str]           # pods whose /metrics say pgcurator_leader 1
    holder: str                  # the Lease's holderIdentity


@dataclass
class Sampler:
    """Every ~0.1 s: each operator pod's own view (leader or not) and the Lease holder."""

    api: Api
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        pods: list[Any] = []
        refreshed = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - refreshed > 1:
                    pods, refreshed = self.api.pods(), time.monotonic()
                leaders = []
                for p in pods:
                    if p.status.pod_ip:
                        status, text = http_get(f"http://{p.status.pod_ip}:8080/metrics", timeout=1)
                        if status == 200 and "\npgcurator_leader 1.0" in text:
                            leaders.append(p.metadata.name)
                self.samples.append(Sample(time.monotonic(), leaders, self.api.holder()))
            except Exception:  # the API server is busy: skip this sample
                pass
            self._stop.wait(0.1)

    def most_leaders_at_once(self) -> int:
        return max((len(s.leaders) for s in self.samples), default=0)

    def longest_without_leader(self) -> float:
        """The longest stretch in which no pod led (no reconciles could run)."""
        longest, since = 0.0, None
        for s in self.samples:
            if not s.leaders and since is None:
                since = s.at
            elif s.leaders and since is not None:
                longest, since = max(longest, s.at - since), None
        if since is not None and self.samples:
            longest = max(longest, self.samples[-1].at - since)
        return longest
