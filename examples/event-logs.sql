-- Seed 001, section 1.1: event_logs, range-partitioned by month on server_timestamp.
CREATE TABLE IF NOT EXISTS event_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    player_id        bigint NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb,
    server_timestamp timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, server_timestamp)
) PARTITION BY RANGE (server_timestamp);
CREATE INDEX IF NOT EXISTS event_logs_player_time ON event_logs (player_id, server_timestamp DESC);
CREATE INDEX IF NOT EXISTS event_logs_type_time ON event_logs (event_type, server_timestamp DESC);
