//! Live updates: what the apps watch while it happens. Unlike domain events they are
//! not stored; they go to whoever listens now, on every replica.

use serde::{Deserialize, Serialize};

use super::charger::ConnectorState;
use super::events::DomainEvent;
use super::ids::ChargerId;
use super::money::Money;
use super::session::Session;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveUpdate {
    /// A domain event (session started or ended, invoice, payment), as published.
    Event { event: DomainEvent },
    /// A running session's figures changed (meter values, token, cost).
    SessionUpdated {
        session: Session,
        cost_estimate: Option<Money>,
    },
    /// A connector's status changed.
    ChargerStatus {
        charger_id: ChargerId,
        connector: ConnectorState,
    },
}

impl LiveUpdate {
    /// The event name for server-sent events.
    pub fn kind(&self) -> &'static str {
        match self {
            LiveUpdate::Event { .. } => "event",
            LiveUpdate::SessionUpdated { .. } => "session_updated",
            LiveUpdate::ChargerStatus { .. } => "charger_status",
        }
    }

    /// The charger it concerns, if any.
    pub fn charger_id(&self) -> Option<&str> {
        match self {
            LiveUpdate::Event { event } => event.payload["charger_id"].as_str(),
            LiveUpdate::SessionUpdated { session, .. } => Some(session.charger_id.as_str()),
            LiveUpdate::ChargerStatus { charger_id, .. } => Some(charger_id.as_str()),
        }
    }

    /// The session it concerns, if any.
    pub fn session_id(&self) -> Option<i64> {
        match self {
            LiveUpdate::Event { event } => event.payload["session_id"].as_i64(),
            LiveUpdate::SessionUpdated { session, .. } => Some(session.session_id.0),
            LiveUpdate::ChargerStatus { .. } => None,
        }
    }
}
