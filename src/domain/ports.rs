//! The ports persistence implements. Actors and handlers see only these traits;
//! `crate::persistence` has one adapter per backend, and both pass the same contract tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::account::{RefreshToken, Rotation, Vehicle};
use super::billing::{
    CardDetails, GatewayError, Invoice, NewInvoice, Payment, PaymentMethod, TariffCandidates,
    TariffRecord, TariffScope,
};
use super::charger::{
    BootInfo, ChargerRecord, ChargerRegistration, ConnectorState, ConnectorStatus,
};
use super::events::{DomainEvent, EventType, StoredEvent};
use super::ids::{ChargerId, ConnectorId, IdToken, SessionId, TransactionId};
use super::money::Money;
use super::ocm::{ScopeArea, SyncCounts, SyncCursor, SyncRun, SyncStatus, SyncTrigger};
use super::requests::ReportedVariable;
use super::session::{MeterSample, NewSession, Session, SessionFilter};
use super::station::{Station, StationFilter};
use super::token::IdTokenRecord;
use super::user::{Email, Role, TokenState, User};
use super::webhook::{Webhook, WebhookDelivery};
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
    /// The backend did not answer in time, or is busy or unreachable: trying the same
    /// thing later may work.
    #[error("storage backend unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
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
    pub idle_since: Option<DateTime<Utc>>,
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
    async fn user(&self, id: Uuid) -> StoreResult<Option<User>>;
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

/// A consumer's receipt for an event: stored in the same transaction as the effect, so
/// that an event delivered twice has its effect once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt<'a> {
    pub consumer: &'a str,
    pub event_id: Uuid,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvoiceFilter {
    pub user_id: Option<Uuid>,
    pub session_id: Option<SessionId>,
    /// Skip this many (pagination).
    pub offset: u32,
    pub limit: u32,
}

#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Fails with [`StoreError::Conflict`] when the name is taken. A default tariff
    /// replaces the previous default.
    async fn create_tariff(&self, tariff: &TariffRecord) -> StoreResult<()>;
    async fn tariffs(&self) -> StoreResult<Vec<TariffRecord>>;
    async fn tariff(&self, id: Uuid) -> StoreResult<Option<TariffRecord>>;
    /// Sets (or with `None` removes) the tariff of a charger or operator.
    async fn set_tariff_override(
        &self,
        scope: &TariffScope,
        tariff: Option<Uuid>,
    ) -> StoreResult<()>;
    /// The tariffs that could apply to a session at `charger` paid by `user`.
    async fn tariff_candidates(
        &self,
        charger: &ChargerId,
        user: Option<Uuid>,
    ) -> StoreResult<TariffCandidates>;
    /// Puts a user on a plan (or, with `None`, off it); NotFound without such a user.
    async fn set_plan(
        &self,
        user: Uuid,
        tariff: Option<Uuid>,
        since: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Users on a plan, with the plan and since when.
    async fn plans(&self) -> StoreResult<Vec<(Uuid, TariffRecord, DateTime<Utc>)>>;
    async fn add_payment_method(&self, method: &PaymentMethod) -> StoreResult<()>;
    /// A user's payment methods, newest (the one charged) first.
    async fn payment_methods(&self, user: Uuid) -> StoreResult<Vec<PaymentMethod>>;
    /// The user a token belongs to.
    async fn token_owner(&self, token: &IdToken) -> StoreResult<Option<Uuid>>;
    /// Energy on a user's session invoices under `tariff` issued since `since` (fair use).
    async fn invoiced_energy_wh(
        &self,
        user: Uuid,
        tariff: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// Stores the invoice with the next number of its year and its INVOICE_GENERATED
    /// event, with `receipt` when given, in one transaction. `None` when the receipt was
    /// already there, or the session or subscription month is already invoiced.
    async fn issue_invoice(
        &self,
        receipt: Option<Receipt<'_>>,
        invoice: &NewInvoice,
    ) -> StoreResult<Option<Invoice>>;
    /// Records a receipt for an event that had no effect; false when it was there.
    async fn mark_processed(&self, receipt: Receipt<'_>) -> StoreResult<bool>;
    async fn invoice(&self, id: Uuid) -> StoreResult<Option<Invoice>>;
    /// Newest first.
    async fn invoices(&self, filter: &InvoiceFilter) -> StoreResult<Vec<Invoice>>;
    /// The invoices of these sessions (one query, for batching).
    async fn invoices_of_sessions(&self, sessions: &[SessionId]) -> StoreResult<Vec<Invoice>>;
    /// Of these sessions, those whose end billing has dealt with (invoiced, or found
    /// nobody or no tariff to bill), in one round of queries.
    async fn billed_sessions(&self, sessions: &[SessionId]) -> StoreResult<Vec<SessionId>>;
    /// Stores a new pending payment with `receipt`; false when the receipt or a payment
    /// of that invoice was already there.
    async fn open_payment(&self, receipt: Receipt<'_>, payment: &Payment) -> StoreResult<bool>;
    async fn payment_of_invoice(&self, invoice: Uuid) -> StoreResult<Option<Payment>>;
    /// Takes a due pending payment for one attempt: pushes its next attempt to
    /// `lease_until` so that no other replica takes it meanwhile.
    async fn claim_payment(
        &self,
        payment: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<Payment>>;
    /// Pending payments due at `now`, oldest first.
    async fn due_payments(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Uuid>>;
    /// Stores an attempt's outcome (and the invoice's status), with its event, unless
    /// another attempt was stored since this one began (`attempts_before` changed).
    async fn record_payment_attempt(
        &self,
        payment: &Payment,
        attempts_before: u32,
        event: Option<&DomainEvent>,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    async fn webhooks(&self) -> StoreResult<Vec<Webhook>>;
    async fn delete_webhook(&self, id: Uuid) -> StoreResult<bool>;
    /// Queues one delivery of `event` per webhook that wants it, with `receipt`, in one
    /// transaction; returns how many (none when the receipt was there, or when no
    /// webhook wants the event: then nothing is written, not even the receipt).
    async fn queue_deliveries(
        &self,
        receipt: Receipt<'_>,
        event: &DomainEvent,
    ) -> StoreResult<usize>;
    /// Pending deliveries due at `now`, oldest first.
    async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Uuid>>;
    /// Takes a due delivery for one attempt (as [`BillingStore::claim_payment`]).
    async fn claim_delivery(
        &self,
        delivery: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<(WebhookDelivery, Webhook)>>;
    async fn record_delivery_attempt(&self, delivery: &WebhookDelivery) -> StoreResult<()>;
    /// A webhook's delivery log, newest first.
    async fn deliveries(&self, webhook: Uuid, limit: u32) -> StoreResult<Vec<WebhookDelivery>>;
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn set_user_name(&self, user: Uuid, name: Option<&str>) -> StoreResult<()>;
    async fn user_name(&self, user: Uuid) -> StoreResult<Option<String>>;
    async fn add_refresh_token(&self, token: &RefreshToken) -> StoreResult<()>;
    /// The version of `user`'s access tokens and their role, read together: a token
    /// stamped with another version or role is refused. `None` when there is no such user.
    async fn token_state(&self, user: Uuid) -> StoreResult<Option<TokenState>>;
    /// Ends every access token `user` holds (logout): their version moves on.
    async fn end_access_tokens(&self, user: Uuid) -> StoreResult<()>;
    /// Gives `user` another role and ends the access tokens they hold; the user as now,
    /// or `None` when there is no such user.
    async fn set_role(&self, user: Uuid, role: Role) -> StoreResult<Option<User>>;
    /// Uses up the token with hash `presented` and stores `next` in its family, in one
    /// step; a token used before revokes its family (see [`Rotation`]). `next.user_id`
    /// and `next.family_id` are taken from the presented token.
    async fn rotate_refresh_token(
        &self,
        presented: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
    ) -> StoreResult<Rotation>;
    /// Revokes the family of the token with this hash; the user whose login it was, or
    /// `None` when there is no such token.
    async fn revoke_refresh_family(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Uuid>>;
    async fn add_vehicle(&self, vehicle: &Vehicle) -> StoreResult<()>;
    /// A user's vehicles, oldest first.
    async fn vehicles(&self, user: Uuid) -> StoreResult<Vec<Vehicle>>;
    /// Deletes a vehicle of `user`; false when they have no such vehicle.
    async fn delete_vehicle(&self, user: Uuid, vehicle: Uuid) -> StoreResult<bool>;
    /// A user's tokens.
    async fn user_id_tokens(&self, user: Uuid) -> StoreResult<Vec<IdTokenRecord>>;
    /// Stores a token unless one with that key exists (two drivers claiming the same
    /// card: one wins); returns whether it was stored.
    async fn insert_id_token(&self, record: &IdTokenRecord) -> StoreResult<bool>;
    /// Deletes a token of `user`; false when they have no such token.
    async fn delete_user_id_token(&self, user: Uuid, token: &IdToken) -> StoreResult<bool>;
    /// Whose session it is: the owner of its token when the token came.
    async fn session_owner(&self, session: SessionId) -> StoreResult<Option<Uuid>>;
    /// `user`'s sessions, newest first, `limit` after skipping `offset`.
    async fn user_sessions(&self, user: Uuid, offset: u32, limit: u32)
    -> StoreResult<Vec<Session>>;
    async fn count_user_sessions(&self, user: Uuid) -> StoreResult<u64>;
}

/// What an upsert of stations did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpsertCounts {
    pub inserted: u64,
    pub updated: u64,
    /// The same as stored, or older than what is stored (never overwrites newer).
    pub unchanged: u64,
}

/// The OpenChargeMap mirror.
#[async_trait]
pub trait StationStore: Send + Sync {
    /// Stores stations keyed by OCM id, idempotently; a record older than the stored one
    /// (`date_last_status_update`) is left out.
    async fn upsert_stations(&self, stations: &[Station]) -> StoreResult<UpsertCounts>;
    /// Active stations within `radius_km` of the point matching `filter`, nearest first
    /// (ties by id), with their distance in km; `limit` after skipping `offset`.
    async fn stations_near(
        &self,
        lat: f64,
        lng: f64,
        radius_km: f64,
        filter: &StationFilter,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<(Station, f64)>>;
    /// A station by OCM id (also an inactive one: the app may hold a link to it).
    async fn station(&self, ocm_id: i64) -> StoreResult<Option<Station>>;
    /// Records that a full import saw these stations at `at`.
    async fn touch_stations(&self, ocm_ids: &[i64], at: DateTime<Utc>) -> StoreResult<()>;
    /// Marks inactive the active stations of `area` that no full import has seen since
    /// `before` (OCM stopped listing them); returns how many.
    async fn deactivate_unseen(&self, area: &ScopeArea, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Keeps OCM's reference data (`/v3/referencedata`, as sent).
    async fn save_reference_data(&self, raw: &serde_json::Value) -> StoreResult<()>;
    /// The reference data last kept, if any.
    async fn reference_data(&self) -> StoreResult<Option<serde_json::Value>>;
    /// Which backend this is, for logs and the test report.
    fn station_backend(&self) -> &'static str;
}

/// The OCM sync's bookkeeping and our chargers' places among OCM's stations:
/// transactional data, kept with the rest of ours (never in the mirror's store).
#[async_trait]
pub trait OcmStore: Send + Sync {
    /// Records a new running run, first marking runs whose lease ran out as
    /// interrupted. `None` when another run is running (across every replica).
    async fn start_sync_run(
        &self,
        trigger: SyncTrigger,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<SyncRun>>;
    /// Records a run's progress and extends its lease; with a cursor, where that
    /// scope got to (after the stations it covers are stored).
    async fn record_sync_progress(
        &self,
        run_id: Uuid,
        counts: &SyncCounts,
        lease_until: DateTime<Utc>,
        cursor: Option<&SyncCursor>,
    ) -> StoreResult<()>;
    /// Keeps a run's lease while it waits.
    async fn renew_sync_lease(&self, run_id: Uuid, lease_until: DateTime<Utc>) -> StoreResult<()>;
    async fn finish_sync_run(
        &self,
        run_id: Uuid,
        status: SyncStatus,
        counts: &SyncCounts,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The newest runs first.
    async fn sync_runs(&self, limit: u32) -> StoreResult<Vec<SyncRun>>;
    async fn sync_run(&self, run_id: Uuid) -> StoreResult<Option<SyncRun>>;
    async fn sync_cursor(&self, scope: &str) -> StoreResult<Option<SyncCursor>>;
    /// Puts a charger at an OCM station (`None`: nowhere). False when the charger is
    /// not registered.
    async fn link_station(&self, charger: &ChargerId, ocm_id: Option<i64>) -> StoreResult<bool>;
    /// Which of our chargers stand at these stations (all links without a list).
    async fn station_links(&self, ocm_ids: Option<&[i64]>) -> StoreResult<Vec<(i64, ChargerId)>>;
}

/// A charger's connectors and their status, as the status board keeps them.
pub type ConnectorView = Vec<(ConnectorId, ConnectorStatus)>;

/// Where the live connector status of our chargers is kept for the station search to
/// overlay: in the process (embedded), in Redis (cloud, shared by the replicas).
#[async_trait]
pub trait StatusBoard: Send + Sync {
    /// A connected charger's connectors as they are now. Never waits: writes behind.
    fn publish(&self, charger: &ChargerId, conn_id: Uuid, connectors: &[ConnectorState]);
    /// The charger's connection `conn_id` is gone (a newer one elsewhere stays).
    fn remove(&self, charger: &ChargerId, conn_id: Uuid);
    /// The connectors of those chargers that are connected.
    async fn statuses(
        &self,
        chargers: &[ChargerId],
    ) -> StoreResult<std::collections::HashMap<ChargerId, ConnectorView>>;
}

/// One charge a gateway is asked to make.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRequest {
    /// The same key for every attempt at the same payment: a gateway makes the charge
    /// at most once per key.
    pub idempotency_key: Uuid,
    pub gateway_token: String,
    pub amount: Money,
    pub description: String,
}

/// A card payment processor. Card numbers and CVCs never reach us: the app hands the
/// card to the gateway and gives us the gateway's token.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    fn name(&self) -> &'static str;
    /// What the token stands for (brand, last digits, expiry), or why it is unusable.
    async fn card(&self, gateway_token: &str) -> Result<CardDetails, GatewayError>;
    /// Charges the card; returns the gateway's charge id.
    async fn charge(&self, request: &ChargeRequest) -> Result<String, GatewayError>;
}

/// The whole of what the service persists.
#[async_trait]
pub trait Store:
    ChargerStore
    + IdTokenStore
    + SessionStore
    + UserStore
    + EventStore
    + BillingStore
    + WebhookStore
    + AccountStore
    + StationStore
    + OcmStore
{
    /// Cheap round trip proving the backend answers.
    async fn ping(&self) -> StoreResult<()>;
    /// The value stored under `name`, storing `candidate` first if there is none
    /// (for generated secrets that must survive restarts and be shared by replicas).
    async fn get_or_init_secret(&self, name: &str, candidate: &str) -> StoreResult<String>;
    /// Which backend this is, for logs and the test report.
    fn backend(&self) -> &'static str;
}

/// Attempts counted wherever the replicas can share them (logins: Redis in the cloud,
/// this process when embedded). An attempt is counted *before* it is checked, so that
/// parallel attempts cannot all slip under the limit.
#[async_trait]
pub trait FailureCounter: Send + Sync {
    /// Counts an attempt of `key`; returns the attempts within the current window.
    async fn hit(&self, key: &str) -> Result<u32, String>;
    /// Takes one attempt back (it succeeded).
    async fn forgive(&self, key: &str) -> Result<(), String>;
    /// Forgets `key`'s attempts.
    async fn reset(&self, key: &str) -> Result<(), String>;
    fn name(&self) -> &'static str;
}

/// How often every connected charger's connectors are published to the [`StatusBoard`]
/// again; a board keeps an entry three times this long (so a charger that only answers
/// pings stays shown, and one on a replica that died goes within that).
pub const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
