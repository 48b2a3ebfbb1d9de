//! Domain events: what happened, told to whoever cares (billing, notifier, other
//! replicas). Versioned JSON with id, type, occurrence time, aggregate id and payload.
//! They are written to the outbox in the same transaction as the change they describe.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    SessionStarted,
    SessionEnded,
}

impl EventType {
    pub const ALL: [EventType; 2] = [EventType::SessionStarted, EventType::SessionEnded];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStarted => "SESSION_STARTED",
            EventType::SessionEnded => "SESSION_ENDED",
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
    fn about_session(event_type: EventType, session: &Session, occurred_at: DateTime<Utc>) -> Self {
        DomainEvent {
            id: Uuid::new_v4(),
            event_type,
            version: event_type.version(),
            occurred_at,
            aggregate_id: session.session_id.to_string(),
            payload: serde_json::to_value(session)
                .expect("a Session always serializes to JSON; qed"),
        }
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
