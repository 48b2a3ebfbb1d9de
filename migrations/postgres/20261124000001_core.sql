-- Core schema: chargers, connectors, id tokens, sessions, meter samples, users, secrets.
-- Times are TIMESTAMPTZ; money will be BIGINT minor units. The SQLite twin in
-- migrations/sqlite/ holds the same tables; the persistence contract tests check both.

CREATE TABLE charger (
    charger_id          TEXT PRIMARY KEY,
    password_hash       TEXT,
    security_profile    BIGINT NOT NULL DEFAULT 1,
    registration_status TEXT NOT NULL DEFAULT 'Accepted',
    description         TEXT,
    boot_info           JSONB,
    ocpp_version        TEXT,
    last_boot_at        TIMESTAMPTZ,
    last_seen_at        TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE connector (
    charger_id   TEXT NOT NULL REFERENCES charger (charger_id) ON DELETE CASCADE,
    connector_id BIGINT NOT NULL,
    status       TEXT NOT NULL,
    error_code   TEXT,
    info         TEXT,
    availability TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (charger_id, connector_id)
);

CREATE TABLE id_token (
    id_token_key TEXT PRIMARY KEY,
    id_token     TEXT NOT NULL,
    status       TEXT NOT NULL,
    token_type   TEXT NOT NULL,
    expiry_date  TIMESTAMPTZ,
    group_id     TEXT,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE session (
    session_id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id     TEXT NOT NULL,
    connector_id   BIGINT NOT NULL,
    transaction_id TEXT,
    id_token       TEXT,
    status         TEXT NOT NULL,
    meter_start_wh BIGINT NOT NULL,
    meter_stop_wh  BIGINT,
    energy_wh      BIGINT NOT NULL DEFAULT 0,
    power_w        DOUBLE PRECISION,
    soc_percent    DOUBLE PRECISION,
    started_at     TIMESTAMPTZ NOT NULL,
    stopped_at     TIMESTAMPTZ,
    stop_reason    TEXT,
    last_meter_at  TIMESTAMPTZ,
    remote_start   BOOLEAN NOT NULL DEFAULT FALSE,
    reservation_id BIGINT,
    UNIQUE (charger_id, transaction_id)
);
CREATE INDEX session_status_idx ON session (status);
CREATE INDEX session_charger_idx ON session (charger_id, started_at);

CREATE TABLE meter_sample (
    meter_sample_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id      BIGINT NOT NULL REFERENCES session (session_id) ON DELETE CASCADE,
    sampled_at      TIMESTAMPTZ NOT NULL,
    measurand       TEXT NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    unit            TEXT,
    phase           TEXT,
    context         TEXT
);
CREATE INDEX meter_sample_session_idx ON meter_sample (session_id, sampled_at);

CREATE TABLE app_user (
    user_id       UUID PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

-- A charger's device model (OCPP 2.0.1 NotifyReport), replaced whole by each complete report.
CREATE TABLE device_model (
    charger_id  TEXT PRIMARY KEY REFERENCES charger (charger_id) ON DELETE CASCADE,
    variables   JSONB NOT NULL,
    reported_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE secret (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
