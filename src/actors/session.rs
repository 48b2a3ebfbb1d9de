//! `SessionActor`: one per active transaction. It holds the session's live figures,
//! folds in meter values from whichever `ChargerActor` currently serves its charger
//! (so it outlives reconnects), writes behind through the batch writer, and stores its
//! end durably. On restart the registry rebuilds it from storage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;

use super::batch_writer::BatchWriter;
use super::notifier::LiveHub;
use super::registry::{SessionClosed, StationRegistry, TokenInUse};
use crate::domain::billing::{TariffRecord, month_start};
use crate::domain::live::LiveUpdate;
use crate::domain::money::Money;
use crate::domain::ports::{SessionProgress, SessionSample, Store, StoreError};
use crate::domain::tariff::SessionUsage;
use crate::domain::{IdToken, MeterSample, Session, SessionError, TransactionEvent};
use crate::metrics::Metrics;

pub struct SessionActor {
    session: Session,
    store: Arc<dyn Store>,
    writer: BatchWriter,
    registry: Addr<StationRegistry>,
    metrics: Arc<Metrics>,
    span: tracing::Span,
    /// The tariff that will bill this session, once the driver is known.
    pricing: Option<Pricing>,
    /// The last cost told to the charger (CostUpdated), and when.
    cost_told: Option<(Money, Instant)>,
    cost_update_interval: Duration,
    live: Option<Arc<LiveHub>>,
}

/// What the session will cost is computed with the tariff billing will use.
#[derive(Debug, Clone)]
struct Pricing {
    tariff: TariffRecord,
    /// Energy already invoiced this month under the same flat rate (fair use).
    month_energy_before_wh: i64,
}

/// A running session as the APIs show it: its figures and its cost so far.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSession {
    #[serde(flatten)]
    pub session: Session,
    /// Gross (with VAT) under the applicable tariff; idle fees count from when the
    /// energy register stopped rising. `None` until a tariff is known.
    pub cost_estimate: Option<Money>,
}

impl SessionActor {
    pub fn new(
        session: Session,
        store: Arc<dyn Store>,
        writer: BatchWriter,
        registry: Addr<StationRegistry>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let span = tracing::info_span!("session", charger_id = %session.charger_id, session_id = %session.session_id);
        SessionActor {
            session,
            store,
            writer,
            registry,
            metrics,
            span,
            pricing: None,
            cost_told: None,
            cost_update_interval: Duration::from_secs(60),
            live: None,
        }
    }

    /// Where this session's updates go live.
    pub fn live_to(mut self, hub: Arc<LiveHub>) -> Self {
        self.live = Some(hub);
        self
    }

    /// Tells watchers the session as it is, with `cost` (the caller's, computed once).
    /// Nothing is built when nobody can be listening.
    fn publish_with(&self, cost: Option<Money>) {
        if let Some(hub) = self.live.as_ref().filter(|hub| hub.has_listeners()) {
            hub.publish(LiveUpdate::SessionUpdated {
                session: self.session.clone(),
                cost_estimate: cost,
            });
        }
    }

    fn publish(&self) {
        if self.live.as_ref().is_some_and(|hub| hub.has_listeners()) {
            self.publish_with(self.cost(Utc::now()));
        }
    }

    /// How often at most the charger is told the running cost.
    pub fn cost_update_interval(mut self, every: Duration) -> Self {
        self.cost_update_interval = every;
        self
    }

    /// Looks up the tariff that will bill this session (the driver behind its token,
    /// then overrides, plan, default); one round of reads per session, not per sample.
    fn price(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.session.id_token.clone() else {
            return;
        };
        let store = self.store.clone();
        let charger = self.session.charger_id.clone();
        // Fair use counts this month's invoices so far (billing counts them at the end).
        let since = month_start(Utc::now());
        let lookup = async move {
            let Some(user) = store.token_owner(&token).await? else {
                return Ok(None);
            };
            let Some(tariff) = store
                .tariff_candidates(&charger, Some(user))
                .await?
                .applicable()
            else {
                return Ok(None);
            };
            let month_energy_before_wh = if tariff.tariff.monthly_charge().is_some() {
                store
                    .invoiced_energy_wh(user, tariff.tariff_id, since)
                    .await?
            } else {
                0
            };
            Ok::<_, StoreError>(Some(Pricing {
                tariff,
                month_energy_before_wh,
            }))
        }
        .instrument(self.span.clone());
        // The actor waits for its tariff: every update after this carries a cost.
        ctx.wait(lookup.into_actor(self).map(|result, act, _| match result {
            Ok(pricing) => {
                let known = pricing.is_some();
                act.pricing = pricing;
                if known {
                    // The cost is known now: watchers see it.
                    act.publish();
                }
            }
            Err(e) => {
                act.span.in_scope(
                    || tracing::warn!(error = %e, "no cost estimate: tariff lookup failed"),
                )
            }
        }));
    }

    /// A session rebuilt from a row without its idle clock (withheld by the store: a
    /// replica that predates the clock moved its energy, ADR 0023) gets it back from its
    /// samples, before any new reading: otherwise the next reading, or the end, would
    /// start it and the idle time so far would go unbilled. One read, at the rebuild.
    fn restore_idle_clock(&mut self, ctx: &mut Context<Self>) {
        if self.session.idle_since.is_some() || self.session.last_meter_at.is_none() {
            return;
        }
        let store = self.store.clone();
        let id = self.session.session_id;
        let load = async move { store.samples(id).await }.instrument(self.span.clone());
        ctx.wait(load.into_actor(self).map(|result, act, _| match result {
            Ok(samples) => {
                act.session.idle_since = act.session.restored_idle_since(&samples);
                act.span.in_scope(|| {
                    tracing::info!(
                        samples = samples.len(),
                        restored = act.session.idle_since.is_some(),
                        "idle clock replayed from the session's samples"
                    )
                });
                if act.session.idle_since.is_some() {
                    act.write_progress(None);
                }
            }
            Err(e) => act.span.in_scope(|| {
                tracing::warn!(error = %e, "idle clock not replayed: reading the samples failed; the next reading starts it")
            }),
        }));
    }

    /// The cost so far (at `now` for the idle fee).
    fn cost(&self, now: DateTime<Utc>) -> Option<Money> {
        let pricing = self.pricing.as_ref()?;
        let charge = pricing.tariff.tariff.session_charge(&SessionUsage {
            energy_wh: self.session.energy_wh,
            idle_minutes: self.session.idle_minutes(now),
            month_energy_before_wh: pricing.month_energy_before_wh,
        });
        Some(charge.gross)
    }

    fn live(&self) -> LiveSession {
        LiveSession {
            session: self.session.clone(),
            cost_estimate: self.cost(Utc::now()),
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.active_sessions.inc();
        self.restore_idle_clock(ctx);
        self.price(ctx);
        self.span
            .in_scope(|| tracing::debug!("session actor started"));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.active_sessions.dec();
    }
}

impl SessionActor {
    fn write_progress(&self, id_token: Option<IdToken>) {
        self.writer.progress(SessionProgress {
            session_id: self.session.session_id,
            energy_wh: self.session.energy_wh,
            power_w: self.session.power_w,
            soc_percent: self.session.soc_percent,
            last_meter_at: self.session.last_meter_at,
            idle_since: self.session.idle_since,
            id_token,
        });
    }
}

/// Meter samples for this session. Sent by `ChargerActor` (MeterValues, TransactionEvent);
/// answered with the running cost when the charger should be told it (it changed, and
/// the last time was at least `billing.cost_update_interval_secs` ago).
#[derive(Message)]
#[rtype(result = "Option<Money>")]
pub struct RecordSamples(pub Vec<MeterSample>);

impl Handler<RecordSamples> for SessionActor {
    type Result = Option<Money>;

    fn handle(
        &mut self,
        RecordSamples(samples): RecordSamples,
        _: &mut Self::Context,
    ) -> Option<Money> {
        let changed = self.session.apply_samples(&samples);
        let id = self.session.session_id;
        self.writer.samples(
            samples
                .into_iter()
                .map(|sample| SessionSample {
                    session_id: id,
                    sample,
                })
                .collect(),
        );
        // One cost per reading, for the watchers and the charger alike.
        let cost = self.cost(Utc::now());
        if changed {
            self.write_progress(self.session.id_token.clone());
            self.publish_with(cost);
        }
        let cost = cost?;
        let due = match self.cost_told {
            None => true,
            Some((told, at)) => told != cost && at.elapsed() >= self.cost_update_interval,
        };
        due.then(|| {
            self.cost_told = Some((cost, Instant::now()));
            cost
        })
    }
}

/// The driver's token, for a session the charger started before authorization.
/// Sent by `ChargerActor` (2.0.1 TransactionEvent with an idToken).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetToken(pub IdToken);

impl Handler<SetToken> for SessionActor {
    type Result = ();

    fn handle(&mut self, SetToken(token): SetToken, ctx: &mut Self::Context) {
        if self.session.id_token.as_ref() == Some(&token) {
            return;
        }
        self.session.id_token = Some(token.clone());
        self.price(ctx);
        self.publish();
        self.registry.do_send(TokenInUse {
            token: token.clone(),
            session_id: self.session.session_id,
        });
        self.write_progress(Some(token));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The transaction has ended. Sent by `ChargerActor` (StopTransaction, TransactionEvent
/// Ended); answered once the end is stored (with the final cost, when a tariff is
/// known), after which the actor stops.
#[derive(Message)]
#[rtype(result = "Result<LiveSession, EndError>")]
pub struct EndSession(pub TransactionEvent);

impl Handler<EndSession> for SessionActor {
    type Result = ResponseActFuture<Self, Result<LiveSession, EndError>>;

    fn handle(&mut self, EndSession(stop): EndSession, _: &mut Self::Context) -> Self::Result {
        let mut ended = self.session.clone();
        if let Err(e) = ended.end(&stop) {
            return Box::pin(fut::ready(Err(e.into())));
        }
        let store = self.store.clone();
        let samples = stop.samples;
        let write = {
            let ended = ended.clone();
            async move { store.stop_session(&ended, &samples).await }.instrument(self.span.clone())
        };
        Box::pin(write.into_actor(self).map(move |result, act, ctx| {
            result?;
            act.session = ended.clone();
            act.publish();
            act.span
                .in_scope(|| tracing::info!(energy_wh = ended.energy_wh, "session ended"));
            act.registry.do_send(SessionClosed {
                session: ended.clone(),
            });
            ctx.stop();
            let stopped_at = ended.stopped_at.unwrap_or_else(Utc::now);
            Ok(LiveSession {
                session: ended,
                cost_estimate: act.cost(stopped_at),
            })
        }))
    }
}

/// The session as it stands now, with its cost so far. Sent by the registry for the APIs.
#[derive(Message)]
#[rtype(result = "LiveSession")]
pub struct Snapshot;

impl Handler<Snapshot> for SessionActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.live())
    }
}
