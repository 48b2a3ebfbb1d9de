-- Billing and notification: tariffs and their overrides, plans, payment methods (gateway
-- tokens only), invoices with a gapless number per year, payments with their retry
-- state, the events each consumer has processed, webhooks and their delivery log.
-- Money is BIGINT minor units with a currency column beside it.

CREATE TABLE tariff (
    tariff_id        UUID PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    currency         TEXT NOT NULL,
    vat_basis_points BIGINT NOT NULL,
    definition       JSONB NOT NULL,
    is_default       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL
);

-- A charger's own tariff, or its operator's, wins over the driver's plan.
CREATE TABLE tariff_override (
    scope     TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    tariff_id UUID NOT NULL REFERENCES tariff (tariff_id),
    PRIMARY KEY (scope, scope_key)
);

ALTER TABLE charger ADD COLUMN operator_id TEXT;
ALTER TABLE app_user ADD COLUMN plan_tariff_id UUID REFERENCES tariff (tariff_id);
ALTER TABLE app_user ADD COLUMN plan_since TIMESTAMPTZ;
ALTER TABLE id_token ADD COLUMN user_id UUID REFERENCES app_user (user_id) ON DELETE SET NULL;

CREATE TABLE payment_method (
    payment_method_id UUID PRIMARY KEY,
    user_id           UUID NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    gateway           TEXT NOT NULL,
    gateway_token     TEXT NOT NULL,
    brand             TEXT NOT NULL,
    last4             TEXT NOT NULL,
    exp_month         BIGINT NOT NULL,
    exp_year          BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX payment_method_user_idx ON payment_method (user_id, created_at);

-- invoice_number = invoice_year || '-' || invoice_seq (6 digits); the counter row of a
-- year is taken in the invoice's own transaction, so numbers have no gaps.
CREATE TABLE invoice_counter (
    invoice_year BIGINT PRIMARY KEY,
    last_seq     BIGINT NOT NULL
);

CREATE TABLE invoice (
    invoice_id       UUID PRIMARY KEY,
    invoice_number   TEXT NOT NULL UNIQUE,
    invoice_year     BIGINT NOT NULL,
    invoice_seq      BIGINT NOT NULL,
    user_id          UUID NOT NULL REFERENCES app_user (user_id),
    kind             TEXT NOT NULL,
    session_id       BIGINT UNIQUE REFERENCES session (session_id),
    period           TEXT,
    tariff_id        UUID REFERENCES tariff (tariff_id),
    tariff_name      TEXT NOT NULL,
    energy_wh        BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    net              BIGINT NOT NULL,
    vat              BIGINT NOT NULL,
    gross            BIGINT NOT NULL,
    vat_basis_points BIGINT NOT NULL,
    lines            JSONB NOT NULL,
    status           TEXT NOT NULL,
    issued_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (invoice_year, invoice_seq),
    UNIQUE (user_id, kind, period)
);
CREATE INDEX invoice_user_idx ON invoice (user_id, issued_at);

CREATE TABLE payment (
    payment_id        UUID PRIMARY KEY,
    invoice_id        UUID NOT NULL UNIQUE REFERENCES invoice (invoice_id),
    user_id           UUID NOT NULL,
    amount            BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    declines          BIGINT NOT NULL DEFAULT 0,
    -- Transient failures since the last reported one, and failures reported (PAYMENT_FAILED).
    transient_streak  BIGINT NOT NULL DEFAULT 0,
    reported_failures BIGINT NOT NULL DEFAULT 0,
    -- The gateway idempotency key of the current round: kept across quiet retries,
    -- new after each reported failure (a processor replays a key's first outcome).
    charge_key        UUID NOT NULL,
    next_attempt_at   TIMESTAMPTZ,
    last_error        TEXT,
    gateway_charge_id TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX payment_due_idx ON payment (next_attempt_at) WHERE status = 'pending';

-- What each consumer has done: written in the same transaction as the effect.
CREATE TABLE processed_event (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE webhook (
    webhook_id  UUID PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    event_types JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_delivery (
    delivery_id      UUID PRIMARY KEY,
    webhook_id       UUID NOT NULL REFERENCES webhook (webhook_id) ON DELETE CASCADE,
    event_id         UUID NOT NULL,
    event_type       TEXT NOT NULL,
    body             JSONB NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at) WHERE status = 'pending';
