-- SQLite twin of migrations/postgres/20261204000001_idle_since.sql.
-- The idle fee's clock on the session row (ADR 0023): billing no longer reads a
-- session's meter samples back at its end.
ALTER TABLE session ADD COLUMN idle_since TEXT;

-- Sessions running through the upgrade: the first whole-meter register reading of the
-- energy delivered so far (registers only rise, so the largest value is the latest).
UPDATE session SET idle_since = (
    SELECT min(m.sampled_at) FROM meter_sample m
    WHERE m.session_id = session.session_id
      AND m.measurand = 'Energy.Active.Import.Register' AND m.phase IS NULL
      AND round(m.value) = (
          SELECT max(round(r.value)) FROM meter_sample r
          WHERE r.session_id = session.session_id
            AND r.measurand = 'Energy.Active.Import.Register' AND r.phase IS NULL))
WHERE status = 'active';
