"""Every knob of the operator in one typed, frozen object (kopf's OperatorSettings habit): read
from the environment once at start, validated once. A bad value is one clear line naming the
variable, not a traceback at import. Modules ask `current()`; nothing else reads os.environ."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CuratorError
from .limits import INPUT_ECHO


class SettingsError(CuratorError):
    reason = "InvalidSettings"


def _env(name: str, doc: str) -> Any:
    return {"env": name, "doc": doc}


@dataclass(frozen=True)
class Settings:
    # --- retries of a failed reconcile (seconds)
    retry_min: float = field(default=2.0, metadata=_env(
        "PGCURATOR_RETRY_MIN", "first retry after a transient failure (database, Secret, API server)"))
    # A database that comes back is noticed within this many seconds.
    retry_max: float = field(default=20.0, metadata=_env(
        "PGCURATOR_RETRY_MAX", "longest wait between retries of a transient failure"))
    plan_error_retry: float = field(default=60.0, metadata=_env(
        "PGCURATOR_PLAN_ERROR_RETRY", "retry of a resource whose spec cannot be planned against its database"))
    lock_wait_retry: float = field(default=15.0, metadata=_env(
        "PGCURATOR_LOCK_WAIT_RETRY", "retry of a run that met another run's or another session's lock"))
    # --- database connections
    pool_size: int = field(default=8, metadata=_env(
        "PGCURATOR_POOL_SIZE", "connections per target database, shared by every resource pointing at it"))
    connect_timeout: float = field(default=10.0, metadata=_env(
        "PGCURATOR_CONNECT_TIMEOUT", "seconds to establish one database connection"))
    lock_backoff: float = field(default=0.5, metadata=_env(
        "PGCURATOR_LOCK_BACKOFF", "first wait before retrying a step that hit lockTimeout (doubles, jittered)"))
    index_snapshot_seconds: float = field(default=300.0, metadata=_env(
        "PGCURATOR_INDEX_SNAPSHOT_SECONDS", "minimum seconds between two index usage snapshots"))
    # --- Kubernetes
    api_threads: int = field(default=16, metadata=_env(
        "PGCURATOR_API_THREADS", "threads for the synchronous Kubernetes client's calls"))
    pod_name: str = field(default="", metadata=_env(
        "POD_NAME", "this replica's name (Events, history rows, Lease identity); default: the host name"))
    pod_namespace: str = field(default="", metadata=_env("POD_NAMESPACE", "this replica's namespace"))
    in_cluster: bool = field(default=False, metadata=_env(
        "KUBERNETES_SERVICE_HOST", "set by Kubernetes inside a pod: use the service account, not a kubeconfig"))
    watch_namespaces: tuple[str, ...] = field(default=(), metadata=_env(
        "WATCH_NAMESPACES", "comma-separated namespaces to watch; empty: all"))
    http_address: str = field(default="", metadata=_env(
        "PGCURATOR_HTTP_ADDRESS", "serve /healthz, /readyz and /metrics here, e.g. 0.0.0.0:8080"))
    liveness: str = field(default="", metadata=_env(
        "PGCURATOR_LIVENESS", "older spelling of PGCURATOR_HTTP_ADDRESS, as a URL"))
    log_format: str = field(default="plain", metadata=_env("PGCURATOR_LOG_FORMAT", "plain or json"))
    heartbeat_stale: float = field(default=60.0, metadata=_env(
        "PGCURATOR_HEARTBEAT_STALE", "seconds without a watch event before liveness fails"))
    # --- leader election (client-go's defaults)
    leader_election_namespace: str = field(default="", metadata=_env(
        "PGCURATOR_LEADER_ELECTION_NAMESPACE", "namespace of the leader Lease; default: POD_NAMESPACE"))
    leader_election_name: str = field(default="pgcurator-leader", metadata=_env(
        "PGCURATOR_LEADER_ELECTION_NAME", "name of the leader Lease"))
    leader_election_id: str = field(default="", metadata=_env(
        "PGCURATOR_LEADER_ELECTION_ID", "identity in the Lease; default: POD_NAME plus a random suffix"))
    lease_duration: float = field(default=30.0, metadata=_env(
        "PGCURATOR_LEASE_DURATION", "seconds a Lease stays valid without renewal"))
    lease_renew_deadline: float = field(default=20.0, metadata=_env(
        "PGCURATOR_LEASE_RENEW_DEADLINE", "a leader that cannot renew for this long stops acting"))
    lease_renew_interval: float = field(default=10.0, metadata=_env(
        "PGCURATOR_LEASE_RENEW_INTERVAL", "seconds between renewals"))
    lease_retry_period: float = field(default=2.0, metadata=_env(
        "PGCURATOR_LEASE_RETRY_PERIOD", "seconds between attempts to acquire or renew"))
    # --- the CLI
    database_url: str = field(default="", metadata=_env(
        "DATABASE_URL", "default --database-url of `pgcurator apply` and `pgcurator plan`"))

    @property
    def operator_id(self) -> str:
        """Who ran a statement, in history rows and Events."""
        return self.pod_name or socket.gethostname()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and f.type != "bool"):
                continue
            values[f.name] = _parse(name, raw.strip(), f.type, f.default)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = ["retry_min", "retry_max", "plan_error_retry", "lock_wait_retry", "connect_timeout", "lock_backoff",
                    "heartbeat_stale", "lease_retry_period", "pool_size", "api_threads"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be greater than zero (e.g. {env_name(name)}="
                                    f"{_default(name)})")
        if self.index_snapshot_seconds < 0:
            raise SettingsError("PGCURATOR_INDEX_SNAPSHOT_SECONDS must not be negative (e.g. 300)")
        if self.retry_min > self.retry_max:
            raise SettingsError(f"PGCURATOR_RETRY_MIN ({self.retry_min:g}) must not exceed PGCURATOR_RETRY_MAX "
                                f"({self.retry_max:g})")
        if not (0 < self.lease_renew_interval < self.lease_renew_deadline < self.lease_duration):
            raise SettingsError(
                "leader election needs 0 < PGCURATOR_LEASE_RENEW_INTERVAL < PGCURATOR_LEASE_RENEW_DEADLINE < "
                f"PGCURATOR_LEASE_DURATION; got {self.lease_renew_interval:g} < {self.lease_renew_deadline:g} < "
                f"{self.lease_duration:g} (e.g. 10, 20, 30)")
        if self.log_format not in ("plain", "json"):
            raise SettingsError(f"PGCURATOR_LOG_FORMAT must be plain or json, not {self.log_format!r}")


def env_name(field_name: str) -> str:
    return str(next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name))


def _default(field_name: str) -> Any:
    return next(f.default for f in dataclasses.fields(Settings) if f.name == field_name)


def _parse(name: str, raw: str, type_: Any, default: Any) -> Any:
    shown = raw if len(raw) <= INPUT_ECHO else raw[:INPUT_ECHO] + "..."
    if type_ == "float":
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={shown!r} is not a number of seconds (e.g. {name}={default:g})") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SettingsError(f"{name}={shown!r} is not a finite number (e.g. {name}={default:g})")
        return value
    if type_ == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={shown!r} is not a whole number (e.g. {name}={default})") from None
    if type_ == "bool":
        return raw != ""  # KUBERNETES_SERVICE_HOST: set means inside a pod
    if type_ == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


_current: Settings | None = None


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment (at start); raises SettingsError with one clear line."""
    global _current
    _current = Settings.from_env(environ)
    return _current


def current() -> Settings:
    """The settings in force: those loaded at start, else the environment's (read once)."""
    return _current if _current is not None else load()


def configure(settings: Settings | None) -> None:
    """Install settings (tests, embedders); None forgets them (the next `current()` reads the environment)."""
    global _current
    _current = settings


@contextlib.contextmanager
def overridden(**changes: Any) -> Iterator[Settings]:
    """Tests: these settings, for the duration of a `with` block."""
    global _current
    before = _current
    _current = dataclasses.replace(current(), **changes)
    _current.validate()
    try:
        yield _current
    finally:
        _current = before
