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

async fn run(
    store: Arc<dyn Store>,
    window: Duration,
    max_batch: usize,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut pending = Pending::default();
    let mut tick = tokio::time::interval(window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else {
                    write(&*store, &mut pending, &metrics).await;
                    return;
                };
                match command {
                    Command::Samples(s) => pending.samples.extend(s),
                    Command::Progress(p) => { pending.progress.insert(p.session_id, p); }
                    Command::Connector(id, c) => { pending.connectors.insert((id, c.connector_id), c); }
                    Command::Seen(id, at) => { pending.seen.insert(id, at); }
                    Command::Flush(ack) => {
                        write(&*store, &mut pending, &metrics).await;
                        let _ = ack.send(());
                    }
                }
                metrics.pending_writes.set(pending.len() as i64);
                if pending.len() >= max_batch {
                    write(&*store, &mut pending, &metrics).await;
                }
            }
            _ = tick.tick() => write(&*store, &mut pending, &metrics).await,
        }
    }
}

async fn write(store: &dyn Store, pending: &mut Pending, metrics: &Metrics) {
    if pending.len() == 0 {
        return;
    }
    let batch = pending.to_batch();
    let started = Instant::now();
    match store.write_batch(&batch).await {
        Ok(()) => {
            metrics
                .flush_duration
                .observe(started.elapsed().as_secs_f64());
            *pending = Pending::default();
            metrics.pending_writes.set(0);
        }
        Err(e) => {
            metrics.flush_failures.inc();
            tracing::error!(error.cause_chain = ?e, error.message = %e, updates = batch.len(), "batch write failed; retrying at the next window");
        }
    }
}
