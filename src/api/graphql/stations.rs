//! Public stations from the OpenChargeMap mirror: "near me", and one by id. Public data:
//! no sign-in needed. Shown with OCM's attribution.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::{Code, error, offset_connection, page_size, state, store_error};
use crate::api::rest::stations::MAX_RADIUS_KM;
use crate::domain::ocm::DataProvider;
use crate::domain::station::{MAX_FILTER_IDS, StationFilter};
use crate::stations::{LiveAvailability, NearQuery, StationHit};

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
    /// Only stations where one of our connectors is available right now.
    pub available_now: Option<bool>,
}

/// Whose data a station is, under which licence.
#[derive(SimpleObject)]
#[graphql(name = "DataProvider")]
pub struct DataProviderView {
    pub id: i64,
    pub title: String,
    pub license: Option<String>,
    pub website_url: Option<String>,
}

impl From<DataProvider> for DataProviderView {
    fn from(p: DataProvider) -> Self {
        DataProviderView {
            id: p.id,
            title: p.title,
            license: p.license,
            website_url: p.website_url,
        }
    }
}

/// One of our connectors at a station (our chargers' identities stay ours).
#[derive(SimpleObject)]
#[graphql(name = "LiveConnector")]
pub struct LiveConnectorView {
    pub connector_id: i32,
    /// OCPP status (Available, Charging, ...).
    pub status: Option<String>,
}

/// What our chargers at a station are doing now.
#[derive(SimpleObject)]
#[graphql(name = "StationLiveStatus")]
pub struct LiveView {
    /// Our chargers at this station, and how many are connected now.
    pub chargers: i32,
    pub connected: i32,
    /// Connectors free to charge now.
    pub available: i32,
    pub occupied: i32,
    pub out_of_order: i32,
    pub connectors: Vec<LiveConnectorView>,
}

fn n(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl From<LiveAvailability> for LiveView {
    fn from(l: LiveAvailability) -> Self {
        LiveView {
            chargers: n(l.chargers),
            connected: n(l.connected),
            available: n(l.available),
            occupied: n(l.occupied),
            out_of_order: n(l.out_of_order),
            connectors: l
                .connectors
                .into_iter()
                .map(|c| LiveConnectorView {
                    connector_id: n(c.connector_id),
                    status: c.status.and_then(|s| {
                        serde_json::to_value(s)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                    }),
                })
                .collect(),
        }
    }
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
    /// The operator's name, from OCM's reference data.
    pub operator_name: Option<String>,
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
    /// OCM usage type (1: public, 4: public, membership required, ...).
    pub usage_type_id: Option<i64>,
    /// OCM status type (50: operational, ...).
    pub status_type_id: Option<i64>,
    /// When someone last confirmed the data.
    pub date_last_verified: Option<chrono::DateTime<chrono::Utc>>,
    pub data_provider_id: Option<i64>,
    /// False when OCM removed or delisted it.
    pub active: bool,
    /// Show this with the data: OCM's licence, and the data provider's.
    pub attribution: String,
    pub data_provider: Option<DataProviderView>,
    /// Our chargers here, live; null when none of ours stands here.
    pub live: Option<LiveView>,
}

impl StationView {
    fn new(hit: StationHit) -> Self {
        let StationHit {
            station: s,
            distance_km,
            attribution,
            data_provider,
            operator,
            live,
        } = hit;
        StationView {
            operator_name: operator,
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
            usage_type_id: s.usage_type_id,
            status_type_id: s.status_type_id,
            date_last_verified: s.date_last_verified,
            data_provider_id: s.data_provider_id,
            active: s.active,
            attribution,
            data_provider: data_provider.map(Into::into),
            live: live.map(Into::into),
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
        let limit = page_size(first)?;
        let filter = filter.unwrap_or_default();
        if filter
            .min_power_kw
            .is_some_and(|p| !p.is_finite() || p < 0.0)
        {
            return Err(error(Code::BadUserInput, "minPowerKw must be 0 or more"));
        }
        for (name, ids) in [
            ("connectorTypes", &filter.connector_types),
            ("operatorIds", &filter.operator_ids),
        ] {
            if ids.as_ref().is_some_and(|ids| ids.len() > MAX_FILTER_IDS) {
                return Err(error(
                    Code::BadUserInput,
                    format!("{name} lists at most {MAX_FILTER_IDS} ids"),
                ));
            }
        }
        let available_now = filter.available_now.unwrap_or(false);
        let filter = StationFilter {
            connection_type_ids: filter.connector_types.unwrap_or_default(),
            min_power_kw: filter.min_power_kw,
            operator_ids: filter.operator_ids.unwrap_or_default(),
            ocm_ids: None,
            excluded_provider_ids: Vec::new(),
        };
        let search = &state(ctx).services.stations;
        offset_connection(
            after,
            limit,
            |offset, limit| async move {
                search
                    .near(&NearQuery {
                        lat: near.lat,
                        lng: near.lng,
                        radius_km,
                        filter,
                        available_now,
                        offset,
                        limit,
                    })
                    .await
                    .map_err(store_error)
            },
            |hit| async move { Ok(StationView::new(hit)) },
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
            .stations
            .get(ocm_id)
            .await
            .map_err(store_error)?;
        Ok(station.map(StationView::new))
    }
}
