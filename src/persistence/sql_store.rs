// The SQL adapter, shared text for both SQL backends. It is `include!`d by
// `sqlite.rs` and `postgres.rs`, each of which defines `type Db` first: the queries
// are written once in the dialect both accept (`$n` parameters, `ON CONFLICT`,
// `RETURNING`), and the persistence contract tests run them against both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Pool, QueryBuilder, Row};

use crate::domain::ports::{
    ChargerStore, EventStore, IdTokenStore, SessionStore, Store, StoreError, StoreResult, UserStore, WriteBatch,
};
use crate::domain::{
    Availability, AuthorizationStatus, BootInfo, DomainEvent, EventType, StoredEvent, ChargerId, ChargerRecord, ChargerRegistration, ConnectorId,
    ConnectorState, ConnectorStatus, Email, IdToken, IdTokenRecord, Measurand, MeterSample, NewSession,
    RegistrationStatus, ReportedVariable, Role, SecurityProfile, Session, SessionFilter, SessionId, SessionStatus, TokenType,
    TransactionId, User,
};

type DbRow = <Db as sqlx::Database>::Row;

/// Rows per multi-row INSERT: well under SQLite's 32 766 bound parameters.
const INSERT_CHUNK: usize = 1000;

/// Slots of `meter_sample_staged` (SQLite, ADR 0023): each batch moves one slot's
/// samples into `meter_sample`, so a session's samples stay staged for up to this many
/// batches and reach its index pages together.
const SAMPLE_SLOTS: i64 = 16;

/// The store over its SQL connection pools (reads, and writes: see `writes`).
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: Pool<Db>,
    /// Where write transactions run: with SQLite a pool of its own with one connection,
    /// so that a writer never waits for a connection the readers hold while it holds
    /// everyone's turn, and its page cache stays valid (nobody else writes); with
    /// PostgreSQL the same pool.
    writes: Pool<Db>,
    /// Writers take turns here, in order, when the database has one writer at a time
    /// (SQLite): waiting in this queue is woken the moment the turn is free, where
    /// SQLite's busy handler would poll with sleeps of up to 100 ms.
    write_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where the write transactions of the OCPP path run, when writers take turns
    /// (see [`WriteThread`]).
    write_thread: Option<std::sync::Arc<WriteThread>>,
    /// Batches written, to pick the staged samples' slot each one moves (SQLite).
    batches: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SqlStore {
    pub fn new(pool: Pool<Db>) -> Self {
        SqlStore::with_writer(pool.clone(), pool)
    }

    /// A store whose write transactions use `writes` (see [`SqlStore::writes`]).
    pub fn with_writer(pool: Pool<Db>, writes: Pool<Db>) -> Self {
        SqlStore {
            pool,
            writes,
            write_turn: Default::default(),
            write_thread: SERIAL_WRITES.then(|| std::sync::Arc::new(WriteThread::start())),
            batches: Default::default(),
        }
    }

    /// Runs a write on the write thread (when there is one), in the caller's span; it is
    /// cancelled if the caller stops waiting.
    async fn on_write_thread<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        use tracing::Instrument;
        match &self.write_thread {
            Some(thread) => {
                // A caller that stops waiting (a timeout) cancels the write, as it would
                // on its own task: the transaction rolls back instead of committing
                // behind a retry of the same updates.
                let mut task = AbortOnDrop(thread.runtime.spawn(work.in_current_span()));
                (&mut task.0)
                    .await
                    .map_err(|e| StoreError::Backend(format!("write thread: {e}").into()))?
            }
            None => work.await,
        }
    }

    pub fn pool(&self) -> &Pool<Db> {
        &self.pool
    }

    /// This process's turn to write, where writers take turns (see `SERIAL_WRITES`).
    /// Every write takes it, autocommit statements too (on `self.writes`): with SQLite
    /// a write outside it would meet the turn's holder in SQLite's sleeping busy handler.
    async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        if SERIAL_WRITES {
            Some(self.write_turn.clone().lock_owned().await)
        } else {
            None
        }
    }

    /// One autocommit write statement, in its turn (see `write_turn`), on the write
    /// connection.
    async fn execute_write(
        &self,
        query: DbQuery<'_>,
    ) -> StoreResult<<Db as sqlx::Database>::QueryResult> {
        let _turn = self.write_turn().await;
        query.execute(&self.writes).await.map_err(backend)
    }

    /// Begins a write transaction (in its turn, see `write_turn`).
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        let turn = self.write_turn().await;
        let tx = self.writes.begin_with(BEGIN_WRITE).await.map_err(backend)?;
        Ok(WriteTx { tx, _turn: turn })
    }
}

/// A thread of its own for the write transactions of the OCPP path (SQLite only).
///
/// SQLite has one writer at a time, so a write transaction holds everyone's turn for
/// as long as it runs, and each of its statements is a round trip to the connection's
/// thread. Run on the HTTP workers, each round trip also waited for the worker to come
/// back to the task, behind the hundreds of connections it serves: under load the turn
/// was held about 1.3 ms per transaction and busy all the time, and the batch writer
/// queued behind it for a second. Here the task is woken as soon as its statement is done.
#[derive(Debug)]
struct WriteThread {
    runtime: tokio::runtime::Handle,
    /// Dropped with the last clone of the store: the thread ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl WriteThread {
    /// Panics only if the OS refuses a thread or its event loop, as at start-up.
    fn start() -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the write thread's runtime");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("sql-writes".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })
            .expect("starting the write thread");
        WriteThread {
            runtime: handle,
            _stop: stop,
        }
    }
}

/// Aborts a spawned task when dropped (its caller stopped waiting).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A write transaction holding its write turn until it commits or is dropped.
struct WriteTx {
    tx: sqlx::Transaction<'static, Db>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = <Db as sqlx::Database>::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
        sqlx::Error::Database(db) if db.code().is_some_and(|code| transient(&code)) => StoreError::Unavailable(Box::new(e)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Backend(Box::new(e)),
    }
}

fn corrupt(what: &str, raw: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} {raw:?} is not valid").into())
}

fn charger_from_row(row: &DbRow) -> StoreResult<ChargerRecord> {
    let id: String = row.try_get("charger_id").map_err(backend)?;
    let status: String = row.try_get("registration_status").map_err(backend)?;
    let profile: i64 = row.try_get("security_profile").map_err(backend)?;
    let boot: Option<Json<BootInfo>> = row.try_get("boot_info").map_err(backend)?;
    Ok(ChargerRecord {
        registration: ChargerRegistration {
            charger_id: ChargerId::parse(id.clone()).map_err(|_| corrupt("charger id", &id))?,
            password_hash: row.try_get("password_hash").map_err(backend)?,
            security_profile: SecurityProfile::parse(profile).map_err(|_| corrupt("security profile", &profile.to_string()))?,
            registration_status: RegistrationStatus::parse(&status).ok_or_else(|| corrupt("registration status", &status))?,
            description: row.try_get("description").map_err(backend)?,
            operator_id: row.try_get("operator_id").map_err(backend)?,
        },
        boot: boot.map(|b| b.0),
        ocpp_version: row.try_get("ocpp_version").map_err(backend)?,
        last_boot_at: row.try_get("last_boot_at").map_err(backend)?,
        last_seen_at: row.try_get("last_seen_at").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

fn connector_from_row(row: &DbRow) -> StoreResult<ConnectorState> {
    let connector: i64 = row.try_get("connector_id").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let availability: String = row.try_get("availability").map_err(backend)?;
    Ok(ConnectorState {
        connector_id: ConnectorId::parse(connector).map_err(|_| corrupt("connector id", &connector.to_string()))?,
        status: ConnectorStatus::parse(&status).ok_or_else(|| corrupt("connector status", &status))?,
        error_code: row.try_get("error_code").map_err(backend)?,
        info: row.try_get("info").map_err(backend)?,
        availability: Availability::parse(&availability).ok_or_else(|| corrupt("availability", &availability))?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    })
}

fn token_from_row(row: &DbRow) -> StoreResult<IdTokenRecord> {
    let token: String = row.try_get("id_token").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let token_type: String = row.try_get("token_type").map_err(backend)?;
    let group: Option<String> = row.try_get("group_id").map_err(backend)?;
    Ok(IdTokenRecord {
        id_token: IdToken::parse(token.clone()).map_err(|_| corrupt("id token", &token))?,
        status: AuthorizationStatus::parse(&status).ok_or_else(|| corrupt("token status", &status))?,
        token_type: TokenType::parse(&token_type).ok_or_else(|| corrupt("token type", &token_type))?,
        expiry_date: row.try_get("expiry_date").map_err(backend)?,
        group_id: group.map(|g| IdToken::parse(g.clone()).map_err(|_| corrupt("group id", &g))).transpose()?,
        user_id: row.try_get("user_id").map_err(backend)?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    })
}

/// `SELECT <every session column> FROM session <rest>`, as a static string.
macro_rules! select_sessions {
    ($rest:literal) => {
        concat!(
            "SELECT session_id, charger_id, connector_id, transaction_id, id_token, status, meter_start_wh, \
             meter_stop_wh, energy_wh, power_w, soc_percent, started_at, stopped_at, stop_reason, last_meter_at, \
             idle_since, idle_energy_wh, remote_start, reservation_id FROM session ",
            $rest
        )
    };
}

fn session_from_row(row: &DbRow) -> StoreResult<Session> {
    let charger: String = row.try_get("charger_id").map_err(backend)?;
    let connector: i64 = row.try_get("connector_id").map_err(backend)?;
    let token: Option<String> = row.try_get("id_token").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let session_id: i64 = row.try_get("session_id").map_err(backend)?;
    let transaction: Option<String> = row.try_get("transaction_id").map_err(backend)?;
    Ok(Session {
        session_id: SessionId(session_id),
        charger_id: ChargerId::parse(charger.clone()).map_err(|_| corrupt("charger id", &charger))?,
        connector_id: ConnectorId::parse(connector).map_err(|_| corrupt("connector id", &connector.to_string()))?,
        transaction_id: TransactionId(transaction.unwrap_or_else(|| session_id.to_string())),
        id_token: token.map(|t| IdToken::parse(t.clone()).map_err(|_| corrupt("id token", &t))).transpose()?,
        status: SessionStatus::parse(&status).ok_or_else(|| corrupt("session status", &status))?,
        meter_start_wh: row.try_get("meter_start_wh").map_err(backend)?,
        meter_stop_wh: row.try_get("meter_stop_wh").map_err(backend)?,
        energy_wh: row.try_get("energy_wh").map_err(backend)?,
        power_w: row.try_get("power_w").map_err(backend)?,
        soc_percent: row.try_get("soc_percent").map_err(backend)?,
        started_at: row.try_get("started_at").map_err(backend)?,
        stopped_at: row.try_get("stopped_at").map_err(backend)?,
        stop_reason: row.try_get("stop_reason").map_err(backend)?,
        last_meter_at: row.try_get("last_meter_at").map_err(backend)?,
        idle_since: idle_clock(row)?,
        remote_start: row.try_get("remote_start").map_err(backend)?,
        reservation_id: row.try_get("reservation_id").map_err(backend)?,
    })
}

/// The idle clock when it belongs to the energy on the row: a replica that predates the
/// clock (ADR 0023) moves the energy and leaves the clock where it was, and a clock so
/// left behind would count charging time as idle. Without one, billing replays it from
/// the session's samples, and so does a running session's actor when it is rebuilt.
fn idle_clock(row: &DbRow) -> StoreResult<Option<DateTime<Utc>>> {
    let since: Option<DateTime<Utc>> = row.try_get("idle_since").map_err(backend)?;
    let energy: i64 = row.try_get("energy_wh").map_err(backend)?;
    let clock_energy: Option<i64> = row.try_get("idle_energy_wh").map_err(backend)?;
    Ok(since.filter(|_| clock_energy == Some(energy)))
}

fn sample_from_row(row: &DbRow) -> StoreResult<MeterSample> {
    let measurand: String = row.try_get("measurand").map_err(backend)?;
    Ok(MeterSample {
        timestamp: row.try_get("sampled_at").map_err(backend)?,
        measurand: Measurand::parse(&measurand),
        value: row.try_get("value").map_err(backend)?,
        unit: row.try_get("unit").map_err(backend)?,
        phase: row.try_get("phase").map_err(backend)?,
        context: row.try_get("context").map_err(backend)?,
    })
}

/// Where a session's samples are staged (with SQLite): one of [`SAMPLE_SLOTS`].
fn sample_slot(session: SessionId) -> i64 {
    session.0.rem_euclid(SAMPLE_SLOTS)
}

/// Writes meter samples: with SQLite (`STAGED_SAMPLES`) to the end of their session's
/// slot in `meter_sample_staged`, else straight to `meter_sample`.
async fn insert_samples<'c>(
    conn: &mut <Db as sqlx::Database>::Connection,
    samples: impl Iterator<Item = (SessionId, &'c MeterSample)>,
) -> StoreResult<()> {
    let mut samples: Vec<_> = samples.collect();
    if samples.is_empty() {
        return Ok(());
    }
    if !STAGED_SAMPLES {
        // By session, each session's own order kept (a stable sort): a batch adds to one
        // index page per charging session, and rows in that order fill each page in one
        // go instead of coming back to it for every sample of the session.
        samples.sort_by_key(|(session, _)| session.0);
        for chunk in samples.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO meter_sample (session_id, sampled_at, measurand, value, unit, phase, context) ",
            );
            insert.push_values(chunk, |mut row, (session_id, s)| {
                row.push_bind(session_id.0);
                push_sample(&mut row, s);
            });
            insert.build().execute(&mut *conn).await.map_err(backend)?;
        }
        return Ok(());
    }
    // By slot, arrival order kept within each: every row goes to the end of its slot's
    // range, so a batch writes about as many pages as its rows fill, plus one per slot.
    samples.sort_by_key(|(session, _)| sample_slot(*session));
    let mut next: [i64; SAMPLE_SLOTS as usize] = [1; SAMPLE_SLOTS as usize];
    let ends = sqlx::query(
        "WITH RECURSIVE slots (slot) AS (SELECT 0 UNION ALL SELECT slot + 1 FROM slots WHERE slot + 1 < $1) \
         SELECT slot, (SELECT max(seq) FROM meter_sample_staged s WHERE s.slot = slots.slot) AS last FROM slots",
    )
    .bind(SAMPLE_SLOTS)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for end in &ends {
        let slot: i64 = end.try_get("slot").map_err(backend)?;
        let last: Option<i64> = end.try_get("last").map_err(backend)?;
        if let (Some(next), Some(last)) = (usize::try_from(slot).ok().and_then(|i| next.get_mut(i)), last) {
            *next = last + 1;
        }
    }
    for chunk in samples.chunks(INSERT_CHUNK) {
        let mut insert = QueryBuilder::<Db>::new(
            "INSERT INTO meter_sample_staged (slot, seq, session_id, sampled_at, measurand, value, unit, phase, context) ",
        );
        insert.push_values(chunk, |mut row, (session_id, s)| {
            let slot = sample_slot(*session_id);
            let seq = &mut next[slot as usize];
            row.push_bind(slot).push_bind(*seq).push_bind(session_id.0);
            *seq += 1;
            push_sample(&mut row, s);
        });
        insert.build().execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

/// Moves one slot's staged samples into `meter_sample`, session by session (ADR 0023).
async fn merge_staged_samples(conn: &mut <Db as sqlx::Database>::Connection, slot: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO meter_sample (session_id, sampled_at, measurand, value, unit, phase, context) \
         SELECT session_id, sampled_at, measurand, value, unit, phase, context FROM meter_sample_staged \
         WHERE slot = $1 ORDER BY session_id, seq",
    )
    .bind(slot)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query("DELETE FROM meter_sample_staged WHERE slot = $1")
        .bind(slot)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Binds a sample's columns, in the order of the sample inserts: sampled_at, measurand,
/// value, unit, phase, context.
fn push_sample(row: &mut sqlx::query_builder::Separated<'_, Db, &'static str>, s: &MeterSample) {
    row.push_bind(s.timestamp)
        .push_bind(s.measurand.as_str().to_owned())
        .push_bind(s.value)
        .push_bind(s.unit.clone())
        .push_bind(s.phase.clone())
        .push_bind(s.context.clone());
}

type DbQuery<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

/// Binds a registration's columns, in the order of the `charger` inserts:
/// charger_id, password_hash, security_profile, registration_status, description,
/// created_at (now), operator_id.
fn bind_registration<'q>(query: DbQuery<'q>, r: &'q ChargerRegistration) -> DbQuery<'q> {
    query
        .bind(r.charger_id.as_str())
        .bind(r.password_hash.as_deref())
        .bind(i64::from(r.security_profile.number()))
        .bind(r.registration_status.as_str())
        .bind(r.description.as_deref())
        .bind(Utc::now())
        .bind(r.operator_id.as_deref())
}

/// Binds an id token record's columns, in the order of the `id_token` inserts:
/// id_token_key, id_token, status, token_type, expiry_date, group_id, updated_at, user_id.
fn bind_id_token<'q>(query: DbQuery<'q>, r: &'q IdTokenRecord) -> DbQuery<'q> {
    query
        .bind(r.id_token.key())
        .bind(r.id_token.as_str())
        .bind(r.status.as_str())
        .bind(r.token_type.as_str())
        .bind(r.expiry_date)
        .bind(r.group_id.as_ref().map(IdToken::as_str))
        .bind(r.updated_at)
        .bind(r.user_id)
}

async fn insert_event(conn: &mut <Db as sqlx::Database>::Connection, event: &DomainEvent) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox_event (event_id, event_type, version, aggregate_id, occurred_at, payload, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.id)
    .bind(event.event_type.as_str())
    .bind(i64::from(event.version))
    .bind(event.aggregate_id.as_str())
    .bind(event.occurred_at)
    .bind(Json(&event.payload))
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

fn event_from_row(row: &DbRow) -> StoreResult<StoredEvent> {
    let event_type: String = row.try_get("event_type").map_err(backend)?;
    let version: i64 = row.try_get("version").map_err(backend)?;
    let payload: Json<serde_json::Value> = row.try_get("payload").map_err(backend)?;
    Ok(StoredEvent {
        event: DomainEvent {
            id: row.try_get("event_id").map_err(backend)?,
            event_type: EventType::parse(&event_type).ok_or_else(|| corrupt("event type", &event_type))?,
            version: u32::try_from(version).map_err(|_| corrupt("event version", &version.to_string()))?,
            occurred_at: row.try_get("occurred_at").map_err(backend)?,
            aggregate_id: row.try_get("aggregate_id").map_err(backend)?,
            payload: payload.0,
        },
        published_at: row.try_get("published_at").map_err(backend)?,
    })
}

#[async_trait]
impl EventStore for SqlStore {
    async fn unpublished_events(&self, limit: u32) -> StoreResult<Vec<DomainEvent>> {
        sqlx::query("SELECT * FROM outbox_event WHERE published_at IS NULL ORDER BY outbox_seq LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| event_from_row(row).map(|e| e.event))
            .collect()
    }

    async fn mark_published(&self, ids: &[uuid::Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // One statement per chunk of events, not one per event: a round's events are
        // marked in one short write.
        let mut tx = self.begin_write().await?;
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Db>::new("UPDATE outbox_event SET published_at = ");
            q.push_bind(at).push(" WHERE published_at IS NULL AND event_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            list.push_unseparated(")");
            q.build().execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn recent_events(&self, event_type: Option<EventType>, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        let mut query = QueryBuilder::<Db>::new("SELECT * FROM outbox_event WHERE 1 = 1");
        if let Some(t) = event_type {
            query.push(" AND event_type = ").push_bind(t.as_str());
        }
        query.push(" ORDER BY outbox_seq DESC LIMIT ").push_bind(i64::from(limit.max(1)));
        query.build().fetch_all(&self.pool).await.map_err(backend)?.iter().map(event_from_row).collect()
    }
}

#[async_trait]
impl ChargerStore for SqlStore {
    async fn charger(&self, id: &ChargerId) -> StoreResult<Option<ChargerRecord>> {
        sqlx::query("SELECT * FROM charger WHERE charger_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(charger_from_row)
            .transpose()
    }

    async fn chargers(&self) -> StoreResult<Vec<ChargerRecord>> {
        sqlx::query("SELECT * FROM charger ORDER BY charger_id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(charger_from_row)
            .collect()
    }

    async fn insert_registration(&self, r: &ChargerRegistration) -> StoreResult<bool> {
        let (store, r) = (self.clone(), r.clone());
        self.on_write_thread(async move { store.insert_registration_here(&r).await }).await
    }

    async fn save_registration(&self, r: &ChargerRegistration) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let existed = sqlx::query("SELECT 1 FROM charger WHERE charger_id = $1")
            .bind(r.charger_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        bind_registration(
            sqlx::query(
                "INSERT INTO charger (charger_id, password_hash, security_profile, registration_status, description, created_at, operator_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (charger_id) DO UPDATE SET password_hash = excluded.password_hash, \
                   security_profile = excluded.security_profile, registration_status = excluded.registration_status, \
                   description = excluded.description, operator_id = excluded.operator_id",
            ),
            r,
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(!existed)
    }

    async fn record_boot(&self, id: &ChargerId, boot: &BootInfo, ocpp_version: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let (store, id, boot, version) = (self.clone(), id.clone(), boot.clone(), ocpp_version.to_owned());
        self.on_write_thread(async move { store.record_boot_here(&id, &boot, &version, at).await }).await
    }

    async fn connectors(&self, id: &ChargerId) -> StoreResult<Vec<ConnectorState>> {
        sqlx::query("SELECT * FROM connector WHERE charger_id = $1 ORDER BY connector_id")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(connector_from_row)
            .collect()
    }

    async fn save_device_model(&self, id: &ChargerId, variables: &[ReportedVariable], at: DateTime<Utc>) -> StoreResult<()> {
        self.execute_write(
            sqlx::query(
                "INSERT INTO device_model (charger_id, variables, reported_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (charger_id) DO UPDATE SET variables = excluded.variables, reported_at = excluded.reported_at",
            )
            .bind(id.as_str())
            .bind(Json(variables))
            .bind(at),
        )
        .await?;
        Ok(())
    }

    async fn device_model(&self, id: &ChargerId) -> StoreResult<Option<(Vec<ReportedVariable>, DateTime<Utc>)>> {
        let Some(row) = sqlx::query("SELECT variables, reported_at FROM device_model WHERE charger_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let variables: Json<Vec<ReportedVariable>> = row.try_get("variables").map_err(backend)?;
        Ok(Some((variables.0, row.try_get("reported_at").map_err(backend)?)))
    }

    async fn all_connectors(&self) -> StoreResult<Vec<(ChargerId, ConnectorState)>> {
        sqlx::query("SELECT * FROM connector ORDER BY charger_id, connector_id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                let id: String = row.try_get("charger_id").map_err(backend)?;
                let id = ChargerId::parse(id.clone()).map_err(|_| corrupt("charger id", &id))?;
                Ok((id, connector_from_row(row)?))
            })
            .collect()
    }
}

#[async_trait]
impl IdTokenStore for SqlStore {
    async fn id_token(&self, token: &IdToken) -> StoreResult<Option<IdTokenRecord>> {
        sqlx::query("SELECT * FROM id_token WHERE id_token_key = $1")
            .bind(token.key())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn put_id_token(&self, r: &IdTokenRecord) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let existed = sqlx::query("SELECT 1 FROM id_token WHERE id_token_key = $1")
            .bind(r.id_token.key())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        bind_id_token(
            sqlx::query(
                "INSERT INTO id_token (id_token_key, id_token, status, token_type, expiry_date, group_id, updated_at, user_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id_token_key) DO UPDATE SET id_token = excluded.id_token, status = excluded.status, \
                   token_type = excluded.token_type, expiry_date = excluded.expiry_date, group_id = excluded.group_id, \
                   updated_at = excluded.updated_at, user_id = excluded.user_id",
            ),
            r,
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(!existed)
    }

    async fn delete_id_token(&self, token: &IdToken) -> StoreResult<bool> {
        let done = self.execute_write(
            sqlx::query("DELETE FROM id_token WHERE id_token_key = $1")
                .bind(token.key()),
        )
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn id_tokens(&self) -> StoreResult<Vec<IdTokenRecord>> {
        sqlx::query("SELECT * FROM id_token ORDER BY id_token_key")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(token_from_row)
            .collect()
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn start_session(&self, new: &NewSession) -> StoreResult<Session> {
        let (store, new) = (self.clone(), new.clone());
        self.on_write_thread(async move { store.start_session_here(&new).await }).await
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        sqlx::query(select_sessions!("WHERE session_id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn session_by_transaction(&self, charger: &ChargerId, tx: &TransactionId) -> StoreResult<Option<Session>> {
        sqlx::query(select_sessions!("WHERE charger_id = $1 AND transaction_id = $2"))
            .bind(charger.as_str())
            .bind(tx.0.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<Session>> {
        let mut query = QueryBuilder::<Db>::new(select_sessions!("WHERE 1 = 1"));
        if let Some(charger) = &filter.charger_id {
            query.push(" AND charger_id = ").push_bind(charger.as_str().to_owned());
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        query.push(" ORDER BY session_id DESC LIMIT ").push_bind(i64::from(filter.limit.max(1)));
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn active_sessions(&self) -> StoreResult<Vec<Session>> {
        sqlx::query(select_sessions!("WHERE status = 'active' ORDER BY session_id"))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn stop_session(&self, s: &Session, final_samples: &[MeterSample]) -> StoreResult<()> {
        let (store, s, samples) = (self.clone(), s.clone(), final_samples.to_vec());
        self.on_write_thread(async move { store.stop_session_here(&s, &samples).await }).await
    }

    async fn samples(&self, id: SessionId) -> StoreResult<Vec<MeterSample>> {
        // Staged samples (SQLite) arrived after every merged one of the same session.
        let query = if STAGED_SAMPLES {
            "SELECT sampled_at, measurand, value, unit, phase, context, 0 AS staged, meter_sample_id AS seq \
             FROM meter_sample WHERE session_id = $1 \
             UNION ALL SELECT sampled_at, measurand, value, unit, phase, context, 1, seq \
             FROM meter_sample_staged WHERE slot = $2 AND session_id = $1 ORDER BY sampled_at, staged, seq"
        } else {
            "SELECT * FROM meter_sample WHERE session_id = $1 ORDER BY sampled_at, meter_sample_id"
        };
        let mut query = sqlx::query(query).bind(id.0);
        if STAGED_SAMPLES {
            query = query.bind(sample_slot(id));
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(sample_from_row)
            .collect()
    }

    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        let (store, batch) = (self.clone(), batch.clone());
        self.on_write_thread(async move { store.write_batch_here(&batch).await }).await
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.execute_write(
            sqlx::query("INSERT INTO app_user (user_id, email, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(user.user_id)
                .bind(user.email.as_str())
                .bind(user.password_hash.as_str())
                .bind(user.role.as_str())
                .bind(user.created_at),
        )
        .await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM app_user WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user(&self, id: uuid::Uuid) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM app_user WHERE user_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn admin_exists(&self) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM app_user WHERE role = 'admin' LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .is_some())
    }
}

fn user_from_row(row: &DbRow) -> StoreResult<User> {
    let role: String = row.try_get("role").map_err(backend)?;
    let email: String = row.try_get("email").map_err(backend)?;
    Ok(User {
        user_id: row.try_get("user_id").map_err(backend)?,
        email: Email::parse(&email).map_err(|_| corrupt("e-mail", &email))?,
        password_hash: row.try_get("password_hash").map_err(backend)?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }

    async fn get_or_init_secret(&self, name: &str, candidate: &str) -> StoreResult<String> {
        self.execute_write(
            sqlx::query("INSERT INTO secret (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(candidate),
        )
        .await?;
        sqlx::query("SELECT value FROM secret WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .try_get("value")
            .map_err(backend)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}

/// The bodies of the writes that run on the write thread ([`SqlStore::on_write_thread`]).
impl SqlStore {
    async fn start_session_here(&self, new: &NewSession) -> StoreResult<Session> {
        let mut tx = self.begin_write().await?;
        // A charger that did not get our answer sends the same start again: the same
        // transaction id or, when we allocate ids, the same connector, token, meter
        // reading and time. It gets the same session back.
        let repeat = match &new.transaction_id {
            Some(transaction) => sqlx::query(select_sessions!("WHERE charger_id = $1 AND transaction_id = $2"))
                .bind(new.charger_id.as_str())
                .bind(transaction.0.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?,
            None => sqlx::query(select_sessions!(
                "WHERE charger_id = $1 AND connector_id = $2 AND id_token = $3 \
                 AND meter_start_wh = $4 AND started_at = $5 AND status = 'active'"
            ))
            .bind(new.charger_id.as_str())
            .bind(i64::from(new.connector_id.0))
            .bind(new.id_token.as_ref().map(IdToken::as_str))
            .bind(new.meter_start_wh)
            .bind(new.started_at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?,
        };
        if let Some(row) = repeat {
            return session_from_row(&row);
        }
        let row = sqlx::query(
            "INSERT INTO session (charger_id, connector_id, transaction_id, id_token, status, meter_start_wh, \
               energy_wh, started_at, remote_start, reservation_id, user_id) \
             VALUES ($1, $2, $3, $4, 'active', $5, 0, $6, $7, $8, \
               (SELECT user_id FROM id_token WHERE id_token_key = $9)) RETURNING session_id",
        )
        .bind(new.charger_id.as_str())
        .bind(i64::from(new.connector_id.0))
        .bind(new.transaction_id.as_ref().map(|t| t.0.clone()))
        .bind(new.id_token.as_ref().map(IdToken::as_str))
        .bind(new.meter_start_wh)
        .bind(new.started_at)
        .bind(new.remote_start)
        .bind(new.reservation_id)
        .bind(new.id_token.as_ref().map(IdToken::key))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let session_id: i64 = row.try_get("session_id").map_err(backend)?;
        let transaction_id = match &new.transaction_id {
            Some(t) => t.clone(),
            None => {
                sqlx::query("UPDATE session SET transaction_id = $2 WHERE session_id = $1")
                    .bind(session_id)
                    .bind(session_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                TransactionId(session_id.to_string())
            }
        };
        let session = Session {
            session_id: SessionId(session_id),
            charger_id: new.charger_id.clone(),
            connector_id: new.connector_id,
            transaction_id,
            id_token: new.id_token.clone(),
            status: SessionStatus::Active,
            meter_start_wh: new.meter_start_wh,
            meter_stop_wh: None,
            energy_wh: 0,
            power_w: None,
            soc_percent: None,
            started_at: new.started_at,
            stopped_at: None,
            stop_reason: None,
            last_meter_at: None,
            idle_since: None,
            remote_start: new.remote_start,
            reservation_id: new.reservation_id,
        };
        insert_event(&mut tx, &DomainEvent::session_started(&session)).await?;
        tx.commit().await.map_err(backend)?;
        Ok(session)
    }

    async fn stop_session_here(&self, s: &Session, final_samples: &[MeterSample]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_samples(&mut tx, final_samples.iter().map(|m| (s.session_id, m))).await?;
        let ended = sqlx::query(
            "UPDATE session SET status = $2, meter_stop_wh = $3, energy_wh = $4, power_w = $5, soc_percent = $6, \
               stopped_at = $7, stop_reason = $8, last_meter_at = $9, id_token = $10, idle_since = $12, idle_energy_wh = $4, \
               user_id = COALESCE(user_id, (SELECT user_id FROM id_token WHERE id_token_key = $11)) \
             WHERE session_id = $1 AND status = 'active'",
        )
        .bind(s.session_id.0)
        .bind(s.status.as_str())
        .bind(s.meter_stop_wh)
        .bind(s.energy_wh)
        .bind(s.power_w)
        .bind(s.soc_percent)
        .bind(s.stopped_at)
        .bind(s.stop_reason.as_deref())
        .bind(s.last_meter_at)
        .bind(s.id_token.as_ref().map(IdToken::as_str))
        .bind(s.id_token.as_ref().map(IdToken::key))
        .bind(s.idle_since)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // Exactly one SESSION_ENDED per session, whoever ends it how often.
        if ended.rows_affected() == 1 {
            insert_event(&mut tx, &DomainEvent::session_ended(s)).await?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn record_boot_here(&self, id: &ChargerId, boot: &BootInfo, ocpp_version: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let done = self.execute_write(
            sqlx::query(
                "UPDATE charger SET boot_info = $2, ocpp_version = $3, last_boot_at = $4, last_seen_at = $4 WHERE charger_id = $1",
            )
            .bind(id.as_str())
            .bind(Json(boot))
            .bind(ocpp_version)
            .bind(at),
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("charger {id}")));
        }
        Ok(())
    }

    async fn insert_registration_here(&self, r: &ChargerRegistration) -> StoreResult<bool> {
        let done = self.execute_write(bind_registration(
            sqlx::query(
                "INSERT INTO charger (charger_id, password_hash, security_profile, registration_status, description, created_at, operator_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (charger_id) DO NOTHING",
            ),
            r,
        ))
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn write_batch_here(&self, batch: &WriteBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        if STAGED_SAMPLES {
            let batch_no = self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            merge_staged_samples(&mut tx, (batch_no % SAMPLE_SLOTS as u64) as i64).await?;
        }
        insert_samples(&mut tx, batch.samples.iter().map(|s| (s.session_id, &s.sample))).await?;
        // One statement per chunk, not per row: every statement is a round trip (to
        // SQLite's worker thread, or to the PostgreSQL server).
        for chunk in batch.progress.chunks(INSERT_CHUNK) {
            let mut update = QueryBuilder::<Db>::new(
                "WITH v (session_id, energy_wh, power_w, soc_percent, last_meter_at, idle_since, id_token, id_token_key) AS (",
            );
            update.push_values(chunk, |mut row, p| {
                row.push_bind(p.session_id.0)
                    .push_bind(p.energy_wh)
                    .push_bind(p.power_w)
                    .push_bind(p.soc_percent)
                    .push_bind(p.last_meter_at)
                    .push_bind(p.idle_since)
                    .push_bind(p.id_token.as_ref().map(IdToken::as_str))
                    .push_bind(p.id_token.as_ref().map(IdToken::key));
            });
            update.push(
                ") UPDATE session SET energy_wh = v.energy_wh, power_w = v.power_w, soc_percent = v.soc_percent, \
                   last_meter_at = v.last_meter_at, idle_since = v.idle_since, idle_energy_wh = v.energy_wh, \
                   id_token = COALESCE(v.id_token, session.id_token), \
                   user_id = COALESCE(session.user_id, (SELECT t.user_id FROM id_token t WHERE t.id_token_key = v.id_token_key)) \
                 FROM v WHERE session.session_id = v.session_id AND session.status = 'active'",
            );
            update.build().execute(&mut *tx).await.map_err(backend)?;
        }
        for chunk in batch.connectors.chunks(INSERT_CHUNK) {
            let mut upsert = QueryBuilder::<Db>::new(
                "INSERT INTO connector (charger_id, connector_id, status, error_code, info, availability, updated_at) ",
            );
            upsert.push_values(chunk, |mut row, (charger, c)| {
                row.push_bind(charger.as_str())
                    .push_bind(i64::from(c.connector_id.0))
                    .push_bind(c.status.as_str())
                    .push_bind(c.error_code.as_deref())
                    .push_bind(c.info.as_deref())
                    .push_bind(c.availability.as_str())
                    .push_bind(c.updated_at);
            });
            upsert.push(
                " ON CONFLICT (charger_id, connector_id) DO UPDATE SET status = excluded.status, \
                   error_code = excluded.error_code, info = excluded.info, availability = excluded.availability, \
                   updated_at = excluded.updated_at",
            );
            upsert.build().execute(&mut *tx).await.map_err(backend)?;
        }
        for chunk in batch.last_seen.chunks(INSERT_CHUNK) {
            let mut update = QueryBuilder::<Db>::new("WITH v (charger_id, last_seen_at) AS (");
            update.push_values(chunk, |mut row, (charger, at)| {
                row.push_bind(charger.as_str()).push_bind(*at);
            });
            update.push(
                ") UPDATE charger SET last_seen_at = v.last_seen_at FROM v WHERE charger.charger_id = v.charger_id",
            );
            update.build().execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }
}
