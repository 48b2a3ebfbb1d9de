//! What chargers ask of the central system and what it answers, whatever the OCPP
//! version: the per-version adapters in `crate::ocpp` translate to and from these.

use chrono::{DateTime, Utc};

use super::charger::{BootInfo, RegistrationStatus, StatusReport};
use super::ids::{ConnectorId, IdToken, TransactionId};
use super::session::{MeterSample, TransactionStop};
use super::token::IdTokenInfo;

/// A transaction the charger has started.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionStart {
    pub connector_id: ConnectorId,
    pub id_token: IdToken,
    pub meter_start_wh: i64,
    pub timestamp: DateTime<Utc>,
    pub reservation_id: Option<i64>,
}

/// A charger→CSMS request.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargerRequest {
    BootNotification(BootInfo),
    Heartbeat,
    StatusNotification(StatusReport),
    Authorize(IdToken),
    StartTransaction(TransactionStart),
    MeterValues {
        connector_id: ConnectorId,
        transaction_id: Option<TransactionId>,
        samples: Vec<MeterSample>,
    },
    StopTransaction(TransactionStop),
    DataTransfer {
        vendor_id: String,
        message_id: Option<String>,
        data: Option<String>,
    },
    /// A request for a signed certificate (security extension).
    SignCertificate,
    /// A notification that needs no more than an acknowledgement and a log line
    /// (diagnostics, firmware, log and security-event status).
    Notification {
        kind: NotificationKind,
        status: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    DiagnosticsStatus,
    FirmwareStatus,
    SignedFirmwareStatus,
    LogStatus,
    SecurityEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTransferStatus {
    Accepted,
    Rejected,
    UnknownMessageId,
    UnknownVendorId,
}

/// The central system's answer to a [`ChargerRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum ChargerResponse {
    BootNotification {
        status: RegistrationStatus,
        current_time: DateTime<Utc>,
        interval_secs: u32,
    },
    Heartbeat {
        current_time: DateTime<Utc>,
    },
    Authorize(IdTokenInfo),
    StartTransaction {
        transaction_id: TransactionId,
        id_token_info: IdTokenInfo,
    },
    StopTransaction {
        id_token_info: Option<IdTokenInfo>,
    },
    DataTransfer {
        status: DataTransferStatus,
        data: Option<String>,
    },
    SignCertificate {
        accepted: bool,
    },
    /// An empty acknowledgement (StatusNotification, MeterValues, notifications).
    Ack,
}

/// What an accepted CSMS→charger call changes in our model (OCPP: "calls take effect as the spec intends").
#[derive(Debug, Clone, PartialEq)]
pub enum CallEffect {
    /// ChangeAvailability accepted (or scheduled): the connector (0 = all) is now so.
    Availability {
        connector_id: ConnectorId,
        availability: crate::domain::Availability,
    },
    /// RemoteStartTransaction accepted: the StartTransaction that follows is this token's remote start.
    RemoteStartAccepted {
        id_token: IdToken,
        connector_id: Option<ConnectorId>,
    },
}
