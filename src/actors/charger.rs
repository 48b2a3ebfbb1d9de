//! `ChargerActor`: one per charger WebSocket connection. It holds the charger's live
//! state (boot data, connectors, its active transactions, the outstanding CSMS call and
//! the queue behind it), answers the charger's calls and sends the operator's.
//!
//! The actor owns its charger's connection (ADR 0021): it reads the charger's messages
//! as a stream of [`Incoming`] and writes frames through its [`Link`] (the WebSocket in
//! `crate::api::socket`), pings the charger and closes the connection. If the actor
//! dies (a panic), the link closes the socket with 1011 as it is dropped and
//! [`Departure`] tells the registry, so the charger reconnects to a fresh actor and no
//! other charger notices.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::Services;
use super::batch_writer::BatchWriter;
use super::registry::{
    ChargerUpdate, Connected, Disconnected, FindSession, HeartbeatCell, OpenSession, SessionHandle,
    TokenBusy,
};
use super::session::{EndError, EndSession, RecordSamples, SetToken};
use crate::domain::echo::echo;
use crate::domain::live::LiveUpdate;
use crate::domain::money::Money;
use crate::domain::ports::StoreError;
use crate::domain::report::ReportAssembly;
use crate::domain::{
    Availability, CallEffect, ChargerId, ChargerRequest, ChargerResponse, ConnectorId,
    ConnectorState, ConnectorStatus, Connectors, DataTransferStatus, IdToken, IdTokenInfo,
    Measurand, NewSession, NotificationKind, RegistrationStatus, ReportedVariable, SessionError,
    TransactionEvent, TransactionEventKind, TransactionId, TransactionIdOrigin, authorize,
};
use crate::ocpp::error::RpcErrorKind;
use crate::ocpp::frame::{self, Call, CallError, CallResult, Frame};
use crate::ocpp::schema::{PayloadKind, Violation, schemas};
use crate::ocpp::{self, OcppVersion};

/// Vendor id of the test-only fault-injection DataTransfer (`testing.fault_injection`).
pub const FAULT_INJECTION_VENDOR: &str = "org.jucr.test";

/// Resolution of a charger's stored last-seen time.
const SEEN_RESOLUTION: Duration = Duration::from_secs(1);

/// How long an accepted RemoteStartTransaction waits for its StartTransaction.
const REMOTE_START_WINDOW: Duration = Duration::from_secs(600);

/// What a charger's connection delivers to its actor, in order.
#[derive(Debug)]
pub enum Incoming {
    /// A message (one sent as binary is read as text, leniently).
    Text(String),
    Ping(Bytes),
    Pong,
    /// The charger closed the connection, with this close code if it gave one.
    Close(Option<u16>),
    /// The charger broke the WebSocket protocol or a limit: the connection closes with
    /// this code. Nothing follows.
    Failed {
        code: u16,
        reason: &'static str,
    },
    /// The connection broke. Nothing follows.
    Lost(std::io::Error),
}

/// A charger's connection as its actor writes to it. Frames are sent in the order
/// written; after `close`, nothing more is.
pub trait Link {
    fn text(&self, text: &str);
    /// Sends a ping; `false` if what was written before the last ping still waits
    /// unsent (the charger is not reading): the connection is then dropped.
    fn ping(&self) -> bool;
    fn pong(&self, payload: &[u8]);
    /// Closes with this close code and reason, or with none.
    fn close(&self, reason: Option<(u16, &str)>);
}

/// Tells the registry and the batch writer that the connection has ended when the
/// actor is dropped: after it stops, and also when it panics.
struct Departure {
    id: ChargerId,
    conn_id: Uuid,
    services: Arc<Services>,
    span: tracing::Span,
}

impl Drop for Departure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.span
                .in_scope(|| tracing::error!("charger actor died; its socket is closed with 1011"));
        }
        self.services.registry.do_send(Disconnected {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
        });
        self.services.writer.seen(self.id.clone(), Utc::now());
    }
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
    #[error("too many calls are waiting for this charger")]
    Busy,
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
    /// The call's timeout runs from when it was queued, not from when it was sent.
    deadline: Instant,
}

/// Operator calls that may wait for one charger; more are refused (503) rather than
/// piling up behind a charger that answers slowly.
const MAX_QUEUED_CALLS: usize = 100;

struct TransactionOutcome {
    info: Option<IdTokenInfo>,
    transaction_id: TransactionId,
    /// The session still running, and whether this event started it.
    live: Option<(SessionHandle, bool)>,
    /// The connector whose transaction this event ended.
    ended_on: Option<ConnectorId>,
    /// The final cost, for the answer to an end.
    total_cost: Option<Money>,
    /// The running cost, when the charger should be told it (CostUpdated).
    cost_update: Option<Money>,
    /// This event stored a new session (and its domain event).
    opened: bool,
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
    link: Box<dyn Link>,
    /// A ping is out and nothing has come back since.
    awaiting_pong: bool,
    registration: RegistrationStatus,
    connectors: Connectors,
    sessions: HashMap<TransactionId, SessionHandle>,
    pending: Option<PendingCall>,
    queue: VecDeque<QueuedCall>,
    remote_starts: Vec<RemoteStart>,
    /// ChangeAvailability answered Scheduled: applied when the connector's transaction ends.
    scheduled_availability: HashMap<ConnectorId, Availability>,
    /// Device-model reports being assembled.
    reports: ReportAssembly,
    /// When last-seen was last handed to the batch writer.
    seen_recorded: Option<Instant>,
    /// Read by the registry's live views.
    last_heartbeat: Arc<HeartbeatCell>,
    span: tracing::Span,
    /// Held for its `Drop`.
    _departure: Departure,
}

impl ChargerActor {
    pub fn new(
        id: ChargerId,
        version: OcppVersion,
        services: Arc<Services>,
        link: Box<dyn Link>,
        registration: RegistrationStatus,
        connectors: Vec<ConnectorState>,
    ) -> Self {
        let conn_id = Uuid::new_v4();
        let span = tracing::info_span!("charger", charger_id = %id, ocpp_version = %version, conn_id = %conn_id);
        let departure = Departure {
            id: id.clone(),
            conn_id,
            services: services.clone(),
            span: span.clone(),
        };
        ChargerActor {
            id,
            conn_id,
            version,
            services,
            link,
            awaiting_pong: false,
            registration,
            connectors: connectors.into_iter().collect(),
            sessions: HashMap::new(),
            pending: None,
            queue: VecDeque::new(),
            remote_starts: Vec::new(),
            scheduled_availability: HashMap::new(),
            reports: ReportAssembly::default(),
            seen_recorded: None,
            last_heartbeat: Arc::default(),
            _departure: departure,
            span,
        }
    }

    pub fn conn_id(&self) -> Uuid {
        self.conn_id
    }

    fn send_frame(&self, frame: Frame) {
        self.link.text(&frame.to_text());
    }

    fn send_error(&self, message_id: &str, action: &str, kind: RpcErrorKind, description: String) {
        // Whatever the description quotes from the charger is answered and logged cut.
        let description = match echo(&description) {
            Cow::Borrowed(_) => description,
            Cow::Owned(cut) => cut,
        };
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
        let encoded = response.and_then(|r| ocpp::encode_response(self.version, action, &r));
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
        let request = ocpp::decode_request(self.version, spec.name, payload);
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
        let most = self.services.settings.ocpp.max_connectors;
        if let Some(connector) = request.connector()
            && connector.0 > most
        {
            // What one charger stores, and the transactions it holds open (one per
            // connector), stay bounded.
            return self.send_error(
                &id,
                action,
                RpcErrorKind::PropertyConstraintViolation,
                format!("connector {connector} is beyond the {most} a charger may have (ocpp.max_connectors)"),
            );
        }
        let now = Utc::now();
        let services = self.services.clone();
        match request {
            ChargerRequest::Heartbeat => {
                self.last_heartbeat.set(now);
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
                        .send(TokenBusy {
                            token,
                            except: None,
                        })
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
            ChargerRequest::Transaction(event) => self.on_transaction(id, action, event, ctx),
            ChargerRequest::DeviceReport {
                request_id,
                more_to_come,
                variables,
                ..
            } => self.on_device_report(id, action, request_id, more_to_come, variables, ctx),
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
                    NotificationKind::Other(action) => action,
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
        self.connectors.insert(state.clone());
        self.services
            .writer
            .connector(self.id.clone(), state.clone());
        self.services.live.publish(LiveUpdate::ChargerStatus {
            charger_id: self.id.clone(),
            connector: state.clone(),
        });
        self.services.registry.do_send(ChargerUpdate {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
            connector: state,
        });
    }

    /// Handles a transaction event, whatever the version: finds the live session (the
    /// registry rebuilds it from storage when needed) or starts one, feeds it, ends it.
    /// Repeated and late events (offline replay) never create a second session.
    fn on_transaction(
        &mut self,
        id: String,
        action: &'static str,
        event: TransactionEvent,
        ctx: &mut Context<Self>,
    ) {
        let now = Utc::now();
        let services = self.services.clone();
        let charger = self.id.clone();
        let remote_start = match (&event.id_token, event.kind) {
            (Some(token), TransactionEventKind::Started) => self.take_remote_start(
                token,
                event.connector_id.unwrap_or(ConnectorId::WHOLE_CHARGER),
            ),
            _ => false,
        };
        let cached = event
            .transaction_id
            .as_ref()
            .and_then(|tx| self.sessions.get(tx))
            .filter(|h| h.addr.connected())
            .cloned();
        let work = async move {
            let kind = event.kind;
            let info = match &event.id_token {
                Some(token) => {
                    let record = services.store.id_token(token).await?;
                    let busy = match (kind, event.connector_id) {
                        (TransactionEventKind::Started, connector) => services
                            .registry
                            .send(TokenBusy {
                                token: token.clone(),
                                except: connector.map(|c| (charger.clone(), c)),
                            })
                            .await
                            .unwrap_or(false),
                        _ => false,
                    };
                    Some(authorize(record.as_ref(), now, busy))
                }
                None => None,
            };
            let found = match (cached, &event.transaction_id) {
                (Some(handle), _) => Some(handle),
                (None, Some(tx)) => services
                    .registry
                    .send(FindSession {
                        charger_id: charger.clone(),
                        transaction_id: tx.clone(),
                        on: Arbiter::current(),
                    })
                    .await
                    .ok()
                    .flatten(),
                (None, None) => None,
            };
            let opened = found.is_none();
            let handle = match found {
                Some(handle) => handle,
                None => {
                    if let Some(tx) = &event.transaction_id {
                        // Not live: an event after the end (a repeat, or a late replay)...
                        if let Some(stored) =
                            services.store.session_by_transaction(&charger, tx).await?
                        {
                            return Ok(TransactionOutcome {
                                info,
                                transaction_id: stored.transaction_id,
                                live: None,
                                ended_on: None,
                                total_cost: None,
                                cost_update: None,
                                opened: false,
                            });
                        }
                        // ...or a transaction we never saw. Ids we allocate cannot be made up.
                        if event.origin == TransactionIdOrigin::Central {
                            tracing::warn!(transaction_id = %tx, "event for an unknown transaction");
                            return Ok(TransactionOutcome {
                                info,
                                transaction_id: tx.clone(),
                                live: None,
                                ended_on: None,
                                total_cost: None,
                                cost_update: None,
                                opened: false,
                            });
                        }
                    }
                    // A start, or the first event we see of a charger's transaction whose start was lost.
                    let first_register = event.samples.iter().find(|s| {
                        s.measurand == Measurand::EnergyImportRegister && s.phase.is_none()
                    });
                    let new = NewSession {
                        charger_id: charger.clone(),
                        connector_id: event.connector_id.unwrap_or(ConnectorId::WHOLE_CHARGER),
                        transaction_id: event.transaction_id.clone(),
                        id_token: event.id_token.clone(),
                        meter_start_wh: match kind {
                            TransactionEventKind::Started => event.meter_wh,
                            _ => None,
                        }
                        .or(first_register.map(|s| s.value.round() as i64))
                        .unwrap_or(0),
                        started_at: event.timestamp,
                        remote_start,
                        reservation_id: event.reservation_id,
                    };
                    let session = services.store.start_session(&new).await?;
                    services
                        .registry
                        .send(OpenSession(session, Arbiter::current()))
                        .await
                        .map_err(|_| StoreError::Backend("registry is gone".into()))?
                }
            };
            let transaction_id = handle.transaction_id.clone();
            match kind {
                TransactionEventKind::Started | TransactionEventKind::Updated => {
                    if let Some(token) = event.id_token {
                        handle.addr.do_send(SetToken(token));
                    }
                    let cost_update = if event.samples.is_empty() {
                        None
                    } else {
                        handle
                            .addr
                            .send(RecordSamples(event.samples))
                            .await
                            .ok()
                            .flatten()
                    };
                    let started = kind == TransactionEventKind::Started;
                    Ok(TransactionOutcome {
                        info,
                        transaction_id,
                        live: Some((handle, started)),
                        ended_on: None,
                        total_cost: None,
                        cost_update,
                        opened,
                    })
                }
                TransactionEventKind::Ended => {
                    let connector = handle.connector_id;
                    let mut total_cost = None;
                    match handle.addr.send(EndSession(event)).await {
                        Ok(Ok(ended)) => total_cost = ended.cost_estimate,
                        Ok(Err(EndError::Session(SessionError::AlreadyStopped(_)))) => {}
                        Ok(Err(EndError::Store(e))) => return Err(e),
                        Err(_) => {
                            return Err(StoreError::Backend(
                                "session actor died while ending".into(),
                            ));
                        }
                    }
                    Ok(TransactionOutcome {
                        info,
                        transaction_id,
                        live: None,
                        ended_on: Some(connector),
                        total_cost,
                        cost_update: None,
                        opened,
                    })
                }
            }
        };
        ctx.wait(work.instrument(self.span.clone()).into_actor(self).map(move |result, act, ctx| match result {
            Ok(outcome) => {
                // A start or an end wrote a domain event to the outbox: publish it now.
                let wrote_event = outcome.opened || outcome.ended_on.is_some();
                match outcome.live {
                    Some((handle, started)) => {
                        if started {
                            act.supersede_on(&handle, now);
                        }
                        act.sessions.insert(handle.transaction_id.clone(), handle);
                    }
                    None => {
                        act.sessions.remove(&outcome.transaction_id);
                    }
                }
                if wrote_event {
                    act.services.relay.kick();
                }
                if let Some(connector) = outcome.ended_on {
                    act.span.in_scope(|| tracing::info!(transaction_id = %outcome.transaction_id, "transaction ended"));
                    if let Some(availability) = act.scheduled_availability.remove(&connector) {
                        act.set_availability(connector, availability);
                    }
                }
                if let (Some(cost), OcppVersion::V201) = (outcome.cost_update, act.version) {
                    act.tell_cost(&outcome.transaction_id, cost, ctx);
                }
                let response = ChargerResponse::Transaction {
                    transaction_id: outcome.transaction_id,
                    id_token_info: outcome.info,
                    total_cost: outcome.total_cost,
                };
                act.reply(&id, action, Ok(response));
            }
            Err(e) => act.internal_error(&id, action, &e),
        }));
    }

    /// Tells a 2.0.1 charger the running cost of a transaction (CostUpdated, K-section
    /// of OCPP 2.0.1 Part 2); the answer is not waited for.
    fn tell_cost(&mut self, transaction_id: &TransactionId, cost: Money, ctx: &mut Context<Self>) {
        let (reply, answer) = oneshot::channel();
        ctx.notify(SendCall {
            action: "CostUpdated".into(),
            payload: serde_json::json!({
                "totalCost": cost.as_decimal(),
                "transactionId": transaction_id.0,
            }),
            reply,
        });
        // Kept until answered: a call whose requester is gone is not sent.
        let span = self.span.clone();
        actix::spawn(async move {
            if let Ok(Err(e)) = answer.await {
                span.in_scope(|| tracing::debug!(error = ?e, "CostUpdated not taken"));
            }
        });
    }

    /// A new transaction on a connector ends whatever this charger still had open there
    /// (its stop was lost): otherwise that session and its token would stay busy forever.
    fn supersede_on(&mut self, new: &SessionHandle, now: chrono::DateTime<Utc>) {
        let stale: Vec<SessionHandle> = self
            .sessions
            .values()
            .filter(|h| {
                h.connector_id == new.connector_id && h.transaction_id != new.transaction_id
            })
            .cloned()
            .collect();
        for old in stale {
            self.span.in_scope(|| tracing::warn!(session_id = %old.session_id, "ending a session whose stop never came: a new one started on its connector"));
            self.sessions.remove(&old.transaction_id);
            old.addr.do_send(EndSession(TransactionEvent {
                kind: TransactionEventKind::Ended,
                origin: TransactionIdOrigin::Charger,
                transaction_id: Some(old.transaction_id.clone()),
                connector_id: Some(old.connector_id),
                id_token: None,
                timestamp: now,
                meter_wh: None,
                samples: Vec::new(),
                stop_reason: Some("Superseded".into()),
                reservation_id: None,
                seq_no: None,
                offline: false,
            }));
        }
    }

    /// Collects the parts of a device-model report; stores it whole once the last part came.
    fn on_device_report(
        &mut self,
        id: String,
        action: &'static str,
        request_id: i64,
        more_to_come: bool,
        variables: Vec<ReportedVariable>,
        ctx: &mut Context<Self>,
    ) {
        let variables = match self.reports.add(request_id, more_to_come, variables) {
            Ok(Some(whole)) => whole,
            Ok(None) => return self.reply(&id, action, Ok(ChargerResponse::Ack)),
            Err(refused) => {
                self.span.in_scope(
                    || tracing::warn!(request_id, %refused, "device-model report part refused"),
                );
                return self.send_error(
                    &id,
                    action,
                    RpcErrorKind::GenericError,
                    refused.to_string(),
                );
            }
        };
        let (store, charger, count) = (
            self.services.store.clone(),
            self.id.clone(),
            variables.len(),
        );
        let work = async move {
            store
                .save_device_model(&charger, &variables, Utc::now())
                .await
        };
        ctx.wait(
            work.into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(()) => {
                        act.span.in_scope(|| {
                            tracing::info!(request_id, variables = count, "device model stored")
                        });
                        act.reply(&id, action, Ok(ChargerResponse::Ack));
                    }
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
            on: Arbiter::current(),
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
            let Some(remaining) = call.deadline.checked_duration_since(Instant::now()) else {
                self.services
                    .metrics
                    .message("out", &call.action, "timeout");
                let _ = call.reply.send(Err(CallFailure::Timeout));
                continue;
            };
            let message_id = Uuid::new_v4().to_string();
            let frame = Frame::Call(Call {
                message_id: message_id.clone(),
                action: call.action.clone(),
                payload: call.payload.clone(),
            });
            self.link.text(&frame.to_text());
            let timeout_id = message_id.clone();
            let timer = ctx.run_later(remaining, move |act, ctx| act.on_timeout(&timeout_id, ctx));
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

    /// Answers queued calls whose deadline has passed while they waited.
    fn expire_queued(&mut self) {
        let now = Instant::now();
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|c| c.deadline <= now);
        self.queue = waiting;
        for call in expired {
            self.services.metrics.queued_calls.dec();
            self.services
                .metrics
                .message("out", &call.action, "timeout");
            let _ = call.reply.send(Err(CallFailure::Timeout));
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
        match ocpp::call_effect(self.version, action, request, response) {
            Some(CallEffect::Availability {
                connector_id,
                availability,
                scheduled,
            }) => {
                let targets: Vec<ConnectorId> = if connector_id == ConnectorId::WHOLE_CHARGER {
                    self.connectors.ids().collect()
                } else {
                    vec![connector_id]
                };
                for connector in targets {
                    // Scheduled: the charger changes once the transaction on it has ended.
                    let busy = self.sessions.values().any(|h| h.connector_id == connector);
                    if scheduled && busy {
                        self.scheduled_availability.insert(connector, availability);
                    } else {
                        self.set_availability(connector, availability);
                    }
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

    fn set_availability(&mut self, connector: ConnectorId, availability: Availability) {
        let now = Utc::now();
        {
            let state = match self.connectors.get(&connector) {
                Some(previous) => ConnectorState {
                    availability,
                    updated_at: now,
                    ..previous.clone()
                },
                None => ConnectorState {
                    connector_id: connector,
                    status: match availability {
                        Availability::Operative => ConnectorStatus::Available,
                        Availability::Inoperative => ConnectorStatus::Unavailable,
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
            connectors: self.connectors.as_slice().to_vec(),
            last_heartbeat: self.last_heartbeat.clone(),
        };
        // Wait for the registry before reading frames: it hands over this charger's live sessions.
        ctx.wait(
            self.services
                .registry
                .send(connected)
                .into_actor(self)
                .map(|reply, act, _| {
                    let Ok(reply) = reply else { return };
                    for handle in reply.sessions {
                        act.sessions.insert(handle.transaction_id.clone(), handle);
                    }
                    act.connectors = reply.connectors.into_iter().collect();
                }),
        );
        // A charger that misses a whole interval's pong is offline within two intervals.
        let interval = self.services.settings.ocpp.ping_interval();
        ctx.run_interval(interval, move |act, ctx| {
            if act.awaiting_pong {
                act.span.in_scope(|| {
                    tracing::warn!(
                        interval_secs = interval.as_secs(),
                        "no pong within a ping interval; charger offline"
                    )
                });
                act.link.close(Some((1001, "ping timeout")));
                ctx.stop();
                return;
            }
            if !act.span.in_scope(|| act.link.ping()) {
                ctx.stop();
                return;
            }
            act.awaiting_pong = true;
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.fail_outstanding();
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // A handler panicked: actix stops the actor as its task unwinds. The charger
        // gets 1011 and reconnects to a fresh actor (ADR 0001). Otherwise the close
        // has no reason, unless one was given already (the link then sends nothing).
        let crashed = std::thread::panicking().then_some((1011, "internal error"));
        self.link.close(crashed);
        self.span
            .in_scope(|| tracing::info!("charger disconnected"));
    }
}

impl ChargerActor {
    /// Starts the actor on the current arbiter, reading `incoming` once the registry
    /// has answered [`Connected`]. While storage is behind, the charger's next message
    /// waits in its socket (ADR 0015) and nothing is lost; the actor meanwhile goes on
    /// with its mailbox (a newer connection, a shutdown, the operator's calls).
    pub fn start_reading(
        self,
        incoming: impl Stream<Item = Incoming> + Unpin + 'static,
    ) -> Addr<Self> {
        let admitted = Admitted {
            incoming,
            writer: self.services.writer.clone(),
            held: None,
        };
        ChargerActor::create(|ctx| {
            ctx.add_stream(admitted);
            self
        })
    }

    fn on_message(&mut self, text: &str, ctx: &mut Context<Self>) {
        // Last-seen is kept to the second: one update per second, not one per frame.
        if self
            .seen_recorded
            .is_none_or(|at| at.elapsed() >= SEEN_RESOLUTION)
        {
            self.seen_recorded = Some(Instant::now());
            self.services.writer.seen(self.id.clone(), Utc::now());
        }
        self.on_text(text, ctx);
    }
}

/// [`BatchWriter::admit`], for one held message.
type Admission = Pin<Box<dyn Future<Output = ()>>>;

/// A charger's messages as its actor reads them: a message that arrives while the batch
/// writer is behind is handed on once [`BatchWriter::admit`] lets it through.
struct Admitted<S> {
    incoming: S,
    writer: BatchWriter,
    /// The message read while storage was behind, and the wait for room.
    held: Option<(Incoming, Admission)>,
}

impl<S: Stream<Item = Incoming> + Unpin> Stream for Admitted<S> {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Incoming>> {
        let this = self.get_mut();
        if let Some((_, admit)) = &mut this.held {
            ready!(admit.as_mut().poll(cx));
            return Poll::Ready(this.held.take().map(|(message, _)| message));
        }
        match ready!(Pin::new(&mut this.incoming).poll_next(cx)) {
            Some(message @ Incoming::Text(_)) if this.writer.behind() => {
                let writer = this.writer.clone();
                let mut admit: Admission = Box::pin(async move { writer.admit().await });
                if admit.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(message));
                }
                this.held = Some((message, admit));
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

/// What the charger sends, from its connection (`crate::api::socket::Frames`). The
/// stream ends when the charger closes its side; the actor stops then.
impl StreamHandler<Incoming> for ChargerActor {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Self::Context) {
        self.awaiting_pong = false;
        match incoming {
            Incoming::Text(text) => self.on_message(&text, ctx),
            Incoming::Ping(payload) => self.link.pong(&payload),
            Incoming::Pong => {}
            Incoming::Close(code) => {
                self.span
                    .in_scope(|| tracing::info!(?code, "charger closed the connection"));
                ctx.stop();
            }
            Incoming::Failed { code, reason } => {
                self.span
                    .in_scope(|| tracing::warn!(code, reason, "closing the connection"));
                self.link.close(Some((code, reason)));
                ctx.stop();
            }
            Incoming::Lost(error) => {
                self.span
                    .in_scope(|| tracing::info!(error = %error, "connection lost"));
                ctx.stop();
            }
        }
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
        self.link
            .close(Some((1008, "replaced by a newer connection")));
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
        self.link.close(Some((1001, "server shutting down")));
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
        if self.queue.len() >= MAX_QUEUED_CALLS {
            let _ = call.reply.send(Err(CallFailure::Busy));
            return;
        }
        let timeout = self.services.settings.ocpp.call_timeout();
        self.queue.push_back(QueuedCall {
            action: call.action,
            payload: call.payload,
            reply: call.reply,
            deadline: Instant::now() + timeout,
        });
        self.services.metrics.queued_calls.inc();
        ctx.run_later(timeout, |act, _| act.expire_queued());
        self.send_next(ctx);
    }
}
