-- Core schema, SQLite twin of migrations/postgres/20261124000001_core.sql.
-- Times are RFC 3339 TEXT (as sqlx encodes them); AUTOINCREMENT keeps session ids
-- (which are OCPP 1.6 transaction ids) from ever being reused.

CREATE TABLE charger (
    charger_id          TEXT PRIMARY KEY,
    password_hash       TEXT,
    security_profile    INTEGER NOT NULL DEFAULT 1,
    registration_status TEXT NOT NULL DEFAULT 'Accepted',
    description         TEXT,
    boot_info           TEXT,
    ocpp_version        TEXT,
    last_boot_at        TEXT,
    last_seen_at        TEXT,
    created_at          TEXT NOT NULL
);

CREATE TABLE connector (
    charger_id   TEXT NOT NULL REFERENCES charger (charger_id) ON DELETE CASCADE,
    connector_id INTEGER NOT NULL,
    status       TEXT NOT NULL,
    error_code   TEXT,
    info         TEXT,
    availability TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (charger_id, connector_id)
);

CREATE TABLE id_token (
    id_token_key TEXT PRIMARY KEY,
    id_token     TEXT NOT NULL,
    status       TEXT NOT NULL,
    token_type   TEXT NOT NULL,
    expiry_date  TEXT,
    group_id     TEXT,
    updated_at   TEXT NOT NULL
);

CREATE TABLE session (
    session_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id     TEXT NOT NULL,
    connector_id   INTEGER NOT NULL,
    transaction_id TEXT,
    id_token       TEXT,
    status         TEXT NOT NULL,
    meter_start_wh INTEGER NOT NULL,
    meter_stop_wh  INTEGER,
    energy_wh      INTEGER NOT NULL DEFAULT 0,
    power_w        REAL,
    soc_percent    REAL,
    started_at     TEXT NOT NULL,
    stopped_at     TEXT,
    stop_reason    TEXT,
    last_meter_at  TEXT,
    remote_start   INTEGER NOT NULL DEFAULT 0,
    reservation_id INTEGER,
    UNIQUE (charger_id, transaction_id)
);
CREATE INDEX session_status_idx ON session (status);
CREATE INDEX session_charger_idx ON session (charger_id, started_at);

CREATE TABLE meter_sample (
    meter_sample_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      INTEGER NOT NULL REFERENCES session (session_id) ON DELETE CASCADE,
    sampled_at      TEXT NOT NULL,
    measurand       TEXT NOT NULL,
    value           REAL NOT NULL,
    unit            TEXT,
    phase           TEXT,
    context         TEXT
);
CREATE INDEX meter_sample_session_idx ON meter_sample (session_id, sampled_at);

CREATE TABLE app_user (
    user_id       BLOB PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

-- A charger's device model (OCPP 2.0.1 NotifyReport), replaced whole by each complete report.
CREATE TABLE device_model (
    charger_id  TEXT PRIMARY KEY REFERENCES charger (charger_id) ON DELETE CASCADE,
    variables   TEXT NOT NULL,
    reported_at TEXT NOT NULL
);

CREATE TABLE secret (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
