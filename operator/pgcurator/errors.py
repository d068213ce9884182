"""Errors that end up on a resource's status: each has a reason and a message a person can act on."""

from __future__ import annotations


class CuratorError(Exception):
    """A failure with a Kubernetes condition reason (CamelCase) and a human message.

    `transient` errors (unreachable database, lock timeouts) are retried with backoff;
    the others wait for the spec or the database to change.
    """

    reason = "Error"
    transient = False

    def __init__(self, message: str, *, reason: str | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if transient is not None:
            self.transient = transient


class SpecError(CuratorError):
    reason = "InvalidSpec"


class PlanError(CuratorError):
    """The database is not in a shape the spec can be applied to (missing table, wrong type...)."""

    reason = "CannotPlan"


class ConnectionFailed(CuratorError):
    reason = "DatabaseUnreachable"
    transient = True


class SecretProblem(CuratorError):
    reason = "SecretInvalid"
    transient = True


class LockBusy(CuratorError):
    reason = "WaitingForLock"
    transient = True


class ApiUnavailable(CuratorError):
    """The Kubernetes API server could not be reached or answered that it cannot serve now
    (connection refused or reset, timeouts, 429, 5xx). Retried with backoff."""

    reason = "ApiUnreachable"
    transient = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiError(CuratorError):
    """The Kubernetes API server refused a call (4xx other than those the caller expects).
    `status` is the HTTP status; 403 usually means the operator's RBAC lacks a permission."""

    reason = "ApiError"
    transient = True  # fixed outside the resource (RBAC, admission): retried with backoff

    def __init__(self, message: str, *, status: int, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.status = status
