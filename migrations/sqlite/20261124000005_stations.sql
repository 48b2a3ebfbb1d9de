-- SQLite twin of migrations/postgres/20261124000005_stations.sql.
-- The OpenChargeMap mirror (embedded and PostgreSQL store; MongoDB has its own): one row
-- per POI, the station as JSON, with the columns searches and upserts need.
CREATE TABLE station (
    ocm_id                  INTEGER PRIMARY KEY,
    latitude                REAL NOT NULL,
    longitude               REAL NOT NULL,
    active                  INTEGER NOT NULL,
    date_last_status_update TEXT,
    data                    TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
-- Radius searches prefilter on a bounding box, then measure exactly.
CREATE INDEX station_position_idx ON station (latitude, longitude) WHERE active;
