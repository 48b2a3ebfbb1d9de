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
//!
//! Here: the actor's state, how it answers, and its life. Its parts: `link.rs` (the
//! connection), `requests.rs` (the charger's calls), `transactions.rs` (transaction
//! events), `calls.rs` (the central system's calls to the charger). The children use
//! this module's imports (`use super::*`).

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

mod calls;
mod link;
mod requests;
mod transactions;

pub use calls::{CallFailure, SendCall};
use calls::{PendingCall, QueuedCall};
use link::Departure;
pub use link::{Incoming, Link};
use transactions::RemoteStart;

/// Vendor id of the test-only fault-injection DataTransfer (`testing.fault_injection`).
pub const FAULT_INJECTION_VENDOR: &str = "org.jucr.test";

/// Resolution of a charger's stored last-seen time.
const SEEN_RESOLUTION: Duration = Duration::from_secs(1);

/// How long an accepted RemoteStartTransaction waits for its StartTransaction.
const REMOTE_START_WINDOW: Duration = Duration::from_secs(600);

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
