-- SQLite twin of migrations/postgres/20261124000003_billing.sql.
-- Billing and notification: tariffs and their overrides, plans, payment methods (gateway
-- tokens only), invoices with a gapless number per year, payments with their retry
-- state, the events each consumer has processed, webhooks and their delivery log.
-- Money is INTEGER minor units with a currency column beside it.

CREATE TABLE tariff (
    tariff_id        BLOB PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    currency         TEXT NOT NULL,
    vat_basis_points INTEGER NOT NULL,
    definition       TEXT NOT NULL,
    is_default       INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL
);

-- A charger's own tariff, or its operator's, wins over the driver's plan.
CREATE TABLE tariff_override (
    scope     TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    tariff_id BLOB NOT NULL REFERENCES tariff (tariff_id),
    PRIMARY KEY (scope, scope_key)
);

ALTER TABLE charger ADD COLUMN operator_id TEXT;
ALTER TABLE app_user ADD COLUMN plan_tariff_id BLOB REFERENCES tariff (tariff_id);
ALTER TABLE app_user ADD COLUMN plan_since TEXT;
ALTER TABLE id_token ADD COLUMN user_id BLOB REFERENCES app_user (user_id) ON DELETE SET NULL;

CREATE TABLE payment_method (
    payment_method_id BLOB PRIMARY KEY,
    user_id           BLOB NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    gateway           TEXT NOT NULL,
    gateway_token     TEXT NOT NULL,
    brand             TEXT NOT NULL,
    last4             TEXT NOT NULL,
    exp_month         INTEGER NOT NULL,
    exp_year          INTEGER NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE INDEX payment_method_user_idx ON payment_method (user_id, created_at);

-- invoice_number = invoice_year || '-' || invoice_seq (6 digits); the counter row of a
-- year is taken in the invoice's own transaction, so numbers have no gaps.
CREATE TABLE invoice_counter (
    invoice_year INTEGER PRIMARY KEY,
    last_seq     INTEGER NOT NULL
);

CREATE TABLE invoice (
    invoice_id       BLOB PRIMARY KEY,
    invoice_number   TEXT NOT NULL UNIQUE,
    invoice_year     INTEGER NOT NULL,
    invoice_seq      INTEGER NOT NULL,
    user_id          BLOB NOT NULL REFERENCES app_user (user_id),
    kind             TEXT NOT NULL,
    session_id       INTEGER UNIQUE REFERENCES session (session_id),
    period           TEXT,
    tariff_id        BLOB REFERENCES tariff (tariff_id),
    tariff_name      TEXT NOT NULL,
    energy_wh        INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    net              INTEGER NOT NULL,
    vat              INTEGER NOT NULL,
    gross            INTEGER NOT NULL,
    vat_basis_points INTEGER NOT NULL,
    lines            TEXT NOT NULL,
    status           TEXT NOT NULL,
    issued_at        TEXT NOT NULL,
    UNIQUE (invoice_year, invoice_seq),
    UNIQUE (user_id, kind, period)
);
CREATE INDEX invoice_user_idx ON invoice (user_id, issued_at);

CREATE TABLE payment (
    payment_id        BLOB PRIMARY KEY,
    invoice_id        BLOB NOT NULL UNIQUE REFERENCES invoice (invoice_id),
    user_id           BLOB NOT NULL,
    amount            INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    declines          INTEGER NOT NULL DEFAULT 0,
    -- Transient failures since the last reported one, and failures reported (PAYMENT_FAILED).
    transient_streak  INTEGER NOT NULL DEFAULT 0,
    reported_failures INTEGER NOT NULL DEFAULT 0,
    -- The gateway idempotency key of the current round: kept across quiet retries,
    -- new after each reported failure (a processor replays a key's first outcome).
    charge_key        BLOB NOT NULL,
    next_attempt_at   TEXT,
    last_error        TEXT,
    gateway_charge_id TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX payment_due_idx ON payment (next_attempt_at) WHERE status = 'pending';

-- What each consumer has done: written in the same transaction as the effect.
CREATE TABLE processed_event (
    consumer     TEXT NOT NULL,
    event_id     BLOB NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE webhook (
    webhook_id  BLOB PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    event_types TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE webhook_delivery (
    delivery_id      BLOB PRIMARY KEY,
    webhook_id       BLOB NOT NULL REFERENCES webhook (webhook_id) ON DELETE CASCADE,
    event_id         BLOB NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at) WHERE status = 'pending';
