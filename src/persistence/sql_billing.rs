// Billing and webhook storage, shared text for both SQL backends like `sql_store.rs`
// (which it follows in the same `include!`). Every effect of a consumer is written in
// one transaction with the consumer's receipt for the event that caused it.

use crate::domain::billing::{
    CardDetails, Invoice, InvoiceKind, InvoiceStatus, NewInvoice, Payment, PaymentMethod, PaymentStatus, TariffCandidates,
    TariffRecord, TariffScope, invoice_number,
};
use crate::domain::money::{Currency, Money};
use crate::domain::ports::{BillingStore, InvoiceFilter, Receipt, WebhookStore};
use crate::domain::tariff::{Charge, InvoiceLine, Tariff, TariffKind};
use crate::domain::webhook::{DeliveryStatus, Webhook, WebhookDelivery};
use chrono::Datelike;
use uuid::Uuid;

type Conn = <Db as sqlx::Database>::Connection;

fn tariff_from_row(row: &DbRow) -> StoreResult<TariffRecord> {
    let currency: String = row.try_get("currency").map_err(backend)?;
    let vat: i64 = row.try_get("vat_basis_points").map_err(backend)?;
    let kind: Json<TariffKind> = row.try_get("definition").map_err(backend)?;
    Ok(TariffRecord {
        tariff_id: row.try_get("tariff_id").map_err(backend)?,
        tariff: Tariff {
            name: row.try_get("name").map_err(backend)?,
            currency: Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
            vat_basis_points: u32::try_from(vat).map_err(|_| corrupt("VAT rate", &vat.to_string()))?,
            kind: kind.0,
        },
        is_default: row.try_get("is_default").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

fn invoice_from_row(row: &DbRow) -> StoreResult<Invoice> {
    let kind: String = row.try_get("kind").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let currency: String = row.try_get("currency").map_err(backend)?;
    let currency = Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?;
    let lines: Json<Vec<InvoiceLine>> = row.try_get("lines").map_err(backend)?;
    let vat_bp: i64 = row.try_get("vat_basis_points").map_err(backend)?;
    let session: Option<i64> = row.try_get("session_id").map_err(backend)?;
    let money = |column: &str| -> StoreResult<Money> { Ok(Money::new(row.try_get(column).map_err(backend)?, currency)) };
    Ok(Invoice {
        invoice_id: row.try_get("invoice_id").map_err(backend)?,
        invoice_number: row.try_get("invoice_number").map_err(backend)?,
        user_id: row.try_get("user_id").map_err(backend)?,
        kind: InvoiceKind::parse(&kind).ok_or_else(|| corrupt("invoice kind", &kind))?,
        session_id: session.map(SessionId),
        period: row.try_get("period").map_err(backend)?,
        tariff_id: row.try_get("tariff_id").map_err(backend)?,
        tariff_name: row.try_get("tariff_name").map_err(backend)?,
        energy_wh: row.try_get("energy_wh").map_err(backend)?,
        charge: Charge {
            lines: lines.0,
            net: money("net")?,
            vat: money("vat")?,
            gross: money("gross")?,
            vat_basis_points: u32::try_from(vat_bp).map_err(|_| corrupt("VAT rate", &vat_bp.to_string()))?,
        },
        status: InvoiceStatus::parse(&status).ok_or_else(|| corrupt("invoice status", &status))?,
        issued_at: row.try_get("issued_at").map_err(backend)?,
    })
}

fn count(row: &DbRow, column: &str) -> StoreResult<u32> {
    let n: i64 = row.try_get(column).map_err(backend)?;
    u32::try_from(n).map_err(|_| corrupt(column, &n.to_string()))
}

fn payment_from_row(row: &DbRow) -> StoreResult<Payment> {
    let currency: String = row.try_get("currency").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    Ok(Payment {
        payment_id: row.try_get("payment_id").map_err(backend)?,
        invoice_id: row.try_get("invoice_id").map_err(backend)?,
        user_id: row.try_get("user_id").map_err(backend)?,
        amount: Money::new(
            row.try_get("amount").map_err(backend)?,
            Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
        ),
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status", &status))?,
        attempts: count(row, "attempts")?,
        declines: count(row, "declines")?,
        transient_streak: count(row, "transient_streak")?,
        reported_failures: count(row, "reported_failures")?,
        charge_key: row.try_get("charge_key").map_err(backend)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(backend)?,
        last_error: row.try_get("last_error").map_err(backend)?,
        gateway_charge_id: row.try_get("gateway_charge_id").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    })
}

fn payment_method_from_row(row: &DbRow) -> StoreResult<PaymentMethod> {
    let month: i64 = row.try_get("exp_month").map_err(backend)?;
    let year: i64 = row.try_get("exp_year").map_err(backend)?;
    Ok(PaymentMethod {
        payment_method_id: row.try_get("payment_method_id").map_err(backend)?,
        user_id: row.try_get("user_id").map_err(backend)?,
        gateway: row.try_get("gateway").map_err(backend)?,
        gateway_token: row.try_get("gateway_token").map_err(backend)?,
        card: CardDetails {
            brand: row.try_get("brand").map_err(backend)?,
            last4: row.try_get("last4").map_err(backend)?,
            exp_month: u32::try_from(month).map_err(|_| corrupt("expiry month", &month.to_string()))?,
            exp_year: i32::try_from(year).map_err(|_| corrupt("expiry year", &year.to_string()))?,
        },
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

fn webhook_from_row(row: &DbRow) -> StoreResult<Webhook> {
    let types: Json<Vec<EventType>> = row.try_get("event_types").map_err(backend)?;
    Ok(Webhook {
        webhook_id: row.try_get("webhook_id").map_err(backend)?,
        url: row.try_get("url").map_err(backend)?,
        secret: row.try_get("secret").map_err(backend)?,
        event_types: types.0,
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

fn delivery_from_row(row: &DbRow) -> StoreResult<WebhookDelivery> {
    let event_type: String = row.try_get("event_type").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    let code: Option<i64> = row.try_get("last_status_code").map_err(backend)?;
    let body: Json<serde_json::Value> = row.try_get("body").map_err(backend)?;
    Ok(WebhookDelivery {
        delivery_id: row.try_get("delivery_id").map_err(backend)?,
        webhook_id: row.try_get("webhook_id").map_err(backend)?,
        event_id: row.try_get("event_id").map_err(backend)?,
        event_type: EventType::parse(&event_type).ok_or_else(|| corrupt("event type", &event_type))?,
        body: body.0,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status", &status))?,
        attempts: count(row, "attempts")?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(backend)?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: row.try_get("last_error").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        delivered_at: row.try_get("delivered_at").map_err(backend)?,
    })
}

/// Appends ` IN ($1, $2, ...)` with `values` bound.
fn push_in<'t, T>(query: &mut QueryBuilder<Db>, values: impl IntoIterator<Item = T>)
where
    T: sqlx::Encode<'t, Db> + sqlx::Type<Db>,
{
    query.push(" IN (");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

/// Stores a receipt; false when the consumer had already processed the event.
async fn take_receipt(conn: &mut Conn, receipt: Receipt<'_>) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO processed_event (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(receipt.consumer)
    .bind(receipt.event_id)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

async fn tariff_where(conn: &mut Conn, sql: &'static str, key: &str) -> StoreResult<Option<TariffRecord>> {
    sqlx::query(sql).bind(key).fetch_optional(&mut *conn).await.map_err(backend)?.as_ref().map(tariff_from_row).transpose()
}

#[async_trait]
impl BillingStore for SqlStore {
    async fn create_tariff(&self, t: &TariffRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if t.is_default {
            sqlx::query("UPDATE tariff SET is_default = FALSE WHERE is_default").execute(&mut *tx).await.map_err(backend)?;
        }
        sqlx::query(
            "INSERT INTO tariff (tariff_id, name, currency, vat_basis_points, definition, is_default, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.tariff_id)
        .bind(t.tariff.name.as_str())
        .bind(t.tariff.currency.as_str())
        .bind(i64::from(t.tariff.vat_basis_points))
        .bind(Json(&t.tariff.kind))
        .bind(t.is_default)
        .bind(t.created_at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn tariffs(&self) -> StoreResult<Vec<TariffRecord>> {
        sqlx::query("SELECT * FROM tariff ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(tariff_from_row)
            .collect()
    }

    async fn tariff(&self, id: Uuid) -> StoreResult<Option<TariffRecord>> {
        sqlx::query("SELECT * FROM tariff WHERE tariff_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tariff_from_row)
            .transpose()
    }

    async fn set_tariff_override(&self, scope: &TariffScope, tariff: Option<Uuid>) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        match tariff {
            Some(tariff) => {
                sqlx::query(
                    "INSERT INTO tariff_override (scope, scope_key, tariff_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (scope, scope_key) DO UPDATE SET tariff_id = excluded.tariff_id",
                )
                .bind(scope.kind())
                .bind(scope.key())
                .bind(tariff)
                .execute(&self.writes)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        StoreError::NotFound(format!("tariff {tariff}"))
                    }
                    _ => backend(e),
                })?;
            }
            None => {
                sqlx::query("DELETE FROM tariff_override WHERE scope = $1 AND scope_key = $2")
                    .bind(scope.kind())
                    .bind(scope.key())
                    .execute(&self.writes)
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(())
    }

    async fn tariff_candidates(&self, charger: &ChargerId, user: Option<Uuid>) -> StoreResult<TariffCandidates> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let charger_tariff = tariff_where(
            &mut conn,
            "SELECT t.* FROM tariff t JOIN tariff_override o ON o.tariff_id = t.tariff_id \
             WHERE o.scope = 'charger' AND o.scope_key = $1",
            charger.as_str(),
        )
        .await?;
        let operator = tariff_where(
            &mut conn,
            "SELECT t.* FROM tariff t JOIN tariff_override o ON o.tariff_id = t.tariff_id \
             JOIN charger c ON c.operator_id = o.scope_key WHERE o.scope = 'operator' AND c.charger_id = $1",
            charger.as_str(),
        )
        .await?;
        let plan = match user {
            Some(user) => sqlx::query(
                "SELECT t.* FROM tariff t JOIN app_user u ON u.plan_tariff_id = t.tariff_id WHERE u.user_id = $1",
            )
            .bind(user)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tariff_from_row)
            .transpose()?,
            None => None,
        };
        let default = sqlx::query("SELECT * FROM tariff WHERE is_default ORDER BY created_at DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tariff_from_row)
            .transpose()?;
        Ok(TariffCandidates { charger: charger_tariff, operator, plan, default })
    }

    async fn set_plan(&self, user: Uuid, tariff: Option<Uuid>, since: DateTime<Utc>) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE app_user SET plan_tariff_id = $2, plan_since = $3 WHERE user_id = $1")
            .bind(user)
            .bind(tariff)
            .bind(tariff.map(|_| since))
            .execute(&self.writes)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    StoreError::NotFound(format!("tariff {}", tariff.unwrap_or_default()))
                }
                _ => backend(e),
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {user}")));
        }
        Ok(())
    }

    async fn plans(&self) -> StoreResult<Vec<(Uuid, TariffRecord, DateTime<Utc>)>> {
        sqlx::query(
            "SELECT u.user_id AS plan_user_id, u.plan_since, t.* FROM app_user u \
             JOIN tariff t ON t.tariff_id = u.plan_tariff_id ORDER BY u.user_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            let since: Option<DateTime<Utc>> = row.try_get("plan_since").map_err(backend)?;
            Ok((
                row.try_get("plan_user_id").map_err(backend)?,
                tariff_from_row(row)?,
                since.unwrap_or_else(Utc::now),
            ))
        })
        .collect()
    }

    async fn add_payment_method(&self, m: &PaymentMethod) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO payment_method (payment_method_id, user_id, gateway, gateway_token, brand, last4, exp_month, \
               exp_year, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(m.payment_method_id)
        .bind(m.user_id)
        .bind(m.gateway.as_str())
        .bind(m.gateway_token.as_str())
        .bind(m.card.brand.as_str())
        .bind(m.card.last4.as_str())
        .bind(i64::from(m.card.exp_month))
        .bind(i64::from(m.card.exp_year))
        .bind(m.created_at)
        .execute(&self.writes)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound(format!("user {}", m.user_id)),
            _ => backend(e),
        })?;
        Ok(())
    }

    async fn payment_methods(&self, user: Uuid) -> StoreResult<Vec<PaymentMethod>> {
        sqlx::query("SELECT * FROM payment_method WHERE user_id = $1 ORDER BY created_at DESC, payment_method_id")
            .bind(user)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(payment_method_from_row)
            .collect()
    }

    async fn token_owner(&self, token: &IdToken) -> StoreResult<Option<Uuid>> {
        let row = sqlx::query("SELECT user_id FROM id_token WHERE id_token_key = $1")
            .bind(token.key())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(match row {
            Some(row) => row.try_get("user_id").map_err(backend)?,
            None => None,
        })
    }

    async fn invoiced_energy_wh(&self, user: Uuid, tariff: Uuid, since: DateTime<Utc>) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(energy_wh), 0) AS BIGINT) AS total FROM invoice \
             WHERE user_id = $1 AND tariff_id = $2 AND kind = 'session' AND issued_at >= $3",
        )
        .bind(user)
        .bind(tariff)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        row.try_get("total").map_err(backend)
    }

    async fn issue_invoice(&self, receipt: Option<Receipt<'_>>, new: &NewInvoice) -> StoreResult<Option<Invoice>> {
        let mut tx = self.begin_write().await?;
        if let Some(receipt) = receipt
            && !take_receipt(&mut tx, receipt).await?
        {
            return Ok(None);
        }
        let already = match (new.session_id, &new.period) {
            (Some(session), _) => sqlx::query("SELECT 1 FROM invoice WHERE session_id = $1")
                .bind(session.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?,
            (None, period) => sqlx::query("SELECT 1 FROM invoice WHERE user_id = $1 AND kind = $2 AND period = $3")
                .bind(new.user_id)
                .bind(new.kind.as_str())
                .bind(period.as_deref())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?,
        };
        if already.is_some() {
            tx.commit().await.map_err(backend)?;
            return Ok(None);
        }
        // The year's counter row is locked until this transaction ends: numbers are
        // handed out in commit order and a rolled-back invoice gives its number back.
        let year = new.issued_at.year();
        let seq: i64 = sqlx::query(
            "INSERT INTO invoice_counter (invoice_year, last_seq) VALUES ($1, 1) \
             ON CONFLICT (invoice_year) DO UPDATE SET last_seq = invoice_counter.last_seq + 1 RETURNING last_seq",
        )
        .bind(i64::from(year))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?
        .try_get("last_seq")
        .map_err(backend)?;
        let invoice = Invoice {
            invoice_id: new.invoice_id,
            invoice_number: invoice_number(year, seq),
            user_id: new.user_id,
            kind: new.kind,
            session_id: new.session_id,
            period: new.period.clone(),
            tariff_id: Some(new.tariff_id),
            tariff_name: new.tariff_name.clone(),
            energy_wh: new.energy_wh,
            charge: new.charge.clone(),
            status: new.initial_status(),
            issued_at: new.issued_at,
        };
        sqlx::query(
            "INSERT INTO invoice (invoice_id, invoice_number, invoice_year, invoice_seq, user_id, kind, session_id, period, \
               tariff_id, tariff_name, energy_wh, currency, net, vat, gross, vat_basis_points, lines, status, issued_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(invoice.invoice_id)
        .bind(invoice.invoice_number.as_str())
        .bind(i64::from(year))
        .bind(seq)
        .bind(invoice.user_id)
        .bind(invoice.kind.as_str())
        .bind(invoice.session_id.map(|s| s.0))
        .bind(invoice.period.as_deref())
        .bind(invoice.tariff_id)
        .bind(invoice.tariff_name.as_str())
        .bind(invoice.energy_wh)
        .bind(invoice.charge.gross.currency.as_str())
        .bind(invoice.charge.net.amount)
        .bind(invoice.charge.vat.amount)
        .bind(invoice.charge.gross.amount)
        .bind(i64::from(invoice.charge.vat_basis_points))
        .bind(Json(&invoice.charge.lines))
        .bind(invoice.status.as_str())
        .bind(invoice.issued_at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_event(&mut tx, &DomainEvent::invoice_generated(&invoice)).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(invoice))
    }

    async fn mark_processed(&self, receipt: Receipt<'_>) -> StoreResult<bool> {
        let (store, consumer, event_id) = (self.clone(), receipt.consumer.to_owned(), receipt.event_id);
        self.on_write_thread(async move { store.mark_processed_here(&consumer, event_id).await }).await
    }

    async fn invoice(&self, id: Uuid) -> StoreResult<Option<Invoice>> {
        sqlx::query("SELECT * FROM invoice WHERE invoice_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(invoice_from_row)
            .transpose()
    }

    async fn invoices(&self, filter: &InvoiceFilter) -> StoreResult<Vec<Invoice>> {
        let mut query = QueryBuilder::<Db>::new("SELECT * FROM invoice WHERE 1 = 1");
        if let Some(user) = filter.user_id {
            query.push(" AND user_id = ").push_bind(user);
        }
        if let Some(session) = filter.session_id {
            query.push(" AND session_id = ").push_bind(session.0);
        }
        query.push(" ORDER BY issued_at DESC, invoice_year DESC, invoice_seq DESC LIMIT ").push_bind(i64::from(filter.limit.max(1)));
        query.push(" OFFSET ").push_bind(i64::from(filter.offset));
        query.build().fetch_all(&self.pool).await.map_err(backend)?.iter().map(invoice_from_row).collect()
    }

    async fn invoices_of_sessions(&self, sessions: &[SessionId]) -> StoreResult<Vec<Invoice>> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Db>::new("SELECT * FROM invoice WHERE session_id");
        push_in(&mut query, sessions.iter().map(|s| s.0));
        query.build().fetch_all(&self.pool).await.map_err(backend)?.iter().map(invoice_from_row).collect()
    }

    async fn billed_sessions(&self, sessions: &[SessionId]) -> StoreResult<Vec<SessionId>> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let mut invoiced = QueryBuilder::<Db>::new("SELECT session_id FROM invoice WHERE session_id");
        push_in(&mut invoiced, sessions.iter().map(|s| s.0));
        let mut billed: Vec<SessionId> = invoiced
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| row.try_get("session_id").map(SessionId).map_err(backend))
            .collect::<StoreResult<_>>()?;
        // Ends billing saw but had nobody or no tariff to bill: its receipt for SESSION_ENDED.
        let mut seen = QueryBuilder::<Db>::new(
            "SELECT o.aggregate_id FROM outbox_event o JOIN processed_event p ON p.event_id = o.event_id \
             WHERE p.consumer = 'billing' AND o.event_type = 'SESSION_ENDED' AND o.aggregate_id",
        );
        push_in(&mut seen, sessions.iter().map(|s| s.0.to_string()));
        for row in seen.build().fetch_all(&self.pool).await.map_err(backend)? {
            let aggregate: String = row.try_get("aggregate_id").map_err(backend)?;
            if let Ok(id) = aggregate.parse() {
                billed.push(SessionId(id));
            }
        }
        billed.sort();
        billed.dedup();
        Ok(billed)
    }

    async fn open_payment(&self, receipt: Receipt<'_>, p: &Payment) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        if !take_receipt(&mut tx, receipt).await? {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO payment (payment_id, invoice_id, user_id, amount, currency, status, attempts, declines, \
               transient_streak, reported_failures, charge_key, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, 0, $9, $7, $8, $8) \
             ON CONFLICT (invoice_id) DO NOTHING",
        )
        .bind(p.payment_id)
        .bind(p.invoice_id)
        .bind(p.user_id)
        .bind(p.amount.amount)
        .bind(p.amount.currency.as_str())
        .bind(p.status.as_str())
        .bind(p.next_attempt_at)
        .bind(p.created_at)
        .bind(p.charge_key)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn payment_of_invoice(&self, invoice: Uuid) -> StoreResult<Option<Payment>> {
        sqlx::query("SELECT * FROM payment WHERE invoice_id = $1")
            .bind(invoice)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    async fn claim_payment(&self, payment: Uuid, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> StoreResult<Option<Payment>> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE payment SET next_attempt_at = $3 WHERE payment_id = $1 AND status = 'pending' AND next_attempt_at <= $2",
        )
        .bind(payment)
        .bind(now)
        .bind(lease_until)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT * FROM payment WHERE payment_id = $1").bind(payment).fetch_one(&mut *tx).await.map_err(backend)?;
        let payment = payment_from_row(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(payment))
    }

    async fn due_payments(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Uuid>> {
        sqlx::query("SELECT payment_id FROM payment WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2")
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| row.try_get("payment_id").map_err(backend))
            .collect()
    }

    async fn record_payment_attempt(&self, p: &Payment, attempts_before: u32, event: Option<&DomainEvent>) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE payment SET status = $3, attempts = $4, declines = $5, next_attempt_at = $6, last_error = $7, \
               gateway_charge_id = $8, updated_at = $9, transient_streak = $10, reported_failures = $11, charge_key = $12 \
             WHERE payment_id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(p.payment_id)
        .bind(i64::from(attempts_before))
        .bind(p.status.as_str())
        .bind(i64::from(p.attempts))
        .bind(i64::from(p.declines))
        .bind(p.next_attempt_at)
        .bind(p.last_error.as_deref())
        .bind(p.gateway_charge_id.as_deref())
        .bind(p.updated_at)
        .bind(i64::from(p.transient_streak))
        .bind(i64::from(p.reported_failures))
        .bind(p.charge_key)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let invoice_status = match p.status {
            PaymentStatus::Pending => InvoiceStatus::Open,
            PaymentStatus::Completed => InvoiceStatus::Paid,
            PaymentStatus::Failed => InvoiceStatus::PaymentFailed,
        };
        sqlx::query("UPDATE invoice SET status = $2 WHERE invoice_id = $1")
            .bind(p.invoice_id)
            .bind(invoice_status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook(&self, w: &Webhook) -> StoreResult<()> {
        self.execute_write(
            sqlx::query("INSERT INTO webhook (webhook_id, url, secret, event_types, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(w.webhook_id)
                .bind(w.url.as_str())
                .bind(w.secret.as_str())
                .bind(Json(&w.event_types))
                .bind(w.created_at),
        )
        .await?;
        Ok(())
    }

    async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        sqlx::query("SELECT * FROM webhook ORDER BY created_at, webhook_id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    async fn delete_webhook(&self, id: Uuid) -> StoreResult<bool> {
        let done = self.execute_write(sqlx::query("DELETE FROM webhook WHERE webhook_id = $1").bind(id)).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn queue_deliveries(&self, receipt: Receipt<'_>, event: &DomainEvent) -> StoreResult<usize> {
        // Most events are wanted by no webhook: those cost a read, not a write turn.
        // Without a receipt a repeat finds none again, or queues for a webhook made
        // meanwhile (deliveries are unique per webhook and event either way).
        if !self.webhooks().await?.iter().any(|h| h.event_types.contains(&event.event_type)) {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        if !take_receipt(&mut tx, receipt).await? {
            return Ok(0);
        }
        let hooks: Vec<Webhook> = sqlx::query("SELECT * FROM webhook")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
            .iter()
            .map(webhook_from_row)
            .collect::<StoreResult<_>>()?;
        let now = Utc::now();
        let mut queued = 0;
        for hook in hooks.iter().filter(|h| h.event_types.contains(&event.event_type)) {
            let done = sqlx::query(
                "INSERT INTO webhook_delivery (delivery_id, webhook_id, event_id, event_type, body, status, attempts, \
                   next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6) \
                 ON CONFLICT (webhook_id, event_id) DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(hook.webhook_id)
            .bind(event.id)
            .bind(event.event_type.as_str())
            .bind(Json(event))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected() as usize;
            queued += done;
        }
        tx.commit().await.map_err(backend)?;
        Ok(queued)
    }

    async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Uuid>> {
        sqlx::query(
            "SELECT delivery_id FROM webhook_delivery WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| row.try_get("delivery_id").map_err(backend))
        .collect()
    }

    async fn claim_delivery(
        &self,
        delivery: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<(WebhookDelivery, Webhook)>> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE webhook_delivery SET next_attempt_at = $3 WHERE delivery_id = $1 AND status = 'pending' \
             AND next_attempt_at <= $2",
        )
        .bind(delivery)
        .bind(now)
        .bind(lease_until)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT * FROM webhook_delivery WHERE delivery_id = $1")
            .bind(delivery)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let delivery = delivery_from_row(&row)?;
        let hook = sqlx::query("SELECT * FROM webhook WHERE webhook_id = $1")
            .bind(delivery.webhook_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let hook = webhook_from_row(&hook)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some((delivery, hook)))
    }

    async fn record_delivery_attempt(&self, d: &WebhookDelivery) -> StoreResult<()> {
        self.execute_write(
            sqlx::query(
                "UPDATE webhook_delivery SET status = $2, attempts = $3, next_attempt_at = $4, last_status_code = $5, \
                   last_error = $6, delivered_at = $7 WHERE delivery_id = $1 AND status = 'pending' AND attempts = $3 - 1",
            )
            .bind(d.delivery_id)
            .bind(d.status.as_str())
            .bind(i64::from(d.attempts))
            .bind(d.next_attempt_at)
            .bind(d.last_status_code.map(i64::from))
            .bind(d.last_error.as_deref())
            .bind(d.delivered_at),
        )
        .await?;
        Ok(())
    }

    async fn deliveries(&self, webhook: Uuid, limit: u32) -> StoreResult<Vec<WebhookDelivery>> {
        sqlx::query("SELECT * FROM webhook_delivery WHERE webhook_id = $1 ORDER BY created_at DESC, delivery_id LIMIT $2")
            .bind(webhook)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(delivery_from_row)
            .collect()
    }
}

/// The bodies of the writes that run on the write thread ([`SqlStore::on_write_thread`]).
impl SqlStore {
    async fn mark_processed_here(&self, consumer: &str, event_id: Uuid) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let mut conn = self.writes.acquire().await.map_err(backend)?;
        take_receipt(&mut conn, Receipt { consumer, event_id }).await
    }
}
