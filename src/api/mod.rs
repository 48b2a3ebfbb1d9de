//! HTTP: the OCPP WebSocket endpoint, the operator REST API, health and metrics.

pub mod auth;
pub mod deadline;
pub mod error;
pub mod graphql;
pub mod health;
pub mod limit;
pub mod ocpp;
pub mod rest;
pub mod server;
pub mod socket;
pub mod tls;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::actors::Services;
use crate::actors::registry::ChargerDirectory;
use crate::domain::echo::echo;
use crate::security::TokenKeys;
use error::ApiError;

/// What handlers share.
pub struct ApiState {
    pub services: Arc<Services>,
    pub directory: Arc<dyn ChargerDirectory>,
    pub keys: TokenKeys,
    /// Charger authentications per charger and address, and per address.
    pub charger_auth: ocpp::AuthLimits,
    /// Login attempts, the operator API's and the app's alike.
    pub logins: Arc<limit::LoginLimits>,
    pub graphql: graphql::JucrSchema,
}

/// The client's address: behind a trusted load balancer (`http.trust_forwarded_for`),
/// the last entry of the last `X-Forwarded-For` line (the one the balancer added, the
/// others being whatever the client sent), with a port if the balancer adds one; else
/// the connection's peer.
pub fn client_address(req: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(forwarded) = req
            .headers()
            .get_all("x-forwarded-for")
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| forwarded_address(a.trim()))
    {
        return Some(forwarded);
    }
    req.peer_addr().map(|a| a.ip())
}

/// An `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:5678`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Registers every route and the extractor error handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(1 << 20)
            .error_handler(|e, _| match e {
                actix_web::error::JsonPayloadError::Payload(p) if deadline::timed_out(&p) => {
                    ApiError::RequestTimeout.into()
                }
                // serde quotes what it could not take (an unknown field's name, a
                // value): cut, it cannot make the answer as large as the body.
                e => ApiError::BadRequest(format!("invalid JSON body: {}", echo(&e.to_string())))
                    .into(),
            }),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(echo(&e.to_string()).into_owned()).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(echo(&e.to_string()).into_owned()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/ocpp/{charge_point_id}", web::get().to(ocpp::connect))
    .route("/graphql", web::post().to(graphql::post))
    .route("/graphql", web::get().to(graphql::subscriptions))
    .route("/graphiql", web::get().to(graphql::graphiql))
    .route(
        "/graphiql/assets/{name}",
        web::get().to(graphql::graphiql_asset),
    )
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
            .route(
                "/chargers/{id}/tariff",
                web::put().to(rest::billing::charger_tariff),
            )
            .route("/events", web::get().to(rest::events::list))
            .route("/live", web::get().to(rest::live::stream))
            .route("/id-tokens", web::get().to(rest::id_tokens::list))
            .route("/id-tokens/{id_token}", web::get().to(rest::id_tokens::get))
            .route("/id-tokens/{id_token}", web::put().to(rest::id_tokens::put))
            .route(
                "/id-tokens/{id_token}",
                web::delete().to(rest::id_tokens::delete),
            )
            .route("/sessions", web::get().to(rest::sessions::list))
            .route("/sessions/{id}", web::get().to(rest::sessions::get))
            .route("/stations", web::get().to(rest::stations::near))
            .route("/stations/{id}", web::get().to(rest::stations::get))
            .route(
                "/chargers/{id}/station",
                web::put().to(rest::stations::link),
            )
            .route("/ocm/sync", web::post().to(rest::stations::sync))
            .route("/ocm/runs", web::get().to(rest::stations::runs))
            .route("/ocm/runs/{id}", web::get().to(rest::stations::run))
            .route("/tariffs", web::get().to(rest::billing::tariffs))
            .route("/tariffs", web::post().to(rest::billing::create_tariff))
            .route("/tariffs/{id}", web::get().to(rest::billing::tariff))
            .route(
                "/operators/{id}/tariff",
                web::put().to(rest::billing::operator_tariff),
            )
            .route("/users", web::post().to(rest::users::create))
            .route("/users/{id}", web::get().to(rest::users::get))
            .route("/users/{id}/role", web::put().to(rest::users::put_role))
            .route("/users/{id}/plan", web::put().to(rest::billing::put_plan))
            .route(
                "/users/{id}/payment-methods",
                web::get().to(rest::users::payment_methods),
            )
            .route(
                "/users/{id}/payment-methods",
                web::post().to(rest::users::add_payment_method),
            )
            .route("/invoices", web::get().to(rest::billing::invoices))
            .route("/invoices/{id}", web::get().to(rest::billing::invoice))
            .route("/webhooks", web::get().to(rest::webhooks::list))
            .route("/webhooks", web::post().to(rest::webhooks::create))
            .route("/webhooks/{id}", web::delete().to(rest::webhooks::delete))
            .route(
                "/webhooks/{id}/deliveries",
                web::get().to(rest::webhooks::deliveries),
            ),
    )
    .default_service(web::to(not_found));
}

/// An HTML page with the headers every page of ours carries: scripts, styles and
/// connections from this server only (fonts and images inline), never framed, no
/// referrer, no content sniffing.
pub fn html(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; font-src data:; \
             img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(body)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        echo(req.path())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_a_trusted_balancer_the_client_is_its_own_last_entry() {
        let request = actix_web::test::TestRequest::default()
            .peer_addr("10.0.0.1:443".parse().unwrap())
            // What the client sent, on a line of its own, before the balancer's.
            .append_header(("X-Forwarded-For", "6.6.6.6"))
            .append_header(("X-Forwarded-For", "7.7.7.7, 203.0.113.7:41234"))
            .to_http_request();
        let client = client_address(&request, true);
        assert_eq!(client, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(
            client_address(&request, false),
            Some("10.0.0.1".parse().unwrap()),
            "not trusted: the peer"
        );
        let v6 = actix_web::test::TestRequest::default()
            .peer_addr("10.0.0.1:443".parse().unwrap())
            .append_header(("X-Forwarded-For", "[2001:db8::7]:8443"))
            .to_http_request();
        assert_eq!(
            client_address(&v6, true),
            Some("2001:db8::7".parse().unwrap())
        );
    }
}
