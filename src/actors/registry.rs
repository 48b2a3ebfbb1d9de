//! `StationRegistry`: which chargers are connected here (charger id → live actor),
//! their live connector view, and every active session (transaction → `SessionActor`).
//! Operator commands are routed through it. The APIs reach it only through the
//! [`ChargerDirectory`] trait, which a cluster version (presence in Redis, commands
//! over RabbitMQ) can implement without touching them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actix::prelude::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::batch_writer::BatchWriter;
use super::charger::{CallFailure, ChargerActor, SendCall, Shutdown, Superseded};
use super::notifier::LiveHub;
use super::session::{LiveSession, SessionActor, Snapshot};
use crate::domain::ports::{STATUS_REFRESH, StatusBoard, Store};
use crate::domain::{
    ChargerId, ConnectorId, ConnectorState, Connectors, IdToken, Session, SessionId, TransactionId,
};
use crate::metrics::Metrics;
use crate::ocpp::OcppVersion;

/// A connected charger as the APIs show it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveCharger {
    pub charger_id: ChargerId,
    pub ocpp_version: OcppVersion,
    pub connected_at: DateTime<Utc>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub connectors: Vec<ConnectorState>,
}

struct Connection {
    conn_id: Uuid,
    addr: Addr<ChargerActor>,
    version: OcppVersion,
    connected_at: DateTime<Utc>,
    last_heartbeat: Arc<HeartbeatCell>,
    connectors: Connectors,
}

/// A connection's last heartbeat, written by its charger actor and read here for the
/// live views: a Heartbeat costs no message to the registry's thread.
#[derive(Debug, Default)]
pub struct HeartbeatCell(AtomicI64);

impl HeartbeatCell {
    pub fn set(&self, at: DateTime<Utc>) {
        self.0.store(at.timestamp_millis(), Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<DateTime<Utc>> {
        // Zero: no heartbeat yet (no charger's clock reads 1970).
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            millis => DateTime::from_timestamp_millis(millis),
        }
    }
}

/// A live session as a `ChargerActor` holds it.
#[derive(Clone)]
pub struct SessionHandle {
    pub session_id: SessionId,
    pub transaction_id: TransactionId,
    pub connector_id: ConnectorId,
    pub addr: Addr<SessionActor>,
}

type SessionKey = (ChargerId, TransactionId);

pub struct StationRegistry {
    store: Arc<dyn Store>,
    writer: BatchWriter,
    metrics: Arc<Metrics>,
    /// How often at most a charger is told a session's running cost.
    cost_update_interval: std::time::Duration,
    live: Arc<LiveHub>,
    /// Where the station search reads our chargers' live status.
    board: Arc<dyn StatusBoard>,
    chargers: HashMap<ChargerId, Connection>,
    sessions: HashMap<SessionKey, SessionHandle>,
    by_id: HashMap<SessionId, SessionKey>,
    /// Token key → sessions it is charging, for ConcurrentTx.
    tokens: HashMap<String, SessionId>,
}

impl StationRegistry {
    /// A registry that publishes our chargers' live status to `board` (for the
    /// station search).
    pub fn new(
        store: Arc<dyn Store>,
        writer: BatchWriter,
        metrics: Arc<Metrics>,
        board: Arc<dyn StatusBoard>,
    ) -> Self {
        StationRegistry {
            store,
            writer,
            live: Arc::new(LiveHub::local(metrics.clone())),
            board,
            metrics,
            cost_update_interval: std::time::Duration::from_secs(60),
            chargers: HashMap::new(),
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            tokens: HashMap::new(),
        }
    }

    /// Where session actors publish their live updates.
    pub fn with_live(mut self, live: Arc<LiveHub>) -> Self {
        self.live = live;
        self
    }

    /// How often at most chargers are told the running cost of a session.
    pub fn with_cost_updates(mut self, every: std::time::Duration) -> Self {
        self.cost_update_interval = every;
        self
    }

    /// Finds the actor of an active session, or starts it on `on`.
    fn open(
        &mut self,
        session: Session,
        on: &ArbiterHandle,
        ctx: &mut Context<Self>,
    ) -> SessionHandle {
        let key = (session.charger_id.clone(), session.transaction_id.clone());
        if let Some(handle) = self.sessions.get(&key).filter(|h| h.addr.connected()) {
            return handle.clone();
        }
        let actor = SessionActor::new(
            session.clone(),
            self.store.clone(),
            self.writer.clone(),
            ctx.address(),
            self.metrics.clone(),
        )
        .cost_update_interval(self.cost_update_interval)
        .live_to(self.live.clone());
        let handle = SessionHandle {
            session_id: session.session_id,
            transaction_id: session.transaction_id.clone(),
            connector_id: session.connector_id,
            addr: SessionActor::start_in_arbiter(on, |_| actor),
        };
        if let Some(token) = &session.id_token {
            self.tokens.insert(token.key(), session.session_id);
        }
        self.by_id.insert(session.session_id, key.clone());
        self.sessions.insert(key, handle.clone());
        handle
    }
}

impl Actor for StationRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(STATUS_REFRESH, |registry, _| {
            for (id, c) in &registry.chargers {
                registry
                    .board
                    .publish(id, c.conn_id, c.connectors.as_slice());
            }
        });
    }
}

/// A charger's connection is up. Sent by `ChargerActor::started`; a previous connection
/// of the same charger is told to close (it has been superseded). Answered with the
/// charger's live sessions and its connectors as last known here (newest report wins
/// over what storage had, which may be a flush window behind).
#[derive(Message)]
#[rtype(result = "ConnectedReply")]
pub struct Connected {
    pub charger_id: ChargerId,
    pub conn_id: Uuid,
    pub version: OcppVersion,
    pub addr: Addr<ChargerActor>,
    pub connectors: Vec<ConnectorState>,
    pub last_heartbeat: Arc<HeartbeatCell>,
}

pub struct ConnectedReply {
    pub sessions: Vec<SessionHandle>,
    pub connectors: Vec<ConnectorState>,
}

impl Handler<Connected> for StationRegistry {
    type Result = MessageResult<Connected>;

    fn handle(&mut self, msg: Connected, _: &mut Self::Context) -> Self::Result {
        let mut connectors: Connectors = msg.connectors.into_iter().collect();
        match self.chargers.remove(&msg.charger_id) {
            Some(previous) => {
                for live in previous.connectors.into_vec() {
                    if connectors
                        .get(&live.connector_id)
                        .is_none_or(|stored| stored.updated_at <= live.updated_at)
                    {
                        connectors.insert(live);
                    }
                }
                if previous.conn_id != msg.conn_id {
                    previous.addr.do_send(Superseded);
                }
            }
            None => self.metrics.connected_chargers.inc(),
        }
        self.board
            .publish(&msg.charger_id, msg.conn_id, connectors.as_slice());
        self.chargers.insert(
            msg.charger_id.clone(),
            Connection {
                conn_id: msg.conn_id,
                addr: msg.addr,
                version: msg.version,
                connected_at: Utc::now(),
                last_heartbeat: msg.last_heartbeat,
                connectors: connectors.clone(),
            },
        );
        let sessions = self
            .sessions
            .iter()
            .filter(|((charger, _), h)| charger == &msg.charger_id && h.addr.connected())
            .map(|(_, h)| h.clone())
            .collect();
        MessageResult(ConnectedReply {
            sessions,
            connectors: connectors.into_vec(),
        })
    }
}

/// A charger's connection is gone. Sent by `ChargerActor::stopped` and, should the
/// actor have died, by the socket task that supervised it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    pub charger_id: ChargerId,
    pub conn_id: Uuid,
}

impl Handler<Disconnected> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, _: &mut Self::Context) {
        if self
            .chargers
            .get(&msg.charger_id)
            .is_some_and(|c| c.conn_id == msg.conn_id)
        {
            self.chargers.remove(&msg.charger_id);
            self.metrics.connected_chargers.dec();
            self.board.remove(&msg.charger_id, msg.conn_id);
        }
    }
}

/// A connector's new state. Sent by `ChargerActor` (StatusNotification, ChangeAvailability).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChargerUpdate {
    pub charger_id: ChargerId,
    pub conn_id: Uuid,
    pub connector: ConnectorState,
}

impl Handler<ChargerUpdate> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: ChargerUpdate, _: &mut Self::Context) {
        let Some(c) = self
            .chargers
            .get_mut(&msg.charger_id)
            .filter(|c| c.conn_id == msg.conn_id)
        else {
            return;
        };
        c.connectors.insert(msg.connector);
        self.board
            .publish(&msg.charger_id, msg.conn_id, c.connectors.as_slice());
    }
}

/// The actor serving a charger, if it is connected. Sent by the directory to route calls.
#[derive(Message)]
#[rtype(result = "Option<Addr<ChargerActor>>")]
pub struct FindCharger(pub ChargerId);

impl Handler<FindCharger> for StationRegistry {
    type Result = Option<Addr<ChargerActor>>;

    fn handle(&mut self, msg: FindCharger, _: &mut Self::Context) -> Self::Result {
        self.chargers
            .get(&msg.0)
            .map(|c| c.addr.clone())
            .filter(Addr::connected)
    }
}

/// Live views of connected chargers (all, or one). Sent by the directory for the APIs.
#[derive(Message)]
#[rtype(result = "Vec<LiveCharger>")]
pub struct LiveChargers(pub Option<ChargerId>);

impl Handler<LiveChargers> for StationRegistry {
    type Result = MessageResult<LiveChargers>;

    fn handle(&mut self, msg: LiveChargers, _: &mut Self::Context) -> Self::Result {
        let view = |(id, c): (&ChargerId, &Connection)| LiveCharger {
            charger_id: id.clone(),
            ocpp_version: c.version,
            connected_at: c.connected_at,
            last_heartbeat: c.last_heartbeat.get(),
            connectors: c.connectors.as_slice().to_vec(),
        };
        MessageResult(match msg.0 {
            Some(id) => self
                .chargers
                .get_key_value(&id)
                .map(view)
                .into_iter()
                .collect(),
            None => self.chargers.iter().map(view).collect(),
        })
    }
}

/// Start the actor of a session just stored (StartTransaction) or restored at start-up.
///
/// The session's actor runs on the given arbiter: the charger's (`Arbiter::current()`
/// in the charger actor), so that sessions spread over the HTTP workers' threads
/// instead of all running on the registry's.
#[derive(Message)]
#[rtype(result = "SessionHandle")]
pub struct OpenSession(pub Session, pub ArbiterHandle);

impl Handler<OpenSession> for StationRegistry {
    type Result = MessageResult<OpenSession>;

    fn handle(&mut self, msg: OpenSession, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.open(msg.0, &msg.1, ctx))
    }
}

/// The live session of a transaction; rebuilt from storage when its actor is gone
/// (after a restart, or if it died). Sent by `ChargerActor` (MeterValues, StopTransaction).
#[derive(Message)]
#[rtype(result = "Option<SessionHandle>")]
pub struct FindSession {
    pub charger_id: ChargerId,
    pub transaction_id: TransactionId,
    /// Where a rebuilt session actor runs (see [`OpenSession`]).
    pub on: ArbiterHandle,
}

impl Handler<FindSession> for StationRegistry {
    type Result = ResponseActFuture<Self, Option<SessionHandle>>;

    fn handle(&mut self, msg: FindSession, _: &mut Self::Context) -> Self::Result {
        let key = (msg.charger_id, msg.transaction_id);
        if let Some(handle) = self.sessions.get(&key).filter(|h| h.addr.connected()) {
            return Box::pin(fut::ready(Some(handle.clone())));
        }
        let on = msg.on;
        let store = self.store.clone();
        let load = async move { store.session_by_transaction(&key.0, &key.1).await };
        Box::pin(load.into_actor(self).map(move |loaded, act, ctx| match loaded {
            Ok(Some(session)) if session.status == crate::domain::SessionStatus::Active => {
                tracing::info!(charger_id = %session.charger_id, session_id = %session.session_id, "session actor rebuilt from storage");
                Some(act.open(session, &on, ctx))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error.cause_chain = ?e, error.message = %e, "loading a session failed");
                None
            }
        }))
    }
}

/// A session has ended and its actor stops. Sent by `SessionActor`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    pub session: Session,
}

impl Handler<SessionClosed> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, _: &mut Self::Context) {
        let s = msg.session;
        self.sessions
            .remove(&(s.charger_id.clone(), s.transaction_id.clone()));
        self.by_id.remove(&s.session_id);
        if let Some(token) = &s.id_token
            && self.tokens.get(&token.key()) == Some(&s.session_id)
        {
            self.tokens.remove(&token.key());
        }
    }
}

/// Whether a token is charging in a live session, other than one on `except` (a
/// charger's own connector: a repeated start is not a concurrent one). Sent by
/// `ChargerActor` (Authorize, transaction start).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct TokenBusy {
    pub token: IdToken,
    pub except: Option<(ChargerId, ConnectorId)>,
}

impl Handler<TokenBusy> for StationRegistry {
    type Result = bool;

    fn handle(&mut self, msg: TokenBusy, _: &mut Self::Context) -> bool {
        let Some(key) = self
            .tokens
            .get(&msg.token.key())
            .and_then(|id| self.by_id.get(id))
        else {
            return false;
        };
        let Some(handle) = self.sessions.get(key).filter(|h| h.addr.connected()) else {
            return false;
        };
        msg.except
            .is_none_or(|(charger, connector)| key.0 != charger || handle.connector_id != connector)
    }
}

/// A session's token, learnt after its start. Sent by `SessionActor`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TokenInUse {
    pub token: IdToken,
    pub session_id: SessionId,
}

impl Handler<TokenInUse> for StationRegistry {
    type Result = ();

    fn handle(&mut self, msg: TokenInUse, _: &mut Self::Context) {
        self.tokens.insert(msg.token.key(), msg.session_id);
    }
}

/// The live actor of a session, by our id. Sent by the directory for the APIs.
#[derive(Message)]
#[rtype(result = "Option<Addr<SessionActor>>")]
pub struct SessionById(pub SessionId);

impl Handler<SessionById> for StationRegistry {
    type Result = Option<Addr<SessionActor>>;

    fn handle(&mut self, msg: SessionById, _: &mut Self::Context) -> Self::Result {
        let key = self.by_id.get(&msg.0)?;
        self.sessions
            .get(key)
            .map(|h| h.addr.clone())
            .filter(Addr::connected)
    }
}

/// Close every charger connection (graceful shutdown). Returns how many were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll;

impl Handler<CloseAll> for StationRegistry {
    type Result = usize;

    fn handle(&mut self, _: CloseAll, _: &mut Self::Context) -> usize {
        for c in self.chargers.values() {
            c.addr.do_send(Shutdown);
        }
        self.chargers.len()
    }
}

/// Where chargers and live sessions are, as the APIs see it. The local implementation
/// asks this process's registry; a clustered one would ask Redis and forward calls.
#[async_trait]
pub trait ChargerDirectory: Send + Sync {
    /// Live views of connected chargers (all when `id` is `None`).
    async fn live(&self, id: Option<&ChargerId>) -> Vec<LiveCharger>;
    /// Sends a CSMS→charger call and waits for the charger's answer.
    async fn call(
        &self,
        id: &ChargerId,
        action: &str,
        payload: Value,
    ) -> Result<Value, CallFailure>;
    /// The live state of an active session, if it is live here.
    async fn live_session(&self, id: SessionId) -> Option<LiveSession>;
    /// Tells every connected charger to close (shutdown); returns how many.
    async fn close_all(&self) -> usize;
}

pub struct LocalDirectory {
    registry: Addr<StationRegistry>,
}

impl LocalDirectory {
    pub fn new(registry: Addr<StationRegistry>) -> Self {
        LocalDirectory { registry }
    }
}

#[async_trait]
impl ChargerDirectory for LocalDirectory {
    async fn live(&self, id: Option<&ChargerId>) -> Vec<LiveCharger> {
        self.registry
            .send(LiveChargers(id.cloned()))
            .await
            .unwrap_or_default()
    }

    async fn call(
        &self,
        id: &ChargerId,
        action: &str,
        payload: Value,
    ) -> Result<Value, CallFailure> {
        let Some(addr) = self
            .registry
            .send(FindCharger(id.clone()))
            .await
            .ok()
            .flatten()
        else {
            return Err(CallFailure::NotConnected);
        };
        let (reply, answer) = oneshot::channel();
        addr.send(SendCall {
            action: action.to_owned(),
            payload,
            reply,
        })
        .await
        .map_err(|_| CallFailure::Disconnected)?;
        answer.await.unwrap_or(Err(CallFailure::Disconnected))
    }

    async fn live_session(&self, id: SessionId) -> Option<LiveSession> {
        let addr = self.registry.send(SessionById(id)).await.ok().flatten()?;
        addr.send(Snapshot).await.ok()
    }

    async fn close_all(&self) -> usize {
        self.registry.send(CloseAll).await.unwrap_or(0)
    }
}
