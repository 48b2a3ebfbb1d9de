//! The calls the central system makes to the charger: one outstanding at a time (OCPP-J
//! 1.6 §4.1.1), the rest queued with their deadlines, answers checked against their
//! schema and their accepted effects applied.

use super::*;

/// Why a CSMS→charger call produced no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    #[error("charger is not connected")]
    NotConnected,
    #[error("charger disconnected before answering")]
    Disconnected,
    #[error("charger did not answer in time")]
    Timeout,
    #[error("charger answered with CALLERROR {code}: {description}")]
    CallError {
        code: String,
        description: String,
        details: Value,
    },
    #[error("charger's answer does not match the schema: {0}")]
    InvalidResponse(String),
    #[error("too many calls are waiting for this charger")]
    Busy,
}

pub(super) struct PendingCall {
    pub(super) message_id: String,
    pub(super) action: String,
    pub(super) request: Value,
    pub(super) reply: oneshot::Sender<Result<Value, CallFailure>>,
    pub(super) timer: SpawnHandle,
    pub(super) sent_at: Instant,
}

pub(super) struct QueuedCall {
    pub(super) action: String,
    pub(super) payload: Value,
    pub(super) reply: oneshot::Sender<Result<Value, CallFailure>>,
    /// The call's timeout runs from when it was queued, not from when it was sent.
    pub(super) deadline: Instant,
}

/// Operator calls that may wait for one charger; more are refused (503) rather than
/// piling up behind a charger that answers slowly.
const MAX_QUEUED_CALLS: usize = 100;

impl ChargerActor {
    /// Sends the next queued operator call unless one is outstanding: OCPP-J allows a
    /// single outstanding CALL per direction (1.6 §4.1.1).
    pub(super) fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_some() {
            return;
        }
        while let Some(call) = self.queue.pop_front() {
            self.services.metrics.queued_calls.dec();
            if call.reply.is_closed() {
                continue;
            }
            let Some(remaining) = call.deadline.checked_duration_since(Instant::now()) else {
                self.services
                    .metrics
                    .message("out", &call.action, "timeout");
                let _ = call.reply.send(Err(CallFailure::Timeout));
                continue;
            };
            let message_id = Uuid::new_v4().to_string();
            let frame = Frame::Call(Call {
                message_id: message_id.clone(),
                action: call.action.clone(),
                payload: call.payload.clone(),
            });
            self.link.text(&frame.to_text());
            let timeout_id = message_id.clone();
            let timer = ctx.run_later(remaining, move |act, ctx| act.on_timeout(&timeout_id, ctx));
            self.pending = Some(PendingCall {
                message_id,
                action: call.action,
                request: call.payload,
                reply: call.reply,
                timer,
                sent_at: Instant::now(),
            });
            return;
        }
    }

    /// Answers queued calls whose deadline has passed while they waited.
    pub(super) fn expire_queued(&mut self) {
        let now = Instant::now();
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|c| c.deadline <= now);
        self.queue = waiting;
        for call in expired {
            self.services.metrics.queued_calls.dec();
            self.services
                .metrics
                .message("out", &call.action, "timeout");
            let _ = call.reply.send(Err(CallFailure::Timeout));
        }
    }

    pub(super) fn on_answer(
        &mut self,
        message_id: &str,
        answer: Result<Value, CallFailure>,
        ctx: &mut Context<Self>,
    ) {
        if self
            .pending
            .as_ref()
            .is_none_or(|p| p.message_id != message_id)
        {
            self.span.in_scope(|| {
                tracing::warn!(
                    ocpp.message_id = message_id,
                    "answer to no outstanding call; dropped"
                )
            });
            return;
        }
        let call = self
            .pending
            .take()
            .expect("checked to be Some with this id just above; qed");
        ctx.cancel_future(call.timer);
        let metrics = self.services.metrics.clone();
        metrics
            .call_duration
            .with_label_values(&[call.action.as_str()])
            .observe(call.sent_at.elapsed().as_secs_f64());
        let result = answer.and_then(|payload| {
            schemas(self.version)
                .check(&call.action, PayloadKind::Response, &payload)
                .map_err(|v| CallFailure::InvalidResponse(v.description))?;
            Ok(payload)
        });
        let label = match &result {
            Ok(payload) => {
                self.apply_effect(&call.action, &call.request, payload);
                "ok"
            }
            Err(CallFailure::CallError { .. }) => "call_error",
            Err(_) => "invalid_response",
        };
        metrics.message("out", &call.action, label);
        let _ = call.reply.send(result);
        self.send_next(ctx);
    }

    pub(super) fn on_timeout(&mut self, message_id: &str, ctx: &mut Context<Self>) {
        if self
            .pending
            .as_ref()
            .is_none_or(|p| p.message_id != message_id)
        {
            return;
        }
        let call = self
            .pending
            .take()
            .expect("checked to be Some with this id just above; qed");
        self.span.in_scope(|| tracing::warn!(ocpp.action = %call.action, ocpp.message_id = message_id, "call timed out"));
        self.services
            .metrics
            .message("out", &call.action, "timeout");
        let _ = call.reply.send(Err(CallFailure::Timeout));
        self.send_next(ctx);
    }

    pub(super) fn apply_effect(&mut self, action: &str, request: &Value, response: &Value) {
        match ocpp::call_effect(self.version, action, request, response) {
            Some(CallEffect::Availability {
                connector_id,
                availability,
                scheduled,
            }) => {
                let targets: Vec<ConnectorId> = if connector_id == ConnectorId::WHOLE_CHARGER {
                    self.connectors.ids().collect()
                } else {
                    vec![connector_id]
                };
                for connector in targets {
                    // Scheduled: the charger changes once the transaction on it has ended.
                    let busy = self.sessions.values().any(|h| h.connector_id == connector);
                    if scheduled && busy {
                        self.scheduled_availability.insert(connector, availability);
                    } else {
                        self.set_availability(connector, availability);
                    }
                }
            }
            Some(CallEffect::RemoteStartAccepted {
                id_token,
                connector_id,
            }) => {
                self.remote_starts.push(RemoteStart {
                    token_key: id_token.key(),
                    connector_id,
                    accepted_at: Instant::now(),
                });
            }
            None => {}
        }
    }

    pub(super) fn set_availability(&mut self, connector: ConnectorId, availability: Availability) {
        let now = Utc::now();
        {
            let state = match self.connectors.get(&connector) {
                Some(previous) => ConnectorState {
                    availability,
                    updated_at: now,
                    ..previous.clone()
                },
                None => ConnectorState {
                    connector_id: connector,
                    status: match availability {
                        Availability::Operative => ConnectorStatus::Available,
                        Availability::Inoperative => ConnectorStatus::Unavailable,
                    },
                    error_code: None,
                    info: None,
                    availability,
                    updated_at: now,
                },
            };
            self.record_connector(state);
        }
    }

    pub(super) fn fail_outstanding(&mut self) {
        if let Some(call) = self.pending.take() {
            let _ = call.reply.send(Err(CallFailure::Disconnected));
        }
        for call in self.queue.drain(..) {
            self.services.metrics.queued_calls.dec();
            let _ = call.reply.send(Err(CallFailure::Disconnected));
        }
    }
}

/// An operator's CSMS→charger call, payload already checked against the request
/// schema. Sent by the directory; answered through `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendCall {
    pub action: String,
    pub payload: Value,
    pub reply: oneshot::Sender<Result<Value, CallFailure>>,
}

impl Handler<SendCall> for ChargerActor {
    type Result = ();

    fn handle(&mut self, call: SendCall, ctx: &mut Self::Context) {
        if self.queue.len() >= MAX_QUEUED_CALLS {
            let _ = call.reply.send(Err(CallFailure::Busy));
            return;
        }
        let timeout = self.services.settings.ocpp.call_timeout();
        self.queue.push_back(QueuedCall {
            action: call.action,
            payload: call.payload,
            reply: call.reply,
            deadline: Instant::now() + timeout,
        });
        self.services.metrics.queued_calls.inc();
        ctx.run_later(timeout, |act, _| act.expire_queued());
        self.send_next(ctx);
    }
}
