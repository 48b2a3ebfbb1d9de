//! `/api/v1/webhooks`: operators register URLs for domain events; each delivery is
//! signed (see `crate::actors::notifier`) and logged.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::EventType;
use crate::domain::webhook::Webhook;
use crate::security;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPost {
    /// An http(s) URL.
    url: String,
    /// The event types to deliver; omitted: all of them.
    event_types: Option<Vec<String>>,
}

/// `POST /api/v1/webhooks` with `{url, event_types?}` → 201 with the signing `secret`,
/// shown this once.
pub async fn create(
    _: Operator,
    state: web::Data<ApiState>,
    body: web::Json<WebhookPost>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url =
        reqwest::Url::parse(&body.url).map_err(|e| ApiError::BadRequest(format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::BadRequest(
            "url must be an http:// or https:// URL with a host".into(),
        ));
    }
    if !state.services.settings.notifier.allow_private_targets
        && let Some(why) = crate::outbound::refusal(&url)
    {
        return Err(ApiError::BadRequest(format!("url: {why}")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::BadRequest(
            "url must not carry credentials: verify the X-Jucr-Signature header instead".into(),
        ));
    }
    let event_types = match body.event_types {
        None => EventType::ALL.to_vec(),
        Some(raw) if raw.is_empty() => {
            return Err(ApiError::BadRequest(
                "event_types: name at least one, or omit it for all".into(),
            ));
        }
        Some(raw) => raw
            .iter()
            .map(|t| {
                EventType::parse(t).ok_or_else(|| {
                    let all: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    ApiError::BadRequest(format!(
                        "event_types: {t:?} is not one of {}",
                        all.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let webhook = Webhook {
        webhook_id: Uuid::new_v4(),
        url: url.to_string(),
        secret: format!("whsec_{}", security::random_secret(32)),
        event_types,
        created_at: Utc::now(),
    };
    state.services.store.create_webhook(&webhook).await?;
    let mut view = serde_json::to_value(&webhook).map_err(ApiError::internal)?;
    view["secret"] = json!(webhook.secret);
    Ok(HttpResponse::Created().json(view))
}

/// `GET /api/v1/webhooks` (without secrets).
pub async fn list(_: Operator, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.store.webhooks().await?))
}

/// `DELETE /api/v1/webhooks/{id}`.
pub async fn delete(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if state.services.store.delete_webhook(id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no webhook {id}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/webhooks/{id}/deliveries?limit=`: the delivery log, newest first.
pub async fn deliveries(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let store = &state.services.store;
    if !store.webhooks().await?.iter().any(|w| w.webhook_id == id) {
        return Err(ApiError::NotFound(format!("no webhook {id}")));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(HttpResponse::Ok().json(store.deliveries(id, limit).await?))
}
