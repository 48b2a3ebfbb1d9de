//! Webhooks: operators register a URL for some event types; every such event is
//! delivered to it, signed, with retries, and each delivery is logged.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::events::EventType;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    pub webhook_id: Uuid,
    pub url: String,
    /// The HMAC key; shown once, when the webhook is created.
    #[serde(skip)]
    pub secret: String,
    pub event_types: Vec<EventType>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// One event on its way to one webhook: the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The exact body sent (the event's JSON).
    #[serde(skip)]
    pub body: serde_json::Value,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What is signed: `"{timestamp}.{body}"`, as the `X-Jucr-Signature` header documents.
pub fn signed_payload(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    signed
}
