//! Public stations from the OpenChargeMap mirror: "near me", and one by id. Public data:
//! no sign-in needed. Shown with OCM's attribution.

use async_graphql::connection::{Connection, Edge, EmptyFields, query};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::{Code, error, state, store_error};
use crate::domain::station::{Station, StationFilter};

/// The largest radius a search may ask for, and the largest page.
const MAX_RADIUS_KM: f64 = 100.0;
const MAX_PAGE: i32 = 100;
const ATTRIBUTION: &str = "© Open Charge Map contributors";

#[derive(InputObject)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

#[derive(InputObject, Default)]
pub struct StationFilterInput {
    /// OCM connection type ids (e.g. 33: CCS Type 2, 25: Type 2).
    pub connector_types: Option<Vec<i64>>,
    pub min_power_kw: Option<f64>,
    /// OCM operator ids.
    pub operator_ids: Option<Vec<i64>>,
}

#[derive(SimpleObject)]
#[graphql(name = "StationConnector")]
pub struct ConnectionView {
    pub connection_type_id: Option<i64>,
    pub power_kw: Option<f64>,
    pub current_type_id: Option<i64>,
    pub quantity: Option<i64>,
    pub status_type_id: Option<i64>,
}

#[derive(SimpleObject)]
#[graphql(name = "Station")]
pub struct StationView {
    /// The OpenChargeMap id.
    pub id: ID,
    pub title: String,
    pub operator_id: Option<i64>,
    pub address_line1: Option<String>,
    pub town: Option<String>,
    pub postcode: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
    /// From the searched point, in km (searches only).
    pub distance_km: Option<f64>,
    pub max_power_kw: Option<f64>,
    pub connections: Vec<ConnectionView>,
    pub usage_cost: Option<String>,
    pub data_provider_id: Option<i64>,
    /// False when OCM removed or delisted it.
    pub active: bool,
    /// Show this with the data.
    pub attribution: String,
}

impl StationView {
    fn new(s: Station, distance_km: Option<f64>) -> Self {
        StationView {
            id: ID(s.ocm_id.to_string()),
            max_power_kw: s.max_power_kw(),
            title: s.title,
            operator_id: s.operator_id,
            address_line1: s.address_line1,
            town: s.town,
            postcode: s.postcode,
            latitude: s.latitude,
            longitude: s.longitude,
            distance_km,
            connections: s
                .connections
                .into_iter()
                .map(|c| ConnectionView {
                    connection_type_id: c.connection_type_id,
                    power_kw: c.power_kw,
                    current_type_id: c.current_type_id,
                    quantity: c.quantity,
                    status_type_id: c.status_type_id,
                })
                .collect(),
            usage_cost: s.usage_cost,
            data_provider_id: s.data_provider_id,
            active: s.active,
            attribution: ATTRIBUTION.to_owned(),
        }
    }
}

#[derive(Default)]
pub struct StationQuery;

#[Object]
impl StationQuery {
    /// Stations within `radiusKm` (at most 100) of a point, nearest first.
    async fn stations(
        &self,
        ctx: &Context<'_>,
        near: LatLng,
        radius_km: f64,
        filter: Option<StationFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<usize, StationView, EmptyFields, EmptyFields>> {
        if !(-90.0..=90.0).contains(&near.lat) || !(-180.0..=180.0).contains(&near.lng) {
            return Err(error(
                Code::BadUserInput,
                "near: lat must be -90 to 90, lng -180 to 180",
            ));
        }
        if !(radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
            return Err(error(
                Code::BadUserInput,
                format!("radiusKm must be above 0 and at most {MAX_RADIUS_KM}"),
            ));
        }
        let limit = match first {
            None => 20,
            Some(n) if (0..=MAX_PAGE).contains(&n) => n as usize,
            Some(_) => {
                return Err(error(
                    Code::BadUserInput,
                    format!("first must be 0 to {MAX_PAGE}"),
                ));
            }
        };
        let filter = filter.unwrap_or_default();
        let filter = StationFilter {
            connection_type_ids: filter.connector_types.unwrap_or_default(),
            min_power_kw: filter.min_power_kw,
            operator_ids: filter.operator_ids.unwrap_or_default(),
        };
        query(
            after,
            None,
            Some(limit as i32),
            None,
            |after: Option<usize>, _, _, _| async move {
                let offset = super::offset_after(after)? as usize;
                let found = state(ctx)
                    .services
                    .store
                    .stations_near(
                        near.lat,
                        near.lng,
                        radius_km,
                        &filter,
                        offset as u32,
                        limit as u32 + 1,
                    )
                    .await
                    .map_err(store_error)?;
                let has_next = found.len() > limit;
                let mut connection = Connection::new(offset > 0, has_next);
                connection.edges.extend(
                    found
                        .into_iter()
                        .take(limit)
                        .enumerate()
                        .map(|(i, (s, d))| Edge::new(offset + i, StationView::new(s, Some(d)))),
                );
                Ok::<_, async_graphql::Error>(connection)
            },
        )
        .await
    }

    /// One station by its OpenChargeMap id.
    async fn station(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<StationView>> {
        let Ok(ocm_id) = id.parse::<i64>() else {
            return Err(error(
                Code::BadUserInput,
                "a station id is an OpenChargeMap number",
            ));
        };
        let station = state(ctx)
            .services
            .store
            .station(ocm_id)
            .await
            .map_err(store_error)?;
        Ok(station.map(|s| StationView::new(s, None)))
    }
}
