//! The transports of GraphQL: `POST /graphql`, WebSocket `/graphql` (subscriptions)
//! and the GraphiQL page.
//!
//! Subscriptions run over actix-ws (as the OCPP sockets do, ADR 0001) and
//! async-graphql's protocol engine, rather than async-graphql-actix-web, whose 7.x
//! WebSocket support is built on the deprecated actix-web-actors (ADR 0012).

use std::str::FromStr;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Viewer;
use crate::api::ApiState;
use crate::api::error::ApiError;

/// Largest subscription message from a client.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a client may take to send `connection_init`.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the server pings a subscription socket.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// The caller from the `Authorization` header; an invalid or expired token is
/// UNAUTHENTICATED where it matters (resolvers that need a viewer), not a failed request:
/// `register` and `login` work without one.
pub fn viewer(req: &HttpRequest, state: &ApiState) -> Viewer {
    let claims =
        crate::api::auth::bearer_token(req).and_then(|token| state.keys.verify(token.trim()).ok());
    Viewer {
        claims,
        address: client_address(req, state),
    }
}

/// The client's address: the last `X-Forwarded-For` entry when a trusted load balancer
/// adds it (`http.trust_forwarded_for`), else the connection's peer.
pub fn client_address(req: &HttpRequest, state: &ApiState) -> Option<std::net::IpAddr> {
    if state.services.settings.http.trust_forwarded_for
        && let Some(forwarded) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse().ok())
    {
        return Some(forwarded);
    }
    req.peer_addr().map(|a| a.ip())
}

/// `POST /graphql` with `{query, variables?, operationName?}`.
pub async fn post(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<async_graphql::Request>,
) -> HttpResponse {
    let request = body.into_inner().data(viewer(&req, &state));
    let mut response = state.graphql.execute(request).await;
    // Errors from parsing, validation and limits come without a code: they are the
    // query's fault.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", super::Code::BadUserInput.as_str());
        }
    }
    HttpResponse::Ok().json(response)
}

/// `GET /graphiql`: an in-browser IDE for the schema.
pub async fn graphiql() -> HttpResponse {
    let page = async_graphql::http::GraphiQLSource::build()
        .endpoint("/graphql")
        .subscription_endpoint("/graphql")
        .finish();
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

/// The caller from a `connection_init` payload: `{"Authorization": "Bearer <token>"}`.
/// `None` when a token is given but invalid (the connection is refused).
fn viewer_from_init(
    payload: &serde_json::Value,
    state: &ApiState,
    address: Option<std::net::IpAddr>,
) -> Option<Viewer> {
    let header = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(|v| v.as_str());
    let claims = match header {
        None => None,
        Some(value) => {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value);
            Some(state.keys.verify(token.trim()).ok()?)
        }
    };
    Some(Viewer { claims, address })
}

/// `GET /graphql` upgraded to a WebSocket: subscriptions, with the protocol the client
/// offers (`graphql-transport-ws`, or the legacy `graphql-ws`).
pub async fn subscriptions(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let protocol = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| WebSocketProtocols::from_str(p).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "offer the graphql-transport-ws (or graphql-ws) WebSocket subprotocol".into(),
            )
        })?;
    let (mut response, mut session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.sec_websocket_protocol()),
    );
    let address = client_address(&req, &state);
    let mut stream = stream
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);

    // Client frames go to the protocol engine through a channel; pings are answered here.
    let (to_engine, from_client) = mpsc::channel::<String>(64);
    let mut pong = session.clone();
    actix_web::rt::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let delivered = match message {
                AggregatedMessage::Text(text) => to_engine.send(text.to_string()).await.is_ok(),
                AggregatedMessage::Ping(bytes) => pong.pong(&bytes).await.is_ok(),
                AggregatedMessage::Close(_) => false,
                _ => true,
            };
            if !delivered {
                break;
            }
        }
    });
    let incoming = futures_util::stream::unfold(from_client, |mut rx| async move {
        rx.recv().await.map(|text| (text, rx))
    });
    let schema = state.graphql.clone();
    let init_state = state.clone();
    // graphql-transport-ws closes a refused connection_init with 4403 Forbidden; the
    // engine says 1002, so the refusal is noted here and the code corrected below.
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refuse = refused.clone();
    let engine = WebSocket::new(schema, Box::pin(incoming), protocol)
        .on_connection_init(move |payload| async move {
            match viewer_from_init(&payload, &init_state, address) {
                Some(viewer) => {
                    let mut data = async_graphql::Data::default();
                    data.insert(viewer);
                    Ok(data)
                }
                None => {
                    refuse.store(true, std::sync::atomic::Ordering::Release);
                    Err(async_graphql::Error::new("invalid or expired access token"))
                }
            }
        })
        .keepalive_timeout(None);
    actix_web::rt::spawn(async move {
        let mut engine = std::pin::pin!(engine);
        // graphql-transport-ws: a client that has not initialised in time is closed with
        // 4408; a ping now and then keeps idle subscriptions' paths open and finds dead
        // peers (a failed send ends the socket).
        let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
        tokio::pin!(init_deadline);
        let mut initialised = false;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            let message = tokio::select! {
                message = engine.next() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = &mut init_deadline, if !initialised => {
                    let _ = session
                        .close(Some(CloseReason {
                            code: CloseCode::Other(4408),
                            description: Some("Connection initialisation timeout".into()),
                        }))
                        .await;
                    return;
                }
                _ = heartbeat.tick() => {
                    if session.ping(b"").await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let sent = match message {
                WsMessage::Text(text) => {
                    initialised |= text.contains("\"connection_ack\"");
                    session.text(text).await
                }
                WsMessage::Close(code, reason) => {
                    let code = if refused.load(std::sync::atomic::Ordering::Acquire) {
                        4403
                    } else {
                        code
                    };
                    let _ = session
                        .close(Some(CloseReason {
                            code: CloseCode::Other(code),
                            description: Some(reason),
                        }))
                        .await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}
