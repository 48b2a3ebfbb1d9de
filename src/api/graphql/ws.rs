//! WebSocket `/graphql`: subscriptions, over actix-ws (as the OCPP sockets, ADR 0001)
//! and async-graphql's protocol engine, rather than async-graphql-actix-web, whose 7.x
//! WebSocket support is built on the deprecated actix-web-actors (ADR 0012).
//!
//! Around the engine, this handler keeps what the engine does not: a client that does
//! not initialise in time is closed (4408); one socket runs at most
//! `graphql.max_subscriptions_per_socket` subscriptions (counted by the streams the
//! engine holds, [`Capped`], whatever the messages looked like; more are answered with an
//! error, RATE_LIMITED); and a socket signed in with an access token is closed (4403)
//! when that token expires, so that its subscriptions do not outlive it.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor, Request, Response, ServerError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};

use super::{Code, Viewer};
use crate::api::ApiState;
use crate::api::error::ApiError;

/// Largest subscription message from a client.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a client may take to send `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings a subscription socket.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The caller from a `connection_init` payload: `{"Authorization": "Bearer <token>"}`.
/// `None` when a token is given but invalid, expired or revoked (the connection is
/// refused).
async fn viewer_from_init(
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
            Some(
                crate::api::auth::verify_token(state, token)
                    .await
                    .ok()
                    .flatten()?,
            )
        }
    };
    Some(Viewer { claims, address })
}

/// The part of an outgoing protocol message this handler reads.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

/// The schema as one socket's engine runs it: at most `slots` subscription streams at
/// once. A stream holds its slot until the engine drops it (the client completed it, it
/// ended, or the socket is gone).
#[derive(Clone)]
struct Capped {
    schema: super::JucrSchema,
    slots: Arc<Semaphore>,
    most: usize,
}

impl Executor for Capped {
    fn execute(&self, request: Request) -> impl Future<Output = Response> + Send {
        let schema = self.schema.clone();
        async move { schema.execute(request).await }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Executor::execute_stream(&self.schema, request, session_data)
                .map(move |response| {
                    let _held = &slot;
                    response
                })
                .boxed(),
            Err(_) => {
                let mut refused = ServerError::new(
                    format!(
                        "this socket already runs {} subscriptions; complete one first",
                        self.most
                    ),
                    None,
                );
                refused
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", Code::RateLimited.as_str());
                futures_util::stream::once(async move { Response::from_errors(vec![refused]) })
                    .boxed()
            }
        }
    }
}

async fn close(session: Session, code: u16, description: &str) {
    let _ = session
        .close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(description.into()),
        }))
        .await;
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
    let (mut response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.sec_websocket_protocol()),
    );
    let address =
        crate::api::client_address(&req, state.services.settings.http.trust_forwarded_for);
    let mut stream = stream
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    let most = state.services.settings.graphql.max_subscriptions_per_socket;
    let schema = Capped {
        schema: state.graphql.clone(),
        slots: Arc::new(Semaphore::new(most)),
        most,
    };

    // Client frames go to the protocol engine through a channel; pings are answered here.
    let (to_engine, from_client) = mpsc::channel::<String>(64);
    let mut answers = session.clone();
    actix_web::rt::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let delivered = match message {
                AggregatedMessage::Text(text) => to_engine.send(text.to_string()).await.is_ok(),
                AggregatedMessage::Ping(bytes) => answers.pong(&bytes).await.is_ok(),
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
    let init_state = state.clone();
    // graphql-transport-ws closes a refused connection_init with 4403 Forbidden; the
    // engine says 1002, so the refusal is noted here and the code corrected below. An
    // accepted token's expiry is noted too: the socket closes then.
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let expires = Arc::new(OnceLock::<i64>::new());
    let (refuse, expiry) = (refused.clone(), expires.clone());
    let engine = WebSocket::new(schema, Box::pin(incoming), protocol)
        .on_connection_init(move |payload| async move {
            match viewer_from_init(&payload, &init_state, address).await {
                Some(viewer) => {
                    if let Some(claims) = &viewer.claims {
                        let _ = expiry.set(claims.exp);
                    }
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
        let mut session = session;
        let mut engine = std::pin::pin!(engine);
        let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
        tokio::pin!(init_deadline);
        let mut initialised = false;
        // Far off until a token's expiry is known.
        let token_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(token_deadline);
        let mut expiry_known = false;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            if !expiry_known && let Some(exp) = expires.get() {
                expiry_known = true;
                let left = (*exp - chrono::Utc::now().timestamp()).max(0) as u64;
                token_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(left));
            }
            let message = tokio::select! {
                message = engine.next() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = &mut init_deadline, if !initialised => {
                    return close(session, 4408, "Connection initialisation timeout").await;
                }
                _ = &mut token_deadline, if expiry_known => {
                    return close(session, 4403, "access token expired; connect again with a new one").await;
                }
                // A ping now and then keeps idle subscriptions' paths open and finds
                // dead peers (a failed send ends the socket).
                _ = heartbeat.tick() => {
                    if session.ping(b"").await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let sent = match message {
                WsMessage::Text(text) => {
                    if !initialised && let Ok(envelope) = serde_json::from_str::<Envelope>(&text) {
                        initialised = envelope.kind == "connection_ack";
                    }
                    session.text(text).await
                }
                WsMessage::Close(code, reason) => {
                    let code = if refused.load(std::sync::atomic::Ordering::Acquire) {
                        4403
                    } else {
                        code
                    };
                    return close(session, code, &reason).await;
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
