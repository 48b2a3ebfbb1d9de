//! `ChargerActor`: one per charger WebSocket connection. It holds the charger's live
//! state (boot data, connectors, its active transactions, the outstanding CSMS call and
//! the queue behind it), answers the charger's calls and sends the operator's.
//!
//! The socket task in `crate::api::ocpp` owns the WebSocket: it feeds text frames in
//! ([`Inbound`]) and writes what the actor puts on its [`Outbound`] channel. It also
//! supervises the actor: if the actor dies (a panic), the task closes that socket with
//! 1011 and tells the registry, so the charger reconnects to a fresh actor and no other
//! charger notices.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::Services;
use super::registry::{
    ChargerUpdate, Connected, Disconnected, FindSession, OpenSession, SessionHandle, TokenBusy,
};
use super::session::{EndError, EndSession, RecordSamples};
use crate::domain::ports::StoreError;
use crate::domain::{
    CallEffect, ChargerId, ChargerRequest, ChargerResponse, ConnectorId, ConnectorState,
    ConnectorStatus, DataTransferStatus, IdToken, NewSession, NotificationKind, RegistrationStatus,
    SessionError, TransactionId, TransactionStart, TransactionStop, authorize,
};
use crate::ocpp::error::RpcErrorKind;
use crate::ocpp::frame::{self, Call, CallError, CallResult, Frame};
use crate::ocpp::schema::{PayloadKind, Violation, schemas};
use crate::ocpp::{OcppVersion, v16};

/// Vendor id of the test-only fault-injection DataTransfer (`testing.fault_injection`).
pub const FAULT_INJECTION_VENDOR: &str = "org.jucr.test";

/// How long an accepted RemoteStartTransaction waits for its StartTransaction.
const REMOTE_START_WINDOW: Duration = Duration::from_secs(600);

/// What the actor asks the socket task to do.
#[derive(Debug)]
pub enum Outbound {
    Text(String),
    /// Close the socket with this WebSocket close code and reason.
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// Why a CSMS→charger call produced no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    #[error("charger is not connected")]
    NotConnected,
    #[error("charger disconnected before answering")]
    Disconnected,
    #[error("charger did not answer in time")]
    Timeout,
    #[error("charger answered with CALLERROR {code}: {description}")]
    CallError {
        code: String,
        description: String,
        details: Value,
    },
    #[error("charger's answer does not match the schema: {0}")]
    InvalidResponse(String),
}

struct PendingCall {
    message_id: String,
    action: String,
    request: Value,
    reply: oneshot::Sender<Result<Value, CallFailure>>,
    timer: SpawnHandle,
    sent_at: Instant,
}

struct QueuedCall {
    action: String,
    payload: Value,
    reply: oneshot::Sender<Result<Value, CallFailure>>,
}

struct RemoteStart {
    token_key: String,
    connector_id: Option<ConnectorId>,
    accepted_at: Instant,
}

pub struct ChargerActor {
    id: ChargerId,
    conn_id: Uuid,
    version: OcppVersion,
    services: Arc<Services>,
    out: mpsc::UnboundedSender<Outbound>,
    registration: RegistrationStatus,
    connectors: BTreeMap<ConnectorId, ConnectorState>,
    sessions: HashMap<TransactionId, SessionHandle>,
    pending: Option<PendingCall>,
    queue: VecDeque<QueuedCall>,
    remote_starts: Vec<RemoteStart>,
    span: tracing::Span,
}

impl ChargerActor {
    pub fn new(
        id: ChargerId,
        version: OcppVersion,
        services: Arc<Services>,
        out: mpsc::UnboundedSender<Outbound>,
        registration: RegistrationStatus,
        connectors: Vec<ConnectorState>,
    ) -> Self {
        let conn_id = Uuid::new_v4();
        let span = tracing::info_span!("charger", charger_id = %id, ocpp_version = %version, conn_id = %conn_id);
        ChargerActor {
            id,
            conn_id,
            version,
            services,
            out,
            registration,
            connectors: connectors
                .into_iter()
                .map(|c| (c.connector_id, c))
                .collect(),
            sessions: HashMap::new(),
            pending: None,
            queue: VecDeque::new(),
            remote_starts: Vec::new(),
            span,
        }
    }

    pub fn conn_id(&self) -> Uuid {
        self.conn_id
    }

    fn send_frame(&self, frame: Frame) {
        // A closed channel means the socket task has ended; the actor is stopping too.
        let _ = self.out.send(Outbound::Text(frame.to_text()));
    }

    fn send_error(&self, message_id: &str, action: &str, kind: RpcErrorKind, description: String) {
        let code = kind.code(self.version);
        self.services.metrics.message("in", action, code);
        self.span.in_scope(|| tracing::warn!(ocpp.action = action, ocpp.message_id = message_id, code, %description, "answering with CALLERROR"));
        self.send_frame(Frame::CallError(CallError {
            message_id: message_id.to_owned(),
            error_code: code.to_owned(),
            description,
            details: Value::Object(Default::default()),
        }));
    }

    /// Answers a charger's call. Our own payload is checked against its schema first:
    /// a response that would not validate is a bug, answered as InternalError.
    fn reply(&self, message_id: &str, action: &str, response: Result<ChargerResponse, Violation>) {
        let encoded = response.and_then(|r| match self.version {
            OcppVersion::V16 => v16::encode_response(&r),
            OcppVersion::V201 => unreachable!("2.0.1 is not negotiated before its adapter exists"),
        });
        let checked = encoded.and_then(|payload| {
            schemas(self.version).check(action, PayloadKind::Response, &payload).map(|()| payload).map_err(|v| {
                self.span.in_scope(|| tracing::error!(ocpp.action = action, violation = %v, "our response breaks its schema"));
                Violation { kind: RpcErrorKind::InternalError, description: "response could not be built".into() }
            })
        });
        match checked {
            Ok(payload) => {
                self.services.metrics.message("in", action, "ok");
                self.send_frame(Frame::CallResult(CallResult {
                    message_id: message_id.to_owned(),
                    payload,
                }));
            }
            Err(v) => self.send_error(message_id, action, v.kind, v.description),
        }
    }

    fn internal_error(&self, message_id: &str, action: &str, error: &dyn std::error::Error) {
        self.span.in_scope(|| tracing::error!(ocpp.action = action, error.message = %error, error.cause_chain = ?error, "request failed"));
        self.send_error(
            message_id,
            action,
            RpcErrorKind::InternalError,
            "the central system could not process the request".into(),
        );
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match frame::parse(text) {
            Err(e) if e.answerable => {
                let kind = e.kind;
                self.send_error(&e.message_id, "<unreadable>", kind, e.description);
            }
            Err(e) => self.span.in_scope(|| tracing::warn!(description = %e.description, "unreadable CALLRESULT/CALLERROR dropped")),
            Ok(Frame::Call(call)) => self.on_call(call, ctx),
            Ok(Frame::CallResult(result)) => self.on_answer(&result.message_id, Ok(result.payload), ctx),
            Ok(Frame::CallError(error)) => {
                let failure = CallFailure::CallError {
                    code: error.error_code,
                    description: error.description,
                    details: error.details,
                };
                self.on_answer(&error.message_id, Err(failure), ctx)
            }
        }
    }

    fn on_call(&mut self, call: Call, ctx: &mut Context<Self>) {
        let Call {
            message_id,
            action,
            payload,
        } = call;
        let set = schemas(self.version);
        let Some(spec) = set.action(&action) else {
            // A fixed label: names chosen by the network must not grow the metric's label set.
            let shown: String = action.chars().take(64).collect();
            return self.send_error(
                &message_id,
                "<unknown>",
                RpcErrorKind::NotImplemented,
                format!("unknown action {shown:?}"),
            );
        };
        if !spec.from_charger {
            return self.send_error(
                &message_id,
                spec.name,
                RpcErrorKind::NotSupported,
                format!("{action} is sent by the central system, not by a charge point"),
            );
        }
        if let Err(v) = set.check(spec.name, PayloadKind::Request, &payload) {
            return self.send_error(&message_id, spec.name, v.kind, v.description);
        }
        if self.registration == RegistrationStatus::Rejected && spec.name != "BootNotification" {
            return self.send_error(
                &message_id,
                spec.name,
                RpcErrorKind::SecurityError,
                "charge point is not accepted; send BootNotification".into(),
            );
        }
        let request = match self.version {
            OcppVersion::V16 => v16::decode_request(spec.name, payload),
            OcppVersion::V201 => unreachable!("2.0.1 is not negotiated before its adapter exists"),
        };
        match request {
            Ok(request) => self.on_request(message_id, spec.name, request, ctx),
            Err(v) => self.send_error(&message_id, spec.name, v.kind, v.description),
        }
    }

    /// Handles a valid charger request. Requests that need storage wait in the actor's
    /// context (`ctx.wait`), so a charger's calls are answered in the order they came.
    fn on_request(
        &mut self,
        id: String,
        action: &'static str,
        request: ChargerRequest,
        ctx: &mut Context<Self>,
    ) {
        let now = Utc::now();
        let services = self.services.clone();
        match request {
            ChargerRequest::Heartbeat => {
                self.services.registry.do_send(ChargerUpdate {
                    charger_id: self.id.clone(),
                    conn_id: self.conn_id,
                    heartbeat: Some(now),
                    connector: None,
                });
                self.reply(
                    &id,
                    action,
                    Ok(ChargerResponse::Heartbeat { current_time: now }),
                );
            }
            ChargerRequest::StatusNotification(report) => {
                let state =
                    ConnectorState::after(self.connectors.get(&report.connector_id), &report, now);
                self.record_connector(state);
                self.reply(&id, action, Ok(ChargerResponse::Ack));
            }
            ChargerRequest::BootNotification(boot) => {
                let charger = self.id.clone();
                let version = self.version;
                let work = async move {
                    services
                        .store
                        .record_boot(&charger, &boot, version.as_str(), now)
                        .await?;
                    Ok::<_, StoreError>(
                        services
                            .store
                            .charger(&charger)
                            .await?
                            .map(|c| c.registration.registration_status),
                    )
                };
                ctx.wait(work.instrument(self.span.clone()).into_actor(self).map(
                    move |result, act, _| match result {
                        Ok(status) => {
                            act.registration = status.unwrap_or(act.registration);
                            let ocpp = &act.services.settings.ocpp;
                            let interval_secs = match act.registration {
                                RegistrationStatus::Accepted => ocpp.heartbeat_interval_secs,
                                _ => ocpp.boot_retry_interval_secs,
                            };
                            act.span.in_scope(|| {
                                tracing::info!(
                                    status = act.registration.as_str(),
                                    "boot notification"
                                )
                            });
                            act.reply(
                                &id,
                                action,
                                Ok(ChargerResponse::BootNotification {
                                    status: act.registration,
                                    current_time: now,
                                    interval_secs,
                                }),
                            );
                        }
                        Err(e) => act.internal_error(&id, action, &e),
                    },
                ));
            }
            ChargerRequest::Authorize(token) => {
                let work = async move {
                    let record = services.store.id_token(&token).await?;
                    let busy = services
                        .registry
                        .send(TokenBusy(token))
                        .await
                        .unwrap_or(false);
                    Ok::<_, StoreError>(authorize(record.as_ref(), now, busy))
                };
                ctx.wait(
                    work.into_actor(self)
                        .map(move |result, act, _| match result {
                            Ok(info) => {
                                act.reply(&id, action, Ok(ChargerResponse::Authorize(info)))
                            }
                            Err(e) => act.internal_error(&id, action, &e),
                        }),
                );
            }
            ChargerRequest::StartTransaction(start) => {
                self.start_transaction(id, action, start, ctx)
            }
            ChargerRequest::MeterValues {
                connector_id,
                transaction_id,
                samples,
            } => {
                self.reply(&id, action, Ok(ChargerResponse::Ack));
                let transaction = transaction_id.or_else(|| {
                    self.sessions
                        .values()
                        .find(|h| h.connector_id == connector_id)
                        .map(|h| h.transaction_id.clone())
                });
                match transaction {
                    Some(tx) if !samples.is_empty() => {
                        self.with_session(tx, ctx, move |handle| handle.addr.do_send(RecordSamples(samples)))
                    }
                    Some(_) => {}
                    None => self.span.in_scope(|| tracing::debug!(%connector_id, "meter values outside a transaction are not kept")),
                }
            }
            ChargerRequest::StopTransaction(stop) => self.stop_transaction(id, action, stop, ctx),
            ChargerRequest::DataTransfer {
                vendor_id,
                message_id,
                ..
            } => {
                if self.services.settings.testing.fault_injection
                    && vendor_id == FAULT_INJECTION_VENDOR
                    && message_id.as_deref() == Some("panic")
                {
                    panic!("fault injection: charger actor {} told to panic", self.id);
                }
                let response = ChargerResponse::DataTransfer {
                    status: DataTransferStatus::UnknownVendorId,
                    data: None,
                };
                self.reply(&id, action, Ok(response));
            }
            ChargerRequest::SignCertificate => {
                // No certificate authority is configured: the CSR is refused, not lost silently.
                self.span.in_scope(|| {
                    tracing::warn!("SignCertificate refused: no certificate authority configured")
                });
                self.reply(
                    &id,
                    action,
                    Ok(ChargerResponse::SignCertificate { accepted: false }),
                );
            }
            ChargerRequest::Notification { kind, status } => {
                let kind = match kind {
                    NotificationKind::DiagnosticsStatus => "diagnostics",
                    NotificationKind::FirmwareStatus => "firmware",
                    NotificationKind::SignedFirmwareStatus => "signed firmware",
                    NotificationKind::LogStatus => "log upload",
                    NotificationKind::SecurityEvent => "security event",
                };
                self.span.in_scope(|| {
                    tracing::info!(
                        kind,
                        status = status.as_deref().unwrap_or(""),
                        "charger notification"
                    )
                });
                self.reply(&id, action, Ok(ChargerResponse::Ack));
            }
        }
    }

    fn record_connector(&mut self, state: ConnectorState) {
        self.connectors.insert(state.connector_id, state.clone());
        self.services
            .writer
            .connector(self.id.clone(), state.clone());
        self.services.registry.do_send(ChargerUpdate {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
            heartbeat: None,
            connector: Some(state),
        });
    }

    fn start_transaction(
        &mut self,
        id: String,
        action: &'static str,
        start: TransactionStart,
        ctx: &mut Context<Self>,
    ) {
        let now = Utc::now();
        let services = self.services.clone();
        let remote_start = self.take_remote_start(&start.id_token, start.connector_id);
        let new = NewSession {
            charger_id: self.id.clone(),
            connector_id: start.connector_id,
            transaction_id: None,
            id_token: start.id_token.clone(),
            meter_start_wh: start.meter_start_wh,
            started_at: start.timestamp,
            remote_start,
            reservation_id: start.reservation_id,
        };
        let work = async move {
            let record = services.store.id_token(&start.id_token).await?;
            let busy = services
                .registry
                .send(TokenBusy(start.id_token.clone()))
                .await
                .unwrap_or(false);
            let info = authorize(record.as_ref(), now, busy);
            // The charger has started already: the transaction is recorded whatever the
            // token's status; a refused token tells the charger to stop it (1.6 §5.18).
            let session = services.store.start_session(&new).await?;
            let handle = services.registry.send(OpenSession(session)).await.ok();
            Ok::<_, StoreError>((info, handle))
        };
        ctx.wait(work.instrument(self.span.clone()).into_actor(self).map(move |result, act, _| match result {
            Ok((info, Some(handle))) => {
                act.span.in_scope(|| tracing::info!(session_id = %handle.session_id, status = info.status.as_str(), "transaction started"));
                let transaction_id = handle.transaction_id.clone();
                act.sessions.insert(transaction_id.clone(), handle);
                act.reply(&id, action, Ok(ChargerResponse::StartTransaction { transaction_id, id_token_info: info }));
            }
            Ok((_, None)) => act.internal_error(&id, action, &std::io::Error::other("registry is gone")),
            Err(e) => act.internal_error(&id, action, &e),
        }));
    }

    fn stop_transaction(
        &mut self,
        id: String,
        action: &'static str,
        stop: TransactionStop,
        ctx: &mut Context<Self>,
    ) {
        let now = Utc::now();
        let services = self.services.clone();
        let charger = self.id.clone();
        let cached = self
            .sessions
            .remove(&stop.transaction_id)
            .filter(|h| h.addr.connected());
        let work = async move {
            let info = match &stop.id_token {
                Some(token) => Some(authorize(
                    services.store.id_token(token).await?.as_ref(),
                    now,
                    false,
                )),
                None => None,
            };
            let handle = match cached {
                Some(handle) => Some(handle),
                None => services
                    .registry
                    .send(FindSession {
                        charger_id: charger.clone(),
                        transaction_id: stop.transaction_id.clone(),
                    })
                    .await
                    .ok()
                    .flatten(),
            };
            let tx = stop.transaction_id.clone();
            match handle {
                Some(handle) => match handle.addr.send(EndSession(stop)).await {
                    Ok(Ok(_)) | Ok(Err(EndError::Session(SessionError::AlreadyStopped(_)))) => {}
                    Ok(Err(EndError::Store(e))) => return Err(e),
                    Err(_) => {
                        return Err(StoreError::Backend(
                            "session actor died while ending".into(),
                        ));
                    }
                },
                // Not active: a repeat of a stop we have stored, or a transaction we never saw.
                None => {
                    if services
                        .store
                        .session_by_transaction(&charger, &tx)
                        .await?
                        .is_none()
                    {
                        tracing::warn!(transaction_id = %tx, "StopTransaction for an unknown transaction");
                    }
                }
            }
            Ok::<_, StoreError>(info)
        };
        ctx.wait(
            work.instrument(self.span.clone())
                .into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(info) => act.reply(
                        &id,
                        action,
                        Ok(ChargerResponse::StopTransaction {
                            id_token_info: info,
                        }),
                    ),
                    Err(e) => act.internal_error(&id, action, &e),
                }),
        );
    }

    /// Runs `f` with the live session of `tx`, asking the registry (which may rebuild it
    /// from storage) when this connection does not know it yet. Waits in the context so
    /// later frames of this charger see the session.
    fn with_session(
        &mut self,
        tx: TransactionId,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&SessionHandle) + 'static,
    ) {
        if let Some(handle) = self.sessions.get(&tx).filter(|h| h.addr.connected()) {
            return f(handle);
        }
        let find = self.services.registry.send(FindSession {
            charger_id: self.id.clone(),
            transaction_id: tx.clone(),
        });
        ctx.wait(find.into_actor(self).map(move |found, act, _| match found.ok().flatten() {
            Some(handle) => {
                f(&handle);
                act.sessions.insert(tx, handle);
            }
            None => act.span.in_scope(|| tracing::warn!(transaction_id = %tx, "meter values for a transaction that is not active")),
        }));
    }

    fn take_remote_start(&mut self, token: &IdToken, connector: ConnectorId) -> bool {
        self.remote_starts
            .retain(|r| r.accepted_at.elapsed() < REMOTE_START_WINDOW);
        let key = token.key();
        match self
            .remote_starts
            .iter()
            .position(|r| r.token_key == key && r.connector_id.is_none_or(|c| c == connector))
        {
            Some(i) => {
                self.remote_starts.remove(i);
                true
            }
            None => false,
        }
    }

    /// Sends the next queued operator call unless one is outstanding: OCPP-J allows a
    /// single outstanding CALL per direction (1.6 §4.1.1).
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_some() {
            return;
        }
        while let Some(call) = self.queue.pop_front() {
            self.services.metrics.queued_calls.dec();
            if call.reply.is_closed() {
                continue;
            }
            let message_id = Uuid::new_v4().to_string();
            let frame = Frame::Call(Call {
                message_id: message_id.clone(),
                action: call.action.clone(),
                payload: call.payload.clone(),
            });
            if self.out.send(Outbound::Text(frame.to_text())).is_err() {
                let _ = call.reply.send(Err(CallFailure::Disconnected));
                continue;
            }
            let timeout_id = message_id.clone();
            let timer = ctx.run_later(
                self.services.settings.ocpp.call_timeout(),
                move |act, ctx| act.on_timeout(&timeout_id, ctx),
            );
            self.pending = Some(PendingCall {
                message_id,
                action: call.action,
                request: call.payload,
                reply: call.reply,
                timer,
                sent_at: Instant::now(),
            });
            return;
        }
    }

    fn on_answer(
        &mut self,
        message_id: &str,
        answer: Result<Value, CallFailure>,
        ctx: &mut Context<Self>,
    ) {
        if self
            .pending
            .as_ref()
            .is_none_or(|p| p.message_id != message_id)
        {
            self.span.in_scope(|| {
                tracing::warn!(
                    ocpp.message_id = message_id,
                    "answer to no outstanding call; dropped"
                )
            });
            return;
        }
        let call = self
            .pending
            .take()
            .expect("checked to be Some with this id just above; qed");
        ctx.cancel_future(call.timer);
        let metrics = self.services.metrics.clone();
        metrics
            .call_duration
            .with_label_values(&[call.action.as_str()])
            .observe(call.sent_at.elapsed().as_secs_f64());
        let result = answer.and_then(|payload| {
            schemas(self.version)
                .check(&call.action, PayloadKind::Response, &payload)
                .map_err(|v| CallFailure::InvalidResponse(v.description))?;
            Ok(payload)
        });
        let label = match &result {
            Ok(payload) => {
                self.apply_effect(&call.action, &call.request, payload);
                "ok"
            }
            Err(CallFailure::CallError { .. }) => "call_error",
            Err(_) => "invalid_response",
        };
        metrics.message("out", &call.action, label);
        let _ = call.reply.send(result);
        self.send_next(ctx);
    }

    fn on_timeout(&mut self, message_id: &str, ctx: &mut Context<Self>) {
        if self
            .pending
            .as_ref()
            .is_none_or(|p| p.message_id != message_id)
        {
            return;
        }
        let call = self
            .pending
            .take()
            .expect("checked to be Some with this id just above; qed");
        self.span.in_scope(|| tracing::warn!(ocpp.action = %call.action, ocpp.message_id = message_id, "call timed out"));
        self.services
            .metrics
            .message("out", &call.action, "timeout");
        let _ = call.reply.send(Err(CallFailure::Timeout));
        self.send_next(ctx);
    }

    fn apply_effect(&mut self, action: &str, request: &Value, response: &Value) {
        let effect = match self.version {
            OcppVersion::V16 => v16::call_effect(action, request, response),
            OcppVersion::V201 => None,
        };
        match effect {
            Some(CallEffect::Availability {
                connector_id,
                availability,
            }) => {
                let now = Utc::now();
                let targets: Vec<ConnectorId> = if connector_id == ConnectorId::WHOLE_CHARGER {
                    self.connectors.keys().copied().collect()
                } else {
                    vec![connector_id]
                };
                for connector in targets {
                    let state = match self.connectors.get(&connector) {
                        Some(previous) => ConnectorState {
                            availability,
                            updated_at: now,
                            ..previous.clone()
                        },
                        None => ConnectorState {
                            connector_id: connector,
                            status: match availability {
                                crate::domain::Availability::Operative => {
                                    ConnectorStatus::Available
                                }
                                crate::domain::Availability::Inoperative => {
                                    ConnectorStatus::Unavailable
                                }
                            },
                            error_code: None,
                            info: None,
                            availability,
                            updated_at: now,
                        },
                    };
                    self.record_connector(state);
                }
            }
            Some(CallEffect::RemoteStartAccepted {
                id_token,
                connector_id,
            }) => {
                self.remote_starts.push(RemoteStart {
                    token_key: id_token.key(),
                    connector_id,
                    accepted_at: Instant::now(),
                });
            }
            None => {}
        }
    }

    fn fail_outstanding(&mut self) {
        if let Some(call) = self.pending.take() {
            let _ = call.reply.send(Err(CallFailure::Disconnected));
        }
        for call in self.queue.drain(..) {
            self.services.metrics.queued_calls.dec();
            let _ = call.reply.send(Err(CallFailure::Disconnected));
        }
    }
}

impl Actor for ChargerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.span.in_scope(|| tracing::info!("charger connected"));
        let connected = Connected {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
            version: self.version,
            addr: ctx.address(),
            connectors: self.connectors.values().cloned().collect(),
        };
        // Wait for the registry before reading frames: it hands over this charger's live sessions.
        ctx.wait(self.services.registry.send(connected).into_actor(self).map(
            |sessions, act, _| {
                for handle in sessions.unwrap_or_default() {
                    act.sessions.insert(handle.transaction_id.clone(), handle);
                }
            },
        ));
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.fail_outstanding();
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.services.writer.seen(self.id.clone(), Utc::now());
        self.services.registry.do_send(Disconnected {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
        });
        self.span
            .in_scope(|| tracing::info!("charger disconnected"));
    }
}

/// A text frame from the charger. Sent by the socket task.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub String);

impl Handler<Inbound> for ChargerActor {
    type Result = ();

    fn handle(&mut self, Inbound(text): Inbound, ctx: &mut Self::Context) {
        self.services.writer.seen(self.id.clone(), Utc::now());
        self.on_text(&text, ctx);
    }
}

/// The socket has closed. Sent by the socket task.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed;

impl Handler<ConnectionClosed> for ChargerActor {
    type Result = ();

    fn handle(&mut self, _: ConnectionClosed, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A newer connection of the same charger has replaced this one. Sent by the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Superseded;

impl Handler<Superseded> for ChargerActor {
    type Result = ();

    fn handle(&mut self, _: Superseded, ctx: &mut Self::Context) {
        self.span
            .in_scope(|| tracing::info!("superseded by a new connection"));
        let _ = self.out.send(Outbound::Close {
            code: 1008,
            reason: "replaced by a newer connection",
        });
        ctx.stop();
    }
}

/// The server is shutting down. Sent by the registry (`CloseAll`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for ChargerActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        let _ = self.out.send(Outbound::Close {
            code: 1001,
            reason: "server shutting down",
        });
        ctx.stop();
    }
}

/// An operator's CSMS→charger call, payload already checked against the request
/// schema. Sent by the directory; answered through `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendCall {
    pub action: String,
    pub payload: Value,
    pub reply: oneshot::Sender<Result<Value, CallFailure>>,
}

impl Handler<SendCall> for ChargerActor {
    type Result = ();

    fn handle(&mut self, call: SendCall, ctx: &mut Self::Context) {
        self.queue.push_back(QueuedCall {
            action: call.action,
            payload: call.payload,
            reply: call.reply,
        });
        self.services.metrics.queued_calls.inc();
        self.send_next(ctx);
    }
}
