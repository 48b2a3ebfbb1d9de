//! `GET /ocpp/{chargePointId}`: the OCPP-J WebSocket endpoint.
//!
//! Before the upgrade: the request must be a WebSocket handshake (400: nothing is
//! looked up or registered for a plain GET), the charger id must parse (400), be
//! registered unless the unknown-charger policy is `accept` (404), and pass HTTP Basic
//! auth or its client certificate when its security profile asks for it (401 with a
//! Basic challenge, counted in metrics; 429 past the attempt limits, which are counted
//! before any password is checked). The subprotocol is chosen from the client's offer
//! in server preference order; with no supported one offered, the handshake completes
//! without a `Sec-WebSocket-Protocol` header and the socket is closed at once with
//! 1002, as OCPP-J (2.0.1 part 4 §3.1.2) prescribes.
//!
//! After the upgrade the connection's `ChargerActor` owns the WebSocket
//! ([`super::socket`], ADR 0021).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;

use super::ApiState;
use super::error::ApiError;
use super::socket;
use crate::actors::Services;
use crate::actors::charger::{ChargerActor, Link};
use crate::domain::attempts::AttemptLimiter;
use crate::domain::{
    ChargerId, ChargerRegistration, RegistrationStatus, SecurityProfile, UnknownChargerPolicy,
};
use crate::ocpp;

use super::tls::{self, TlsConnection};

/// Charger authentications, counted before the password (or certificate) is checked:
/// per charger and client address, so that someone guessing one charger's password
/// locks out neither the other chargers behind the same load balancer nor that charger
/// at its own address; and per client address across chargers, so that one address
/// cannot guess at every charger. The client address is the forwarded one behind a
/// trusted balancer (`http.trust_forwarded_for`).
pub struct AuthLimits {
    per_charger: AttemptLimiter<(ChargerId, IpAddr)>,
    per_address: AttemptLimiter<IpAddr>,
}

impl AuthLimits {
    /// Each limiter holds at most `max_keys` keys (`auth.limiter_max_keys`).
    pub fn new(settings: &crate::config::OcppSettings, max_keys: usize) -> Self {
        let window = Duration::from_secs(settings.auth_failure_window_secs);
        AuthLimits {
            per_charger: AttemptLimiter::new(settings.auth_failure_limit, window, max_keys),
            per_address: AttemptLimiter::new(
                settings.auth_failure_limit_per_address,
                window,
                max_keys,
            ),
        }
    }

    fn blocked(&self, id: &ChargerId, address: IpAddr) -> bool {
        self.per_address.blocked(&address) || self.per_charger.blocked(&(id.clone(), address))
    }

    /// Counts an attempt; false when it is one too many (not to be checked).
    fn admit(
        &self,
        id: &ChargerId,
        address: IpAddr,
        settings: &crate::config::OcppSettings,
    ) -> bool {
        let for_charger = self.per_charger.hit(&(id.clone(), address));
        let for_address = self.per_address.hit(&address);
        for_charger <= settings.auth_failure_limit
            && for_address <= settings.auth_failure_limit_per_address
    }

    fn succeeded(&self, id: &ChargerId, address: IpAddr) {
        self.per_charger.reset(&(id.clone(), address));
        self.per_address.forgive(&address);
    }
}

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let services = state.services.clone();
    // Not a WebSocket handshake: refused before anything is looked up or registered.
    actix_http::ws::verify_handshake(req.head())
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    let id =
        ChargerId::parse(path.into_inner()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let address = super::client_address(&req, services.settings.http.trust_forwarded_for)
        .map(super::limit::client_key);
    let registration = authenticate(&req, &id, address, &services, &state.charger_auth).await?;

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
    address: Option<IpAddr>,
    services: &Arc<Services>,
    limits: &AuthLimits,
) -> Result<ChargerRegistration, ApiError> {
    let too_many = || {
        tracing::warn!(charger_id = %id, ?address, "too many failed authentications; refused unchecked");
        ApiError::TooManyAttempts
    };
    if address.is_some_and(|a| limits.blocked(id, a)) {
        return Err(too_many());
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
    if !profile.requires_client_certificate() && !profile.requires_password() {
        return Ok(registration);
    }
    // Counted before the check: parallel attempts cannot all reach it.
    if let Some(address) = address
        && !limits.admit(id, address, &services.settings.ocpp)
    {
        return Err(too_many());
    }
    let refuse = |why: &str| {
        services.metrics.auth_failures.inc();
        tracing::warn!(charger_id = %id, ?address, reason = why, "charger authentication failed");
        ApiError::ChargerUnauthorized
    };
    let accepted = |registration| {
        if let Some(address) = address {
            limits.succeeded(id, address);
        }
        Ok(registration)
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
        return accepted(registration);
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
    let ok = services
        .charger_hashing
        .verify(password, hash)
        .await
        .map_err(ApiError::from)?;
    if !ok {
        return Err(refuse("wrong password"));
    }
    accepted(registration)
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
