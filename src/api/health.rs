//! `/healthz` (the process answers), `/readyz` (storage answers) and `/metrics`.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::ApiState;
use super::error::ApiError;

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

pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.services.metrics.render())
}
