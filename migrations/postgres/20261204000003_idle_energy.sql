-- The energy the idle clock belongs to (ADR 0023, amended): a replica that predates the
-- clock moves a session's energy and leaves its clock behind; the store gives a clock
-- only where this column equals the energy on the row, and billing replays the others
-- from the session's samples.
ALTER TABLE session ADD COLUMN idle_energy_wh BIGINT;

-- The clocks already set that are right: at a whole-meter register reading of the
-- energy on the row (the session's own rule: rounded half away from zero, as NUMERIC's
-- round does and double precision's does not, less the start reading, never below
-- zero). Any other (left behind by an older replica, or set at the session's end above
-- its last reading) stays without, and is replayed.
UPDATE session SET idle_energy_wh = energy_wh
WHERE idle_since IS NOT NULL AND EXISTS (
    SELECT 1 FROM meter_sample m
    WHERE m.session_id = session.session_id AND m.sampled_at = session.idle_since
      AND m.measurand = 'Energy.Active.Import.Register' AND m.phase IS NULL
      AND greatest(round(m.value::NUMERIC) - session.meter_start_wh, 0) = session.energy_wh);
