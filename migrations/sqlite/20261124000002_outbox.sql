-- Transactional outbox: domain events written in the same transaction as the change
-- they describe; the relay publishes them and sets published_at.
CREATE TABLE outbox_event (
    outbox_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    aggregate_id TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX outbox_event_unpublished_idx ON outbox_event (outbox_seq) WHERE published_at IS NULL;
CREATE INDEX outbox_event_type_idx ON outbox_event (event_type, outbox_seq);
