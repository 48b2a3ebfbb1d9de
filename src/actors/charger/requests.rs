//! The charger's own calls: read, checked against their schema, decoded and answered
//! in order (transactions in `transactions.rs`).

use super::*;

impl ChargerActor {
    pub(super) fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match frame::parse(text) {
            Err(e) if e.answerable => {
                let kind = e.kind;
                self.send_error(&e.message_id, "<unreadable>", kind, e.description);
            }
            Err(e) => self.span.in_scope(|| tracing::warn!(description = %e.description, "unreadable CALLRESULT/CALLERROR dropped")),
            Ok(Frame::Call(call)) => self.on_call(call, ctx),
            Ok(Frame::CallResult(result)) => self.on_answer(&result.message_id, Ok(result.payload), ctx),
            Ok(Frame::CallError(error)) => {
                let failure = CallFailure::CallError {
                    code: error.error_code,
                    description: error.description,
                    details: error.details,
                };
                self.on_answer(&error.message_id, Err(failure), ctx)
            }
        }
    }

    pub(super) fn on_call(&mut self, call: Call, ctx: &mut Context<Self>) {
        let Call {
            message_id,
            action,
            payload,
        } = call;
        let set = schemas(self.version);
        let Some(spec) = set.action(&action) else {
            // A fixed label: names chosen by the network must not grow the metric's label set.
            let shown: String = action.chars().take(64).collect();
            return self.send_error(
                &message_id,
                "<unknown>",
                RpcErrorKind::NotImplemented,
                format!("unknown action {shown:?}"),
            );
        };
        if !spec.from_charger {
            return self.send_error(
                &message_id,
                spec.name,
                RpcErrorKind::NotSupported,
                format!("{action} is sent by the central system, not by a charge point"),
            );
        }
        if let Err(v) = set.check(spec.name, PayloadKind::Request, &payload) {
            return self.send_error(&message_id, spec.name, v.kind, v.description);
        }
        if self.registration == RegistrationStatus::Rejected && spec.name != "BootNotification" {
            return self.send_error(
                &message_id,
                spec.name,
                RpcErrorKind::SecurityError,
                "charge point is not accepted; send BootNotification".into(),
            );
        }
        let request = ocpp::decode_request(self.version, spec.name, payload);
        match request {
            Ok(request) => self.on_request(message_id, spec.name, request, ctx),
            Err(v) => self.send_error(&message_id, spec.name, v.kind, v.description),
        }
    }

    /// Handles a valid charger request. Requests that need storage wait in the actor's
    /// context (`ctx.wait`), so a charger's calls are answered in the order they came.
    pub(super) fn on_request(
        &mut self,
        id: String,
        action: &'static str,
        request: ChargerRequest,
        ctx: &mut Context<Self>,
    ) {
        let most = self.services.settings.ocpp.max_connectors;
        if let Some(connector) = request.connector()
            && connector.0 > most
        {
            // What one charger stores, and the transactions it holds open (one per
            // connector), stay bounded.
            return self.send_error(
                &id,
                action,
                RpcErrorKind::PropertyConstraintViolation,
                format!("connector {connector} is beyond the {most} a charger may have (ocpp.max_connectors)"),
            );
        }
        let now = Utc::now();
        let services = self.services.clone();
        match request {
            ChargerRequest::Heartbeat => {
                self.last_heartbeat.set(now);
                self.reply(
                    &id,
                    action,
                    Ok(ChargerResponse::Heartbeat { current_time: now }),
                );
            }
            ChargerRequest::StatusNotification(report) => {
                let state =
                    ConnectorState::after(self.connectors.get(&report.connector_id), &report, now);
                self.record_connector(state);
                self.reply(&id, action, Ok(ChargerResponse::Ack));
            }
            ChargerRequest::BootNotification(boot) => {
                let charger = self.id.clone();
                let version = self.version;
                let work = async move {
                    services
                        .store
                        .record_boot(&charger, &boot, version.as_str(), now)
                        .await?;
                    Ok::<_, StoreError>(
                        services
                            .store
                            .charger(&charger)
                            .await?
                            .map(|c| c.registration.registration_status),
                    )
                };
                ctx.wait(work.instrument(self.span.clone()).into_actor(self).map(
                    move |result, act, _| match result {
                        Ok(status) => {
                            act.registration = status.unwrap_or(act.registration);
                            let ocpp = &act.services.settings.ocpp;
                            let interval_secs = match act.registration {
                                RegistrationStatus::Accepted => ocpp.heartbeat_interval_secs,
                                _ => ocpp.boot_retry_interval_secs,
                            };
                            act.span.in_scope(|| {
                                tracing::info!(
                                    status = act.registration.as_str(),
                                    "boot notification"
                                )
                            });
                            act.reply(
                                &id,
                                action,
                                Ok(ChargerResponse::BootNotification {
                                    status: act.registration,
                                    current_time: now,
                                    interval_secs,
                                }),
                            );
                        }
                        Err(e) => act.internal_error(&id, action, &e),
                    },
                ));
            }
            ChargerRequest::Authorize(token) => {
                let work = async move {
                    let record = services.store.id_token(&token).await?;
                    let busy = services
                        .registry
                        .send(TokenBusy {
                            token,
                            except: None,
                        })
                        .await
                        .unwrap_or(false);
                    Ok::<_, StoreError>(authorize(record.as_ref(), now, busy))
                };
                ctx.wait(
                    work.into_actor(self)
                        .map(move |result, act, _| match result {
                            Ok(info) => {
                                act.reply(&id, action, Ok(ChargerResponse::Authorize(info)))
                            }
                            Err(e) => act.internal_error(&id, action, &e),
                        }),
                );
            }
            ChargerRequest::Transaction(event) => self.on_transaction(id, action, event, ctx),
            ChargerRequest::DeviceReport {
                request_id,
                more_to_come,
                variables,
                ..
            } => self.on_device_report(id, action, request_id, more_to_come, variables, ctx),
            ChargerRequest::MeterValues {
                connector_id,
                transaction_id,
                samples,
            } => {
                self.reply(&id, action, Ok(ChargerResponse::Ack));
                let transaction = transaction_id.or_else(|| {
                    self.sessions
                        .values()
                        .find(|h| h.connector_id == connector_id)
                        .map(|h| h.transaction_id.clone())
                });
                match transaction {
                    Some(tx) if !samples.is_empty() => {
                        self.with_session(tx, ctx, move |handle| handle.addr.do_send(RecordSamples(samples)))
                    }
                    Some(_) => {}
                    None => self.span.in_scope(|| tracing::debug!(%connector_id, "meter values outside a transaction are not kept")),
                }
            }
            ChargerRequest::DataTransfer {
                vendor_id,
                message_id,
                ..
            } => {
                if self.services.settings.testing.fault_injection
                    && vendor_id == FAULT_INJECTION_VENDOR
                    && message_id.as_deref() == Some("panic")
                {
                    panic!("fault injection: charger actor {} told to panic", self.id);
                }
                let response = ChargerResponse::DataTransfer {
                    status: DataTransferStatus::UnknownVendorId,
                    data: None,
                };
                self.reply(&id, action, Ok(response));
            }
            ChargerRequest::SignCertificate => {
                // No certificate authority is configured: the CSR is refused, not lost silently.
                self.span.in_scope(|| {
                    tracing::warn!("SignCertificate refused: no certificate authority configured")
                });
                self.reply(
                    &id,
                    action,
                    Ok(ChargerResponse::SignCertificate { accepted: false }),
                );
            }
            ChargerRequest::Notification { kind, status } => {
                let kind = match kind {
                    NotificationKind::DiagnosticsStatus => "diagnostics",
                    NotificationKind::FirmwareStatus => "firmware",
                    NotificationKind::SignedFirmwareStatus => "signed firmware",
                    NotificationKind::LogStatus => "log upload",
                    NotificationKind::SecurityEvent => "security event",
                    NotificationKind::Other(action) => action,
                };
                self.span.in_scope(|| {
                    tracing::info!(
                        kind,
                        status = status.as_deref().unwrap_or(""),
                        "charger notification"
                    )
                });
                self.reply(&id, action, Ok(ChargerResponse::Ack));
            }
        }
    }

    pub(super) fn record_connector(&mut self, state: ConnectorState) {
        self.connectors.insert(state.clone());
        self.services
            .writer
            .connector(self.id.clone(), state.clone());
        self.services.live.publish(LiveUpdate::ChargerStatus {
            charger_id: self.id.clone(),
            connector: state.clone(),
        });
        self.services.registry.do_send(ChargerUpdate {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
            connector: state,
        });
    }

    /// Collects the parts of a device-model report; stores it whole once the last part came.
    pub(super) fn on_device_report(
        &mut self,
        id: String,
        action: &'static str,
        request_id: i64,
        more_to_come: bool,
        variables: Vec<ReportedVariable>,
        ctx: &mut Context<Self>,
    ) {
        let variables = match self.reports.add(request_id, more_to_come, variables) {
            Ok(Some(whole)) => whole,
            Ok(None) => return self.reply(&id, action, Ok(ChargerResponse::Ack)),
            Err(refused) => {
                self.span.in_scope(
                    || tracing::warn!(request_id, %refused, "device-model report part refused"),
                );
                return self.send_error(
                    &id,
                    action,
                    RpcErrorKind::GenericError,
                    refused.to_string(),
                );
            }
        };
        let (store, charger, count) = (
            self.services.store.clone(),
            self.id.clone(),
            variables.len(),
        );
        let work = async move {
            store
                .save_device_model(&charger, &variables, Utc::now())
                .await
        };
        ctx.wait(
            work.into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(()) => {
                        act.span.in_scope(|| {
                            tracing::info!(request_id, variables = count, "device model stored")
                        });
                        act.reply(&id, action, Ok(ChargerResponse::Ack));
                    }
                    Err(e) => act.internal_error(&id, action, &e),
                }),
        );
    }
}
