//! `NotifierActor`: fans domain events out to registered webhooks, signed, with
//! retries and a delivery log; and [`LiveHub`], its live half: session updates,
//! charger status changes and domain events to whoever listens now, on every replica.
//!
//! As a bus consumer (`webhooks`) it only queues deliveries (with its receipt, in one
//! transaction), so a slow webhook never holds up the bus; the actor delivers them,
//! right away and then on its schedule for retries. Any replica may deliver a queued
//! delivery; a lease keeps two from sending the same one at once.
//!
//! Each request is a POST of the event's JSON with
//! `X-Jucr-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! `X-Jucr-Event` (the type), `X-Jucr-Event-Id` and `X-Jucr-Delivery`. A 2xx answer
//! within `notifier.webhook_timeout_ms` is a delivery; anything else is retried after
//! `notifier.webhook_retry_ms`, doubling (at most an hour), `notifier.webhook_attempts`
//! times in all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc};
use uuid::Uuid;

use crate::config::Settings;
use crate::domain::live::LiveUpdate;
use crate::domain::ports::{BusError, EventConsumer, Receipt, Store, StoreError};
use crate::domain::webhook::{DeliveryStatus, WebhookDelivery, signed_payload};
use crate::domain::{DomainEvent, EventType};
use crate::metrics::Metrics;

/// The consumer (and queue) name of webhook fan-out.
pub const CONSUMER: &str = "webhooks";

const ROUND: u32 = 100;
/// Deliveries in flight at once.
const PARALLEL_DELIVERIES: usize = 16;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, &signed_payload(timestamp, body));
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

pub struct Notifier {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    webhooks: crate::outbound::Webhooks,
    /// Wakes the actor to deliver what was just queued.
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let webhooks = crate::outbound::Webhooks::new(&settings)?;
        Ok(Notifier {
            store,
            settings,
            metrics,
            webhooks,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Queues the deliveries of `event` (idempotent by event id).
    pub async fn queue(&self, event: &DomainEvent) -> Result<(), StoreError> {
        let receipt = Receipt {
            consumer: CONSUMER,
            event_id: event.id,
        };
        if self.store.queue_deliveries(receipt, event).await? > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Attempts every due delivery, several at once, so that a slow endpoint does not
    /// hold up the others.
    pub async fn deliver_due(&self) -> Result<(), StoreError> {
        let due = self.store.due_deliveries(Utc::now(), ROUND).await?;
        let results: Vec<_> = futures_util::stream::iter(due)
            .map(|id| self.deliver(id))
            .buffer_unordered(PARALLEL_DELIVERIES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn deliver(&self, id: Uuid) -> Result<(), StoreError> {
        let settings = &self.settings.notifier;
        let timeout = Duration::from_millis(settings.webhook_timeout_ms);
        let now = Utc::now();
        let lease = now
            + chrono::Duration::from_std(timeout * 2 + Duration::from_secs(30)).unwrap_or_default();
        let Some((delivery, hook)) = self.store.claim_delivery(id, now, lease).await? else {
            return Ok(());
        };
        let body = serde_json::to_vec(&delivery.body).expect("a JSON value always serializes; qed");
        let sent_at = Utc::now().timestamp();
        // Checked again at each delivery: registered before the rule, or the rule's
        // setting changed since.
        let refused = match reqwest::Url::parse(&hook.url) {
            Ok(url) => self.webhooks.refusal(&url),
            Err(e) => Some(format!("not a URL: {e}")),
        };
        let answer = match refused {
            Some(why) => Err(why),
            None => self
                .webhooks
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-jucr-signature", signature(&hook.secret, sent_at, &body))
                .header("x-jucr-event", delivery.event_type.as_str())
                .header("x-jucr-event-id", delivery.event_id.to_string())
                .header("x-jucr-delivery", delivery.delivery_id.to_string())
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        format!("no answer within {timeout:?}")
                    } else {
                        // Without the URL: it may hold credentials or tokens. With the
                        // causes: the resolver's refusal is one.
                        format!(
                            "request failed: {}",
                            crate::outbound::cause_chain(&e.without_url())
                        )
                    }
                }),
        };
        let now = Utc::now();
        let mut next = WebhookDelivery {
            attempts: delivery.attempts + 1,
            ..delivery
        };
        let error = match answer {
            Ok(response) => {
                let status = response.status();
                next.last_status_code = Some(status.as_u16());
                (!status.is_success()).then(|| format!("answered {status}"))
            }
            Err(e) => {
                next.last_status_code = None;
                Some(e)
            }
        };
        match error {
            None => {
                self.metrics
                    .webhook_attempts
                    .with_label_values(&["delivered"])
                    .inc();
                next.status = DeliveryStatus::Delivered;
                next.delivered_at = Some(now);
                next.next_attempt_at = None;
                next.last_error = None;
            }
            Some(error) => {
                self.metrics
                    .webhook_attempts
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(webhook_id = %hook.webhook_id, delivery_id = %next.delivery_id, attempt = next.attempts, error, "webhook delivery failed");
                next.last_error = Some(error);
                if next.attempts >= settings.webhook_attempts {
                    next.status = DeliveryStatus::Failed;
                    next.next_attempt_at = None;
                } else {
                    let factor = 2u32.saturating_pow(next.attempts.saturating_sub(1).min(16));
                    let wait = Duration::from_millis(settings.webhook_retry_ms)
                        .saturating_mul(factor)
                        .min(MAX_RETRY_WAIT);
                    next.next_attempt_at =
                        Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
                }
            }
        }
        self.store.record_delivery_attempt(&next).await
    }
}

pub struct NotifierActor {
    notifier: Arc<Notifier>,
    busy: Arc<AtomicBool>,
    /// Whether this replica retries due deliveries on a schedule (workers).
    scheduled: bool,
}

impl NotifierActor {
    pub fn new(notifier: Arc<Notifier>, scheduled: bool) -> Self {
        NotifierActor {
            notifier,
            busy: Arc::new(AtomicBool::new(false)),
            scheduled,
        }
    }

    /// One delivery round; rounds never overlap.
    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let notifier = self.notifier.clone();
        let busy = self.busy.clone();
        ctx.spawn(
            async move {
                if let Err(e) = notifier.deliver_due().await {
                    tracing::warn!(error = %e, "webhook round failed; next round");
                }
                busy.store(false, Ordering::Release);
            }
            .into_actor(self),
        );
    }
}

/// Start a delivery round now. Sent by the actor itself when deliveries are queued.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

impl Handler<Wake> for NotifierActor {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.round(ctx);
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.scheduled {
            let every = Duration::from_millis(self.notifier.settings.notifier.schedule_interval_ms);
            ctx.run_interval(every, |act, ctx| act.round(ctx));
        }
        let wake = self.notifier.wake.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    wake.notified().await;
                    if me.try_send(Wake).is_err() {
                        break;
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// Webhook fan-out as a consumer of the bus.
pub struct WebhookConsumer(pub Arc<Notifier>);

#[async_trait]
impl EventConsumer for WebhookConsumer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn wants(&self) -> &'static [EventType] {
        &EventType::ALL
    }

    async fn handle(&self, event: &DomainEvent) -> Result<(), BusError> {
        self.0.queue(event).await.map_err(|e| {
            BusError(format!(
                "webhooks: {e}: {:?}",
                std::error::Error::source(&e)
            ))
        })
    }
}

/// Updates waiting to leave for the other replicas; beyond this, the newest are dropped
/// (live updates are best effort; what matters is stored and evented).
const OUTBOUND: usize = 16_384;
/// Updates a listener may fall behind before it skips ahead.
const LISTENER_LAG: usize = 4096;

/// The notifier's live half. Updates made on this replica reach its own listeners at
/// once and, through the bus (cloud), every other replica's; updates from elsewhere
/// reach the listeners here.
pub struct LiveHub {
    local: broadcast::Sender<Arc<LiveUpdate>>,
    outbound: Option<mpsc::Sender<LiveUpdate>>,
    /// This replica's id, so that it skips its own updates coming back from the bus.
    pub replica: String,
    metrics: Arc<Metrics>,
}

impl LiveHub {
    /// A hub for one process (embedded).
    pub fn local(metrics: Arc<Metrics>) -> Self {
        LiveHub {
            local: broadcast::channel(LISTENER_LAG).0,
            outbound: None,
            replica: Uuid::new_v4().simple().to_string(),
            metrics,
        }
    }

    /// A hub whose own updates also leave through the returned receiver (cloud).
    pub fn linked(metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<LiveUpdate>) {
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let hub = LiveHub {
            outbound: Some(tx),
            ..Self::local(metrics)
        };
        (hub, rx)
    }

    /// Whether an update published now could reach anybody: a listener here, or (when
    /// linked) the other replicas. Publishers skip building updates when not.
    pub fn has_listeners(&self) -> bool {
        self.outbound.is_some() || self.local.receiver_count() > 0
    }

    /// An update made here: to the listeners here and, when linked, to the other replicas.
    pub fn publish(&self, update: LiveUpdate) {
        if let Some(outbound) = &self.outbound
            && outbound.try_send(update.clone()).is_err()
        {
            self.metrics.live_dropped.inc();
        }
        let _ = self.local.send(Arc::new(update));
    }

    /// An update that came from elsewhere: to the listeners here only.
    pub fn deliver(&self, update: LiveUpdate) {
        let _ = self.local.send(Arc::new(update));
    }

    /// Every update from now on (a listener that falls behind skips ahead, told how far).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveUpdate>> {
        self.local.subscribe()
    }
}

/// Domain events to live listeners, as a consumer of the in-process bus (embedded; in
/// the cloud each replica's own queue brings them, see `persistence::amqp::run_live_link`).
pub struct LiveConsumer(pub Arc<LiveHub>);

#[async_trait]
impl EventConsumer for LiveConsumer {
    fn name(&self) -> &'static str {
        "live"
    }

    fn wants(&self) -> &'static [EventType] {
        &EventType::ALL
    }

    async fn handle(&self, event: &DomainEvent) -> Result<(), BusError> {
        self.0.deliver(LiveUpdate::Event {
            event: event.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_test",b"1700000000.{\"a\":1}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
