"""Seed schemas used as realistic scenarios (seed 001: event_logs)."""

from pathlib import Path

# The same DDL the README's dev environment applies: one source for the example and the tests.
EVENT_LOGS = (Path(__file__).resolve().parents[2] / "examples" / "event-logs.sql").read_text()


def event_logs_policy(**spec_overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
        "timeouts": {"lockTimeout": "500ms", "lockRetries": 3},
    }
    spec.update(spec_overrides)
    return spec
