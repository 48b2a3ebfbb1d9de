//! The OpenChargeMap mirror for operators: `GET /api/v1/stations?lat=&lng=&radius_km=`
//! (nearest first, with distances, attribution and the live status of our chargers
//! there), `GET /api/v1/stations/{id}`, where our chargers stand
//! (`PUT /api/v1/chargers/{id}/station`), and the sync (`POST /api/v1/ocm/sync`,
//! `GET /api/v1/ocm/runs`, `GET /api/v1/ocm/runs/{id}`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::actors::ocm_sync::{StartError, StartSync};
use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::ChargerId;
use crate::domain::echo::echo;
use crate::domain::ocm::SyncTrigger;
use crate::domain::station::{MAX_FILTER_IDS, StationFilter};
use crate::stations::NearQuery;

/// The largest radius a search may ask for.
pub const MAX_RADIUS_KM: f64 = 100.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationQuery {
    lat: f64,
    lng: f64,
    /// At most 100.
    radius_km: f64,
    /// Comma-separated OCM connection type ids.
    connector_types: Option<String>,
    min_power_kw: Option<f64>,
    /// Comma-separated OCM operator ids.
    operator_ids: Option<String>,
    /// Only where one of our connectors is available now.
    available_now: Option<bool>,
    /// Default 100, at most 1000.
    limit: Option<u32>,
    offset: Option<u32>,
}

fn ids(raw: Option<&str>, name: &str) -> Result<Vec<i64>, ApiError> {
    let ids: Vec<i64> = raw
        .into_iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| ApiError::BadRequest(format!("{name}: {:?} is not an id", echo(s))))
        })
        .collect::<Result<_, _>>()?;
    if ids.len() > MAX_FILTER_IDS {
        return Err(ApiError::BadRequest(format!(
            "{name} lists at most {MAX_FILTER_IDS} ids"
        )));
    }
    Ok(ids)
}

pub async fn near(
    _: Operator,
    state: web::Data<ApiState>,
    query: web::Query<StationQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if !(-90.0..=90.0).contains(&q.lat) || !(-180.0..=180.0).contains(&q.lng) {
        return Err(ApiError::BadRequest(
            "lat must be -90 to 90, lng -180 to 180".into(),
        ));
    }
    if !(q.radius_km > 0.0 && q.radius_km <= MAX_RADIUS_KM) {
        return Err(ApiError::BadRequest(format!(
            "radius_km must be above 0 and at most {MAX_RADIUS_KM}"
        )));
    }
    if q.min_power_kw.is_some_and(|p| !p.is_finite() || p < 0.0) {
        return Err(ApiError::BadRequest(
            "min_power_kw must be 0 or more".into(),
        ));
    }
    let hits = state
        .services
        .stations
        .near(&NearQuery {
            lat: q.lat,
            lng: q.lng,
            radius_km: q.radius_km,
            filter: StationFilter {
                connection_type_ids: ids(q.connector_types.as_deref(), "connector_types")?,
                min_power_kw: q.min_power_kw,
                operator_ids: ids(q.operator_ids.as_deref(), "operator_ids")?,
                ocm_ids: None,
                excluded_provider_ids: Vec::new(),
            },
            available_now: q.available_now.unwrap_or(false),
            offset: q.offset.unwrap_or(0),
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
        })
        .await?;
    Ok(HttpResponse::Ok().json(hits))
}

pub async fn get(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let id: i64 = raw.parse().map_err(|_| {
        ApiError::BadRequest(format!("{:?} is not an OpenChargeMap id", echo(&raw)))
    })?;
    match state.services.stations.get(id).await? {
        Some(hit) => Ok(HttpResponse::Ok().json(hit)),
        None => Err(ApiError::NotFound(format!("no station {id} in the mirror"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationLink {
    /// The OCM POI the charger stands at; `null`: none.
    ocm_id: Option<i64>,
}

/// `PUT /api/v1/chargers/{id}/station`: where one of our chargers stands.
pub async fn link(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<StationLink>,
) -> Result<HttpResponse, ApiError> {
    let charger =
        ChargerId::parse(path.into_inner()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ocm_id = body.into_inner().ocm_id;
    if let Some(id) = ocm_id
        && state
            .services
            .stations
            .stations()
            .station(id)
            .await?
            .is_none()
    {
        return Err(ApiError::Unprocessable(format!(
            "no station {id} in the mirror: sync or import it first"
        )));
    }
    if !state.services.store.link_station(&charger, ocm_id).await? {
        return Err(ApiError::NotFound(format!("no charger {charger}")));
    }
    Ok(HttpResponse::Ok().json(json!({"charger_id": charger, "ocm_id": ocm_id})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Import every scope whole again (hides what OCM no longer lists).
    #[serde(default)]
    full: bool,
}

/// `POST /api/v1/ocm/sync` (body optional: `{"full": true}`): a run now (202 with the
/// run; 409 while one runs).
pub async fn sync(
    _: Operator,
    state: web::Data<ApiState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: SyncRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"full\": bool}}: {e}")))?
    };
    let full = request.full;
    let started = state
        .services
        .ocm_sync
        .send(StartSync {
            trigger: SyncTrigger::Api,
            full,
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match started {
        Ok(run) => Ok(HttpResponse::Accepted().json(run)),
        Err(StartError::AlreadyRunning) => Err(ApiError::Conflict(
            "a sync is already running: follow it at GET /api/v1/ocm/runs".into(),
        )),
        Err(e @ StartError::NothingToSync) => Err(ApiError::Unprocessable(e.to_string())),
        Err(StartError::Store(e)) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Default 20, at most 200.
    limit: Option<u32>,
}

/// `GET /api/v1/ocm/runs`: the newest runs first.
pub async fn runs(
    _: Operator,
    state: web::Data<ApiState>,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, 200);
    Ok(HttpResponse::Ok().json(state.services.store.sync_runs(limit).await?))
}

pub async fn run(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    match state.services.store.sync_run(id).await? {
        Some(run) => Ok(HttpResponse::Ok().json(run)),
        None => Err(ApiError::NotFound(format!("no sync run {id}"))),
    }
}
