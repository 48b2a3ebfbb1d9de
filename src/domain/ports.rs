//! The ports persistence implements. Actors and handlers see only these traits;
//! `crate::persistence` has one adapter per backend, and both pass the same contract tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::charger::{BootInfo, ChargerRecord, ChargerRegistration, ConnectorState};
use super::events::{DomainEvent, EventType, StoredEvent};
use super::ids::{ChargerId, IdToken, SessionId, TransactionId};
use super::requests::ReportedVariable;
use super::session::{MeterSample, NewSession, Session, SessionFilter};
use super::token::IdTokenRecord;
use super::user::{Email, User};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. an e-mail address already registered).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Something the caller referred to does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend failed; the cause is kept for logs.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A meter sample attributed to a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSample {
    pub session_id: SessionId,
    pub sample: MeterSample,
}

/// The live figures of a running session, written behind it in batches.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionProgress {
    pub session_id: SessionId,
    pub energy_wh: i64,
    pub power_w: Option<f64>,
    pub soc_percent: Option<f64>,
    pub last_meter_at: Option<DateTime<Utc>>,
    /// The token, once a charger that started without one has authorized.
    pub id_token: Option<IdToken>,
}

/// Everything the hot path produces, written in one transaction per flush.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub samples: Vec<SessionSample>,
    pub progress: Vec<SessionProgress>,
    pub connectors: Vec<(ChargerId, ConnectorState)>,
    pub last_seen: Vec<(ChargerId, DateTime<Utc>)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
            && self.progress.is_empty()
            && self.connectors.is_empty()
            && self.last_seen.is_empty()
    }

    pub fn len(&self) -> usize {
        self.samples.len() + self.progress.len() + self.connectors.len() + self.last_seen.len()
    }
}

#[async_trait]
pub trait ChargerStore: Send + Sync {
    async fn charger(&self, id: &ChargerId) -> StoreResult<Option<ChargerRecord>>;
    async fn chargers(&self) -> StoreResult<Vec<ChargerRecord>>;
    /// Registers a charger unless one with that id exists; returns whether it did.
    async fn insert_registration(&self, registration: &ChargerRegistration) -> StoreResult<bool>;
    /// Creates or replaces the registration columns; returns whether the charger is new.
    async fn save_registration(&self, registration: &ChargerRegistration) -> StoreResult<bool>;
    async fn record_boot(
        &self,
        id: &ChargerId,
        boot: &BootInfo,
        ocpp_version: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn connectors(&self, id: &ChargerId) -> StoreResult<Vec<ConnectorState>>;
    /// Every stored connector of every charger (one query for the charger list).
    async fn all_connectors(&self) -> StoreResult<Vec<(ChargerId, ConnectorState)>>;
    /// Replaces a charger's stored device model with a complete report.
    async fn save_device_model(
        &self,
        id: &ChargerId,
        variables: &[ReportedVariable],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The last complete device-model report, and when it came.
    async fn device_model(
        &self,
        id: &ChargerId,
    ) -> StoreResult<Option<(Vec<ReportedVariable>, DateTime<Utc>)>>;
}

#[async_trait]
pub trait IdTokenStore: Send + Sync {
    async fn id_token(&self, token: &IdToken) -> StoreResult<Option<IdTokenRecord>>;
    /// Creates or replaces a token; returns whether it is new.
    async fn put_id_token(&self, record: &IdTokenRecord) -> StoreResult<bool>;
    /// Returns whether there was such a token.
    async fn delete_id_token(&self, token: &IdToken) -> StoreResult<bool>;
    async fn id_tokens(&self) -> StoreResult<Vec<IdTokenRecord>>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new active session, allocating its id (and its transaction id when
    /// the charger did not bring one). Durable when it returns. Idempotent: a start
    /// whose transaction id (or, without one, whose connector, token, meter reading and
    /// time) matches a stored session returns that session.
    async fn start_session(&self, new: &NewSession) -> StoreResult<Session>;
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>>;
    async fn session_by_transaction(
        &self,
        charger: &ChargerId,
        tx: &TransactionId,
    ) -> StoreResult<Option<Session>>;
    async fn sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<Session>>;
    async fn active_sessions(&self) -> StoreResult<Vec<Session>>;
    /// Stores a session's end with its final samples, and its SESSION_ENDED event in the
    /// outbox, in one transaction; a session already ended is left as it is. Durable
    /// when it returns. (`start_session` likewise writes SESSION_STARTED for a new session.)
    async fn stop_session(
        &self,
        session: &Session,
        final_samples: &[MeterSample],
    ) -> StoreResult<()>;
    async fn samples(&self, id: SessionId) -> StoreResult<Vec<MeterSample>>;
    /// Writes a batch of hot-path updates in one transaction. Progress of sessions
    /// that have ended meanwhile is ignored.
    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()>;
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] when the e-mail address is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>>;
    async fn admin_exists(&self) -> StoreResult<bool>;
}

/// The transactional outbox: events written with the changes they describe, published
/// by the relay, kept for the recent-events API.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Events not yet published, oldest first.
    async fn unpublished_events(&self, limit: u32) -> StoreResult<Vec<DomainEvent>>;
    async fn mark_published(&self, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<()>;
    /// The most recent events, newest first, optionally of one type.
    async fn recent_events(
        &self,
        event_type: Option<EventType>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;
}

/// Why an event could not be handed over.
#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

/// Carries domain events from the outbox to their consumers, at least once: `publish`
/// returns only when the event is safely handed over (handled by every in-process
/// consumer, or confirmed by a broker); consumers are idempotent by event id.
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, event: &DomainEvent) -> Result<(), BusError>;
    /// Which bus this is, for logs.
    fn name(&self) -> &'static str;
}

/// Something that acts on events (billing, notifier); it must be idempotent by event id,
/// since every bus delivers at least once.
#[async_trait]
pub trait EventConsumer: Send + Sync {
    /// A stable name: the consumer's queue is named after it.
    fn name(&self) -> &'static str;
    /// The event types it wants.
    fn wants(&self) -> &'static [EventType];
    async fn handle(&self, event: &DomainEvent) -> Result<(), BusError>;
}

/// The whole of what the service persists.
#[async_trait]
pub trait Store: ChargerStore + IdTokenStore + SessionStore + UserStore + EventStore {
    /// Cheap round trip proving the backend answers.
    async fn ping(&self) -> StoreResult<()>;
    /// The value stored under `name`, storing `candidate` first if there is none
    /// (for generated secrets that must survive restarts and be shared by replicas).
    async fn get_or_init_secret(&self, name: &str, candidate: &str) -> StoreResult<String>;
    /// Which backend this is, for logs and the test report.
    fn backend(&self) -> &'static str;
}
