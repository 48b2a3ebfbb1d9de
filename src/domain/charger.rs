//! Chargers as registered and as they report themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{ChargerId, ConnectorId};

/// What a charger's next BootNotification is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationStatus {
    Accepted,
    Pending,
    Rejected,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Pending => "Pending",
            Self::Rejected => "Rejected",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Accepted, Self::Pending, Self::Rejected]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// OCPP security profile: 0 = no authentication (lab use), 1 = HTTP Basic over ws://,
/// 2 = Basic over TLS (wss://), 3 = TLS with a client certificate whose CN is the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct SecurityProfile(u8);

impl SecurityProfile {
    pub const NONE: SecurityProfile = SecurityProfile(0);
    pub const BASIC: SecurityProfile = SecurityProfile(1);
    pub const TLS_BASIC: SecurityProfile = SecurityProfile(2);
    pub const TLS_CLIENT_CERT: SecurityProfile = SecurityProfile(3);

    pub fn parse(raw: i64) -> Result<Self, String> {
        match raw {
            0..=3 => Ok(SecurityProfile(raw as u8)),
            _ => Err(format!("security profile must be 0, 1, 2 or 3, not {raw}")),
        }
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// Profiles 1 and 2 authenticate with HTTP Basic.
    pub fn requires_password(self) -> bool {
        matches!(self.0, 1 | 2)
    }

    /// Profiles 2 and 3 may only connect over TLS.
    pub fn requires_tls(self) -> bool {
        self.0 >= 2
    }

    /// Profile 3 authenticates with a client certificate.
    pub fn requires_client_certificate(self) -> bool {
        self.0 == 3
    }
}

impl TryFrom<u8> for SecurityProfile {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        SecurityProfile::parse(value.into())
    }
}

impl From<SecurityProfile> for u8 {
    fn from(p: SecurityProfile) -> Self {
        p.0
    }
}

/// What a charger says about itself in BootNotification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootInfo {
    pub vendor: String,
    pub model: String,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub meter_type: Option<String>,
    pub meter_serial_number: Option<String>,
}

/// The registration columns of a charger, as the operator sets them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerRegistration {
    pub charger_id: ChargerId,
    /// argon2 PHC string; `None` for a charger that connects without a password (profile 0).
    pub password_hash: Option<String>,
    pub security_profile: SecurityProfile,
    pub registration_status: RegistrationStatus,
    pub description: Option<String>,
    /// The charge point operator it belongs to (for operator tariffs).
    pub operator_id: Option<String>,
}

/// A registered charger with what it last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerRecord {
    pub registration: ChargerRegistration,
    pub boot: Option<BootInfo>,
    pub ocpp_version: Option<String>,
    pub last_boot_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A connector's status, the union of 1.6 ChargePointStatus and 2.0.1 ConnectorStatusEnumType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectorStatus {
    Available,
    Preparing,
    Charging,
    #[serde(rename = "SuspendedEVSE")]
    SuspendedEvse,
    #[serde(rename = "SuspendedEV")]
    SuspendedEv,
    Finishing,
    Occupied,
    Reserved,
    Unavailable,
    Faulted,
}

impl ConnectorStatus {
    pub const ALL: [ConnectorStatus; 10] = [
        Self::Available,
        Self::Preparing,
        Self::Charging,
        Self::SuspendedEvse,
        Self::SuspendedEv,
        Self::Finishing,
        Self::Occupied,
        Self::Reserved,
        Self::Unavailable,
        Self::Faulted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::Preparing => "Preparing",
            Self::Charging => "Charging",
            Self::SuspendedEvse => "SuspendedEVSE",
            Self::SuspendedEv => "SuspendedEV",
            Self::Finishing => "Finishing",
            Self::Occupied => "Occupied",
            Self::Reserved => "Reserved",
            Self::Unavailable => "Unavailable",
            Self::Faulted => "Faulted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// Whether the operator allows a connector to be used (ChangeAvailability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Availability {
    Operative,
    Inoperative,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operative => "Operative",
            Self::Inoperative => "Inoperative",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "Operative" => Some(Self::Operative),
            "Inoperative" => Some(Self::Inoperative),
            _ => None,
        }
    }
}

/// A connector as last reported (StatusNotification) and as the operator set it (ChangeAvailability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorState {
    pub connector_id: ConnectorId,
    pub status: ConnectorStatus,
    pub error_code: Option<String>,
    pub info: Option<String>,
    pub availability: Availability,
    pub updated_at: DateTime<Utc>,
}

/// A charger's connectors, one state per connector id, in id order. A sorted vector: a
/// charger has a handful, and a map node would cost over a kilobyte per charger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connectors(Vec<ConnectorState>);

impl Connectors {
    pub fn get(&self, id: &ConnectorId) -> Option<&ConnectorState> {
        self.0
            .binary_search_by_key(id, |c| c.connector_id)
            .ok()
            .map(|i| &self.0[i])
    }

    /// Sets the state of its connector (replacing what was there).
    pub fn insert(&mut self, state: ConnectorState) {
        match self
            .0
            .binary_search_by_key(&state.connector_id, |c| c.connector_id)
        {
            Ok(i) => self.0[i] = state,
            Err(i) => self.0.insert(i, state),
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = ConnectorId> + '_ {
        self.0.iter().map(|c| c.connector_id)
    }

    pub fn as_slice(&self) -> &[ConnectorState] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<ConnectorState> {
        self.0
    }
}

impl FromIterator<ConnectorState> for Connectors {
    fn from_iter<I: IntoIterator<Item = ConnectorState>>(states: I) -> Self {
        let mut connectors = Connectors::default();
        for state in states {
            connectors.insert(state);
        }
        connectors
    }
}

/// A StatusNotification, version-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub connector_id: ConnectorId,
    pub status: ConnectorStatus,
    /// The charger's error code; `None` when it reports no error.
    pub error_code: Option<String>,
    pub info: Option<String>,
    pub vendor_error_code: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

impl ConnectorState {
    /// The state after `report`, keeping the operator's availability setting.
    pub fn after(
        previous: Option<&ConnectorState>,
        report: &StatusReport,
        now: DateTime<Utc>,
    ) -> ConnectorState {
        ConnectorState {
            connector_id: report.connector_id,
            status: report.status,
            error_code: report.error_code.clone(),
            info: report.info.clone(),
            availability: previous.map_or(Availability::Operative, |p| p.availability),
            updated_at: report.timestamp.unwrap_or(now),
        }
    }
}

/// A charger we may not know yet: the policy for chargers that are not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownChargerPolicy {
    /// Register the charger on first connection (profile 0, Accepted).
    Accept,
    /// Refuse the upgrade with 404.
    Reject,
}
