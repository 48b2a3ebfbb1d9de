//! `/healthz` (the process answers), `/readyz` (storage answers) and `/metrics`.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde_json::json;

use super::ApiState;
use super::error::ApiError;
use crate::security;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    state.services.store.ping().await.map_err(|e| {
        tracing::warn!(error.cause_chain = ?e, error.message = %e, "readiness check failed");
        ApiError::Unavailable
    })?;
    Ok(HttpResponse::Ok()
        .json(json!({ "status": "ready", "storage": state.services.store.backend() })))
}

/// Prometheus metrics; with `http.metrics_token` set, only for `Authorization: Bearer
/// <that token>` (what a scraper's `authorization` setting sends).
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(expected) = &state.services.settings.http.metrics_token {
        let presented = super::auth::bearer_token(&req).unwrap_or_default();
        // Compared as digests: equal lengths, and nothing learnt from the time taken.
        if security::token_hash(presented.trim()) != security::token_hash(expected.expose_secret())
        {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.services.metrics.render()))
}
