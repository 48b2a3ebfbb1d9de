//! Charging sessions and the meter readings that drive them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{ChargerId, ConnectorId, IdToken, SessionId, TransactionId};
use super::requests::TransactionEvent;

/// What a sampled value measures, for the measurands a session tracks; anything else
/// is kept under its OCPP name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Measurand {
    /// `Energy.Active.Import.Register`: the meter's running total, normalised to Wh.
    EnergyImportRegister,
    /// `Power.Active.Import`, normalised to W.
    PowerImport,
    /// `SoC`, in percent.
    StateOfCharge,
    Other(String),
}

impl Measurand {
    pub const ENERGY_IMPORT_REGISTER: &'static str = "Energy.Active.Import.Register";

    pub fn parse(raw: &str) -> Self {
        match raw {
            Self::ENERGY_IMPORT_REGISTER => Self::EnergyImportRegister,
            "Power.Active.Import" => Self::PowerImport,
            "SoC" => Self::StateOfCharge,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::EnergyImportRegister => Self::ENERGY_IMPORT_REGISTER,
            Self::PowerImport => "Power.Active.Import",
            Self::StateOfCharge => "SoC",
            Self::Other(name) => name,
        }
    }
}

impl From<String> for Measurand {
    fn from(raw: String) -> Self {
        Measurand::parse(&raw)
    }
}

impl From<Measurand> for String {
    fn from(m: Measurand) -> Self {
        m.as_str().to_owned()
    }
}

/// One sampled value, in canonical units (Wh, W, %, or the unit the charger sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterSample {
    pub timestamp: DateTime<Utc>,
    pub measurand: Measurand,
    pub value: f64,
    pub unit: Option<String>,
    pub phase: Option<String>,
    pub context: Option<String>,
}

impl MeterSample {
    /// Builds a sample from the charger's value and unit, converting kWh to Wh and kW to W.
    /// Returns `None` for a value that is not a finite number (e.g. signed meter data).
    pub fn normalised(
        timestamp: DateTime<Utc>,
        measurand: Measurand,
        raw_value: &str,
        unit: Option<&str>,
        phase: Option<String>,
        context: Option<String>,
    ) -> Option<MeterSample> {
        let value: f64 = raw_value.trim().parse().ok()?;
        MeterSample::from_number(timestamp, measurand, value, unit, phase, context)
    }

    /// As [`MeterSample::normalised`], from a number.
    pub fn from_number(
        timestamp: DateTime<Utc>,
        measurand: Measurand,
        value: f64,
        unit: Option<&str>,
        phase: Option<String>,
        context: Option<String>,
    ) -> Option<MeterSample> {
        if !value.is_finite() {
            return None;
        }
        let (value, unit) = match (&measurand, unit) {
            (_, Some("kWh")) => (value * 1000.0, Some("Wh")),
            (_, Some("kW")) => (value * 1000.0, Some("W")),
            (Measurand::EnergyImportRegister, None) => (value, Some("Wh")),
            (Measurand::PowerImport, None) => (value, Some("W")),
            (Measurand::StateOfCharge, None) => (value, Some("Percent")),
            (_, other) => (value, other),
        };
        Some(MeterSample {
            timestamp,
            measurand,
            value,
            unit: unit.map(str::to_owned),
            phase,
            context,
        })
    }

    /// Whether this sample is a reading of the whole meter (no phase given).
    fn is_total(&self) -> bool {
        self.phase.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Completed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// A charging session: one OCPP transaction on one connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: SessionId,
    pub charger_id: ChargerId,
    pub connector_id: ConnectorId,
    pub transaction_id: TransactionId,
    /// The token charging; 2.0.1 chargers may start before the driver authorizes.
    pub id_token: Option<IdToken>,
    pub status: SessionStatus,
    pub meter_start_wh: i64,
    pub meter_stop_wh: Option<i64>,
    /// Energy delivered so far (the latest register reading minus the start reading).
    pub energy_wh: i64,
    pub power_w: Option<f64>,
    pub soc_percent: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<String>,
    pub last_meter_at: Option<DateTime<Utc>>,
    /// The time of the register reading from which the energy delivered has not
    /// changed: the car has drawn nothing since (the idle fee's clock starts there).
    /// `None` before the first register reading.
    #[serde(default)]
    pub idle_since: Option<DateTime<Utc>>,
    pub remote_start: bool,
    pub reservation_id: Option<i64>,
}

/// A session about to be stored; the store allocates its [`SessionId`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub charger_id: ChargerId,
    pub connector_id: ConnectorId,
    /// The charger's transaction id (2.0.1); `None` lets the store use the session id (1.6).
    pub transaction_id: Option<TransactionId>,
    pub id_token: Option<IdToken>,
    pub meter_start_wh: i64,
    pub started_at: DateTime<Utc>,
    pub remote_start: bool,
    pub reservation_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("session {0} has already ended")]
    AlreadyStopped(SessionId),
}

impl Session {
    /// Folds meter samples into the session's live figures. Register readings may
    /// arrive out of order (offline replay): the latest by timestamp wins.
    /// Returns whether anything the session shows changed.
    pub fn apply_samples(&mut self, samples: &[MeterSample]) -> bool {
        let mut changed = false;
        for sample in samples.iter().filter(|s| s.is_total()) {
            if self
                .last_meter_at
                .is_some_and(|last| sample.timestamp < last)
            {
                continue;
            }
            match sample.measurand {
                Measurand::EnergyImportRegister => {
                    let energy = (sample.value.round() as i64)
                        .saturating_sub(self.meter_start_wh)
                        .max(0);
                    if energy != self.energy_wh || self.idle_since.is_none() {
                        self.idle_since = Some(sample.timestamp);
                        changed = true;
                    }
                    self.energy_wh = energy;
                }
                Measurand::PowerImport => {
                    changed |= self.power_w != Some(sample.value);
                    self.power_w = Some(sample.value);
                }
                Measurand::StateOfCharge => {
                    changed |= self.soc_percent != Some(sample.value);
                    self.soc_percent = Some(sample.value);
                }
                Measurand::Other(_) => continue,
            }
            self.last_meter_at = Some(sample.timestamp);
        }
        changed
    }

    /// Minutes the car stayed plugged in without drawing energy, up to `at`: from the
    /// first reading of the energy delivered so far (see `idle_since`). Zero before any
    /// reading, and when the final register shows the car drew energy until the end.
    pub fn idle_minutes(&self, at: DateTime<Utc>) -> u32 {
        let minutes = self
            .idle_since
            .map_or(0, |since| at.signed_duration_since(since).num_minutes());
        u32::try_from(minutes.max(0)).unwrap_or(u32::MAX)
    }

    /// The idle clock of an ended session that does not carry one, replayed from its
    /// samples: a session that ended before the clock was kept on the session row, or
    /// whose clock a replica that predates it left behind (ADR 0023). The rules of
    /// [`Session::apply_samples`] and [`Session::end`] over the readings in time order:
    /// the first reading of the final energy, or the end when the final register is above
    /// the last reading or there was none. A reading that arrived after a newer one was
    /// skipped while the session ran; the stored samples do not keep the order they came
    /// in, so the replay counts it.
    pub fn replayed_idle_since(&self, samples: &[MeterSample]) -> Option<DateTime<Utc>> {
        // An ended session's energy is its final register's (`end`).
        match self.replay(samples) {
            (Some(since), energy) if self.energy_wh <= energy => Some(since),
            _ => self.stopped_at,
        }
    }

    /// The idle clock of a running session rebuilt without one (see
    /// [`Session::replayed_idle_since`]): the first reading of the energy on the session,
    /// when its samples reach that energy; else none, and the next reading starts it.
    pub fn restored_idle_since(&self, samples: &[MeterSample]) -> Option<DateTime<Utc>> {
        match self.replay(samples) {
            (since, energy) if energy == self.energy_wh => since,
            _ => None,
        }
    }

    /// The clock and the energy delivered that `samples`, in time order, give.
    fn replay(&self, samples: &[MeterSample]) -> (Option<DateTime<Utc>>, i64) {
        let mut in_time_order = samples.to_vec();
        in_time_order.sort_by_key(|s| s.timestamp);
        let mut replay = Session {
            energy_wh: 0,
            idle_since: None,
            last_meter_at: None,
            ..self.clone()
        };
        replay.apply_samples(&in_time_order);
        (replay.idle_since, replay.energy_wh)
    }

    /// Ends the session: its final samples, then the final register reading when the
    /// charger gave one (else the last one seen).
    pub fn end(&mut self, end: &TransactionEvent) -> Result<(), SessionError> {
        if self.status == SessionStatus::Completed {
            return Err(SessionError::AlreadyStopped(self.session_id));
        }
        self.apply_samples(&end.samples);
        let meter_stop = end
            .meter_wh
            .unwrap_or(self.meter_start_wh.saturating_add(self.energy_wh));
        let energy = meter_stop.saturating_sub(self.meter_start_wh).max(0);
        if energy > self.energy_wh || self.idle_since.is_none() {
            // The final register is above the last reading: the car drew energy until
            // the end.
            self.idle_since = Some(end.timestamp);
        }
        self.status = SessionStatus::Completed;
        self.meter_stop_wh = Some(meter_stop);
        self.energy_wh = energy;
        self.power_w = None;
        self.stopped_at = Some(end.timestamp);
        self.stop_reason = end.stop_reason.clone();
        if self.id_token.is_none() {
            self.id_token = end.id_token.clone();
        }
        Ok(())
    }
}

/// Which sessions to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFilter {
    pub charger_id: Option<ChargerId>,
    pub status: Option<SessionStatus>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TransactionEventKind, TransactionIdOrigin};
    use chrono::Duration;

    fn session() -> Session {
        Session {
            session_id: SessionId(1),
            charger_id: ChargerId::parse("CP1").unwrap(),
            connector_id: ConnectorId(1),
            transaction_id: TransactionId("1".into()),
            id_token: Some(IdToken::parse("TAG").unwrap()),
            status: SessionStatus::Active,
            meter_start_wh: 1000,
            meter_stop_wh: None,
            energy_wh: 0,
            power_w: None,
            soc_percent: None,
            started_at: Utc::now(),
            stopped_at: None,
            stop_reason: None,
            last_meter_at: None,
            idle_since: None,
            remote_start: false,
            reservation_id: None,
        }
    }

    fn sample(
        at: DateTime<Utc>,
        measurand: Measurand,
        value: &str,
        unit: Option<&str>,
    ) -> MeterSample {
        MeterSample::normalised(at, measurand, value, unit, None, None).unwrap()
    }

    #[test]
    fn energy_is_the_register_minus_the_start_reading_in_wh() {
        let mut s = session();
        let t = Utc::now();
        assert!(s.apply_samples(&[
            sample(t, Measurand::EnergyImportRegister, "1.5", Some("kWh")),
            sample(t, Measurand::PowerImport, "11", Some("kW")),
            sample(t, Measurand::StateOfCharge, "42", None),
        ]));
        assert_eq!(
            (s.energy_wh, s.power_w, s.soc_percent),
            (500, Some(11000.0), Some(42.0))
        );
    }

    #[test]
    fn an_older_reading_does_not_overwrite_a_newer_one() {
        let mut s = session();
        let t = Utc::now();
        s.apply_samples(&[sample(t, Measurand::EnergyImportRegister, "3000", None)]);
        s.apply_samples(&[sample(
            t - Duration::seconds(60),
            Measurand::EnergyImportRegister,
            "2000",
            None,
        )]);
        assert_eq!(s.energy_wh, 2000);
    }

    #[test]
    fn stopping_twice_is_refused_and_the_final_reading_wins() {
        let mut s = session();
        let stop = ended(Some(5000), vec![]);
        s.end(&stop).unwrap();
        assert_eq!((s.energy_wh, s.status), (4000, SessionStatus::Completed));
        assert_eq!(
            s.end(&stop),
            Err(SessionError::AlreadyStopped(SessionId(1)))
        );
    }

    #[test]
    fn without_a_final_reading_the_last_sample_is_the_end() {
        let mut s = session();
        let last = sample(
            Utc::now(),
            Measurand::EnergyImportRegister,
            "2.5",
            Some("kWh"),
        );
        s.end(&ended(None, vec![last])).unwrap();
        assert_eq!((s.energy_wh, s.meter_stop_wh), (1500, Some(2500)));
    }

    #[test]
    fn idle_time_starts_at_the_first_reading_of_the_final_energy() {
        let start = Utc::now();
        let at = |min| start + Duration::minutes(min);
        let mut s = session();
        assert_eq!(s.idle_minutes(at(75)), 0, "no reading yet");
        for (min, wh) in [(0, "1000"), (30, "10000"), (40, "10000"), (50, "10000")] {
            s.apply_samples(&[sample(
                at(min),
                Measurand::EnergyImportRegister,
                wh,
                Some("Wh"),
            )]);
        }
        // Per-phase readings do not count.
        let mut phase = sample(at(60), Measurand::EnergyImportRegister, "3000", Some("Wh"));
        phase.phase = Some("L1".into());
        s.apply_samples(&[phase]);
        assert_eq!(s.idle_minutes(at(75)), 45);
        assert_eq!(s.idle_minutes(at(20)), 0, "before the idle time began");

        let mut stop = ended(Some(10000), vec![]);
        stop.timestamp = at(75);
        let mut same = s.clone();
        same.end(&stop).unwrap();
        assert_eq!(same.idle_minutes(at(75)), 45);
        // The final register is above the last reading: charging until the end.
        stop.meter_wh = Some(10500);
        let mut rose = s.clone();
        rose.end(&stop).unwrap();
        assert_eq!(rose.idle_minutes(at(75)), 0);
        // No register reading at all, and no final one: no idle time.
        let mut silent = session();
        stop.meter_wh = None;
        silent.end(&stop).unwrap();
        assert_eq!(silent.idle_minutes(at(75)), 0);
    }

    #[test]
    fn an_ended_session_without_an_idle_clock_gets_it_replayed_from_its_samples() {
        let start = Utc::now();
        let at = |min| start + Duration::minutes(min);
        // Stored in any order (a charger replaying offline readings).
        let readings = [(40, "10000"), (0, "1000"), (50, "10000"), (30, "10000")];
        let samples: Vec<MeterSample> = readings
            .iter()
            .map(|&(min, wh)| sample(at(min), Measurand::EnergyImportRegister, wh, None))
            .collect();
        // The session as it ended, and as a release before the clock stored it.
        let ended_at = |meter_stop: i64| {
            let mut stop = ended(Some(meter_stop), vec![]);
            stop.timestamp = at(75);
            let mut live = session();
            for reading in samples.iter().rev() {
                live.apply_samples(std::slice::from_ref(reading));
            }
            live.end(&stop).unwrap();
            let mut legacy = live.clone();
            legacy.idle_since = None;
            (live, legacy)
        };
        let (live, legacy) = ended_at(10000);
        assert_eq!(legacy.replayed_idle_since(&samples), Some(at(30)));
        assert_eq!(
            live.idle_since,
            Some(at(30)),
            "the same clock as while it ran"
        );

        // The final register above the last reading: charging until the end.
        let (live, legacy) = ended_at(10500);
        assert_eq!(legacy.replayed_idle_since(&samples), Some(at(75)));
        assert_eq!(live.idle_since, Some(at(75)));
        // No register reading at all: no idle time.
        let (_, legacy) = ended_at(10000);
        assert_eq!(legacy.replayed_idle_since(&[]), Some(at(75)));
    }

    #[test]
    fn a_running_session_rebuilt_without_its_clock_gets_it_from_its_samples() {
        let start = Utc::now();
        let at = |min| start + Duration::minutes(min);
        let readings = [(40, "10000"), (0, "1000"), (30, "10000")];
        let samples: Vec<MeterSample> = readings
            .iter()
            .map(|&(min, wh)| sample(at(min), Measurand::EnergyImportRegister, wh, None))
            .collect();
        let mut live = session();
        live.apply_samples(&samples[1..]);
        live.apply_samples(&samples[..1]);
        assert_eq!(live.idle_since, Some(at(30)));
        let rebuilt = Session {
            idle_since: None,
            ..live.clone()
        };
        assert_eq!(rebuilt.restored_idle_since(&samples), live.idle_since);
        // The row's energy beyond what the samples show (its last ones not stored):
        // no clock until the next reading.
        let ahead = Session {
            energy_wh: live.energy_wh + 500,
            ..rebuilt
        };
        assert_eq!(ahead.restored_idle_since(&samples), None);
        assert_eq!(ahead.restored_idle_since(&[]), None);
    }

    fn ended(meter_wh: Option<i64>, samples: Vec<MeterSample>) -> TransactionEvent {
        TransactionEvent {
            kind: TransactionEventKind::Ended,
            origin: TransactionIdOrigin::Charger,
            transaction_id: Some(TransactionId("1".into())),
            connector_id: None,
            id_token: None,
            timestamp: Utc::now(),
            meter_wh,
            samples,
            stop_reason: Some("Local".into()),
            reservation_id: None,
            seq_no: Some(3),
            offline: false,
        }
    }

    #[test]
    fn signed_or_garbage_values_are_not_samples() {
        assert!(
            MeterSample::normalised(Utc::now(), Measurand::PowerImport, "abc", None, None, None)
                .is_none()
        );
        assert!(
            MeterSample::normalised(Utc::now(), Measurand::PowerImport, "NaN", None, None, None)
                .is_none()
        );
    }
}
