//! Write-behind for the hot path: meter samples, session progress, connector status
//! and last-seen times are collected here and written per flush window
//! (`persistence.flush_interval_ms`) or as soon as `persistence.max_batch` updates are
//! waiting, in transactions of at most `max_batch` updates each (so that a large
//! backlog never holds the database's write lock for long).
//!
//! Nothing on the OCPP message path waits for the database while it keeps up. When it
//! falls behind (more than `max_batch` × [`BACKLOG_FACTOR`] samples not yet stored),
//! the charger connections wait before handing over their next frame
//! ([`BatchWriter::admit`]) until it catches up: a slow database slows the chargers
//! down, and nothing is lost.
//!
//! A failed write keeps its updates: a busy database (locked, out of connections) is
//! retried at the next window while connections keep waiting; one that does not answer
//! (a failed ping, or a write unfinished after 30 s) is retried with backoff, and
//! meanwhile nobody waits (chargers are served on) and beyond
//! `max_batch` × [`OUTAGE_FACTOR`] samples the oldest are dropped and counted, so that an
//! outage cannot exhaust memory. A graceful shutdown flushes; a SIGKILL loses at most
//! what was not yet written.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::ports::{
    SessionProgress, SessionSample, Store, StoreError, StoreResult, WriteBatch,
};
use crate::domain::{ChargerId, ConnectorId, ConnectorState, SessionId};
use crate::metrics::Metrics;

/// Samples not yet stored beyond which charger connections wait: this many batches.
pub const BACKLOG_FACTOR: usize = 4;

/// Samples kept while storage is down; past this many batches the oldest are dropped.
pub const OUTAGE_FACTOR: usize = 12;

/// Longest wait between attempts while storage is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A write that has not finished by then counts as storage being down (nobody waits
/// for it any longer); so does a ping that has not answered by `PING_TIMEOUT`.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a transaction did not go through (its updates are kept either way).
enum Setback {
    /// Storage answers but is busy (locked, out of connections): retry at the next
    /// window; connections keep waiting while the backlog is full.
    Busy,
    /// Storage does not answer: back off; nobody waits.
    Down,
}

/// What the writer needs of storage.
#[async_trait::async_trait]
pub trait BatchSink: Send + Sync + 'static {
    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
}

#[async_trait::async_trait]
impl BatchSink for Arc<dyn Store> {
    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        (**self).write_batch(batch).await
    }

    async fn ping(&self) -> StoreResult<()> {
        (**self).ping().await
    }
}

/// A flush request: answered once everything handed over before it is stored.
type FlushRequest = oneshot::Sender<()>;

/// A cheap, cloneable handle to the writer task.
///
/// Updates go straight into the shared [`Pending`] set under a short lock: the writer
/// task is not woken per update (that cost a cross-thread wake-up per OCPP message), it
/// takes what is there each window, or when a full batch is waiting.
#[derive(Clone)]
pub struct BatchWriter {
    /// Closed when the writer task ends; carries flush requests.
    tx: mpsc::UnboundedSender<FlushRequest>,
    shared: Arc<Shared>,
}

/// What the writer shares with everyone who hands it updates.
struct Shared {
    pending: Mutex<Pending>,
    /// A full batch is waiting (told by the push that fills one).
    batch_ready: Notify,
    max_batch: usize,
    backlog: Backlog,
    metrics: Arc<Metrics>,
}

/// What the writer owes storage.
struct Backlog {
    /// Samples handed over and neither stored nor dropped yet.
    samples: AtomicUsize,
    /// Past this, connections wait in [`BatchWriter::admit`].
    high_water: usize,
    /// Storage does not answer: nobody waits for it.
    storage_down: AtomicBool,
    /// Told whenever the backlog falls back under its mark, or storage is found down or back.
    drained: Notify,
    /// Connections waiting now (a gauge).
    waiting: prometheus::IntGauge,
    /// `storage_down` as a gauge.
    down: prometheus::IntGauge,
}

impl Backlog {
    fn full(&self) -> bool {
        self.samples.load(Ordering::Acquire) >= self.high_water
            && !self.storage_down.load(Ordering::Acquire)
    }

    fn settled(&self, samples: usize) {
        let before = self.samples.fetch_sub(samples, Ordering::AcqRel);
        // Only those waiting care, and they wait only while the mark is passed.
        if before >= self.high_water && before.saturating_sub(samples) < self.high_water {
            self.drained.notify_waiters();
        }
    }

    fn set_down(&self, down: bool) {
        if self.storage_down.swap(down, Ordering::AcqRel) != down {
            self.down.set(i64::from(down));
            self.drained.notify_waiters();
        }
    }
}

/// Counts a connection as waiting for as long as it lives.
struct Waiting<'a>(&'a prometheus::IntGauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Default)]
struct Pending {
    samples: VecDeque<SessionSample>,
    progress: HashMap<SessionId, SessionProgress>,
    connectors: HashMap<(ChargerId, ConnectorId), ConnectorState>,
    seen: HashMap<ChargerId, chrono::DateTime<chrono::Utc>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.samples.len() + self.progress.len() + self.connectors.len() + self.seen.len()
    }

    /// Takes up to `max` updates: the oldest samples first, then the latest figures.
    fn take(&mut self, max: usize) -> WriteBatch {
        let n = self.samples.len().min(max);
        let samples: Vec<SessionSample> = self.samples.drain(..n).collect();
        let mut room = max - n;
        WriteBatch {
            samples,
            progress: take_some(&mut self.progress, &mut room)
                .into_iter()
                .map(|(_, p)| p)
                .collect(),
            connectors: take_some(&mut self.connectors, &mut room)
                .into_iter()
                .map(|((id, _), c)| (id, c))
                .collect(),
            last_seen: take_some(&mut self.seen, &mut room),
        }
    }

    /// Puts older updates not written back in front of these (newer figures win).
    fn put_back(&mut self, mut older: Pending) {
        let all = older.len();
        self.restore(older.take(all));
    }

    /// Puts back what `take` took and could not be written (newer figures win).
    fn restore(&mut self, batch: WriteBatch) {
        for sample in batch.samples.into_iter().rev() {
            self.samples.push_front(sample);
        }
        for p in batch.progress {
            self.progress.entry(p.session_id).or_insert(p);
        }
        for (id, c) in batch.connectors {
            self.connectors.entry((id, c.connector_id)).or_insert(c);
        }
        for (id, at) in batch.last_seen {
            self.seen.entry(id).or_insert(at);
        }
    }
}

/// Up to `room` entries of `map` (all of them without copying keys when they fit).
fn take_some<K: Clone + Eq + Hash, V>(map: &mut HashMap<K, V>, room: &mut usize) -> Vec<(K, V)> {
    if map.len() <= *room {
        *room -= map.len();
        return std::mem::take(map).into_iter().collect();
    }
    let keys: Vec<K> = map.keys().take(*room).cloned().collect();
    *room = 0;
    keys.into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect()
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave `Pending` half-changed in a way
        // that matters more than losing the updates: carry on with what is there.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// While storage is down, keeps at most `max_batch` × [`OUTAGE_FACTOR`] samples.
    fn drop_beyond_outage_cap(&self, pending: &mut Pending) {
        let cap = self.max_batch * OUTAGE_FACTOR;
        if pending.samples.len() <= cap || !self.backlog.storage_down.load(Ordering::Acquire) {
            return;
        }
        let excess = pending.samples.len() - cap;
        pending.samples.drain(..excess);
        self.backlog.settled(excess);
        self.metrics.dropped_writes.inc_by(excess as u64);
        tracing::error!(
            dropped = excess,
            "storage is unavailable; oldest meter samples dropped"
        );
    }
}

impl BatchWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(
        store: impl BatchSink,
        window: Duration,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            batch_ready: Notify::new(),
            max_batch,
            backlog: Backlog {
                samples: AtomicUsize::new(0),
                high_water: max_batch * BACKLOG_FACTOR,
                storage_down: AtomicBool::new(false),
                drained: Notify::new(),
                waiting: metrics.backpressure_waiting.clone(),
                down: metrics.storage_down.clone(),
            },
            metrics,
        });
        let writer = Writer {
            store: Box::new(store),
            shared: shared.clone(),
            window,
            retry_at: None,
            failures: 0,
        };
        let task = tokio::spawn(run(writer, rx));
        (BatchWriter { tx, shared }, task)
    }

    pub fn samples(&self, samples: Vec<SessionSample>) {
        let n = samples.len();
        if n == 0 {
            return;
        }
        self.shared.backlog.samples.fetch_add(n, Ordering::AcqRel);
        if !self.add(|p| p.samples.extend(samples)) {
            self.shared.backlog.settled(n);
        }
    }

    pub fn progress(&self, progress: SessionProgress) {
        self.add(|p| {
            p.progress.insert(progress.session_id, progress);
        });
    }

    pub fn connector(&self, charger: ChargerId, state: ConnectorState) {
        self.add(|p| {
            p.connectors.insert((charger, state.connector_id), state);
        });
    }

    pub fn seen(&self, charger: ChargerId, at: chrono::DateTime<chrono::Utc>) {
        self.add(|p| {
            p.seen.insert(charger, at);
        });
    }

    /// Whether [`BatchWriter::admit`] would wait now.
    pub fn behind(&self) -> bool {
        self.shared.backlog.full()
    }

    /// Returns at once while storage keeps up (or does not answer at all); otherwise
    /// when the backlog is back under its high-water mark. A charger connection awaits
    /// this before handing over its next frame.
    pub async fn admit(&self) {
        let backlog = &self.shared.backlog;
        if !backlog.full() {
            return;
        }
        let _waiting = Waiting::new(&backlog.waiting);
        loop {
            let drained = backlog.drained.notified();
            if !backlog.full() || self.tx.is_closed() {
                return;
            }
            drained.await;
        }
    }

    /// Writes everything queued so far; returns when it is stored (or the writer is gone).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(ack).is_ok() {
            let _ = done.await;
        }
    }

    /// Adds an update to the pending set; `false` (and logged) if the writer has stopped.
    fn add(&self, change: impl FnOnce(&mut Pending)) -> bool {
        if self.tx.is_closed() {
            tracing::error!("batch writer has stopped; an update is lost");
            return false;
        }
        let filled = {
            let mut pending = self.shared.pending();
            let before = pending.len();
            change(&mut pending);
            self.shared.drop_beyond_outage_cap(&mut pending);
            // Told once as the set fills a batch; beyond that (storage behind or
            // down, the writer retrying on its own schedule) the window's tick serves.
            before < self.shared.max_batch && pending.len() >= self.shared.max_batch
        };
        if filled {
            self.shared.batch_ready.notify_one();
        }
        true
    }
}

struct Writer {
    store: Box<dyn BatchSink>,
    shared: Arc<Shared>,
    window: Duration,
    /// After failures, no attempt before this (unless a flush is asked for).
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
}

/// However the writer task ends, nobody is left waiting for it.
struct WakeWaitersOnExit(Arc<Shared>);

impl Drop for WakeWaitersOnExit {
    fn drop(&mut self) {
        self.0.backlog.set_down(true);
    }
}

async fn run(mut w: Writer, mut rx: mpsc::UnboundedReceiver<FlushRequest>) {
    let _wake = WakeWaitersOnExit(w.shared.clone());
    let mut tick = tokio::time::interval(w.window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(ack) => {
                    w.write(true).await;
                    let _ = ack.send(());
                }
                // Every handle is gone: write what is left and end.
                None => {
                    w.write(true).await;
                    return;
                }
            },
            () = w.shared.batch_ready.notified() => w.write(false).await,
            _ = tick.tick() => w.write(false).await,
        }
    }
}

impl Writer {
    /// Writes what is pending, `max_batch` updates per transaction. If storage is
    /// down, everything is kept and retried with backoff.
    async fn write(&mut self, now_or_never: bool) {
        if !now_or_never
            && self
                .retry_at
                .is_some_and(|at| tokio::time::Instant::now() < at)
        {
            return;
        }
        // Everything pending now (a flush writes all that was handed over before it);
        // what arrives meanwhile waits for the next turn, so that a steady stream cannot
        // keep the writer from its flush requests.
        let mut owed = std::mem::take(&mut *self.shared.pending());
        self.shared.metrics.pending_writes.set(owed.len() as i64);
        if owed.len() == 0 {
            return;
        }
        while owed.len() > 0 {
            let batch = owed.take(self.shared.max_batch);
            if let Err((batch, setback)) = self.write_one(batch).await {
                owed.restore(batch);
                self.shared.pending().put_back(owed);
                match setback {
                    Setback::Down => self.back_off(),
                    Setback::Busy => self.retry_next_window(),
                }
                let mut pending = self.shared.pending();
                self.shared.drop_beyond_outage_cap(&mut pending);
                self.shared.metrics.pending_writes.set(pending.len() as i64);
                return;
            }
            self.shared.metrics.pending_writes.set(owed.len() as i64);
        }
        self.succeeded();
    }

    /// Writes one transaction. If that fails while storage answers and is not merely
    /// busy, the updates are tried one by one so that a single bad one (a value the
    /// database refuses) cannot block the rest: those that fail alone are dropped and
    /// counted. What was not written is given back with the reason.
    async fn write_one(&mut self, batch: WriteBatch) -> Result<(), (WriteBatch, Setback)> {
        let samples = batch.samples.len();
        let started = Instant::now();
        let error = match tokio::time::timeout(WRITE_TIMEOUT, self.store.write_batch(&batch)).await
        {
            Ok(Ok(())) => {
                self.shared
                    .metrics
                    .flush_duration
                    .observe(started.elapsed().as_secs_f64());
                self.shared.backlog.settled(samples);
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => {
                self.shared.metrics.flush_failures.inc();
                tracing::error!(
                    timeout_secs = WRITE_TIMEOUT.as_secs(),
                    updates = batch.len(),
                    "batch write did not finish in time"
                );
                return Err((batch, Setback::Down));
            }
        };
        self.shared.metrics.flush_failures.inc();
        tracing::error!(error.cause_chain = ?error, error.message = %error, updates = batch.len(), "batch write failed");
        if !self.storage_answers().await {
            return Err((batch, Setback::Down));
        }
        if matches!(error, StoreError::Unavailable(_)) {
            return Err((batch, Setback::Busy));
        }
        let (mut stored, mut refused) = (0usize, 0usize);
        let mut singles = split(batch).into_iter();
        while let Some(single) = singles.next() {
            match self.store.write_batch(&single).await {
                Ok(()) => stored += 1,
                // Busy now, not refused: keep this one and the rest for later.
                Err(StoreError::Unavailable(_)) => {
                    self.report_refused(stored, refused);
                    return Err((join(std::iter::once(single).chain(singles)), Setback::Busy));
                }
                Err(e) => {
                    refused += 1;
                    if refused == 1 {
                        tracing::error!(error.cause_chain = ?e, error.message = %e, "an update was refused");
                    }
                }
            }
            self.shared.backlog.settled(single.samples.len());
        }
        self.report_refused(stored, refused);
        Ok(())
    }

    fn report_refused(&self, stored: usize, refused: usize) {
        if refused == 0 {
            return;
        }
        self.shared.metrics.dropped_writes.inc_by(refused as u64);
        tracing::error!(
            stored,
            dropped = refused,
            "updates the database refused were dropped"
        );
    }

    async fn storage_answers(&self) -> bool {
        matches!(
            tokio::time::timeout(PING_TIMEOUT, self.store.ping()).await,
            Ok(Ok(()))
        )
    }

    /// Storage is busy: try again at the next window (connections keep waiting while
    /// the backlog is over its mark).
    fn retry_next_window(&mut self) {
        self.retry_at = Some(tokio::time::Instant::now() + self.window);
        tracing::warn!(
            pending = self.shared.pending().len(),
            "storage is busy; keeping the updates for the next window"
        );
    }

    /// Storage is down: keep everything, try again later; nobody waits meanwhile.
    fn back_off(&mut self) {
        self.failures += 1;
        self.shared.backlog.set_down(true);
        let backoff = (self.window * 2u32.saturating_pow(self.failures.min(16))).min(MAX_BACKOFF);
        self.retry_at = Some(tokio::time::Instant::now() + backoff);
        tracing::error!(
            retry_in_ms = backoff.as_millis() as u64,
            "storage is unavailable; keeping the updates"
        );
    }

    fn succeeded(&mut self) {
        self.shared.backlog.set_down(false);
        self.retry_at = None;
        self.failures = 0;
    }
}

/// The updates of `parts` in one batch, in order.
fn join(parts: impl Iterator<Item = WriteBatch>) -> WriteBatch {
    let mut all = WriteBatch::default();
    for part in parts {
        all.samples.extend(part.samples);
        all.progress.extend(part.progress);
        all.connectors.extend(part.connectors);
        all.last_seen.extend(part.last_seen);
    }
    all
}

/// One batch per update.
fn split(batch: WriteBatch) -> Vec<WriteBatch> {
    let WriteBatch {
        samples,
        progress,
        connectors,
        last_seen,
    } = batch;
    let mut out: Vec<WriteBatch> = Vec::new();
    out.extend(samples.into_iter().map(|s| WriteBatch {
        samples: vec![s],
        ..Default::default()
    }));
    out.extend(progress.into_iter().map(|p| WriteBatch {
        progress: vec![p],
        ..Default::default()
    }));
    out.extend(connectors.into_iter().map(|c| WriteBatch {
        connectors: vec![c],
        ..Default::default()
    }));
    out.extend(last_seen.into_iter().map(|l| WriteBatch {
        last_seen: vec![l],
        ..Default::default()
    }));
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::FutureExt;

    use super::*;
    use crate::domain::{Measurand, MeterSample};

    /// Storage as the writer sees it, scripted: down (no answer), busy (answers, but
    /// "not now"), a value it refuses, a value whose lone write finds it busy.
    #[derive(Default)]
    struct Script {
        down: bool,
        busy: bool,
        refused_value: Option<f64>,
        busy_alone_value: Option<f64>,
        attempts: usize,
        stored: Vec<f64>,
        /// Energy figures stored, by write.
        progress: Vec<i64>,
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Script>>);

    impl Fake {
        fn with(&self, change: impl FnOnce(&mut Script)) {
            change(&mut self.0.lock().unwrap());
        }

        fn read<T>(&self, look: impl FnOnce(&Script) -> T) -> T {
            look(&self.0.lock().unwrap())
        }
    }

    #[async_trait::async_trait]
    impl BatchSink for Fake {
        async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
            let mut s = self.0.lock().unwrap();
            s.attempts += 1;
            let values: Vec<f64> = batch.samples.iter().map(|s| s.sample.value).collect();
            if s.down {
                return Err(StoreError::Backend("connection refused".into()));
            }
            if s.busy || (values.len() == 1 && s.busy_alone_value == Some(values[0])) {
                return Err(StoreError::Unavailable("database is locked".into()));
            }
            if s.refused_value.is_some_and(|v| values.contains(&v)) {
                return Err(StoreError::Backend("value refused".into()));
            }
            s.stored.extend(values);
            s.progress
                .extend(batch.progress.iter().map(|p| p.energy_wh));
            Ok(())
        }

        async fn ping(&self) -> StoreResult<()> {
            if self.0.lock().unwrap().down {
                return Err(StoreError::Backend("connection refused".into()));
            }
            Ok(())
        }
    }

    fn samples(values: impl IntoIterator<Item = u32>) -> Vec<SessionSample> {
        values
            .into_iter()
            .map(|v| SessionSample {
                session_id: SessionId(1),
                sample: MeterSample {
                    timestamp: chrono::Utc::now(),
                    measurand: Measurand::EnergyImportRegister,
                    value: f64::from(v),
                    unit: None,
                    phase: None,
                    context: None,
                },
            })
            .collect()
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// With max_batch 2, connections wait past 8 samples and an outage keeps 2 × [`OUTAGE_FACTOR`].
    fn writer(fake: &Fake, max_batch: usize) -> (BatchWriter, JoinHandle<()>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let (writer, task) = BatchWriter::spawn(
            fake.clone(),
            Duration::from_millis(10),
            max_batch,
            metrics.clone(),
        );
        (writer, task, metrics)
    }

    fn values(range: std::ops::Range<u32>) -> Vec<f64> {
        range.map(f64::from).collect()
    }

    #[tokio::test]
    async fn a_busy_database_holds_connections_back_and_loses_nothing() {
        let fake = Fake::default();
        fake.with(|s| s.busy = true);
        let (writer, _task, metrics) = writer(&fake, 2);
        writer.samples(samples(0..10));
        assert!(writer.admit().now_or_never().is_none(), "held back");
        until("a busy attempt", || fake.read(|s| s.attempts >= 2)).await;
        assert!(writer.admit().now_or_never().is_none(), "still held back");
        assert_eq!(metrics.dropped_writes.get(), 0);

        fake.with(|s| s.busy = false);
        tokio::time::timeout(Duration::from_secs(10), writer.admit())
            .await
            .expect("let through once written");
        until("everything stored", || fake.read(|s| s.stored.len() == 10)).await;
        assert_eq!(fake.read(|s| s.stored.clone()), values(0..10), "in order");
        assert_eq!(metrics.dropped_writes.get(), 0);
    }

    fn progress(energy_wh: i64) -> SessionProgress {
        SessionProgress {
            session_id: SessionId(1),
            energy_wh,
            power_w: None,
            soc_percent: None,
            last_meter_at: None,
            idle_since: None,
            id_token: None,
        }
    }

    #[tokio::test]
    async fn what_could_not_be_written_goes_back_before_what_came_meanwhile() {
        let fake = Fake::default();
        fake.with(|s| s.busy = true);
        let (writer, _task, _metrics) = writer(&fake, 100);
        writer.samples(samples(0..3));
        writer.progress(progress(10));
        until("a busy attempt", || fake.read(|s| s.attempts >= 1)).await;
        // Handed over while the first ones wait for the next window.
        writer.samples(samples(3..5));
        writer.progress(progress(20));
        fake.with(|s| s.busy = false);
        writer.flush().await;
        assert_eq!(
            fake.read(|s| s.stored.clone()),
            values(0..5),
            "oldest first"
        );
        assert_eq!(
            fake.read(|s| s.progress.clone()),
            vec![20],
            "the newer figure wins, written once"
        );
    }

    #[tokio::test]
    async fn a_refused_update_is_dropped_alone_and_busy_ones_are_kept() {
        let fake = Fake::default();
        // 2 is refused; 4 finds the database busy when written alone.
        fake.with(|s| {
            s.refused_value = Some(2.0);
            s.busy_alone_value = Some(4.0);
        });
        let (writer, _task, metrics) = writer(&fake, 10);
        writer.samples(samples(0..6));
        writer.flush().await;
        assert_eq!(
            fake.read(|s| s.stored.clone()),
            vec![0.0, 1.0, 3.0],
            "written one by one up to the busy one"
        );
        assert_eq!(metrics.dropped_writes.get(), 1, "only the refused one");

        fake.with(|s| s.busy_alone_value = None);
        until("the kept ones written", || {
            fake.read(|s| s.stored.len() == 5)
        })
        .await;
        assert_eq!(
            fake.read(|s| s.stored.clone()),
            vec![0.0, 1.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(metrics.dropped_writes.get(), 1);
    }

    #[tokio::test]
    async fn while_storage_is_down_nobody_waits_and_the_newest_are_kept() {
        let fake = Fake::default();
        fake.with(|s| s.down = true);
        let (writer, _task, metrics) = writer(&fake, 2);
        writer.samples(samples(0..10));
        until("an attempt", || fake.read(|s| s.attempts >= 1)).await;
        until("storage known down", || {
            writer.admit().now_or_never().is_some()
        })
        .await;
        assert_eq!(metrics.storage_down.get(), 1, "told in the metrics");
        writer.samples(samples(10..160));
        // The cap (2 × OUTAGE_FACTOR) drops the oldest as they are handed over.
        let cap = 2 * OUTAGE_FACTOR as u32;
        assert!(cap < 150, "the test needs more samples than the cap");
        let dropped = 160 - cap;
        until("the oldest dropped", || {
            metrics.dropped_writes.get() == u64::from(dropped)
        })
        .await;

        fake.with(|s| s.down = false);
        until("the rest written", || {
            fake.read(|s| s.stored.len() == cap as usize)
        })
        .await;
        assert_eq!(fake.read(|s| s.stored.clone()), values(dropped..160));
        // Told once the whole backlog is written.
        until("storage known up", || metrics.storage_down.get() == 0).await;
    }

    #[tokio::test]
    async fn connections_waiting_are_released_when_the_writer_ends() {
        let fake = Fake::default();
        fake.with(|s| s.busy = true);
        let (writer, task, _metrics) = writer(&fake, 2);
        writer.samples(samples(0..10));
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { writer.admit().await }
        });
        until("a busy attempt", || fake.read(|s| s.attempts >= 1)).await;
        assert!(!waiting.is_finished(), "held back while the writer runs");
        task.abort();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("released")
            .expect("the waiting task ran to its end");
    }
}
