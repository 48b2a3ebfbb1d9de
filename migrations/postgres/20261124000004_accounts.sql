-- Driver accounts for the app: a display name, refresh tokens (stored as SHA-256
-- hashes, rotated on use, revoked by family), vehicles; indexes for "my" lists.

ALTER TABLE app_user ADD COLUMN name TEXT;

CREATE TABLE refresh_token (
    refresh_token_id UUID PRIMARY KEY,
    user_id          UUID NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    family_id        UUID NOT NULL,
    token_hash       TEXT NOT NULL UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    used_at          TIMESTAMPTZ,
    revoked_at       TIMESTAMPTZ
);
CREATE INDEX refresh_token_family_idx ON refresh_token (family_id);

CREATE TABLE vehicle (
    vehicle_id           UUID PRIMARY KEY,
    user_id              UUID NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    make                 TEXT NOT NULL,
    model                TEXT NOT NULL,
    license_plate        TEXT,
    battery_capacity_kwh DOUBLE PRECISION,
    created_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX vehicle_user_idx ON vehicle (user_id, created_at);

CREATE INDEX id_token_user_idx ON id_token (user_id);
-- Whose session it is: the owner of its token when the token came (recorded then, so
-- that a card passed on later does not take its history along).
ALTER TABLE session ADD COLUMN user_id UUID REFERENCES app_user (user_id) ON DELETE SET NULL;
CREATE INDEX session_user_idx ON session (user_id, session_id);
