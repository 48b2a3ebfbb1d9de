-- Transactional outbox: domain events written in the same transaction as the change
-- they describe; the relay publishes them and sets published_at.
CREATE TABLE outbox_event (
    outbox_seq   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    version      BIGINT NOT NULL,
    aggregate_id TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    payload      JSONB NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_event_unpublished_idx ON outbox_event (outbox_seq) WHERE published_at IS NULL;
CREATE INDEX outbox_event_type_idx ON outbox_event (event_type, outbox_seq);
