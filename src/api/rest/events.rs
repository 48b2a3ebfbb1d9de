//! `GET /api/v1/events?type=&limit=`: recent domain events, newest first, with when
//! they were published (null while still in the outbox).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::EventType;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Default 100, at most 1000.
    limit: Option<u32>,
}

pub async fn list(
    _: Operator,
    state: web::Data<ApiState>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let event_type = match query.event_type.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(raw) => Some(EventType::parse(raw).ok_or_else(|| {
            let all: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::BadRequest(format!("type must be one of {}", all.join(", ")))
        })?),
    };
    let events = state
        .services
        .store
        .recent_events(event_type, query.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(HttpResponse::Ok().json(events))
}
