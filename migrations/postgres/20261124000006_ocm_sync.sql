-- The OpenChargeMap sync: its runs, where each scope (a country or a bounding box) got
-- to, OCM's reference data, and which OCM POI each of our chargers stands at.

-- One row per sync run. At most one runs at a time across every replica (the partial
-- unique index); a run whose lease ran out (its replica died) is marked interrupted
-- and the next run resumes from the scopes' cursors.
CREATE TABLE ocm_sync_run (
    run_id      UUID PRIMARY KEY,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    lease_until TIMESTAMPTZ NOT NULL,
    fetched     BIGINT NOT NULL DEFAULT 0,
    inserted    BIGINT NOT NULL DEFAULT 0,
    updated     BIGINT NOT NULL DEFAULT 0,
    unchanged   BIGINT NOT NULL DEFAULT 0,
    excluded    BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE UNIQUE INDEX ocm_sync_run_one_running ON ocm_sync_run (status) WHERE status = 'running';
CREATE INDEX ocm_sync_run_started_idx ON ocm_sync_run (started_at);

-- Per scope: the full import pages by id (last_id) until an empty page; changes are
-- then pulled from the modified_since watermark, paging by id at that watermark
-- (change_last_id; OCM's timestamps are minutes, many POIs share one), and the
-- watermark moves to the newest change seen (newest_seen) when a pass is done. A full
-- import is repeated now and then (full_finished_at) to find POIs OCM no longer lists.
CREATE TABLE ocm_sync_cursor (
    scope            TEXT PRIMARY KEY,
    full_done        BOOLEAN NOT NULL,
    last_id          BIGINT NOT NULL,
    modified_since   TIMESTAMPTZ,
    change_last_id   BIGINT NOT NULL,
    newest_seen      TIMESTAMPTZ,
    full_started_at  TIMESTAMPTZ,
    full_finished_at TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- When a full import last saw each station (those it no longer sees are gone from
-- OCM's listing), and its country for the sweep of a country scope.
ALTER TABLE station ADD COLUMN seen_at TIMESTAMPTZ;
ALTER TABLE station ADD COLUMN country_id BIGINT;
UPDATE station SET country_id = (data->>'country_id')::BIGINT;
CREATE INDEX station_country_idx ON station (country_id) WHERE active;

-- /v3/referencedata as OCM last sent it (data providers and their licences, operators,
-- connection types, countries).
CREATE TABLE ocm_reference_data (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    data       JSONB NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL
);

-- Our chargers at public stations: the live status of a linked charger is shown on the
-- station.
CREATE TABLE station_link (
    charger_id TEXT PRIMARY KEY REFERENCES charger (charger_id) ON DELETE CASCADE,
    ocm_id     BIGINT NOT NULL
);
CREATE INDEX station_link_ocm_idx ON station_link (ocm_id);
