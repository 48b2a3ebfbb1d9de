//! `GET /ocpp/{chargePointId}`: the OCPP-J WebSocket endpoint.
//!
//! Before the upgrade: the charger id must parse (400), be registered unless the
//! unknown-charger policy is `accept` (404), and pass HTTP Basic auth when its security
//! profile asks for it (401, counted in metrics). The subprotocol is chosen from the
//! client's offer in server preference order; with no supported one offered, the
//! handshake completes without a `Sec-WebSocket-Protocol` header and the socket is
//! closed at once with 1002, as OCPP-J (2.0.1 part 4 §3.1.2) prescribes.
//!
//! After the upgrade the connection's `ChargerActor` owns the WebSocket
//! ([`super::socket`], ADR 0021).

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;

use super::ApiState;
use super::error::ApiError;
use super::socket;
use crate::actors::Services;
use crate::actors::charger::{ChargerActor, Link};
use crate::domain::{
    ChargerId, ChargerRegistration, RegistrationStatus, SecurityProfile, UnknownChargerPolicy,
};
use crate::ocpp;
use crate::security;

use super::tls::{self, TlsConnection};

/// Failed charger authentications per address: an address that failed too often
/// within the window is refused (429) before any password is checked.
pub type AuthLimiter = super::limit::AttemptLimiter<std::net::IpAddr>;

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let services = state.services.clone();
    let id =
        ChargerId::parse(path.into_inner()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let registration = authenticate(&req, &id, &services, &state.auth_limiter).await?;

    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let preference = services
        .settings
        .ocpp
        .preference()
        .map_err(ApiError::internal)?;
    let version = ocpp::negotiate(&offered, &preference);

    let (mut response, link, frames) =
        socket::accept(&req, body, services.settings.ocpp.max_frame_bytes)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;

    let Some(version) = version else {
        tracing::warn!(charger_id = %id, offered = ?offered, "no supported OCPP subprotocol offered; closing");
        link.close(Some((1002, "no supported OCPP subprotocol offered")));
        return Ok(response);
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(version.subprotocol()),
    );

    let connectors = services.store.connectors(&id).await?;
    ChargerActor::new(
        id,
        version,
        services,
        Box::new(link),
        registration.registration_status,
        connectors,
    )
    .start_reading(frames);
    Ok(response)
}

/// Checks the charger's identity before the upgrade; registers it first when the
/// policy accepts unknown chargers.
async fn authenticate(
    req: &HttpRequest,
    id: &ChargerId,
    services: &Arc<Services>,
    limiter: &AuthLimiter,
) -> Result<ChargerRegistration, ApiError> {
    let peer = req.peer_addr().map(|a| a.ip());
    if peer.is_some_and(|p| limiter.blocked(&p)) {
        tracing::warn!(charger_id = %id, ?peer, "too many failed authentications from this address");
        return Err(ApiError::TooManyAttempts);
    }
    let registration = match services.store.charger(id).await? {
        Some(record) => record.registration,
        None => match services.settings.ocpp.unknown_chargers {
            UnknownChargerPolicy::Reject => {
                tracing::warn!(charger_id = %id, "unknown charger refused");
                return Err(ApiError::NotFound(format!(
                    "charger {id} is not registered"
                )));
            }
            UnknownChargerPolicy::Accept => {
                let registration = ChargerRegistration {
                    charger_id: id.clone(),
                    password_hash: None,
                    security_profile: SecurityProfile::NONE,
                    registration_status: RegistrationStatus::Accepted,
                    description: Some("auto-registered on first connection".into()),
                    operator_id: None,
                };
                // Never overwrite a registration an operator made in the meantime.
                if services.store.insert_registration(&registration).await? {
                    tracing::info!(charger_id = %id, "unknown charger registered (policy: accept)");
                    return Ok(registration);
                }
                let record = services.store.charger(id).await?;
                record
                    .ok_or_else(|| ApiError::NotFound(format!("charger {id} is not registered")))?
                    .registration
            }
        },
    };
    let profile = registration.security_profile;
    let tls = req.conn_data::<TlsConnection>();
    if profile.requires_tls() && tls.is_none() {
        tracing::warn!(charger_id = %id, profile = profile.number(), "refused over plain ws://");
        return Err(ApiError::TlsRequired(profile.number()));
    }
    let refuse = |why: &str| {
        services.metrics.auth_failures.inc();
        if let Some(peer) = peer {
            limiter.failed(&peer);
        }
        tracing::warn!(charger_id = %id, reason = why, "charger authentication failed");
        ApiError::Unauthorized
    };
    if profile.requires_client_certificate() {
        let Some(der) = tls.and_then(|t| t.client_certificate.as_deref()) else {
            return Err(refuse("no client certificate"));
        };
        // The certificate chains to the configured CA (checked in the handshake); its
        // subject must name this charge point.
        if tls::common_name(der).as_deref() != Some(id.as_str()) {
            return Err(refuse("client certificate is for another charge point"));
        }
        return Ok(registration);
    }
    if !profile.requires_password() {
        return Ok(registration);
    }
    let Some((user, password)) = basic_credentials(req) else {
        return Err(refuse("no basic credentials"));
    };
    let Some(hash) = registration.password_hash.clone() else {
        return Err(refuse("no password registered"));
    };
    if user != id.as_str() {
        return Err(refuse("user name is not the charger id"));
    }
    let ok = web::block(move || security::verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(refuse("wrong password"));
    }
    Ok(registration)
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
