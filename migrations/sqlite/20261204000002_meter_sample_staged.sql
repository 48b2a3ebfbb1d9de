-- SQLite only (ADR 0023). Meter samples land here first, at the end of their session's
-- slot (session_id mod 16), and each batch moves one slot into meter_sample in session
-- order: a session's samples reach meter_sample_session_idx together, every 16 batches,
-- instead of each batch rewriting one index page per charging session in the WAL.
CREATE TABLE meter_sample_staged (
    slot       INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    session_id INTEGER NOT NULL REFERENCES session (session_id) ON DELETE CASCADE,
    sampled_at TEXT NOT NULL,
    measurand  TEXT NOT NULL,
    value      REAL NOT NULL,
    unit       TEXT,
    phase      TEXT,
    context    TEXT,
    PRIMARY KEY (slot, seq)
) WITHOUT ROWID;
