//! HTTP: the OCPP WebSocket endpoint, the operator REST API, health and metrics.

pub mod auth;
pub mod error;
pub mod health;
pub mod ocpp;
pub mod rest;
pub mod tls;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::actors::Services;
use crate::actors::registry::ChargerDirectory;
use crate::security::TokenKeys;
use error::ApiError;

/// What handlers share.
pub struct ApiState {
    pub services: Arc<Services>,
    pub directory: Arc<dyn ChargerDirectory>,
    pub keys: TokenKeys,
    pub auth_limiter: ocpp::AuthLimiter,
}

/// Registers every route and the extractor error handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(1 << 20)
            .error_handler(|e, _| ApiError::BadRequest(format!("invalid JSON body: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default().error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/ocpp/{charge_point_id}", web::get().to(ocpp::connect))
    .service(
        web::scope("/api/v1")
            .route("/auth/login", web::post().to(auth::login))
            .route("/chargers", web::get().to(rest::chargers::list))
            .route("/chargers/{id}", web::get().to(rest::chargers::get))
            .route("/chargers/{id}", web::put().to(rest::chargers::put))
            .route(
                "/chargers/{id}/variables",
                web::get().to(rest::chargers::variables),
            )
            .route(
                "/chargers/{id}/ocpp/{action}",
                web::post().to(rest::chargers::call),
            )
            .route("/events", web::get().to(rest::events::list))
            .route("/id-tokens", web::get().to(rest::id_tokens::list))
            .route("/id-tokens/{id_token}", web::get().to(rest::id_tokens::get))
            .route("/id-tokens/{id_token}", web::put().to(rest::id_tokens::put))
            .route(
                "/id-tokens/{id_token}",
                web::delete().to(rest::id_tokens::delete),
            )
            .route("/sessions", web::get().to(rest::sessions::list))
            .route("/sessions/{id}", web::get().to(rest::sessions::get)),
    )
    .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
