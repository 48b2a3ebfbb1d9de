//! Tariffs, overrides, plans and invoices:
//! `/api/v1/tariffs`, `/api/v1/chargers/{id}/tariff`, `/api/v1/operators/{id}/tariff`,
//! `/api/v1/users/{id}/plan`, `/api/v1/invoices`.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::actors::billing::RunSubscriptions;
use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::billing::{Invoice, Payment, TariffRecord, TariffScope};
use crate::domain::ports::InvoiceFilter;
use crate::domain::tariff::Tariff;
use crate::domain::{ChargerId, SessionId};

#[derive(Deserialize)]
pub struct TariffPost {
    #[serde(flatten)]
    tariff: Tariff,
    /// Applies to drivers without a plan (replaces the previous default).
    #[serde(default)]
    default: bool,
}

fn validate(t: &Tariff) -> Result<(), ApiError> {
    if t.name.trim().is_empty() || t.name.len() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    match t.out_of_bounds() {
        Some(why) => Err(ApiError::BadRequest(why)),
        None => Ok(()),
    }
}

/// `POST /api/v1/tariffs`: `{name, currency, vat_basis_points, kind: "flat_rate" |
/// "pay_as_you_go", ...its prices, default?}` (prices in minor units; per-kWh prices in
/// thousandths of a minor unit).
pub async fn create_tariff(
    _: Operator,
    state: web::Data<ApiState>,
    body: web::Json<TariffPost>,
) -> Result<HttpResponse, ApiError> {
    let TariffPost { tariff, default } = body.into_inner();
    validate(&tariff)?;
    let record = TariffRecord {
        tariff_id: Uuid::new_v4(),
        tariff,
        is_default: default,
        created_at: Utc::now(),
    };
    state
        .services
        .store
        .create_tariff(&record)
        .await
        .map_err(|e| match e {
            crate::domain::ports::StoreError::Conflict(_) => {
                ApiError::Conflict(format!("a tariff named {:?} exists", record.tariff.name))
            }
            other => other.into(),
        })?;
    Ok(HttpResponse::Created().json(record))
}

/// `GET /api/v1/tariffs`.
pub async fn tariffs(_: Operator, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.services.store.tariffs().await?))
}

/// `GET /api/v1/tariffs/{id}`.
pub async fn tariff(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let tariff = state
        .services
        .store
        .tariff(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tariff {id}")))?;
    Ok(HttpResponse::Ok().json(tariff))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffRef {
    /// `null` removes the override or plan.
    tariff_id: Option<Uuid>,
}

async fn existing_tariff(
    state: &ApiState,
    id: Option<Uuid>,
) -> Result<Option<TariffRecord>, ApiError> {
    match id {
        None => Ok(None),
        Some(id) => state
            .services
            .store
            .tariff(id)
            .await?
            .map(Some)
            .ok_or_else(|| ApiError::Unprocessable(format!("tariff_id: no tariff {id}"))),
    }
}

/// `PUT /api/v1/chargers/{id}/tariff` with `{tariff_id}`: the charger's own tariff,
/// which wins over operator tariffs and plans.
pub async fn charger_tariff(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<TariffRef>,
) -> Result<HttpResponse, ApiError> {
    let id =
        ChargerId::parse(path.into_inner()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if state.services.store.charger(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "charger {id} is not registered"
        )));
    }
    let tariff = existing_tariff(&state, body.tariff_id).await?;
    state
        .services
        .store
        .set_tariff_override(&TariffScope::Charger(id.clone()), body.tariff_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "charger_id": id, "tariff": tariff })))
}

/// `PUT /api/v1/operators/{operatorId}/tariff` with `{tariff_id}`: the tariff at every
/// charger of that operator (`operator_id` of the charger), unless a charger has its own.
pub async fn operator_tariff(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<TariffRef>,
) -> Result<HttpResponse, ApiError> {
    let operator = path.into_inner();
    if operator.trim().is_empty() || operator.len() > 100 {
        return Err(ApiError::BadRequest(
            "operator id must be 1 to 100 characters".into(),
        ));
    }
    let tariff = existing_tariff(&state, body.tariff_id).await?;
    state
        .services
        .store
        .set_tariff_override(&TariffScope::Operator(operator.clone()), body.tariff_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "operator_id": operator, "tariff": tariff })))
}

/// `PUT /api/v1/users/{id}/plan` with `{tariff_id}`: puts a driver on a plan. A
/// subscription's first month is invoiced at once.
pub async fn put_plan(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
    body: web::Json<TariffRef>,
) -> Result<HttpResponse, ApiError> {
    let user = path.into_inner();
    let tariff = existing_tariff(&state, body.tariff_id).await?;
    state
        .services
        .store
        .set_plan(user, body.tariff_id, Utc::now())
        .await?;
    // The plan is stored; a failed subscription run is retried by the schedule, so it
    // does not fail the request.
    let issued = match state
        .services
        .billing
        .send(RunSubscriptions(Some(user)))
        .await
    {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %user, "subscription run after a plan change failed; the schedule retries");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, %user, "billing actor unavailable after a plan change");
            None
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user,
        "plan": tariff,
        "subscription_invoices_issued": issued,
    })))
}

#[derive(Serialize)]
pub struct InvoiceView {
    #[serde(flatten)]
    invoice: Invoice,
    payment: Option<Payment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    user_id: Option<Uuid>,
    session_id: Option<i64>,
    /// Default 100, at most 1000.
    limit: Option<u32>,
}

/// `GET /api/v1/invoices?user_id=&session_id=&limit=`: newest first.
pub async fn invoices(
    _: Operator,
    state: web::Data<ApiState>,
    query: web::Query<InvoiceQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let invoices = state
        .services
        .store
        .invoices(&InvoiceFilter {
            user_id: query.user_id,
            session_id: query.session_id.map(SessionId),
            offset: 0,
            limit: query.limit.unwrap_or(100).clamp(1, 1000),
        })
        .await?;
    Ok(HttpResponse::Ok().json(invoices))
}

/// `GET /api/v1/invoices/{id}`: the invoice with its payment.
pub async fn invoice(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let store = &state.services.store;
    // The payment first: the invoice's status is stored in the same transaction as the
    // payment's, so an invoice read after a settled payment shows it settled too.
    let payment = store.payment_of_invoice(id).await?;
    let invoice = store
        .invoice(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no invoice {id}")))?;
    Ok(HttpResponse::Ok().json(InvoiceView { invoice, payment }))
}
