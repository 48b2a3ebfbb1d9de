//! The outbox relay: publishes the domain events that state changes wrote to the
//! outbox (in their own transactions), oldest first, and marks them published. At least
//! once: a crash between publishing and marking publishes again, and consumers dedupe
//! by event id. When the bus fails, the events stay and the relay retries with backoff.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::domain::ports::{EventBus, Store};
use crate::metrics::Metrics;

/// Events fetched per round.
const BATCH: u32 = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wakes the relay before its next poll (after a change that wrote events).
#[derive(Clone, Default)]
pub struct RelayKick(Arc<Notify>);

impl RelayKick {
    pub fn kick(&self) {
        self.0.notify_one();
    }
}

/// Runs the relay until the task is aborted; `kick` wakes it.
pub fn spawn(
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    poll: Duration,
    metrics: Arc<Metrics>,
    kick: RelayKick,
) -> JoinHandle<()> {
    let woken = kick;
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 {
                poll
            } else {
                (poll * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = woken.0.notified(), if failures == 0 => {}
            }
            match relay_once(&*store, &*bus, &metrics).await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, bus = bus.name(), failures, "outbox relay failed; retrying with backoff");
                }
            }
        }
    })
}

/// Publishes everything pending; returns how many events went out.
pub async fn relay_once(
    store: &dyn Store,
    bus: &dyn EventBus,
    metrics: &Metrics,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let events = store.unpublished_events(BATCH).await?;
        metrics.outbox_pending.set(events.len() as i64);
        if events.is_empty() {
            return Ok(total);
        }
        let mut published = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in &events {
            match bus.publish(event).await {
                Ok(()) => {
                    metrics
                        .events_published
                        .with_label_values(&[event.event_type.as_str()])
                        .inc();
                    published.push(event.id);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        store.mark_published(&published, Utc::now()).await?;
        total += published.len();
        if let Some(e) = failure {
            return Err(e.into());
        }
        if events.len() < BATCH as usize {
            metrics.outbox_pending.set(0);
            return Ok(total);
        }
    }
}
