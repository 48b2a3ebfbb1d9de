//! What chargers ask of the central system and what it answers, whatever the OCPP
//! version: the per-version adapters in `crate::ocpp` translate to and from these.

use chrono::{DateTime, Utc};

use super::charger::{BootInfo, RegistrationStatus, StatusReport};
use super::ids::{ConnectorId, IdToken, TransactionId};
use super::session::MeterSample;
use super::token::IdTokenInfo;

/// Where a transaction's id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionIdOrigin {
    /// The central system allocates it in its answer to the start (OCPP 1.6).
    Central,
    /// The charger allocates it and sends it with every event (OCPP 2.0.1).
    Charger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionEventKind {
    Started,
    Updated,
    Ended,
}

/// One event of a transaction's life, version-neutral: 1.6 StartTransaction and
/// StopTransaction are `Started` and `Ended`; 2.0.1 TransactionEvent is all three.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionEvent {
    pub kind: TransactionEventKind,
    pub origin: TransactionIdOrigin,
    /// `None` only for a start whose id the central system allocates.
    pub transaction_id: Option<TransactionId>,
    pub connector_id: Option<ConnectorId>,
    /// The token, when the charger gives one (2.0.1 may authorize after the start).
    pub id_token: Option<IdToken>,
    pub timestamp: DateTime<Utc>,
    /// The energy register in Wh at the start (`Started`) or end (`Ended`), when known.
    pub meter_wh: Option<i64>,
    pub samples: Vec<MeterSample>,
    pub stop_reason: Option<String>,
    pub reservation_id: Option<i64>,
    /// 2.0.1's sequence number; events may repeat or arrive out of order.
    pub seq_no: Option<u64>,
    /// Sent from the charger's offline queue.
    pub offline: bool,
}

/// One variable of a charger's device model (2.0.1 NotifyReport).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReportedVariable {
    pub component: String,
    pub component_instance: Option<String>,
    pub evse_id: Option<u32>,
    pub connector_id: Option<u32>,
    pub variable: String,
    pub variable_instance: Option<String>,
    /// Attribute values by type (Actual, Target, MinSet, MaxSet).
    pub attributes: Vec<VariableAttribute>,
    pub data_type: Option<String>,
    pub unit: Option<String>,
}

impl ReportedVariable {
    /// About what holding this variable takes (its text and its parts), for bounds on
    /// what a charger may have held for it.
    pub fn held_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.component.len()
            + self.variable.len()
            + text(&self.component_instance)
            + text(&self.variable_instance)
            + text(&self.data_type)
            + text(&self.unit)
            + self
                .attributes
                .iter()
                .map(|a| {
                    std::mem::size_of::<VariableAttribute>()
                        + a.attribute_type.len()
                        + text(&a.value)
                        + text(&a.mutability)
                })
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VariableAttribute {
    #[serde(rename = "type")]
    pub attribute_type: String,
    pub value: Option<String>,
    pub mutability: Option<String>,
}

/// A charger→CSMS request.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargerRequest {
    BootNotification(BootInfo),
    Heartbeat,
    StatusNotification(StatusReport),
    Authorize(IdToken),
    Transaction(TransactionEvent),
    MeterValues {
        connector_id: ConnectorId,
        transaction_id: Option<TransactionId>,
        samples: Vec<MeterSample>,
    },
    /// One part of a device-model report; `more_to_come` is 2.0.1's `tbc`.
    DeviceReport {
        request_id: i64,
        seq_no: i64,
        more_to_come: bool,
        variables: Vec<ReportedVariable>,
    },
    DataTransfer {
        vendor_id: String,
        message_id: Option<String>,
        data: Option<String>,
    },
    /// A request for a signed certificate (1.6 security extension, 2.0.1).
    SignCertificate,
    /// A notification that needs no more than an acknowledgement and a log line
    /// (diagnostics, firmware, log and security-event status, events, limits...).
    Notification {
        kind: NotificationKind,
        status: Option<String>,
    },
}

impl ChargerRequest {
    /// The connector (2.0.1: EVSE) the request names, if it names one.
    pub fn connector(&self) -> Option<ConnectorId> {
        match self {
            ChargerRequest::StatusNotification(report) => Some(report.connector_id),
            ChargerRequest::Transaction(event) => event.connector_id,
            ChargerRequest::MeterValues { connector_id, .. } => Some(*connector_id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    DiagnosticsStatus,
    FirmwareStatus,
    SignedFirmwareStatus,
    LogStatus,
    SecurityEvent,
    /// Any other notification, by its action name.
    Other(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTransferStatus {
    Accepted,
    Rejected,
    UnknownMessageId,
    UnknownVendorId,
}

impl DataTransferStatus {
    /// The status as both OCPP versions spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Rejected => "Rejected",
            Self::UnknownMessageId => "UnknownMessageId",
            Self::UnknownVendorId => "UnknownVendorId",
        }
    }
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
    /// The answer to a transaction event: its transaction id (which 1.6 chargers learn
    /// from the start's answer) and the token's status when a token came with it.
    Transaction {
        transaction_id: TransactionId,
        id_token_info: Option<IdTokenInfo>,
        /// The final cost with taxes, for the answer to an end (2.0.1 `totalCost`).
        total_cost: Option<super::money::Money>,
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
    /// ChangeAvailability accepted: the connector (0 = all) is now so; when
    /// `scheduled`, once the transaction running on it has ended.
    Availability {
        connector_id: ConnectorId,
        availability: crate::domain::Availability,
        scheduled: bool,
    },
    /// Remote start accepted: the transaction start that follows is this token's remote start.
    RemoteStartAccepted {
        id_token: IdToken,
        connector_id: Option<ConnectorId>,
    },
}
