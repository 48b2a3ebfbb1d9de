-- The OpenChargeMap mirror (embedded and PostgreSQL store; MongoDB has its own): one row
-- per POI, the station as JSON, with the columns searches and upserts need.
CREATE TABLE station (
    ocm_id                  BIGINT PRIMARY KEY,
    latitude                DOUBLE PRECISION NOT NULL,
    longitude               DOUBLE PRECISION NOT NULL,
    active                  BOOLEAN NOT NULL,
    date_last_status_update TIMESTAMPTZ,
    data                    JSONB NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);
-- Radius searches prefilter on a bounding box, then measure exactly.
CREATE INDEX station_position_idx ON station (latitude, longitude) WHERE active;
