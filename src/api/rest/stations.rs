//! `GET /api/v1/stations?lat=&lng=&radius_km=&limit=`: the OpenChargeMap mirror near a
//! point, nearest first, with distances.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::station::StationFilter;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationQuery {
    lat: f64,
    lng: f64,
    /// At most 100.
    radius_km: f64,
    /// Default 100, at most 1000.
    limit: Option<u32>,
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
    if !(q.radius_km > 0.0 && q.radius_km <= 100.0) {
        return Err(ApiError::BadRequest(
            "radius_km must be above 0 and at most 100".into(),
        ));
    }
    let found = state
        .services
        .store
        .stations_near(
            q.lat,
            q.lng,
            q.radius_km,
            &StationFilter::default(),
            0,
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await?;
    let body: Vec<_> = found
        .into_iter()
        .map(|(station, distance_km)| json!({"distance_km": distance_km, "station": station}))
        .collect();
    Ok(HttpResponse::Ok().json(body))
}
