//! Domain events: what happened, told to whoever cares (billing, notifier, other
//! replicas). Versioned JSON with id, type, occurrence time, aggregate id and payload.
//! They are written to the outbox in the same transaction as the change they describe.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::billing::{Invoice, Payment, PaymentStatus};
use super::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    SessionStarted,
    SessionEnded,
    InvoiceGenerated,
    PaymentCompleted,
    PaymentFailed,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::SessionStarted,
        EventType::SessionEnded,
        EventType::InvoiceGenerated,
        EventType::PaymentCompleted,
        EventType::PaymentFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStarted => "SESSION_STARTED",
            EventType::SessionEnded => "SESSION_ENDED",
            EventType::InvoiceGenerated => "INVOICE_GENERATED",
            EventType::PaymentCompleted => "PAYMENT_COMPLETED",
            EventType::PaymentFailed => "PAYMENT_FAILED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// The routing key on a topic exchange (`session.started`, ...).
    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::SessionStarted => "session.started",
            EventType::SessionEnded => "session.ended",
            EventType::InvoiceGenerated => "invoice.generated",
            EventType::PaymentCompleted => "payment.completed",
            EventType::PaymentFailed => "payment.failed",
        }
    }

    /// The payload schema version written with events of this type.
    pub fn version(self) -> u32 {
        1
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One domain event as it travels (the JSON the bus carries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The id of what changed (for session events, the session id).
    pub aggregate_id: String,
    pub payload: serde_json::Value,
}

impl DomainEvent {
    /// A new event about `aggregate_id` with `payload` (a type that always serializes).
    pub fn new(
        event_type: EventType,
        aggregate_id: String,
        occurred_at: DateTime<Utc>,
        payload: &impl Serialize,
    ) -> Self {
        DomainEvent {
            id: Uuid::new_v4(),
            event_type,
            version: event_type.version(),
            occurred_at,
            aggregate_id,
            payload: serde_json::to_value(payload)
                .expect("domain records always serialize to JSON; qed"),
        }
    }

    fn about_session(event_type: EventType, session: &Session, occurred_at: DateTime<Utc>) -> Self {
        Self::new(
            event_type,
            session.session_id.to_string(),
            occurred_at,
            session,
        )
    }

    /// An invoice was issued (its id is the aggregate id).
    pub fn invoice_generated(invoice: &Invoice) -> Self {
        Self::new(
            EventType::InvoiceGenerated,
            invoice.invoice_id.to_string(),
            invoice.issued_at,
            invoice,
        )
    }

    /// A payment went through, or failed (`will_retry` says whether it is tried again).
    pub fn payment_outcome(payment: &Payment, will_retry: bool) -> Self {
        #[derive(Serialize)]
        struct Outcome<'a> {
            #[serde(flatten)]
            payment: &'a Payment,
            will_retry: bool,
        }
        let event_type = if payment.status == PaymentStatus::Completed {
            EventType::PaymentCompleted
        } else {
            EventType::PaymentFailed
        };
        Self::new(
            event_type,
            payment.invoice_id.to_string(),
            payment.updated_at,
            &Outcome {
                payment,
                will_retry,
            },
        )
    }

    pub fn session_started(session: &Session) -> Self {
        Self::about_session(EventType::SessionStarted, session, session.started_at)
    }

    pub fn session_ended(session: &Session) -> Self {
        Self::about_session(
            EventType::SessionEnded,
            session,
            session.stopped_at.unwrap_or_else(Utc::now),
        )
    }
}

/// An event as the outbox keeps it: with when (if yet) it was published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: DomainEvent,
    pub published_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_and_have_routing_keys() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert!(t.routing_key().contains('.'));
        }
        assert_eq!(
            serde_json::to_value(EventType::SessionEnded).unwrap(),
            "SESSION_ENDED"
        );
    }
}
