//! `GET /ocpp/{chargePointId}`: the OCPP-J WebSocket endpoint.
//!
//! Before the upgrade: the charger id must parse (400), be registered unless the
//! unknown-charger policy is `accept` (404), and pass HTTP Basic auth when its security
//! profile asks for it (401, counted in metrics). The subprotocol is chosen from the
//! client's offer in server preference order; with no supported one offered, the
//! handshake completes without a `Sec-WebSocket-Protocol` header and the socket is
//! closed at once with 1002, as OCPP-J (2.0.1 part 4 §3.1.2) prescribes.
//!
//! After the upgrade a socket task (below) owns the WebSocket and supervises the
//! connection's `ChargerActor`.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use base64::Engine;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::ApiState;
use super::error::ApiError;
use crate::actors::Services;
use crate::actors::batch_writer::BatchWriter;
use crate::actors::charger::{ChargerActor, ConnectionClosed, Inbound, Outbound};
use crate::actors::registry::Disconnected;
use crate::domain::{
    ChargerId, ChargerRegistration, RegistrationStatus, SecurityProfile, UnknownChargerPolicy,
};
use crate::ocpp::{self, OcppVersion};
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

    let (mut response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let max = services.settings.ocpp.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);

    let Some(version) = version else {
        tracing::warn!(charger_id = %id, offered = ?offered, "no supported OCPP subprotocol offered; closing");
        actix_web::rt::spawn(async move {
            let reason = CloseReason {
                code: CloseCode::Protocol,
                description: Some("no supported OCPP subprotocol offered".into()),
            };
            let _ = session.close(Some(reason)).await;
        });
        return Ok(response);
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(version.subprotocol()),
    );

    let connectors = services.store.connectors(&id).await?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let actor = ChargerActor::new(
        id.clone(),
        version,
        services.clone(),
        out_tx,
        registration.registration_status,
        connectors,
    );
    let conn_id = actor.conn_id();
    let addr = actor.start();
    actix_web::rt::spawn(socket_task(SocketTask {
        id,
        conn_id,
        addr,
        session,
        stream,
        out: out_rx,
        services,
        version,
    }));
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

struct SocketTask {
    id: ChargerId,
    conn_id: uuid::Uuid,
    addr: Addr<ChargerActor>,
    session: actix_ws::Session,
    stream: AggregatedMessageStream,
    out: mpsc::UnboundedReceiver<Outbound>,
    services: Arc<Services>,
    version: OcppVersion,
}

fn close(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_owned()),
    })
}

/// Sends what the charger's actor emitted; `Err` (with the close reason, if any) when
/// the connection must end.
async fn forward(
    outbound: Option<Outbound>,
    session: &mut actix_ws::Session,
    send_timeout: Duration,
    span: &tracing::Span,
) -> Result<(), Option<CloseReason>> {
    match outbound {
        Some(Outbound::Text(text)) => {
            match tokio::time::timeout(send_timeout, session.text(text)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(None),
                Err(_) => {
                    span.in_scope(|| {
                        tracing::warn!("charger is not reading; dropping the connection")
                    });
                    Err(close(CloseCode::Away, "not reading"))
                }
            }
        }
        Some(Outbound::Close { code, reason }) => Err(close(CloseCode::from(code), reason)),
        // The actor is gone without saying goodbye: it crashed.
        None => {
            span.in_scope(|| tracing::error!("charger actor died; closing its socket"));
            Err(close(CloseCode::Error, "internal error"))
        }
    }
}

/// Returns when the batch writer takes more (while storage is behind, this charger's
/// next frame waits and nothing is lost), sending what the actor emits meanwhile
/// (answers, a close); `Err` as [`forward`] when the connection must end.
async fn admit_forwarding(
    writer: &BatchWriter,
    out: &mut mpsc::UnboundedReceiver<Outbound>,
    session: &mut actix_ws::Session,
    send_timeout: Duration,
    span: &tracing::Span,
) -> Result<(), Option<CloseReason>> {
    let admitted = writer.admit();
    tokio::pin!(admitted);
    loop {
        tokio::select! {
            () = &mut admitted => return Ok(()),
            outbound = out.recv() => forward(outbound, session, send_timeout, span).await?,
        }
    }
}

/// Owns one charger's WebSocket: frames in go to the actor, frames the actor emits go
/// out, pings keep it honest. Ends the connection when the charger closes, stops
/// answering pings, or the actor stops or dies (then with 1011).
async fn socket_task(task: SocketTask) {
    let SocketTask {
        id,
        conn_id,
        addr,
        mut session,
        mut stream,
        mut out,
        services,
        version,
    } = task;
    let interval = services.settings.ocpp.ping_interval();
    let send_timeout = interval.max(Duration::from_secs(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut awaiting_pong = false;
    let span = tracing::info_span!("socket", charger_id = %id, ocpp_version = %version);

    let reason = loop {
        tokio::select! {
            outbound = out.recv() => {
                if let Err(reason) = forward(outbound, &mut session, send_timeout, &span).await {
                    break reason;
                }
            }
            message = stream.next() => {
                awaiting_pong = false;
                // Storage behind: this charger's next frame waits (nothing is lost).
                if matches!(message, Some(Ok(AggregatedMessage::Text(_) | AggregatedMessage::Binary(_))))
                    && let Err(reason) = admit_forwarding(&services.writer, &mut out, &mut session, send_timeout, &span).await
                {
                    break reason;
                }
                match message {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if addr.send(Inbound(text.to_string())).await.is_err() {
                            span.in_scope(|| tracing::error!("charger actor died; closing its socket"));
                            break close(CloseCode::Error, "internal error");
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(bytes))) => {
                        // OCPP-J uses text frames; a charger sending JSON as binary is read leniently.
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        if addr.send(Inbound(text)).await.is_err() {
                            break close(CloseCode::Error, "internal error");
                        }
                    }
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        let _ = session.pong(&bytes).await;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        span.in_scope(|| tracing::info!(?reason, "charger closed the connection"));
                        break None;
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        span.in_scope(|| tracing::warn!(max = services.settings.ocpp.max_frame_bytes, "frame over the size limit"));
                        break close(CloseCode::Size, "message too big");
                    }
                    Some(Err(ProtocolError::Io(e))) => {
                        span.in_scope(|| tracing::info!(error = %e, "connection lost"));
                        break None;
                    }
                    Some(Err(e)) => {
                        span.in_scope(|| tracing::warn!(error = %e, "WebSocket protocol error"));
                        break close(CloseCode::Protocol, "protocol error");
                    }
                    None => break None,
                }
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    span.in_scope(|| tracing::warn!(interval_secs = interval.as_secs(), "no pong within a ping interval; charger offline"));
                    break close(CloseCode::Away, "ping timeout");
                }
                awaiting_pong = true;
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
        }
    };

    addr.do_send(ConnectionClosed);
    services.registry.do_send(Disconnected {
        charger_id: id.clone(),
        conn_id,
    });
    services.writer.seen(id, Utc::now());
    let _ = tokio::time::timeout(send_timeout, session.close(reason)).await;
}
