//! Write-behind for the hot path: meter samples, session progress, connector status
//! and last-seen times are collected here and written in one transaction per flush
//! window (`persistence.flush_interval_ms`) or as soon as `persistence.max_batch`
//! updates are waiting. Nothing on the OCPP message path waits for the database.
//!
//! A failed write keeps its updates and retries at the next window. A graceful
//! shutdown flushes; a SIGKILL loses at most the updates of one window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::ports::{SessionProgress, SessionSample, Store, WriteBatch};
use crate::domain::{ChargerId, ConnectorId, ConnectorState, SessionId};
use crate::metrics::Metrics;

enum Command {
    Samples(Vec<SessionSample>),
    Progress(SessionProgress),
    Connector(ChargerId, ConnectorState),
    Seen(ChargerId, chrono::DateTime<chrono::Utc>),
    Flush(oneshot::Sender<()>),
}

/// A cheap, cloneable handle to the writer task.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::UnboundedSender<Command>,
}

#[derive(Default)]
struct Pending {
    samples: Vec<SessionSample>,
    progress: HashMap<SessionId, SessionProgress>,
    connectors: HashMap<(ChargerId, ConnectorId), ConnectorState>,
    seen: HashMap<ChargerId, chrono::DateTime<chrono::Utc>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.samples.len() + self.progress.len() + self.connectors.len() + self.seen.len()
    }

    fn to_batch(&self) -> WriteBatch {
        WriteBatch {
            samples: self.samples.clone(),
            progress: self.progress.values().cloned().collect(),
            connectors: self
                .connectors
                .iter()
                .map(|((id, _), c)| (id.clone(), c.clone()))
                .collect(),
            last_seen: self.seen.iter().map(|(id, at)| (id.clone(), *at)).collect(),
        }
    }
}

impl BatchWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(
        store: Arc<dyn Store>,
        window: Duration,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, window, max_batch.max(1), metrics, rx));
        (BatchWriter { tx }, task)
    }

    pub fn samples(&self, samples: Vec<SessionSample>) {
        if !samples.is_empty() {
            self.send(Command::Samples(samples));
        }
    }

    pub fn progress(&self, progress: SessionProgress) {
        self.send(Command::Progress(progress));
    }

    pub fn connector(&self, charger: ChargerId, state: ConnectorState) {
        self.send(Command::Connector(charger, state));
    }

    pub fn seen(&self, charger: ChargerId, at: chrono::DateTime<chrono::Utc>) {
        self.send(Command::Seen(charger, at));
    }

    /// Writes everything queued so far; returns when it is stored (or the writer is gone).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        self.send(Command::Flush(ack));
        let _ = done.await;
    }

    fn send(&self, command: Command) {
        if self.tx.send(command).is_err() {
            tracing::error!("batch writer has stopped; an update is lost");
        }
    }
}

/// Samples kept while storage is down; past this the oldest are dropped (and counted),
/// so that an outage cannot exhaust memory.
const MAX_PENDING_FACTOR: usize = 50;

/// Longest wait between attempts while storage is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Writer {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    pending: Pending,
    window: Duration,
    /// After failures, no attempt before this (unless a flush is asked for).
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
}

async fn run(
    store: Arc<dyn Store>,
    window: Duration,
    max_batch: usize,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut w = Writer {
        store,
        metrics,
        pending: Pending::default(),
        window,
        retry_at: None,
        failures: 0,
    };
    let mut tick = tokio::time::interval(window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else {
                    w.write(true).await;
                    return;
                };
                match command {
                    Command::Samples(s) => w.pending.samples.extend(s),
                    Command::Progress(p) => { w.pending.progress.insert(p.session_id, p); }
                    Command::Connector(id, c) => { w.pending.connectors.insert((id, c.connector_id), c); }
                    Command::Seen(id, at) => { w.pending.seen.insert(id, at); }
                    Command::Flush(ack) => {
                        w.write(true).await;
                        let _ = ack.send(());
                    }
                }
                let cap = max_batch * MAX_PENDING_FACTOR;
                if w.pending.samples.len() > cap {
                    let excess = w.pending.samples.len() - cap;
                    w.pending.samples.drain(..excess);
                    w.metrics.dropped_writes.inc_by(excess as u64);
                    tracing::error!(dropped = excess, "storage is behind; oldest meter samples dropped");
                }
                w.metrics.pending_writes.set(w.pending.len() as i64);
                if w.pending.len() >= max_batch {
                    w.write(false).await;
                }
            }
            _ = tick.tick() => w.write(false).await,
        }
    }
}

impl Writer {
    /// Writes what is pending in one transaction. If that fails while storage answers,
    /// the updates are tried one by one so that a single bad one (a value the database
    /// refuses) cannot block the rest: those that fail alone are dropped and counted.
    /// If storage is down, everything is kept and retried with backoff.
    async fn write(&mut self, now_or_never: bool) {
        if self.pending.len() == 0 {
            return;
        }
        if !now_or_never
            && self
                .retry_at
                .is_some_and(|at| tokio::time::Instant::now() < at)
        {
            return;
        }
        let batch = self.pending.to_batch();
        let started = Instant::now();
        let error = match self.store.write_batch(&batch).await {
            Ok(()) => {
                self.metrics
                    .flush_duration
                    .observe(started.elapsed().as_secs_f64());
                return self.succeeded();
            }
            Err(e) => e,
        };
        self.metrics.flush_failures.inc();
        tracing::error!(error.cause_chain = ?error, error.message = %error, updates = batch.len(), "batch write failed");
        let (mut stored, mut refused) = (0usize, 0usize);
        if self.store.ping().await.is_err() {
            return self.back_off();
        }
        for single in split(batch) {
            match self.store.write_batch(&single).await {
                Ok(()) => stored += 1,
                Err(e) => {
                    refused += 1;
                    if refused == 1 {
                        tracing::error!(error.cause_chain = ?e, error.message = %e, "an update was refused");
                    }
                }
            }
        }
        self.metrics.dropped_writes.inc_by(refused as u64);
        tracing::error!(
            stored,
            dropped = refused,
            "updates the database refused were dropped"
        );
        self.succeeded();
    }

    /// Storage is down: keep everything, try again later.
    fn back_off(&mut self) {
        self.failures += 1;
        let backoff = (self.window * 2u32.saturating_pow(self.failures.min(16))).min(MAX_BACKOFF);
        self.retry_at = Some(tokio::time::Instant::now() + backoff);
        tracing::error!(
            retry_in_ms = backoff.as_millis() as u64,
            "storage is unavailable; keeping the updates"
        );
    }

    fn succeeded(&mut self) {
        self.pending = Pending::default();
        self.metrics.pending_writes.set(0);
        self.retry_at = None;
        self.failures = 0;
    }
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
