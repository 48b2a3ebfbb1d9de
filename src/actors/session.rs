//! `SessionActor`: one per active transaction. It holds the session's live figures,
//! folds in meter values from whichever `ChargerActor` currently serves its charger
//! (so it outlives reconnects), writes behind through the batch writer, and stores its
//! end durably. On restart the registry rebuilds it from storage.

use std::sync::Arc;

use actix::prelude::*;
use tracing::Instrument;

use super::batch_writer::BatchWriter;
use super::registry::{SessionClosed, StationRegistry, TokenInUse};
use crate::domain::ports::{SessionProgress, SessionSample, Store, StoreError};
use crate::domain::{IdToken, MeterSample, Session, SessionError, TransactionEvent};
use crate::metrics::Metrics;

pub struct SessionActor {
    session: Session,
    store: Arc<dyn Store>,
    writer: BatchWriter,
    registry: Addr<StationRegistry>,
    metrics: Arc<Metrics>,
    span: tracing::Span,
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
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.metrics.active_sessions.inc();
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
            id_token,
        });
    }
}

/// Meter samples for this session. Sent by `ChargerActor` (MeterValues, TransactionEvent).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordSamples(pub Vec<MeterSample>);

impl Handler<RecordSamples> for SessionActor {
    type Result = ();

    fn handle(&mut self, RecordSamples(samples): RecordSamples, _: &mut Self::Context) {
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
        if changed {
            self.write_progress(self.session.id_token.clone());
        }
    }
}

/// The driver's token, for a session the charger started before authorization.
/// Sent by `ChargerActor` (2.0.1 TransactionEvent with an idToken).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetToken(pub IdToken);

impl Handler<SetToken> for SessionActor {
    type Result = ();

    fn handle(&mut self, SetToken(token): SetToken, _: &mut Self::Context) {
        if self.session.id_token.as_ref() == Some(&token) {
            return;
        }
        self.session.id_token = Some(token.clone());
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
/// Ended); answered once the end is stored, after which the actor stops.
#[derive(Message)]
#[rtype(result = "Result<Session, EndError>")]
pub struct EndSession(pub TransactionEvent);

impl Handler<EndSession> for SessionActor {
    type Result = ResponseActFuture<Self, Result<Session, EndError>>;

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
            act.span
                .in_scope(|| tracing::info!(energy_wh = ended.energy_wh, "session ended"));
            act.registry.do_send(SessionClosed {
                session: ended.clone(),
            });
            ctx.stop();
            Ok(ended)
        }))
    }
}

/// The session as it stands now. Sent by the registry for the APIs.
#[derive(Message)]
#[rtype(result = "Session")]
pub struct Snapshot;

impl Handler<Snapshot> for SessionActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.session.clone())
    }
}
