"""Seed schemas used as realistic scenarios (seed 001: event_logs)."""

EVENT_LOGS = """
CREATE TABLE event_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    player_id        bigint NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb,
    server_timestamp timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, server_timestamp)
) PARTITION BY RANGE (server_timestamp);
CREATE INDEX event_logs_player_time ON event_logs (player_id, server_timestamp DESC);
CREATE INDEX event_logs_type_time ON event_logs (event_type, server_timestamp DESC);
"""


def event_logs_policy(**spec_overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
        "timeouts": {"lockTimeout": "500ms", "lockRetries": 3},
    }
    spec.update(spec_overrides)
    return spec
