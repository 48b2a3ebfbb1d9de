//! The schema's object types: views of domain records, named as the app's contract says.

use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use super::{GraphqlState, store_error};
use crate::domain::account::Vehicle;
use crate::domain::billing::{Invoice, PaymentMethod};
use crate::domain::money;
use crate::domain::{ConnectorStatus, IdTokenRecord, Session, SessionStatus as StoredStatus, User};

/// An amount in minor units (cents) of a currency.
#[derive(SimpleObject, Clone)]
#[graphql(name = "Money")]
pub struct MoneyView {
    /// Minor units: 934 is 9.34 EUR.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
}

impl From<money::Money> for MoneyView {
    fn from(m: money::Money) -> Self {
        MoneyView {
            amount: m.amount,
            currency: m.currency.as_str().to_owned(),
        }
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "User")]
pub struct UserView {
    pub id: ID,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl UserView {
    pub fn new(user: &User, name: Option<String>) -> Self {
        UserView {
            id: ID(user.user_id.to_string()),
            email: user.email.as_str().to_owned(),
            name,
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// A short-lived JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque; trade it for new tokens with `refreshToken` (once: it is rotated).
    pub refresh_token: String,
    pub user: UserView,
}

#[derive(SimpleObject)]
#[graphql(name = "Vehicle")]
pub struct VehicleView {
    pub id: ID,
    pub make: String,
    pub model: String,
    pub license_plate: Option<String>,
    pub battery_capacity_kwh: Option<f64>,
    pub created_at: DateTime<Utc>,
}

impl From<Vehicle> for VehicleView {
    fn from(v: Vehicle) -> Self {
        VehicleView {
            id: ID(v.vehicle_id.to_string()),
            make: v.make,
            model: v.model,
            license_plate: v.license_plate,
            battery_capacity_kwh: v.battery_capacity_kwh,
            created_at: v.created_at,
        }
    }
}

#[derive(InputObject)]
pub struct VehicleInput {
    pub make: String,
    pub model: String,
    pub license_plate: Option<String>,
    pub battery_capacity_kwh: Option<f64>,
}

/// An RFID card or app token that charges on the driver's account.
#[derive(SimpleObject)]
#[graphql(name = "IdToken")]
pub struct IdTokenView {
    pub token: String,
    /// OCPP authorization status (Accepted, Blocked, Expired, ...).
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<IdTokenRecord> for IdTokenView {
    fn from(r: IdTokenRecord) -> Self {
        IdTokenView {
            token: r.id_token.as_str().to_owned(),
            status: r.status.as_str().to_owned(),
            created_at: r.updated_at,
        }
    }
}

/// A card as the payment gateway tokenized it: never its number.
#[derive(SimpleObject)]
#[graphql(name = "PaymentMethod")]
pub struct PaymentMethodView {
    pub id: ID,
    pub brand: String,
    pub last4: String,
    pub exp_month: i32,
    pub exp_year: i32,
    pub created_at: DateTime<Utc>,
}

impl From<PaymentMethod> for PaymentMethodView {
    fn from(m: PaymentMethod) -> Self {
        PaymentMethodView {
            id: ID(m.payment_method_id.to_string()),
            brand: m.card.brand,
            last4: m.card.last4,
            exp_month: i32::try_from(m.card.exp_month).unwrap_or(0),
            exp_year: m.card.exp_year,
            created_at: m.created_at,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum SessionStatus {
    /// Remote start accepted by the charger, no transaction yet.
    Starting,
    Charging,
    /// The car or the charger paused charging (SuspendedEV / SuspendedEVSE).
    Suspended,
    /// Stopped; final values or billing pending.
    Finishing,
    Completed,
    /// The start was rejected or timed out.
    Failed,
}

#[derive(SimpleObject)]
#[graphql(complex, name = "ChargingSession")]
pub struct SessionView {
    pub id: ID,
    pub status: SessionStatus,
    pub charger_id: ID,
    pub connector_id: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub energy_wh: i64,
    pub power_w: Option<f64>,
    pub soc_percent: Option<f64>,
    /// The cost so far (running sessions) under the applicable tariff, with VAT.
    pub cost_estimate: Option<MoneyView>,
    #[graphql(skip)]
    pub session_id: i64,
}

impl SessionView {
    /// `connector` is the connector's live status (for SUSPENDED); `billed` whether billing
    /// has dealt with the end (FINISHING until then).
    pub fn new(
        session: &Session,
        cost: Option<money::Money>,
        connector: Option<ConnectorStatus>,
        billed: bool,
    ) -> Self {
        let status = match session.status {
            StoredStatus::Active => match connector {
                Some(ConnectorStatus::SuspendedEv | ConnectorStatus::SuspendedEvse) => {
                    SessionStatus::Suspended
                }
                _ => SessionStatus::Charging,
            },
            StoredStatus::Completed if billed => SessionStatus::Completed,
            StoredStatus::Completed => SessionStatus::Finishing,
        };
        SessionView {
            id: ID(session.session_id.to_string()),
            status,
            charger_id: ID(session.charger_id.to_string()),
            connector_id: i32::try_from(session.connector_id.0).unwrap_or(i32::MAX),
            started_at: Some(session.started_at),
            ended_at: session.stopped_at,
            energy_wh: session.energy_wh,
            power_w: session.power_w,
            soc_percent: session.soc_percent,
            cost_estimate: cost.map(Into::into),
            session_id: session.session_id.0,
        }
    }
}

#[ComplexObject]
impl SessionView {
    /// The session's invoice, once billing has issued it.
    async fn invoice(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<InvoiceView>> {
        let viewer = super::viewer_id(ctx)?;
        let loader =
            ctx.data_unchecked::<async_graphql::dataloader::DataLoader<InvoiceBySession>>();
        // Only the viewer's own invoice, whatever session it is asked through.
        Ok(loader
            .load_one(self.session_id)
            .await?
            .filter(|invoice| invoice.user_id == viewer)
            .map(InvoiceView::from))
    }
}

#[derive(SimpleObject)]
#[graphql(name = "InvoiceLine")]
pub struct InvoiceLineView {
    pub description: String,
    /// Net.
    pub amount: MoneyView,
}

#[derive(SimpleObject)]
#[graphql(name = "Invoice")]
pub struct InvoiceView {
    pub id: ID,
    /// `YYYY-NNNNNN`, gapless within a year.
    pub number: String,
    /// `session` or `subscription`.
    pub kind: String,
    /// `open`, `paid` or `payment_failed`.
    pub status: String,
    pub session_id: Option<ID>,
    /// The month a subscription invoice covers (`2026-11`).
    pub period: Option<String>,
    pub tariff_name: String,
    pub energy_wh: i64,
    pub lines: Vec<InvoiceLineView>,
    pub net: MoneyView,
    pub vat: MoneyView,
    pub gross: MoneyView,
    pub issued_at: DateTime<Utc>,
}

impl From<Invoice> for InvoiceView {
    fn from(i: Invoice) -> Self {
        let currency = i.charge.gross.currency;
        InvoiceView {
            id: ID(i.invoice_id.to_string()),
            number: i.invoice_number,
            kind: i.kind.as_str().to_owned(),
            status: i.status.as_str().to_owned(),
            session_id: i.session_id.map(|s| ID(s.to_string())),
            period: i.period,
            tariff_name: i.tariff_name,
            energy_wh: i.energy_wh,
            lines: i
                .charge
                .lines
                .into_iter()
                .map(|l| InvoiceLineView {
                    description: l.description,
                    amount: money::Money::new(l.amount, currency).into(),
                })
                .collect(),
            net: i.charge.net.into(),
            vat: i.charge.vat.into(),
            gross: i.charge.gross.into(),
            issued_at: i.issued_at,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Connector")]
pub struct ConnectorView {
    pub connector_id: i32,
    /// OCPP status (Available, Charging, SuspendedEV, Faulted, ...).
    pub status: String,
    pub updated_at: DateTime<Utc>,
}

/// One of our chargers, live.
#[derive(SimpleObject)]
#[graphql(name = "ChargerStatus")]
pub struct ChargerStatusView {
    pub charger_id: ID,
    pub online: bool,
    pub connectors: Vec<ConnectorView>,
}

/// Loads invoices by session id, many per query (no N+1 for `mySessions { invoice }`).
pub struct InvoiceBySession(pub std::sync::Arc<GraphqlState>);

impl async_graphql::dataloader::Loader<i64> for InvoiceBySession {
    type Value = Invoice;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[i64],
    ) -> Result<std::collections::HashMap<i64, Invoice>, Self::Error> {
        let sessions: Vec<crate::domain::SessionId> =
            keys.iter().copied().map(crate::domain::SessionId).collect();
        let invoices = self
            .0
            .services
            .store
            .invoices_of_sessions(&sessions)
            .await
            .map_err(store_error)?;
        Ok(invoices
            .into_iter()
            .filter_map(|i| i.session_id.map(|s| (s.0, i)))
            .collect())
    }
}

/// Loads whether billing has dealt with sessions' ends, many per query.
pub struct BilledSessions(pub std::sync::Arc<GraphqlState>);

impl async_graphql::dataloader::Loader<i64> for BilledSessions {
    type Value = bool;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[i64],
    ) -> Result<std::collections::HashMap<i64, bool>, Self::Error> {
        let sessions: Vec<crate::domain::SessionId> =
            keys.iter().copied().map(crate::domain::SessionId).collect();
        let billed = self
            .0
            .services
            .store
            .billed_sessions(&sessions)
            .await
            .map_err(store_error)?;
        Ok(keys
            .iter()
            .map(|k| (*k, billed.iter().any(|b| b.0 == *k)))
            .collect())
    }
}
