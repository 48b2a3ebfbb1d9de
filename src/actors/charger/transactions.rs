//! Transaction events, whatever the OCPP version: the live session found (or rebuilt,
//! or opened), fed and ended, stale ones superseded, remote starts matched.

use super::*;

pub(super) struct TransactionOutcome {
    pub(super) info: Option<IdTokenInfo>,
    pub(super) transaction_id: TransactionId,
    /// The session still running, and whether this event started it.
    pub(super) live: Option<(SessionHandle, bool)>,
    /// The connector whose transaction this event ended.
    pub(super) ended_on: Option<ConnectorId>,
    /// The final cost, for the answer to an end.
    pub(super) total_cost: Option<Money>,
    /// The running cost, when the charger should be told it (CostUpdated).
    pub(super) cost_update: Option<Money>,
    /// This event stored a new session (and its domain event).
    pub(super) opened: bool,
}

pub(super) struct RemoteStart {
    pub(super) token_key: String,
    pub(super) connector_id: Option<ConnectorId>,
    pub(super) accepted_at: Instant,
}

impl ChargerActor {
    /// Handles a transaction event, whatever the version: finds the live session (the
    /// registry rebuilds it from storage when needed) or starts one, feeds it, ends it.
    /// Repeated and late events (offline replay) never create a second session.
    pub(super) fn on_transaction(
        &mut self,
        id: String,
        action: &'static str,
        event: TransactionEvent,
        ctx: &mut Context<Self>,
    ) {
        let now = Utc::now();
        let services = self.services.clone();
        let charger = self.id.clone();
        let remote_start = match (&event.id_token, event.kind) {
            (Some(token), TransactionEventKind::Started) => self.take_remote_start(
                token,
                event.connector_id.unwrap_or(ConnectorId::WHOLE_CHARGER),
            ),
            _ => false,
        };
        let cached = event
            .transaction_id
            .as_ref()
            .and_then(|tx| self.sessions.get(tx))
            .filter(|h| h.addr.connected())
            .cloned();
        let work = async move {
            let kind = event.kind;
            let info = match &event.id_token {
                Some(token) => {
                    let record = services.store.id_token(token).await?;
                    let busy = match (kind, event.connector_id) {
                        (TransactionEventKind::Started, connector) => services
                            .registry
                            .send(TokenBusy {
                                token: token.clone(),
                                except: connector.map(|c| (charger.clone(), c)),
                            })
                            .await
                            .unwrap_or(false),
                        _ => false,
                    };
                    Some(authorize(record.as_ref(), now, busy))
                }
                None => None,
            };
            let found = match (cached, &event.transaction_id) {
                (Some(handle), _) => Some(handle),
                (None, Some(tx)) => services
                    .registry
                    .send(FindSession {
                        charger_id: charger.clone(),
                        transaction_id: tx.clone(),
                        on: Arbiter::current(),
                    })
                    .await
                    .ok()
                    .flatten(),
                (None, None) => None,
            };
            let opened = found.is_none();
            let handle = match found {
                Some(handle) => handle,
                None => {
                    if let Some(tx) = &event.transaction_id {
                        // Not live: an event after the end (a repeat, or a late replay)...
                        if let Some(stored) =
                            services.store.session_by_transaction(&charger, tx).await?
                        {
                            return Ok(TransactionOutcome {
                                info,
                                transaction_id: stored.transaction_id,
                                live: None,
                                ended_on: None,
                                total_cost: None,
                                cost_update: None,
                                opened: false,
                            });
                        }
                        // ...or a transaction we never saw. Ids we allocate cannot be made up.
                        if event.origin == TransactionIdOrigin::Central {
                            tracing::warn!(transaction_id = %tx, "event for an unknown transaction");
                            return Ok(TransactionOutcome {
                                info,
                                transaction_id: tx.clone(),
                                live: None,
                                ended_on: None,
                                total_cost: None,
                                cost_update: None,
                                opened: false,
                            });
                        }
                    }
                    // A start, or the first event we see of a charger's transaction whose start was lost.
                    let first_register = event.samples.iter().find(|s| {
                        s.measurand == Measurand::EnergyImportRegister && s.phase.is_none()
                    });
                    let new = NewSession {
                        charger_id: charger.clone(),
                        connector_id: event.connector_id.unwrap_or(ConnectorId::WHOLE_CHARGER),
                        transaction_id: event.transaction_id.clone(),
                        id_token: event.id_token.clone(),
                        meter_start_wh: match kind {
                            TransactionEventKind::Started => event.meter_wh,
                            _ => None,
                        }
                        .or(first_register.map(|s| s.value.round() as i64))
                        .unwrap_or(0),
                        started_at: event.timestamp,
                        remote_start,
                        reservation_id: event.reservation_id,
                    };
                    let session = services.store.start_session(&new).await?;
                    services
                        .registry
                        .send(OpenSession(session, Arbiter::current()))
                        .await
                        .map_err(|_| StoreError::Backend("registry is gone".into()))?
                }
            };
            let transaction_id = handle.transaction_id.clone();
            match kind {
                TransactionEventKind::Started | TransactionEventKind::Updated => {
                    if let Some(token) = event.id_token {
                        handle.addr.do_send(SetToken(token));
                    }
                    let cost_update = if event.samples.is_empty() {
                        None
                    } else {
                        handle
                            .addr
                            .send(RecordSamples(event.samples))
                            .await
                            .ok()
                            .flatten()
                    };
                    let started = kind == TransactionEventKind::Started;
                    Ok(TransactionOutcome {
                        info,
                        transaction_id,
                        live: Some((handle, started)),
                        ended_on: None,
                        total_cost: None,
                        cost_update,
                        opened,
                    })
                }
                TransactionEventKind::Ended => {
                    let connector = handle.connector_id;
                    let mut total_cost = None;
                    match handle.addr.send(EndSession(event)).await {
                        Ok(Ok(ended)) => total_cost = ended.cost_estimate,
                        Ok(Err(EndError::Session(SessionError::AlreadyStopped(_)))) => {}
                        Ok(Err(EndError::Store(e))) => return Err(e),
                        Err(_) => {
                            return Err(StoreError::Backend(
                                "session actor died while ending".into(),
                            ));
                        }
                    }
                    Ok(TransactionOutcome {
                        info,
                        transaction_id,
                        live: None,
                        ended_on: Some(connector),
                        total_cost,
                        cost_update: None,
                        opened,
                    })
                }
            }
        };
        ctx.wait(work.instrument(self.span.clone()).into_actor(self).map(move |result, act, ctx| match result {
            Ok(outcome) => {
                // A start or an end wrote a domain event to the outbox: publish it now.
                let wrote_event = outcome.opened || outcome.ended_on.is_some();
                match outcome.live {
                    Some((handle, started)) => {
                        if started {
                            act.supersede_on(&handle, now);
                        }
                        act.sessions.insert(handle.transaction_id.clone(), handle);
                    }
                    None => {
                        act.sessions.remove(&outcome.transaction_id);
                    }
                }
                if wrote_event {
                    act.services.relay.kick();
                }
                if let Some(connector) = outcome.ended_on {
                    act.span.in_scope(|| tracing::info!(transaction_id = %outcome.transaction_id, "transaction ended"));
                    if let Some(availability) = act.scheduled_availability.remove(&connector) {
                        act.set_availability(connector, availability);
                    }
                }
                if let (Some(cost), OcppVersion::V201) = (outcome.cost_update, act.version) {
                    act.tell_cost(&outcome.transaction_id, cost, ctx);
                }
                let response = ChargerResponse::Transaction {
                    transaction_id: outcome.transaction_id,
                    id_token_info: outcome.info,
                    total_cost: outcome.total_cost,
                };
                act.reply(&id, action, Ok(response));
            }
            Err(e) => act.internal_error(&id, action, &e),
        }));
    }

    /// A new transaction on a connector ends whatever this charger still had open there
    /// (its stop was lost): otherwise that session and its token would stay busy forever.
    pub(super) fn supersede_on(&mut self, new: &SessionHandle, now: chrono::DateTime<Utc>) {
        let stale: Vec<SessionHandle> = self
            .sessions
            .values()
            .filter(|h| {
                h.connector_id == new.connector_id && h.transaction_id != new.transaction_id
            })
            .cloned()
            .collect();
        for old in stale {
            self.span.in_scope(|| tracing::warn!(session_id = %old.session_id, "ending a session whose stop never came: a new one started on its connector"));
            self.sessions.remove(&old.transaction_id);
            old.addr.do_send(EndSession(TransactionEvent {
                kind: TransactionEventKind::Ended,
                origin: TransactionIdOrigin::Charger,
                transaction_id: Some(old.transaction_id.clone()),
                connector_id: Some(old.connector_id),
                id_token: None,
                timestamp: now,
                meter_wh: None,
                samples: Vec::new(),
                stop_reason: Some("Superseded".into()),
                reservation_id: None,
                seq_no: None,
                offline: false,
            }));
        }
    }

    /// Runs `f` with the live session of `tx`, asking the registry (which may rebuild it
    /// from storage) when this connection does not know it yet. Waits in the context so
    /// later frames of this charger see the session.
    pub(super) fn with_session(
        &mut self,
        tx: TransactionId,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&SessionHandle) + 'static,
    ) {
        if let Some(handle) = self.sessions.get(&tx).filter(|h| h.addr.connected()) {
            return f(handle);
        }
        let find = self.services.registry.send(FindSession {
            charger_id: self.id.clone(),
            transaction_id: tx.clone(),
            on: Arbiter::current(),
        });
        ctx.wait(find.into_actor(self).map(move |found, act, _| match found.ok().flatten() {
            Some(handle) => {
                f(&handle);
                act.sessions.insert(tx, handle);
            }
            None => act.span.in_scope(|| tracing::warn!(transaction_id = %tx, "meter values for a transaction that is not active")),
        }));
    }

    pub(super) fn take_remote_start(&mut self, token: &IdToken, connector: ConnectorId) -> bool {
        self.remote_starts
            .retain(|r| r.accepted_at.elapsed() < REMOTE_START_WINDOW);
        let key = token.key();
        match self
            .remote_starts
            .iter()
            .position(|r| r.token_key == key && r.connector_id.is_none_or(|c| c == connector))
        {
            Some(i) => {
                self.remote_starts.remove(i);
                true
            }
            None => false,
        }
    }

    /// Tells a 2.0.1 charger the running cost of a transaction (CostUpdated, K-section
    /// of OCPP 2.0.1 Part 2); the answer is not waited for.
    pub(super) fn tell_cost(
        &mut self,
        transaction_id: &TransactionId,
        cost: Money,
        ctx: &mut Context<Self>,
    ) {
        let (reply, answer) = oneshot::channel();
        ctx.notify(SendCall {
            action: "CostUpdated".into(),
            payload: serde_json::json!({
                "totalCost": cost.as_decimal(),
                "transactionId": transaction_id.0,
            }),
            reply,
        });
        // Kept until answered: a call whose requester is gone is not sent.
        let span = self.span.clone();
        actix::spawn(async move {
            if let Ok(Err(e)) = answer.await {
                span.in_scope(|| tracing::debug!(error = ?e, "CostUpdated not taken"));
            }
        });
    }
}
