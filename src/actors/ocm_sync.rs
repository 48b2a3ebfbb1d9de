//! `OcmSyncActor`: keeps the OpenChargeMap mirror, on a schedule and on demand.
//!
//! A run first fetches `/v3/referencedata` (data providers and their licences), then
//! for each configured scope (a country or a bounding box) pages through `/v3/poi`: a
//! full import by id (`greaterthanid` + `sortby=id_asc`) until OCM has no more, then
//! the changes since the last run (`modifiedsince`, paged by id at that watermark: OCM's
//! timestamps are whole minutes and many POIs share one, so paging by time could skip
//! some). Delisted POIs are asked for too, so that they reach the mirror and are hidden;
//! a removed POI is never listed again, so a full import is repeated now and then and
//! what it no longer sees is hidden. Each batch is stored before the scope's cursor
//! moves past it, so a run that stops for any reason resumes where it stopped. One run
//! at a time across every replica (a lease on the run record). OCM's 429 is honoured
//! (`Retry-After`), other transient failures back off.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::Instrument;

use crate::config::OcmSettings;
use crate::domain::ocm::{
    LicenceFilter, ReferenceData, SyncCounts, SyncCursor, SyncRun, SyncScope, SyncStatus,
    SyncTrigger, retry_after,
};
use crate::domain::ports::{StationStore, Store, StoreError};
use crate::domain::station::Station;
use crate::metrics::Metrics;

/// A run holds its lease this long past its last sign of life.
const LEASE: Duration = Duration::from_secs(300);
/// How often each replica reloads the reference data a sync kept.
const REFERENCE_RELOAD: Duration = Duration::from_secs(300);
/// Changes during a full import are pulled afterwards: the change cursor starts this
/// far before the import did (clock skew between OCM and us).
const CHANGE_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

/// Published (100, 200) and delisted (1000 and up; OCM never returns 1010, not public).
const LISTED_AND_DELISTED: &str = "100,200,1000,1001,1002,1005,1020";

/// The largest page of POIs read from OCM (a page of 1000 is a few MB): a larger answer
/// is a failed request, not a process that grows by what an upstream sends.
const MAX_PAGE_BYTES: usize = 64 << 20;
/// What is read of an error answer's body (only its start is reported).
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// At most `limit` bytes of `response`'s body; `None` once it is longer.
async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Why a run stopped early. Said plainly in the run record.
#[derive(Debug, thiserror::Error)]
enum SyncFailure {
    #[error(
        "OpenChargeMap refused the request ({0}): the API key is missing or wrong; set ocm.api_key (JUCR__OCM__API_KEY)"
    )]
    Refused(StatusCode),
    #[error("OpenChargeMap answered {status} to {path}: {body}")]
    Rejected {
        status: StatusCode,
        path: String,
        body: String,
    },
    #[error("OpenChargeMap kept failing ({0}); the next run resumes from here")]
    Unavailable(String),
    #[error(
        "OpenChargeMap asked to wait {0} s, longer than ocm.max_retry_after_secs; the next run resumes from here"
    )]
    WaitTooLong(u64),
    #[error("OpenChargeMap sent something unreadable from {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a sync is already running")]
    AlreadyRunning,
    #[error("ocm.scopes is empty: there is nothing to sync")]
    NothingToSync,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sync itself, shared by the actor and `jucr ocm sync`.
pub struct OcmSync {
    settings: OcmSettings,
    scopes: Vec<SyncScope>,
    licences: LicenceFilter,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    stations: Arc<dyn StationStore>,
    reference: Arc<RwLock<ReferenceData>>,
    metrics: Arc<Metrics>,
}

impl OcmSync {
    pub fn new(
        settings: &OcmSettings,
        store: Arc<dyn Store>,
        stations: Arc<dyn StationStore>,
        reference: Arc<RwLock<ReferenceData>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            .timeout(Duration::from_secs(settings.request_timeout_secs))
            .build()?;
        Ok(OcmSync {
            scopes: settings.scopes()?,
            licences: settings.licence_filter(),
            settings: settings.clone(),
            http,
            store,
            stations,
            reference,
            metrics,
        })
    }

    /// Takes the reference data the last sync kept (another replica may have run it).
    pub async fn reload_reference(&self) {
        if let Some(reference) = stored_reference(&*self.stations).await {
            *self.reference.write().unwrap_or_else(|p| p.into_inner()) = reference;
        }
    }

    /// Records a new run, unless one is running somewhere.
    pub async fn start(&self, trigger: SyncTrigger) -> Result<SyncRun, StartError> {
        if self.scopes.is_empty() {
            return Err(StartError::NothingToSync);
        }
        let now = Utc::now();
        self.store
            .start_sync_run(trigger, now, now + LEASE)
            .await?
            .ok_or(StartError::AlreadyRunning)
    }

    /// Runs a started run to its end and records how it ended. `full`: import every
    /// scope whole again (finding what OCM no longer lists), not only the changes.
    pub async fn run(&self, mut run: SyncRun, full: bool) -> SyncRun {
        let span =
            tracing::info_span!("ocm_sync", run_id = %run.run_id, trigger = run.trigger.as_str());
        tracing::info!(parent: &span, "OpenChargeMap sync started");
        let mut counts = SyncCounts::default();
        let outcome = self
            .run_scopes(&run, full, &mut counts)
            .instrument(span.clone())
            .await;
        let (status, error) = match &outcome {
            Ok(()) => (SyncStatus::Succeeded, None),
            Err(e) => (SyncStatus::Failed, Some(e.to_string())),
        };
        let now = Utc::now();
        if let Err(e) = self
            .store
            .finish_sync_run(run.run_id, status, &counts, error.as_deref(), now)
            .await
        {
            tracing::error!(error = %e, "recording the end of an OpenChargeMap sync");
        }
        self.metrics
            .ocm_sync_runs
            .with_label_values(&[status.as_str()])
            .inc();
        match &error {
            None => tracing::info!(parent: &span, ?counts, "OpenChargeMap sync done"),
            Some(e) => {
                tracing::warn!(parent: &span, ?counts, error = %e, "OpenChargeMap sync failed")
            }
        }
        run.status = status;
        run.finished_at = Some(now);
        run.counts = counts;
        run.error = error;
        run
    }

    async fn run_scopes(
        &self,
        run: &SyncRun,
        full: bool,
        counts: &mut SyncCounts,
    ) -> Result<(), SyncFailure> {
        let raw = self.get(run, "/v3/referencedata", &[]).await?;
        let reference =
            ReferenceData::from_ocm(&raw).map_err(|reason| SyncFailure::Unreadable {
                path: "/v3/referencedata".into(),
                reason,
            })?;
        self.stations.save_reference_data(&raw).await?;
        *self.reference.write().unwrap_or_else(|p| p.into_inner()) = reference.clone();

        let now = Utc::now();
        let sweep_every = chrono::Duration::from_std(std::time::Duration::from_secs(
            self.settings.full_sweep_interval_secs,
        ))
        .unwrap_or(chrono::Duration::MAX);
        for scope in &self.scopes {
            let mut cursor = match self.store.sync_cursor(&scope.key()).await? {
                Some(cursor) => cursor,
                None => SyncCursor::new(scope, now, run.started_at - CHANGE_MARGIN),
            };
            // A full import again now and then (or when asked): it finds the POIs OCM
            // no longer lists (a removed POI never shows up as a change).
            let sweep_due = self.settings.full_sweep_interval_secs > 0
                && cursor
                    .full_finished_at
                    .is_some_and(|at| now - at >= sweep_every);
            if cursor.full_done && (full || sweep_due) {
                cursor.restart_full(now);
            }
            let (param, value) = scope.query();
            while !cursor.full_done {
                let page = self
                    .page(
                        run,
                        &[
                            (param, value.clone()),
                            ("greaterthanid", cursor.last_id.to_string()),
                            ("sortby", "id_asc".into()),
                        ],
                    )
                    .await?;
                match next_id(&page, cursor.last_id)? {
                    Some(last) => cursor.last_id = last,
                    None => {
                        // OCM has no more: what the import did not see is gone.
                        cursor.full_done = true;
                        cursor.full_finished_at = Some(Utc::now());
                        let before = cursor.full_started_at.unwrap_or(now);
                        match scope.area(&reference) {
                            Some(area) => {
                                let gone = self.stations.deactivate_unseen(&area, before).await?;
                                counts.updated += gone;
                                if gone > 0 {
                                    tracing::info!(scope = %cursor.scope, gone, "stations OCM no longer lists are hidden");
                                }
                            }
                            None => {
                                tracing::warn!(scope = %cursor.scope, "unknown country in OCM's reference data: unlisted stations not looked for")
                            }
                        }
                    }
                }
                self.store_page(run, &page, &reference, counts, &cursor, true)
                    .await?;
            }
            // Changes: every POI modified at or after the watermark, page by page in id
            // order; the watermark then moves to the newest change seen.
            loop {
                let since = cursor
                    .modified_since
                    .unwrap_or(run.started_at - CHANGE_MARGIN);
                let page = self
                    .page(
                        run,
                        &[
                            (param, value.clone()),
                            (
                                "modifiedsince",
                                since.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            ),
                            ("greaterthanid", cursor.change_last_id.to_string()),
                            ("sortby", "id_asc".into()),
                        ],
                    )
                    .await?;
                let newest = page
                    .iter()
                    .filter_map(|p| p.get("DateLastStatusUpdate").and_then(Value::as_str))
                    .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .max();
                cursor.newest_seen = cursor.newest_seen.max(newest);
                let done = match next_id(&page, cursor.change_last_id)? {
                    Some(last) => {
                        cursor.change_last_id = last;
                        false
                    }
                    None => {
                        cursor.modified_since =
                            Some(since.max(cursor.newest_seen.unwrap_or(since)));
                        cursor.change_last_id = 0;
                        cursor.newest_seen = None;
                        true
                    }
                };
                self.store_page(run, &page, &reference, counts, &cursor, false)
                    .await?;
                if done {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One page of POIs.
    async fn page(
        &self,
        run: &SyncRun,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, SyncFailure> {
        let mut query = query.to_vec();
        query.extend([
            ("maxresults", self.settings.batch_size.to_string()),
            ("compact", "true".into()),
            ("verbose", "false".into()),
            ("includecomments", "false".into()),
            // Published and delisted ones: a delisted POI must reach the mirror to be
            // hidden (OCM answers only published ones unless asked).
            ("submissionstatustypeid", LISTED_AND_DELISTED.into()),
        ]);
        match self.get(run, "/v3/poi", &query).await? {
            Value::Array(pois) => Ok(pois),
            other => Err(SyncFailure::Unreadable {
                path: "/v3/poi".into(),
                reason: format!("expected an array of POIs, got {}", kind(&other)),
            }),
        }
    }

    /// Stores a page's stations, then moves the scope's cursor past them.
    async fn store_page(
        &self,
        run: &SyncRun,
        page: &[Value],
        reference: &ReferenceData,
        counts: &mut SyncCounts,
        cursor: &SyncCursor,
        full_import: bool,
    ) -> Result<(), SyncFailure> {
        let mut batch = SyncCounts {
            fetched: page.len() as u64,
            ..Default::default()
        };
        let mut stations = Vec::with_capacity(page.len());
        for poi in page {
            match Station::from_ocm(poi) {
                Ok(mut station) => {
                    if !self.licences.allows(reference, station.data_provider_id) {
                        station.active = false;
                        batch.excluded += 1;
                    }
                    stations.push(station);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable POI");
                    batch.failed += 1;
                }
            }
        }
        let upserted = self.stations.upsert_stations(&stations).await?;
        if full_import && !stations.is_empty() {
            let ids: Vec<i64> = stations.iter().map(|s| s.ocm_id).collect();
            let seen = cursor.full_started_at.unwrap_or_else(Utc::now);
            self.stations.touch_stations(&ids, seen).await?;
        }
        batch.inserted = upserted.inserted;
        batch.updated = upserted.updated;
        batch.unchanged = upserted.unchanged;
        *counts += batch;
        self.store
            .record_sync_progress(run.run_id, counts, lease_end(Duration::ZERO), Some(cursor))
            .await?;
        Ok(())
    }

    /// A GET to OCM, retried on 429 (as long as it says), 5xx and network failures.
    async fn get(
        &self,
        run: &SyncRun,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, SyncFailure> {
        let base = format!("{}{path}", self.settings.base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse_with_params(&base, query)
            .map_err(|e| SyncFailure::Unavailable(format!("ocm.base_url: {e}")))?;
        let mut backoff = Duration::from_millis(self.settings.retry_base_ms);
        let mut last = String::new();
        for attempt in 1..=self.settings.max_attempts {
            let mut request = self.http.get(url.clone());
            if let Some(key) = &self.settings.api_key {
                request = request.header("X-API-Key", key.expose_secret());
            }
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let body = read_at_most(response, MAX_PAGE_BYTES)
                        .await
                        .map_err(|e| SyncFailure::Unavailable(e.to_string()))?
                        .ok_or_else(|| {
                            SyncFailure::Unavailable(format!(
                                "{path}: answer larger than {MAX_PAGE_BYTES} bytes"
                            ))
                        })?;
                    return serde_json::from_slice(&body).map_err(|e| SyncFailure::Unreadable {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    });
                }
                Ok(response)
                    if matches!(
                        response.status(),
                        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
                    ) =>
                {
                    return Err(SyncFailure::Refused(response.status()));
                }
                Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let asked = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, Utc::now()));
                    last = "429 Too Many Requests".into();
                    match asked {
                        Some(wait) if wait.as_secs() > self.settings.max_retry_after_secs => {
                            return Err(SyncFailure::WaitTooLong(wait.as_secs()));
                        }
                        Some(wait) => wait,
                        None => backoff,
                    }
                }
                Ok(response) if response.status().is_server_error() => {
                    last = response.status().to_string();
                    backoff
                }
                Ok(mut response) => {
                    let status = response.status();
                    let mut body = Vec::new();
                    while body.len() < MAX_ERROR_BODY_BYTES {
                        match response.chunk().await {
                            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                            _ => break,
                        }
                    }
                    return Err(SyncFailure::Rejected {
                        status,
                        path: path.to_owned(),
                        body: String::from_utf8_lossy(&body).chars().take(200).collect(),
                    });
                }
                Err(e) => {
                    last = e.without_url().to_string();
                    backoff
                }
            };
            if attempt == self.settings.max_attempts {
                break;
            }
            tracing::info!(path, attempt, wait_ms = wait.as_millis() as u64, reason = %last, "OpenChargeMap asks us to wait");
            // The wait may outlast the lease: keep it.
            self.store
                .renew_sync_lease(run.run_id, lease_end(wait))
                .await?;
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
        Err(SyncFailure::Unavailable(last))
    }
}

/// OCM's reference data as the last sync kept it; `None` when there is none yet or it
/// cannot be read (said in the log).
pub async fn stored_reference(stations: &dyn StationStore) -> Option<ReferenceData> {
    match stations.reference_data().await {
        Ok(Some(raw)) => ReferenceData::from_ocm(&raw)
            .map_err(|e| tracing::warn!(error = %e, "stored OCM reference data unreadable"))
            .ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "OCM reference data not loaded");
            None
        }
    }
}

/// The highest id of a page, which must be past `after`; `None` for an empty page (the
/// end). A page that does not move forward would be asked for again for ever.
fn next_id(page: &[Value], after: i64) -> Result<Option<i64>, SyncFailure> {
    if page.is_empty() {
        return Ok(None);
    }
    match page
        .iter()
        .filter_map(|p| p.get("ID").and_then(Value::as_i64))
        .max()
    {
        Some(last) if last > after => Ok(Some(last)),
        _ => Err(SyncFailure::Unreadable {
            path: "/v3/poi".into(),
            reason: format!(
                "a page of POIs that does not go past id {after} (greaterthanid ignored?)"
            ),
        }),
    }
}

fn lease_end(wait: Duration) -> DateTime<Utc> {
    Utc::now() + LEASE + wait
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs the sync on its schedule and when asked.
pub struct OcmSyncActor {
    sync: Arc<OcmSync>,
    /// Zero: no schedule.
    interval: Duration,
}

impl OcmSyncActor {
    pub fn new(sync: Arc<OcmSync>, interval: Duration) -> Self {
        OcmSyncActor { sync, interval }
    }
}

impl Actor for OcmSyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every replica shows attribution from the reference data the last sync kept,
        // whichever replica ran it.
        ctx.run_interval(REFERENCE_RELOAD, |actor, ctx| {
            let sync = actor.sync.clone();
            ctx.spawn(async move { sync.reload_reference().await }.into_actor(actor));
        });
        if self.interval.is_zero() || self.sync.scopes.is_empty() {
            tracing::info!(
                "no scheduled OpenChargeMap sync (ocm.scopes or ocm.sync_interval_secs unset)"
            );
            return;
        }
        // Every replica looks; only one runs, and only when the last run is due.
        ctx.notify_later(ScheduledSync, Duration::from_secs(5));
        ctx.run_interval(self.interval.min(Duration::from_secs(600)), |_, ctx| {
            ctx.notify(ScheduledSync);
        });
    }
}

/// Start a run now; answered with the run as recorded when it started.
#[derive(Message)]
#[rtype(result = "Result<SyncRun, StartError>")]
pub struct StartSync {
    pub trigger: SyncTrigger,
    /// Import every scope whole again, not only the changes.
    pub full: bool,
}

impl Handler<StartSync> for OcmSyncActor {
    type Result = ResponseFuture<Result<SyncRun, StartError>>;

    fn handle(&mut self, msg: StartSync, _: &mut Self::Context) -> Self::Result {
        let sync = self.sync.clone();
        Box::pin(async move {
            let run = sync.start(msg.trigger).await?;
            let started = run.clone();
            tokio::spawn(async move { sync.run(run, msg.full).await });
            Ok(started)
        })
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct ScheduledSync;

impl Handler<ScheduledSync> for OcmSyncActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ScheduledSync, _: &mut Self::Context) -> Self::Result {
        let sync = self.sync.clone();
        let interval = chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::MAX);
        Box::pin(async move {
            let due = match sync.store.sync_runs(1).await {
                Ok(runs) => runs.first().is_none_or(|last| {
                    last.status != SyncStatus::Succeeded || Utc::now() - last.started_at >= interval
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether an OpenChargeMap sync is due");
                    false
                }
            };
            if !due {
                return;
            }
            match sync.start(SyncTrigger::Schedule).await {
                Ok(run) => {
                    tokio::spawn(async move { sync.run(run, false).await });
                }
                Err(StartError::AlreadyRunning) => {}
                Err(e) => tracing::warn!(error = %e, "scheduled OpenChargeMap sync not started"),
            }
        })
    }
}
