//! `BillingActor`: turns an ended session into an invoice (SESSION_ENDED →
//! INVOICE_GENERATED) and an invoice into a payment (INVOICE_GENERATED →
//! PAYMENT_COMPLETED / PAYMENT_FAILED), retries failed payments on a schedule, and
//! issues the monthly subscription invoices.
//!
//! It is a consumer of the event bus, so it runs at least once per event: every effect
//! is stored with a receipt for its event in one transaction, and the gateway is asked
//! with the payment's id as idempotency key. Charging never waits for billing: when
//! billing is down, the events wait in the outbox or the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_trait::async_trait;
use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;

use super::outbox_relay::RelayKick;
use crate::config::Settings;
use crate::domain::billing::{
    AfterFailure, GatewayError, InvoiceKind, InvoiceStatus, NewInvoice, Payment, PaymentStatus,
    billing_period, month_start,
};
use crate::domain::ports::{
    BusError, ChargeRequest, EventConsumer, PaymentGateway, Receipt, Store, StoreError,
};
use crate::domain::tariff::SessionUsage;
use crate::domain::{DomainEvent, EventType, SessionId};
use crate::metrics::Metrics;

/// The consumer (and queue) name.
pub const CONSUMER: &str = "billing";

/// Payments and invoices looked at per scheduled round.
const ROUND: u32 = 100;

fn store_failed(e: StoreError) -> BusError {
    BusError(format!("billing: {e}: {:?}", std::error::Error::source(&e)))
}

/// What billing does, shared by the actor's schedule and its bus consumer.
pub struct Billing {
    store: Arc<dyn Store>,
    gateway: Arc<dyn PaymentGateway>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    relay: RelayKick,
    /// Wakes the actor when a payment is due now.
    due: Arc<tokio::sync::Notify>,
}

impl Billing {
    pub fn new(
        store: Arc<dyn Store>,
        gateway: Arc<dyn PaymentGateway>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        relay: RelayKick,
    ) -> Self {
        Billing {
            store,
            gateway,
            settings,
            metrics,
            relay,
            due: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub async fn handle(&self, event: &DomainEvent) -> Result<(), BusError> {
        let receipt = Receipt {
            consumer: CONSUMER,
            event_id: event.id,
        };
        let result = match event.event_type {
            EventType::SessionEnded => self.invoice_session(receipt, event).await,
            EventType::InvoiceGenerated => self.open_payment(receipt, event).await,
            _ => Ok(()),
        };
        match result {
            // Permanent: the event refers to something that does not exist. Retrying
            // cannot help and would hold up the events behind it; it is recorded, logged
            // and counted instead.
            Err(StoreError::NotFound(what)) => {
                tracing::error!(event_id = %event.id, event_type = %event.event_type, what, "event refers to nothing billable; skipped");
                self.metrics
                    .sessions_billed
                    .with_label_values(&["unbillable"])
                    .inc();
                self.store
                    .mark_processed(receipt)
                    .await
                    .map_err(store_failed)?;
                Ok(())
            }
            other => other.map_err(store_failed),
        }
    }

    /// SESSION_ENDED: who pays, under which tariff, how much; the invoice.
    async fn invoice_session(
        &self,
        receipt: Receipt<'_>,
        event: &DomainEvent,
    ) -> Result<(), StoreError> {
        self.settings.testing.maybe_crash("billing.before_invoice");
        let id = event
            .aggregate_id
            .parse()
            .map(SessionId)
            .map_err(|_| StoreError::NotFound(format!("session {:?}", event.aggregate_id)))?;
        let Some(mut session) = self.store.session(id).await? else {
            return Err(StoreError::NotFound(format!("session {id}")));
        };
        let span =
            tracing::info_span!("billing", session_id = %id, charger_id = %session.charger_id);
        async {
            if session.idle_since.is_none() {
                // Ended before the idle clock was kept on the session, or its clock
                // left behind by a replica that predates it (ADR 0023).
                let samples = self.store.samples(id).await?;
                session.idle_since = session.replayed_idle_since(&samples);
                tracing::info!(samples = samples.len(), "idle clock replayed from the session's samples");
            }
            // Recorded when the token came; a session from before that record falls back
            // to the token's owner now.
            let owner = match self.store.session_owner(id).await? {
                Some(owner) => Some(owner),
                None => match &session.id_token {
                    Some(token) => self.store.token_owner(token).await?,
                    None => None,
                },
            };
            let Some(user) = owner else {
                if self.store.mark_processed(receipt).await? {
                    tracing::info!("session not billed: its token belongs to no account");
                    self.metrics.sessions_billed.with_label_values(&["no_account"]).inc();
                }
                return Ok(());
            };
            let candidates = self.store.tariff_candidates(&session.charger_id, Some(user)).await?;
            let Some(tariff) = candidates.applicable() else {
                if self.store.mark_processed(receipt).await? {
                    tracing::warn!(%user, "session not billed: no tariff applies (no plan, override or default tariff)");
                    self.metrics.sessions_billed.with_label_values(&["no_tariff"]).inc();
                }
                return Ok(());
            };
            let stopped_at = session.stopped_at.unwrap_or(event.occurred_at);
            let month_energy_before_wh = if tariff.tariff.monthly_charge().is_some() {
                self.store
                    .invoiced_energy_wh(user, tariff.tariff_id, month_start(stopped_at))
                    .await?
            } else {
                0
            };
            let charge = tariff.tariff.session_charge(&SessionUsage {
                energy_wh: session.energy_wh,
                idle_minutes: session.idle_minutes(stopped_at),
                month_energy_before_wh,
            });
            let invoice = NewInvoice {
                invoice_id: Uuid::new_v4(),
                user_id: user,
                kind: InvoiceKind::Session,
                session_id: Some(id),
                period: None,
                tariff_id: tariff.tariff_id,
                tariff_name: tariff.tariff.name.clone(),
                energy_wh: session.energy_wh,
                charge,
                issued_at: Utc::now(),
            };
            if let Some(invoice) = self.store.issue_invoice(Some(receipt), &invoice).await? {
                tracing::info!(
                    invoice = invoice.invoice_number,
                    gross = invoice.charge.gross.amount,
                    currency = %invoice.charge.gross.currency,
                    "invoice issued"
                );
                self.metrics.sessions_billed.with_label_values(&["invoiced"]).inc();
                self.relay.kick();
                self.settings.testing.maybe_crash("billing.after_invoice");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// INVOICE_GENERATED: a pending payment, tried at once.
    async fn open_payment(
        &self,
        receipt: Receipt<'_>,
        event: &DomainEvent,
    ) -> Result<(), StoreError> {
        let id: Uuid = event
            .aggregate_id
            .parse()
            .map_err(|_| StoreError::NotFound(format!("invoice {:?}", event.aggregate_id)))?;
        let Some(invoice) = self.store.invoice(id).await? else {
            return Err(StoreError::NotFound(format!("invoice {id}")));
        };
        if invoice.status != InvoiceStatus::Open {
            // Nothing to pay (a session within the flat rate).
            self.store.mark_processed(receipt).await?;
            return Ok(());
        }
        let now = Utc::now();
        let payment = Payment {
            payment_id: Uuid::new_v4(),
            invoice_id: invoice.invoice_id,
            user_id: invoice.user_id,
            amount: invoice.charge.gross,
            status: PaymentStatus::Pending,
            attempts: 0,
            declines: 0,
            transient_streak: 0,
            reported_failures: 0,
            charge_key: Uuid::new_v4(),
            next_attempt_at: Some(now),
            last_error: None,
            gateway_charge_id: None,
            created_at: now,
            updated_at: now,
        };
        // The attempt runs on the billing actor, not here: a slow gateway must not hold up
        // the bus.
        if self.store.open_payment(receipt, &payment).await? {
            self.due.notify_one();
        }
        Ok(())
    }

    /// One attempt at a due payment (skipped when it is not due or another replica has it).
    pub async fn attempt(&self, payment_id: Uuid) -> Result<(), StoreError> {
        let timeout = Duration::from_millis(self.settings.billing.gateway_timeout_ms);
        let now = Utc::now();
        let lease = now
            + chrono::Duration::from_std(timeout * 2 + Duration::from_secs(30)).unwrap_or_default();
        let Some(payment) = self.store.claim_payment(payment_id, now, lease).await? else {
            return Ok(());
        };
        let span = tracing::info_span!("payment", %payment_id, invoice_id = %payment.invoice_id, attempt = payment.attempts + 1);
        async {
            let methods = self.store.payment_methods(payment.user_id).await?;
            let result = match methods.first() {
                None => Err(GatewayError::InvalidToken("the driver has no payment method".into())),
                Some(method) => {
                    let request = ChargeRequest {
                        idempotency_key: payment.charge_key,
                        gateway_token: method.gateway_token.clone(),
                        amount: payment.amount,
                        description: format!("jucr invoice {}", payment.invoice_id),
                    };
                    match tokio::time::timeout(timeout, self.gateway.charge(&request)).await {
                        Ok(result) => result,
                        Err(_) => Err(GatewayError::Unavailable(format!(
                            "{} gateway did not answer within {timeout:?}",
                            self.gateway.name()
                        ))),
                    }
                }
            };
            let now = Utc::now();
            let mut next = Payment {
                attempts: payment.attempts + 1,
                updated_at: now,
                ..payment.clone()
            };
            let event = match result {
                Ok(charge_id) => {
                    self.metrics.payment_attempts.with_label_values(&["completed"]).inc();
                    tracing::info!(charge_id, "payment completed");
                    next.status = PaymentStatus::Completed;
                    next.gateway_charge_id = Some(charge_id);
                    next.next_attempt_at = None;
                    next.last_error = None;
                    Some(DomainEvent::payment_outcome(&next, false))
                }
                Err(error) => {
                    let outcome = match &error {
                        GatewayError::Declined(_) => "declined",
                        GatewayError::InvalidToken(_) => "invalid_token",
                        GatewayError::Unavailable(_) => "unavailable",
                    };
                    self.metrics.payment_attempts.with_label_values(&[outcome]).inc();
                    if error.needs_driver() {
                        next.declines += 1;
                        next.transient_streak = 0;
                    } else {
                        next.transient_streak += 1;
                    }
                    next.last_error = Some(error.to_string());
                    let policy = self.settings.billing.retry_policy();
                    let after_wait = |wait: Duration| now + chrono::Duration::from_std(wait).unwrap_or_default();
                    match policy.after(&error, next.transient_streak, next.reported_failures) {
                        AfterFailure::RetryQuietly(wait) => {
                            tracing::warn!(error = %error, ?wait, "payment attempt failed; retrying");
                            next.next_attempt_at = Some(after_wait(wait));
                            None
                        }
                        AfterFailure::ReportAndRetry(wait) => {
                            tracing::warn!(error = %error, ?wait, "payment failed; will retry");
                            next.next_attempt_at = Some(after_wait(wait));
                            next.reported_failures += 1;
                            next.transient_streak = 0;
                            // A new round: a processor would replay this key's decline.
                            next.charge_key = Uuid::new_v4();
                            Some(DomainEvent::payment_outcome(&next, true))
                        }
                        AfterFailure::GiveUp => {
                            tracing::warn!(error = %error, "payment failed for good");
                            next.status = PaymentStatus::Failed;
                            next.next_attempt_at = None;
                            next.reported_failures += 1;
                            Some(DomainEvent::payment_outcome(&next, false))
                        }
                    }
                }
            };
            if self.store.record_payment_attempt(&next, payment.attempts, event.as_ref()).await? && event.is_some() {
                self.relay.kick();
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Tries every payment that is due.
    pub async fn retry_due(&self) -> Result<(), StoreError> {
        for id in self.store.due_payments(Utc::now(), ROUND).await? {
            self.attempt(id).await?;
        }
        Ok(())
    }

    /// Issues this month's subscription invoice to every driver on a flat-rate plan
    /// (or only to `user`) who does not have it yet; returns how many were issued.
    pub async fn issue_subscriptions(&self, user: Option<Uuid>) -> Result<usize, StoreError> {
        let now = Utc::now();
        let period = billing_period(now);
        let mut issued = 0;
        for (subscriber, tariff, _since) in self.store.plans().await? {
            if user.is_some_and(|u| u != subscriber) {
                continue;
            }
            let Some(charge) = tariff.tariff.monthly_charge() else {
                continue;
            };
            let invoice = NewInvoice {
                invoice_id: Uuid::new_v4(),
                user_id: subscriber,
                kind: InvoiceKind::Subscription,
                session_id: None,
                period: Some(period.clone()),
                tariff_id: tariff.tariff_id,
                tariff_name: tariff.tariff.name.clone(),
                energy_wh: 0,
                charge,
                issued_at: now,
            };
            match self.store.issue_invoice(None, &invoice).await {
                Ok(Some(invoice)) => {
                    tracing::info!(user = %subscriber, invoice = invoice.invoice_number, period, "subscription invoice issued");
                    issued += 1;
                }
                Ok(None) => {}
                // Another replica issued it at the same moment.
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if issued > 0 {
            self.relay.kick();
        }
        Ok(issued)
    }
}

pub struct BillingActor {
    billing: Arc<Billing>,
    busy: Arc<AtomicBool>,
    last_subscription_run: Option<Instant>,
    /// Whether this replica runs the schedule (payment retries, subscription runs).
    scheduled: bool,
}

impl BillingActor {
    /// `scheduled`: run the schedule here (workers); without it, payments opened here
    /// are still attempted at once.
    pub fn new(billing: Arc<Billing>, scheduled: bool) -> Self {
        BillingActor {
            billing,
            busy: Arc::new(AtomicBool::new(false)),
            last_subscription_run: None,
            scheduled,
        }
    }

    /// One scheduled round: due payments, and the subscription run when it is time.
    /// Rounds never overlap.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = Duration::from_secs(self.billing.settings.billing.subscription_interval_secs);
        let subscriptions = self
            .last_subscription_run
            .is_none_or(|at| at.elapsed() >= every);
        if subscriptions {
            self.last_subscription_run = Some(Instant::now());
        }
        let billing = self.billing.clone();
        let busy = self.busy.clone();
        ctx.spawn(
            async move {
                if let Err(e) = billing.retry_due().await {
                    tracing::warn!(error = %e, "payment retries failed; next round");
                }
                if subscriptions && let Err(e) = billing.issue_subscriptions(None).await {
                    tracing::warn!(error = %e, "subscription run failed; next round");
                }
                busy.store(false, Ordering::Release);
            }
            .into_actor(self),
        );
    }
}

impl Actor for BillingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.scheduled {
            let every = Duration::from_millis(self.billing.settings.billing.schedule_interval_ms);
            ctx.run_interval(every, |act, ctx| act.tick(ctx));
        }
        let due = self.billing.due.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    due.notified().await;
                    if me.try_send(PaymentsDue).is_err() {
                        break;
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// A payment is due now. Sent by the actor itself when billing opened one.
#[derive(Message)]
#[rtype(result = "()")]
struct PaymentsDue;

impl Handler<PaymentsDue> for BillingActor {
    type Result = ();

    fn handle(&mut self, _: PaymentsDue, ctx: &mut Self::Context) {
        let billing = self.billing.clone();
        ctx.spawn(
            async move {
                if let Err(e) = billing.retry_due().await {
                    tracing::warn!(error = %e, "payment attempts failed; next round");
                }
            }
            .into_actor(self),
        );
    }
}

/// An event for billing. Sent by [`BillingConsumer`] (the bus).
#[derive(Message)]
#[rtype(result = "Result<(), BusError>")]
pub struct HandleEvent(pub DomainEvent);

impl Handler<HandleEvent> for BillingActor {
    type Result = ResponseFuture<Result<(), BusError>>;

    fn handle(&mut self, HandleEvent(event): HandleEvent, _: &mut Self::Context) -> Self::Result {
        let billing = self.billing.clone();
        Box::pin(async move { billing.handle(&event).await })
    }
}

/// Issue this month's subscription invoices now (to one driver, or all). Sent by the
/// plan API after a driver is put on a plan.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct RunSubscriptions(pub Option<Uuid>);

impl Handler<RunSubscriptions> for BillingActor {
    type Result = ResponseFuture<Result<usize, StoreError>>;

    fn handle(
        &mut self,
        RunSubscriptions(user): RunSubscriptions,
        _: &mut Self::Context,
    ) -> Self::Result {
        let billing = self.billing.clone();
        Box::pin(async move { billing.issue_subscriptions(user).await })
    }
}

/// Billing as a consumer of the bus.
pub struct BillingConsumer(pub Addr<BillingActor>);

#[async_trait]
impl EventConsumer for BillingConsumer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn wants(&self) -> &'static [EventType] {
        &[EventType::SessionEnded, EventType::InvoiceGenerated]
    }

    async fn handle(&self, event: &DomainEvent) -> Result<(), BusError> {
        self.0
            .send(HandleEvent(event.clone()))
            .await
            .map_err(|e| BusError(format!("billing actor unavailable: {e}")))?
    }
}
